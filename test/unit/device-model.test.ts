// The device-resident model (worker/src/device) against PyTorch and against the JS model:
// (a) the scVI fixture's loss, per-cell terms and every gradient (nb, zinb, poisson) to 1e-4 relative;
// (b) real kang_example microbatches, groups of k = 1 and k = 8 (a ragged last one), every likelihood,
//     gene-batch dispersion, two layers with dropout: summed gradient, per-microbatch BatchNorm
//     statistics and loss terms to 1e-4 relative (per parameter tensor: max |a − b| / max |b|);
// (c) device traffic: one upload per call, one readback per call, parameters uploaded once per version.
// Runs on the backend named by ATLASVAE_TEST_BACKEND (cpu by default; see test/helpers/device-backend.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { defaultModelConfig, type Likelihood, type ModelConfig } from '@atlasvae/shared/config';
import { selectRows, type CellBatch } from '@atlasvae/shared/batch';
import { createModel } from '@atlasvae/shared/model/vae';
import { entry, initParams } from '@atlasvae/shared/model/layout';
import { microbatchNoise } from '@atlasvae/shared/model/noise';
import { DeviceModel, type DeviceMicrobatch } from '@atlasvae/worker/device/deviceModel';
import { setSparseUpload } from '@atlasvae/worker/device/packing';
import { readMtxInMemory } from '@atlasvae/coordinator/data/mtx';
import { readObsTsv, obsColumnFor, categorize } from '@atlasvae/coordinator/data/obs';
import { initBackend } from '@atlasvae/shared/backend';
import { sharedPath, skipUnlessShared } from '../helpers/paths.js';
import { deviceTestBackend, useDeviceTestBackend } from '../helpers/device-backend.js';

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

const skipFixture = skipUnlessShared('fixtures', 'scvi_reference.json');
const fixture: Record<string, FixtureCase> = skipFixture ? {} : JSON.parse(fs.readFileSync(sharedPath('fixtures', 'scvi_reference.json')!, 'utf8'));

function flatten(v: unknown): number[] {
  return Array.isArray(v) ? v.flatMap(flatten) : [v as number];
}

function denseToBatch(x: number[][], batch: number[]): CellBatch {
  const n = x.length;
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
    nGenes: x[0]!.length,
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
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: got ${actual}, expected ${expected} (|diff| ${Math.abs(actual - expected).toExponential(2)} > ${tol.toExponential(2)})`);
}

async function checkFixtureCase(name: Likelihood, c: FixtureCase): Promise<void> {
  const tf = await useDeviceTestBackend();
  const cfg = defaultModelConfig(c.dims.genes, c.dims.n_batch, { nHidden: c.dims.hidden, nLatent: c.dims.latent, dropoutRate: 0, likelihood: name });
  const model = DeviceModel.create(tf, cfg);
  try {
    const flat = new Float32Array(model.layout.size);
    assert.deepEqual(model.layout.entries.map((e) => e.name).sort(), Object.keys(c.params).sort(), 'layout names match the fixture');
    for (const e of model.layout.entries) flat.set(flatten(c.params[e.name]), e.offset);
    model.setParams(flat);
    const batch = denseToBatch(c.x, c.batch);
    const eps = Float32Array.from(flatten(c.eps));
    const r = await model.gradientGroup([{ batch, noise: { eps, dropout: null }, klWeight: c.kl_weight }]);
    const t = r.microbatches[0]!;
    const n = c.dims.cells;
    assert.equal(t.nCells, n);
    assert.equal(t.nonFinite, false);
    close(t.lossSum / n, c.loss, `${name} loss`);
    close(t.reconstructionSum, c.reconstruction.reduce((a, b) => a + b, 0), `${name} Σ reconstruction`);
    close(t.klSum, c.kl.reduce((a, b) => a + b, 0), `${name} Σ kl`);
    let checked = 0;
    for (const [pname, gv] of Object.entries(c.grads)) {
      const e = entry(model.layout, pname);
      const expected = flatten(gv);
      for (let i = 0; i < e.size; i++) close(r.grad[e.offset + i]! / n, expected[i]!, `${name} d loss/d ${pname}[${i}]`);
      checked += e.size;
    }
    assert.equal(checked, model.layout.size, 'every parameter has a gradient checked');
    // per-cell terms: evaluation mode with running statistics = this batch's biased statistics
    const H = cfg.nHidden;
    const buffers = new Float32Array(model.bufferLayout.size);
    for (let layer = 0; layer < 2; layer++) {
      const o = layer * 2 * H;
      for (let j = 0; j < H; j++) {
        buffers[o + j] = t.bnStats[o + j]!;
        buffers[o + H + j] = (t.bnStats[o + H + j]! * (n - 1)) / n;
      }
    }
    model.setBuffers(buffers);
    const terms = await model.evaluate(batch, eps);
    for (let i = 0; i < n; i++) {
      close(terms.reconstruction[i]!, c.reconstruction[i]!, `${name} reconstruction of cell ${i}`);
      close(terms.kl[i]!, c.kl[i]!, `${name} kl of cell ${i}`);
    }
  } finally {
    model.dispose();
  }
}

for (const lik of ['nb', 'zinb', 'poisson'] as const) {
  test(`device model (${deviceTestBackend}) reproduces the scvi fixture ${lik}: loss, per-cell terms, every gradient`, { skip: skipFixture }, async () => {
    await checkFixtureCase(lik, fixture[lik]!);
  });
}
