import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  saveCheckpoint,
  loadCheckpoint,
  type Checkpoint,
  defaultModelConfig,
  defaultTrainConfig,
} from '@atlasvae/shared';
import { tempDir } from '../helpers/paths.js';

function sample(): Checkpoint {
  const n = 1001;
  const params = new Float32Array(n).map((_, i) => Math.sin(i) * 1e-3);
  return {
    format: 'atlasvae-checkpoint',
    version: 1,
    modelConfig: defaultModelConfig(50, 2),
    trainConfig: defaultTrainConfig(1000, { seed: 9 }),
    params,
    buffers: new Float32Array([1, 2, 3, 4]),
    adam: { m: params.map((x) => x * 2), v: params.map((x) => x * x), t: 17 },
    position: { epoch: 2, stepInEpoch: 5, globalStep: 17 },
    rng: [1, 2, 3, 4, NaN],
    genes: ['A', 'B'],
    batchCategories: ['b0', 'b1'],
    labelCategories: ['t'],
    manifestHash: 'abc',
    history: [{ epoch: 0, nCells: 900, loss: 1.4, reconstruction: 1.2, kl: 0.3, elbo: 1.5 }],
    createdAt: new Date(0).toISOString(),
  };
}

test('checkpoint round-trips every field exactly', () => {
  const dir = tempDir();
  const file = path.join(dir, 'c.ckpt');
  const c = sample();
  saveCheckpoint(file, c);
  const back = loadCheckpoint(file);
  assert.deepEqual(back, c);
  assert.ok(back.params instanceof Float32Array);
  assert.deepEqual(fs.readdirSync(dir), ['c.ckpt'], 'no temporary files left behind');
});

test('wrong, truncated and corrupted checkpoints get clear errors', () => {
  const dir = tempDir();
  const file = path.join(dir, 'c.ckpt');
  saveCheckpoint(file, sample());
  const good = fs.readFileSync(file);
  fs.writeFileSync(path.join(dir, 'wrong'), 'hello world, not a checkpoint at all........................');
  assert.throws(() => loadCheckpoint(path.join(dir, 'wrong')), /wrong: not an atlasvae checkpoint/);
  fs.writeFileSync(path.join(dir, 'trunc'), good.subarray(0, good.length - 10));
  assert.throws(() => loadCheckpoint(path.join(dir, 'trunc')), /trunc: checkpoint is truncated/);
  const bad = Buffer.from(good);
  bad[bad.length - 5]! ^= 0xff;
  fs.writeFileSync(path.join(dir, 'bad'), bad);
  assert.throws(() => loadCheckpoint(path.join(dir, 'bad')), /bad: checkpoint is corrupted/);
  assert.throws(() => loadCheckpoint(path.join(dir, 'missing')), /missing: checkpoint file does not exist/);
});

test('a checkpoint whose history has the old train-local shape loads as epoch records', () => {
  const dir = tempDir();
  const file = path.join(dir, 'old.ckpt');
  const old = {
    ...sample(),
    history: [
      {
        epoch: 0,
        klWeight: 0.25,
        steps: 11,
        cells: 1400,
        trainLoss: 910.5,
        trainElbo: 930.25,
        trainReconstruction: 900.5,
        trainKl: 29.75,
        validationElbo: 950.5,
        validationReconstruction: 920,
        validationKl: 30.5,
        seconds: 3.5,
      },
      // a run without validation cells wrote NaN: nothing was evaluated
      { epoch: 1, klWeight: 0.5, steps: 11, cells: 1400, trainLoss: 1, trainElbo: 2, validationElbo: NaN },
    ],
  } as unknown as Checkpoint;
  saveCheckpoint(file, old);
  const back = loadCheckpoint(file);
  assert.deepEqual(back.history, [
    {
      epoch: 0,
      nCells: 1400,
      loss: 910.5,
      reconstruction: 900.5,
      kl: 29.75,
      elbo: 930.25,
      klWeight: 0.25,
      validationElbo: 950.5,
      validationReconstruction: 920,
      validationKl: 30.5,
    },
    { epoch: 1, nCells: 1400, loss: 1, reconstruction: NaN, kl: NaN, elbo: 2, klWeight: 0.5 },
  ]);
  fs.rmSync(dir, { recursive: true, force: true });
});
