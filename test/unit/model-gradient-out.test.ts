// model.gradient(…, out) writes the gradient into caller-owned arrays (a worker's outgoing result
// message) and gives exactly the bits of the allocating form, whatever those arrays held before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend } from '@atlasvae/shared/backend';
import { defaultModelConfig } from '@atlasvae/shared';
import { createModel, setSparseInputDensity, microbatchNoise } from '@atlasvae/shared/model';
import { initTrainingState } from '@atlasvae/shared/train';
import { benchBatch } from '../bench/step.js';

test('gradient into given arrays equals the allocating gradient to the bit (dense and sparse first layer, dirty buffers)', async () => {
  await initBackend('wasm', () => undefined);
  for (const density of [0, 1]) {
    setSparseInputDensity(density);
    const mc = defaultModelConfig(300, 4, { likelihood: 'zinb' });
    const model = createModel(mc);
    model.setParams(initTrainingState(mc, 3).params);
    const batch = benchBatch(40, 300, 0.2, 5);
    const noise = microbatchNoise(mc, 3, 7, 1, 40);
    const ref = model.gradient(batch, noise, 0.3);
    const out = {
      grad: new Float32Array(model.layout.size).fill(Number.NaN),
      bnStats: new Float32Array(model.bufferLayout.size).fill(42),
    };
    const g = model.gradient(batch, noise, 0.3, out);
    assert.equal(g.grad, out.grad, 'returns the given gradient array');
    assert.equal(g.bnStats, out.bnStats, 'returns the given statistics array');
    assert.deepEqual(out.grad, ref.grad, `gradient, sparse threshold ${density}`);
    assert.deepEqual(out.bnStats, ref.bnStats, `BatchNorm statistics, sparse threshold ${density}`);
    assert.equal(g.lossSum, ref.lossSum);
    assert.throws(
      () => model.gradient(batch, noise, 0.3, { grad: new Float32Array(3), bnStats: out.bnStats }),
      /gradient output of 3 \+/,
    );
    model.dispose();
  }
  setSparseInputDensity(0.1);
});
