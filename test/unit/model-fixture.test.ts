// The model against PyTorch: per-cell reconstruction and KL, the loss and every gradient of the
// tiny scVI models in ../shared/fixtures/scvi_reference.json (nb, zinb, poisson).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { initBackend } from '@atlasvae/shared/backend';
import { defaultModelConfig, type Likelihood } from '@atlasvae/shared/config';
import type { CellBatch } from '@atlasvae/shared/batch';
import { createModel, setSparseInputDensity } from '@atlasvae/shared/model/vae';
import { entry } from '@atlasvae/shared/model/layout';
import { setBackendMatmulThreshold } from '@atlasvae/shared/model/linalg';
import { sharedPath, skipUnlessShared } from '../helpers/paths.js';

interface FixtureCase {
  dims: { genes: number; hidden: number; latent: number; cells: number; n_batch: number };
  kl_weight: number;
  x: number[][];
  batch: number[];
  eps: number[][];
  params: Record<string, unknown>;
  grads: Record<string, unknown>;
  reconstruction: number[];
  kl: number[];
  loss: number;
}

const skip = skipUnlessShared('fixtures', 'scvi_reference.json');
const fixture: Record<string, FixtureCase> = skip ? {} : JSON.parse(fs.readFileSync(sharedPath('fixtures', 'scvi_reference.json')!, 'utf8'));

function flatten(v: unknown): number[] {
  return Array.isArray(v) ? v.flatMap(flatten) : [v as number];
}

function denseToBatch(x: number[][], batch: number[]): CellBatch {
  const n = x.length;
  const g = x[0]!.length;
  const indptr = new Int32Array(n + 1);
  const idx: number[] = [];
  const vals: number[] = [];
  const library = new Float32Array(n);
  x.forEach((row, i) => {
    row.forEach((v, j) => {
      if (v !== 0) {
        idx.push(j);
        vals.push(v);
        library[i] += v;
      }
    });
    indptr[i + 1] = idx.length;
  });
  return {
    nCells: n,
    nGenes: g,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(vals),
    library,
    batch: Int32Array.from(batch),
    label: new Int32Array(n).fill(-1),
    cellIndex: Uint32Array.from({ length: n }, (_, i) => i),
  };
}

function close(actual: number, expected: number, what: string): void {
  const tol = 1e-6 + 1e-4 * Math.abs(expected);
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: got ${actual}, PyTorch ${expected} (|diff| ${Math.abs(actual - expected).toExponential(2)} > ${tol.toExponential(2)})`);
}

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
  assert.deepEqual(model.layout.entries.map((e) => e.name).sort(), fixtureNames, 'layout names match the fixture');
  for (const e of model.layout.entries) {
    const v = flatten(c.params[e.name]);
    assert.equal(v.length, e.size, `${e.name} size`);
    flat.set(v, e.offset);
  }
  model.setParams(flat);
  const batch = denseToBatch(c.x, c.batch);
  const eps = Float32Array.from(flatten(c.eps));
  const g = model.gradient(batch, { eps, dropout: null }, c.kl_weight);
  const n = c.dims.cells;
  close(g.lossSum / n, c.loss, `${name} loss`);
  close(g.reconstructionSum, c.reconstruction.reduce((a, b) => a + b, 0), `${name} Σ reconstruction`);
  close(g.klSum, c.kl.reduce((a, b) => a + b, 0), `${name} Σ kl`);
  let checked = 0;
  for (const [pname, gv] of Object.entries(c.grads)) {
    const e = entry(model.layout, pname);
    const expected = flatten(gv);
    for (let k = 0; k < e.size; k++) close(g.grad[e.offset + k]! / n, expected[k]!, `${name} d loss/d ${pname}[${k}]`);
    checked += e.size;
  }
  assert.equal(checked, model.layout.size, 'every parameter has a gradient checked');

  // per-cell terms: training-mode BatchNorm is what the fixture used, so evaluate() with running
  // statistics set to this batch's biased statistics reproduces it exactly
  const stats = g.bnStats;
  const buffers = new Float32Array(model.bufferLayout.size);
  const H = cfg.nHidden;
  for (let layer = 0; layer < 2; layer++) {
    const o = layer * 2 * H;
    for (let j = 0; j < H; j++) {
      buffers[o + j] = stats[o + j]!;
      buffers[o + H + j] = (stats[o + H + j]! * (n - 1)) / n; // unbiased -> biased
    }
  }
  model.setBuffers(buffers);
  const terms = model.evaluate(batch, eps);
  for (let i = 0; i < n; i++) {
    close(terms.reconstruction[i]!, c.reconstruction[i]!, `${name} reconstruction of cell ${i}`);
    close(terms.kl[i]!, c.kl[i]!, `${name} kl of cell ${i}`);
  }
}

const routes = {
  'products in JS': { threshold: 1 << 17, sparse: 0 },
  'products on the backend': { threshold: 0, sparse: 0 },
  'sparse first layer': { threshold: 0, sparse: 1 },
} as const;

for (const [route, o] of Object.entries(routes)) {
  for (const lik of ['nb', 'zinb', 'poisson'] as const) {
    test(`scvi fixture ${lik}: loss, per-cell terms and every gradient match PyTorch (${route})`, { skip }, async () => {
      await initBackend('wasm', () => undefined);
      setBackendMatmulThreshold(o.threshold);
      setSparseInputDensity(o.sparse);
      try {
        checkCase(lik, fixture[lik]!);
      } finally {
        setBackendMatmulThreshold(1 << 17);
        setSparseInputDensity(0.1);
      }
    });
  }
}
