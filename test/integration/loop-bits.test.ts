// The one training loop keeps the bits: short seeded runs of `train-local` and `train` on kang_example
// (pure-JS `cpu` backend, deterministic on any x86 machine) end with exactly the parameters, BatchNorm
// statistics and Adam moments that the code before the loop was unified produced (SHA-256 recorded
// then), and `train-local --microbatch` sums its microbatches in the fleet's order: bit-identical to
// `train --local-workers 2` with the same global batch and microbatch.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { loadCheckpoint } from '@atlasvae/shared';
import { sharedPath, tempDir } from '../helpers/paths.js';
import { KANG, cleanUp, prepareKang, skipKang } from './kang-reference.js';
import { runOk } from './dist-harness.js';

/** SHA-256 of a checkpoint's final state: parameters, buffers, Adam moments and step counter. */
function stateHash(file: string): string {
  const c = loadCheckpoint(file);
  const h = crypto.createHash('sha256');
  for (const a of [c.params, c.buffers, c.adam.m, c.adam.v])
    h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  h.update(`${c.adam.t}/${c.position.globalStep}/${c.position.epoch}/${c.position.stepInEpoch}`);
  return h.digest('hex');
}

/** Recorded on the code before the refactor (commit 619f5e7), same commands. */
const BEFORE = {
  trainLocal: 'ea3a92874d98db6a0994cd766e36a01127357bba3bb0e7fada13e3b405b878cc',
  fleet2: '2028d52051531a0ac9a1f302080b0e0a11f3406be45042a3a36f1d7ed98709c9',
  fleet1: '2028d52051531a0ac9a1f302080b0e0a11f3406be45042a3a36f1d7ed98709c9',
};

const COMMON = [
  '--seed',
  '0',
  '--epochs',
  '2',
  '--kl-warmup',
  '2',
  '--backend',
  'cpu',
  '--log-level',
  'warn',
];

let dir = '';
let data = '';
before(async () => {
  if (skipKang) return;
  dir = tempDir('atlasvae-loop-bits-');
  data = await prepareKang(dir);
});
after(() => cleanUp(dir));

function fleet(workers: number, out: string): Promise<string> {
  return runOk([
    'train',
    '--data',
    data,
    '--local-workers',
    String(workers),
    '--engine',
    'js',
    '--global-batch',
    '256',
    '--microbatch',
    '128',
    '--checkpoint',
    out,
    ...COMMON,
  ]);
}

test('train-local: the same bits as before the one loop', { skip: skipKang, timeout: 300_000 }, async () => {
  // recorded as `--batch-size 256 --out FILE`; the old spelling is rerun below
  const out = path.join(dir, 'local.ckpt');
  const log = await runOk([
    'train-local',
    '--mtx',
    sharedPath(KANG)!,
    '--batch-key',
    'batch',
    '--global-batch',
    '256',
    '--checkpoint',
    out,
    ...COMMON,
  ]);
  assert.doesNotMatch(log, /deprecated/);
  assert.equal(stateHash(out), BEFORE.trainLocal);
});

test(
  'train --local-workers 2 and 1: the same bits as before the one loop',
  { skip: skipKang, timeout: 300_000 },
  async () => {
    const two = path.join(dir, 'fleet2.ckpt');
    await fleet(2, two);
    assert.equal(stateHash(two), BEFORE.fleet2);
    const one = path.join(dir, 'fleet1.ckpt');
    await fleet(1, one);
    assert.equal(stateHash(one), BEFORE.fleet1);
  },
);

test(
  'train-local --microbatch sums in the fleet order: bit-identical to train --local-workers 2',
  { skip: skipKang, timeout: 300_000 },
  async () => {
    const out = path.join(dir, 'local-micro.ckpt');
    const kang = sharedPath(KANG)!;
    const log = await runOk([
      'train-local',
      '--mtx',
      kang,
      '--batch-key',
      'batch',
      '--global-batch',
      '256',
      '--microbatch',
      '128',
      '--checkpoint',
      out,
      ...COMMON,
    ]);
    assert.doesNotMatch(log, /deprecated/);
    assert.equal(stateHash(out), BEFORE.fleet2);
    // the old spellings (the command the hash was recorded with) still work, each with one
    // warning naming the new flag
    const old = path.join(dir, 'local-old.ckpt');
    const warned = await runOk([
      'train-local',
      '--mtx',
      kang,
      '--batch-key',
      'batch',
      '--batch-size',
      '256',
      '--out',
      old,
      ...COMMON,
    ]);
    assert.equal((warned.match(/--batch-size is deprecated: use --global-batch/g) ?? []).length, 1, warned);
    assert.equal((warned.match(/--out is deprecated: use --checkpoint/g) ?? []).length, 1, warned);
    assert.equal(stateHash(old), BEFORE.trainLocal);
  },
);
