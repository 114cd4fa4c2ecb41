// The model against PyTorch: per-cell reconstruction and KL, the loss and every gradient of the
// tiny scVI models in ../shared/fixtures/scvi_reference.json (nb, zinb, poisson).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend } from '@atlasvae/shared/backend';
import { defaultModelConfig, type Likelihood } from '@atlasvae/shared';
import { createModel, setSparseInputDensity, setBackendMatmulThreshold } from '@atlasvae/shared/model';
import {
  fixture,
  skipFixture as skip,
  flatten,
  denseToBatch,
  checkFixtureLoss,
  checkFixtureGradients,
  checkFixtureCellTerms,
  batchStatisticsAsBuffers,
  type FixtureCase,
} from '../helpers/scvi-fixture.js';

function checkCase(name: Likelihood, c: FixtureCase): void {
  const cfg = defaultModelConfig(c.dims.genes, c.dims.n_batch, {
    nHidden: c.dims.hidden,
    nLatent: c.dims.latent,
    dropoutRate: 0,
    likelihood: name,
  });
  const model = createModel(cfg);
  const flat = new Float32Array(model.layout.size);
  const fixtureNames = Object.keys(c.params).sort();
  assert.deepEqual(
    model.layout.entries.map((e) => e.name).sort(),
    fixtureNames,
    'layout names match the fixture',
  );
  for (const e of model.layout.entries) {
    const v = flatten(c.params[e.name]);
    assert.equal(v.length, e.size, `${e.name} size`);
    flat.set(v, e.offset);
  }
  model.setParams(flat);
  const batch = denseToBatch(c.x, c.batch);
  const eps = Float32Array.from(flatten(c.eps));
  const g = model.gradient(batch, { eps, dropout: null }, c.kl_weight);
  checkFixtureLoss(name, c, g);
  checkFixtureGradients(name, c, model.layout, g.grad);

  // per-cell terms: training-mode BatchNorm is what the fixture used, so evaluate() with running
  // statistics set to this batch's biased statistics reproduces it exactly
  model.setBuffers(batchStatisticsAsBuffers(g.bnStats, cfg.nHidden, c.dims.cells, model.bufferLayout.size));
  checkFixtureCellTerms(name, c, model.evaluate(batch, eps));
}

const routes = {
  'products in JS': { threshold: 1 << 17, sparse: 0 },
  'products on the backend': { threshold: 0, sparse: 0 },
  'sparse first layer': { threshold: 0, sparse: 1 },
} as const;

for (const [route, o] of Object.entries(routes)) {
  for (const lik of ['nb', 'zinb', 'poisson'] as const) {
    test(
      `scvi fixture ${lik}: loss, per-cell terms and every gradient match PyTorch (${route})`,
      { skip },
      async () => {
        await initBackend('wasm', () => undefined);
        setBackendMatmulThreshold(o.threshold);
        setSparseInputDensity(o.sparse);
        try {
          checkCase(lik, fixture[lik]!);
        } finally {
          setBackendMatmulThreshold(1 << 17);
          setSparseInputDensity(0.1);
        }
      },
    );
  }
}
