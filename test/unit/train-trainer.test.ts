// The single-process trainer: same seed → bit-identical parameters, resuming from a mid-epoch state
// equals an uninterrupted run, K-steps mode, the trailing-minibatch rule, and learning on synthetic data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@atlasvae/shared/backend';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type CellBatch,
  Rng,
  trainValidationSplit,
} from '@atlasvae/shared';
import { InMemoryCellSource, trainInProcess as train, cloneTrainingState } from '@atlasvae/shared/train';
import { setBackendMatmulThreshold } from '@atlasvae/shared/model';

/** Poisson-ish counts from 3 latent cell types with a batch effect (small, for fast tests). */
function synthetic(nCells: number, nGenes: number, nBatch: number, seed: number): CellBatch {
  const rng = new Rng(seed);
  const types = Array.from({ length: 3 }, () =>
    Float64Array.from({ length: nGenes }, () => Math.exp(rng.normal())),
  );
  const batchShift = Array.from({ length: nBatch }, () =>
    Float64Array.from({ length: nGenes }, () => Math.exp(0.3 * rng.normal())),
  );
  const indptr = new Int32Array(nCells + 1);
  const idx: number[] = [];
  const vals: number[] = [];
  const library = new Float32Array(nCells);
  const batch = new Int32Array(nCells);
  const label = new Int32Array(nCells);
  for (let i = 0; i < nCells; i++) {
    label[i] = rng.int(3);
    batch[i] = rng.int(nBatch);
    for (let g = 0; g < nGenes; g++) {
      const mean = types[label[i]!]![g]! * batchShift[batch[i]!]![g]!;
      // Poisson by inversion (means are small)
      let k = 0;
      let p = Math.exp(-mean);
      let c = p;
      const u = rng.uniform();
      while (u > c && k < 200) {
        k++;
        p *= mean / k;
        c += p;
      }
      if (k > 0) {
        idx.push(g);
        vals.push(k);
        library[i]! += k;
      }
    }
    indptr[i + 1] = idx.length;
  }
  return {
    nCells,
    nGenes,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(vals),
    library,
    batch,
    label,
    cellIndex: Uint32Array.from({ length: nCells }, (_, i) => i),
  };
}

const data = synthetic(300, 40, 2, 1);
const source = new InMemoryCellSource(data, 2);
const modelConfig = defaultModelConfig(40, 2, { nHidden: 16, nLatent: 4 });

function setup(seed: number, over = {}) {
  const trainConfig = defaultTrainConfig(300, {
    seed,
    epochs: 4,
    nEpochsKlWarmup: 2,
    globalBatch: 64,
    microbatch: 32,
    ...over,
  });
  const split = trainValidationSplit(300, seed, 0.9);
  return { source, modelConfig, trainConfig, trainCells: split.train, validationCells: split.validation };
}

test('no backend tensors leak over training and evaluation', async () => {
  await initBackend('wasm', () => undefined);
  const before = tf.memory().numTensors;
  setBackendMatmulThreshold(0); // every product on the backend, so tensors are really created
  try {
    const r = await train(setup(3, { epochs: 2 }));
    r.model.encode(source.getCells([0, 1, 2, 3]));
    assert.ok(tf.memory().numTensors > before, 'cached weight tensors exist while the model lives');
    r.model.dispose();
  } finally {
    setBackendMatmulThreshold(1 << 17);
  }
  assert.equal(tf.memory().numTensors, before, 'every backend tensor is released');
});

test('same seed gives bit-identical parameters and buffers; another seed differs', async () => {
  await initBackend('wasm', () => undefined);
  const a = await train(setup(3));
  const b = await train(setup(3));
  const c = await train(setup(4));
  assert.deepEqual(a.state.params, b.state.params);
  assert.deepEqual(a.state.buffers, b.state.buffers);
  assert.deepEqual(
    a.history.map((h) => h.validationElbo),
    b.history.map((h) => h.validationElbo),
  );
  assert.notDeepEqual(a.state.params, c.state.params);
});

test('K-steps mode stops mid-epoch; resuming from that state equals the uninterrupted run', async () => {
  await initBackend('wasm', () => undefined);
  const full = await train(setup(5));
  const steps: number[] = [];
  const part = await train({
    ...setup(5),
    maxSteps: 7,
    // a step report names the step by its index: step k leaves k + 1 steps taken
    observers: [{ stepCompleted: (s) => void steps.push(s.globalStep + 1) }],
  });
  assert.equal(part.state.globalStep, 7);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7]);
  // 270 training cells, global batch 64: 4 full steps + a trailing 14 = 5 steps per epoch
  assert.equal(part.state.epoch, 1);
  assert.equal(part.state.stepInEpoch, 2);
  // one whole epoch, and the one under way when it stopped
  assert.equal(part.history.filter((h) => !h.partial).length, 1);
  assert.equal(part.history.length, 2);
  const resumed = await train({ ...setup(5), state: cloneTrainingState(part.state) });
  assert.deepEqual(resumed.state.params, full.state.params);
  assert.deepEqual(resumed.state.buffers, full.state.buffers);
  assert.deepEqual(resumed.state.adam.m, full.state.adam.m);
  assert.equal(resumed.state.globalStep, full.state.globalStep);
});

test('a trailing global batch under 3 cells is dropped; KL weight warms up by epoch', async () => {
  await initBackend('wasm', () => undefined);
  // 270 training cells with global batch 134: two steps of 134, trailing 2 cells dropped
  const r = await train(setup(6, { globalBatch: 134, microbatch: 134 }));
  assert.deepEqual(
    r.history.map((h) => h.nCells),
    [268, 268, 268, 268],
  );
  assert.deepEqual(
    r.history.map((h) => h.klWeight),
    [0, 0.5, 1, 1],
  );
});

test('training learns: ELBO falls over epochs and stays finite', async () => {
  await initBackend('wasm', () => undefined);
  const r = await train(setup(7, { epochs: 20, nEpochsKlWarmup: 5, lr: 5e-3 }));
  const first = r.history[0]!;
  const last = r.history[r.history.length - 1]!;
  for (const h of r.history) assert.ok(Number.isFinite(h.validationElbo) && Number.isFinite(h.elbo));
  assert.ok(last.elbo < first.elbo - 5, `train ELBO ${first.elbo} -> ${last.elbo}`);
  assert.ok(
    last.validationElbo! < first.validationElbo! - 5,
    `validation ELBO ${first.validationElbo} -> ${last.validationElbo}`,
  );
});
