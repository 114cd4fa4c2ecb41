import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultBatchSizes } from '@atlasvae/coordinator/server';

test('one worker (and one process): scvi’s 128-cell step at lr 1e-3', () => {
  assert.deepEqual(defaultBatchSizes(1), { globalBatch: 128, microbatch: 128, lr: 1e-3 });
  assert.deepEqual(defaultBatchSizes(0), { globalBatch: 128, microbatch: 128, lr: 1e-3 });
});

test('2–8 workers: a 256-cell step at lr 2.5e-3, one microbatch per worker', () => {
  assert.deepEqual(defaultBatchSizes(2), { globalBatch: 256, microbatch: 128, lr: 2.5e-3 });
  assert.deepEqual(defaultBatchSizes(3), { globalBatch: 256, microbatch: 86, lr: 2.5e-3 });
  assert.deepEqual(defaultBatchSizes(4), { globalBatch: 256, microbatch: 64, lr: 2.5e-3 });
  assert.deepEqual(defaultBatchSizes(8), { globalBatch: 256, microbatch: 32, lr: 2.5e-3 });
  for (let n = 2; n <= 8; n++) {
    const d = defaultBatchSizes(n);
    assert.equal(Math.ceil(d.globalBatch / d.microbatch), n, `${n} workers: one microbatch each`);
  }
});

test('beyond 8 workers: 32-cell microbatches, 32 × workers per step', () => {
  assert.deepEqual(defaultBatchSizes(16), { globalBatch: 512, microbatch: 32, lr: 2.5e-3 });
});

test('what the user gives wins; a given global batch keeps scvi’s lr', () => {
  assert.deepEqual(defaultBatchSizes(2, 128), { globalBatch: 128, microbatch: 64, lr: 1e-3 });
  assert.deepEqual(defaultBatchSizes(2, undefined, undefined, 5e-4), {
    globalBatch: 256,
    microbatch: 128,
    lr: 5e-4,
  });
  assert.deepEqual(defaultBatchSizes(2, undefined, 64), { globalBatch: 256, microbatch: 64, lr: 2.5e-3 });
  assert.deepEqual(defaultBatchSizes(1, 64, 128), { globalBatch: 64, microbatch: 64, lr: 1e-3 });
});
