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
import {
  defaultModelConfig,
  type Likelihood,
  type ModelConfig,
  selectRows,
  type CellBatch,
} from '@atlasvae/shared';
import {
  createModel,
  entry,
  initParams,
  microbatchNoise,
  setBackendMatmulThreshold,
} from '@atlasvae/shared/model';
import {
  DeviceModel,
  type DeviceCounters,
  type DeviceMicrobatch,
  packCall,
  setSparseUpload,
  DeviceOps,
} from '@atlasvae/worker/device';
import type * as tfNs from '@tensorflow/tfjs-core';
import { readMtxInMemory, readObsTsv, obsColumnFor, categorize } from '@atlasvae/coordinator/data';
import { sharedPath, skipUnlessShared } from '../helpers/paths.js';
import { deviceTestBackend, useDeviceTestBackend } from '../helpers/device-backend.js';
import {
  fixture,
  skipFixture,
  flatten,
  denseToBatch,
  checkFixtureLoss,
  checkFixtureGradients,
  checkFixtureCellTerms,
  batchStatisticsAsBuffers,
  type FixtureCase,
} from '../helpers/scvi-fixture.js';

async function checkFixtureCase(name: Likelihood, c: FixtureCase): Promise<void> {
  const tf = await useDeviceTestBackend();
  const cfg = defaultModelConfig(c.dims.genes, c.dims.n_batch, {
    nHidden: c.dims.hidden,
    nLatent: c.dims.latent,
    dropoutRate: 0,
    likelihood: name,
  });
  const model = DeviceModel.create(tf, cfg);
  try {
    const flat = new Float32Array(model.layout.size);
    assert.deepEqual(
      model.layout.entries.map((e) => e.name).sort(),
      Object.keys(c.params).sort(),
      'layout names match the fixture',
    );
    for (const e of model.layout.entries) flat.set(flatten(c.params[e.name]), e.offset);
    model.setParams(flat);
    const batch = denseToBatch(c.x, c.batch);
    const eps = Float32Array.from(flatten(c.eps));
    const r = await model.gradientGroup([{ batch, noise: { eps, dropout: null }, klWeight: c.kl_weight }]);
    const t = r.microbatches[0]!;
    const n = c.dims.cells;
    assert.equal(t.nCells, n);
    assert.equal(t.nonFinite, false);
    checkFixtureLoss(name, c, t);
    checkFixtureGradients(name, c, model.layout, r.grad);
    // per-cell terms: evaluation mode with running statistics = this batch's biased statistics
    model.setBuffers(batchStatisticsAsBuffers(t.bnStats, cfg.nHidden, n, model.bufferLayout.size));
    checkFixtureCellTerms(name, c, await model.evaluate(batch, eps));
  } finally {
    model.dispose();
  }
}

for (const lik of ['nb', 'zinb', 'poisson'] as const) {
  test(
    `device model (${deviceTestBackend}) reproduces the scvi fixture ${lik}: loss, per-cell terms, every gradient`,
    { skip: skipFixture },
    async () => {
      await checkFixtureCase(lik, fixture[lik]!);
    },
  );
}

// ---- (b) against the JS model on kang_example ----

const KANG = 'data/kang_example_sce_1556';
const skipKang = skipUnlessShared(KANG, 'matrix.mtx.gz');

interface Kang {
  cells: CellBatch;
  nBatch: number;
}
let kangCache: Kang | null = null;
async function kang(): Promise<Kang> {
  if (!kangCache) {
    const dir = sharedPath(KANG)!;
    const { batch, barcodes } = await readMtxInMemory(dir);
    const obs = await readObsTsv(sharedPath(KANG, 'labels.tsv')!);
    const codes = categorize(obsColumnFor(obs, 'batch', barcodes));
    batch.batch.set(codes.codes);
    kangCache = { cells: batch, nBatch: codes.categories.length };
  }
  return kangCache;
}

/** Parameters away from PyTorch's initial BatchNorm (γ = 1, β = 0), so every gradient path is exercised. */
function testParams(cfg: ModelConfig, seed: number): Float32Array {
  const flat = initParams(cfg, seed);
  let s = seed + 1;
  const next = (): number => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
  const layoutEntries = createModel(cfg).layout.entries;
  for (const e of layoutEntries) {
    if (e.name.endsWith('.bn.weight')) for (let i = 0; i < e.size; i++) flat[e.offset + i] = 1 + 0.4 * next();
    if (e.name.endsWith('.bn.bias')) for (let i = 0; i < e.size; i++) flat[e.offset + i] = 0.4 * next();
  }
  return flat;
}

/** k microbatches of `size` cells from a fixed shuffle of kang, the last one `lastSize` cells. */
function microbatches(
  cfg: ModelConfig,
  cells: CellBatch,
  k: number,
  lastSize: number,
  step: number,
  size = 128,
): DeviceMicrobatch[] {
  const order = Array.from({ length: cells.nCells }, (_, i) => (i * 7919) % cells.nCells);
  const out: DeviceMicrobatch[] = [];
  let at = 0;
  for (let j = 0; j < k; j++) {
    const n = j === k - 1 ? lastSize : size;
    const batch = selectRows(cells, order.slice(at, at + n));
    at += n;
    out.push({ batch, noise: microbatchNoise(cfg, 3, step, j, n), klWeight: 0.7 + 0.01 * j }); // a weight per microbatch: each must get its own
  }
  return out;
}

/** max |a − b| / max |b| over a range */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>, from: number, to: number): number {
  let num = 0;
  let den = 0;
  for (let i = from; i < to; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

const TOL = 1e-4;

// on a GPU backend the JS reference model computes every product in JS (the backend cannot serve
// its synchronous reads)
if (deviceTestBackend !== 'cpu' && deviceTestBackend !== 'wasm')
  setBackendMatmulThreshold(Number.MAX_SAFE_INTEGER);

async function compareWithJs(cfg: ModelConfig, k: number, lastSize: number): Promise<void> {
  const tf = await useDeviceTestBackend();
  const { cells } = await kang();
  const params = testParams(cfg, 11);
  const js = createModel(cfg);
  js.setParams(params);
  const dev = DeviceModel.create(tf, cfg);
  try {
    dev.setParams(params);
    const mbs = microbatches(cfg, cells, k, lastSize, 5);
    const res = await dev.gradientGroup(mbs);
    const sum = new Float64Array(js.layout.size);
    mbs.forEach((mb, j) => {
      const g = js.gradient(mb.batch, mb.noise, mb.klWeight);
      for (let i = 0; i < sum.length; i++) sum[i]! += g.grad[i]!;
      const t = res.microbatches[j]!;
      const what = `${cfg.likelihood} k=${k} microbatch ${j}`;
      assert.equal(t.nCells, mb.batch.nCells);
      assert.equal(t.nonFinite, false, `${what}: non-finite`);
      for (const [name, a, b] of [
        ['reconstruction', t.reconstructionSum, g.reconstructionSum],
        ['kl', t.klSum, g.klSum],
        ['loss', t.lossSum, g.lossSum],
      ] as const) {
        assert.ok(Math.abs(a - b) <= TOL * Math.abs(b), `${what}: ${name} sum ${a} vs JS ${b}`);
      }
      for (const e of dev.bufferLayout.entries) {
        const err = relErr(t.bnStats, g.bnStats, e.offset, e.offset + e.size);
        assert.ok(
          err <= TOL,
          `${what}: BatchNorm statistic ${e.name} differs by ${err.toExponential(2)} (max |a−b|/max|b|)`,
        );
      }
    });
    const bad: string[] = [];
    for (const e of dev.layout.entries) {
      if (/^(enc|dec)(\.\d+)?\.lin\.bias$/.test(e.name)) {
        // a bias feeding BatchNorm has gradient 0 exactly: both must be rounding noise, below
        // 1e-4 of the largest gradient of the same layer's weight
        const w = entry(dev.layout, e.name.replace(/bias$/, 'weight'));
        const scale = relErr(sum, new Float64Array(sum.length), w.offset, w.offset + w.size);
        const zero = new Float64Array(sum.length);
        const worst = Math.max(
          relErr(res.grad, zero, e.offset, e.offset + e.size),
          relErr(sum, zero, e.offset, e.offset + e.size),
        );
        if (process.env.ATLASVAE_TEST_VERBOSE)
          console.log(cfg.likelihood, k, e.name, 'zero to', (worst / scale).toExponential(2));
        if (!(worst <= TOL * scale))
          bad.push(
            `${e.name}: ${worst.toExponential(2)} is not 0 to 1e-4 of its weight's ${scale.toExponential(2)}`,
          );
        continue;
      }
      const err = relErr(res.grad, sum, e.offset, e.offset + e.size);
      if (process.env.ATLASVAE_TEST_VERBOSE) console.log(cfg.likelihood, k, e.name, err.toExponential(2));
      if (!(err <= TOL)) bad.push(`${e.name} by ${err.toExponential(2)}`);
    }
    assert.deepEqual(bad, [], `${cfg.likelihood} k=${k}: gradients differ (max |a−b|/max|b|)`);
  } finally {
    dev.dispose();
    js.dispose();
  }
}

const variants: Array<[string, Partial<ModelConfig>]> = [
  ['nb, gene dispersion, dropout 0.1', {}],
  ['zinb', { likelihood: 'zinb' }],
  ['poisson', { likelihood: 'poisson' }],
  ['gaussian', { likelihood: 'gaussian' }],
  ['nb, gene-batch dispersion', { dispersion: 'gene-batch' }],
  [
    'zinb, gene-batch dispersion, 2 layers, dropout 0.2',
    { likelihood: 'zinb', dispersion: 'gene-batch', nLayers: 2, dropoutRate: 0.2 },
  ],
  ['nb, 2 layers, dropout 0.1', { nLayers: 2 }],
];

for (const [label, over] of variants) {
  test(
    `device model (${deviceTestBackend}) equals the JS model on kang microbatches, k = 1 and k = 8 (ragged): ${label}`,
    { skip: skipKang },
    async () => {
      const { cells, nBatch } = await kang();
      const cfg = defaultModelConfig(cells.nGenes, nBatch, over);
      await compareWithJs(cfg, 1, 128);
      await compareWithJs(cfg, 8, 57);
      if (label.startsWith('nb, gene dispersion')) await compareWithJs(cfg, 3, 1); // a one-cell microbatch: variance 0
    },
  );
}

// ---- evaluation mode against the JS model ----

async function compareEvalWithJs(cfg: ModelConfig): Promise<void> {
  const tf = await useDeviceTestBackend();
  const { cells } = await kang();
  const params = testParams(cfg, 13);
  const js = createModel(cfg);
  const dev = DeviceModel.create(tf, cfg);
  try {
    js.setParams(params);
    dev.setParams(params);
    // running statistics from a training call, so evaluation differs from the initial buffers
    const mbs = microbatches(cfg, cells, 1, 128, 9);
    const stats = js.gradient(mbs[0]!.batch, mbs[0]!.noise, 1).bnStats;
    js.setBuffers(stats);
    dev.setBuffers(stats);
    const chunk = selectRows(
      cells,
      Array.from({ length: 200 }, (_, i) => (i * 31) % cells.nCells),
    );
    const n = chunk.nCells;
    const eps = microbatchNoise(cfg, 4, 1, 0, n).eps;
    const check = (what: string, a: ArrayLike<number>, b: ArrayLike<number>): void => {
      assert.equal(a.length, b.length, `${cfg.likelihood} ${what}: length`);
      const err = relErr(a, b, 0, b.length);
      assert.ok(
        err <= TOL,
        `${cfg.likelihood} ${what} differs by ${err.toExponential(2)} (max |a−b|/max|b|)`,
      );
    };
    for (const e of [eps, null]) {
      const a = await dev.evaluate(chunk, e);
      const b = js.evaluate(chunk, e);
      check(`evaluate reconstruction (eps ${e ? 'given' : 'null'})`, a.reconstruction, b.reconstruction);
      check(`evaluate kl (eps ${e ? 'given' : 'null'})`, a.kl, b.kl);
    }
    const enc = await dev.encode(chunk);
    const encJs = js.encode(chunk);
    check('encode qm', enc.qm, encJs.qm);
    check('encode qv', enc.qv, encJs.qv);
    const z = Float32Array.from(encJs.qm, (v, i) => v + 0.3 * eps[i]!);
    check('logLikelihood', await dev.logLikelihood(chunk, z), js.logLikelihood(chunk, z));
    check('decodeScale', await dev.decodeScale(chunk, z), js.decodeScale(chunk, z));
    check('decodeScale as batch 1', await dev.decodeScale(chunk, z, 1), js.decodeScale(chunk, z, 1));
  } finally {
    dev.dispose();
    js.dispose();
  }
}

for (const [label, over] of variants) {
  test(
    `device model (${deviceTestBackend}) evaluation mode equals the JS model on kang (evaluate, encode, logLikelihood, decodeScale): ${label}`,
    { skip: skipKang },
    async () => {
      const { cells, nBatch } = await kang();
      await compareEvalWithJs(defaultModelConfig(cells.nGenes, nBatch, over));
    },
  );
}

// ---- (c) device traffic ----

function delta(after: DeviceCounters, before: DeviceCounters): DeviceCounters {
  return {
    kernels: after.kernels - before.kernels,
    viewKernels: after.viewKernels! - before.viewKernels!,
    uploads: after.uploads - before.uploads,
    uploadBytes: after.uploadBytes - before.uploadBytes,
    readbacks: after.readbacks - before.readbacks,
    readbackBytes: after.readbackBytes - before.readbackBytes,
  };
}

test(
  `device model (${deviceTestBackend}) moves cells up once and results down once per call, parameters once per version; kernels per call do not grow with k`,
  { skip: skipKang },
  async () => {
    const tf = await useDeviceTestBackend();
    const { cells, nBatch } = await kang();
    for (const over of [{}, { likelihood: 'zinb', nLayers: 2 }] as Array<Partial<ModelConfig>>) {
      const cfg = defaultModelConfig(cells.nGenes, nBatch, over);
      const dev = DeviceModel.create(tf, cfg);
      try {
        const P = dev.layout.size;
        let before = { ...dev.counters };
        dev.setParams(testParams(cfg, 1));
        assert.deepEqual(
          delta(dev.counters, before),
          {
            kernels: delta(dev.counters, before).kernels,
            viewKernels: delta(dev.counters, before).viewKernels,
            uploads: 1,
            uploadBytes: 4 * P,
            readbacks: 0,
            readbackBytes: 0,
          },
          'setParams: one upload of the parameters',
        );
        const first = await dev.gradientGroup(microbatches(cfg, cells, 2, 20, 0, 32)); // the first call makes the cached constants
        const again = await dev.gradientGroup(microbatches(cfg, cells, 2, 20, 0, 32));
        assert.deepEqual(again.grad, first.grad, 'the same call gives the same bits');
        assert.deepEqual(again.microbatches, first.microbatches, 'the same call gives the same terms');
        const tensorsBefore = tf.memory().numTensors;
        const kernels: number[] = [];
        let sparseGrad: Float32Array = new Float32Array(0);
        for (const [k, last] of [
          [1, 32],
          [8, 9],
          [8, 32],
        ] as const) {
          for (const sparse of [true, false]) {
            setSparseUpload(sparse);
            try {
              const mbs = microbatches(cfg, cells, k, last, 1, 32);
              const withDropout = mbs.some((mb) => mb.noise.dropout !== null);
              const packedBytes = packCall(
                cfg,
                mbs.map((mb) => ({
                  batch: mb.batch,
                  noise: mb.noise.eps,
                  dropout: mb.noise.dropout,
                  klWeight: mb.klWeight,
                })),
                withDropout,
              ).data.byteLength;
              before = { ...dev.counters };
              const r = await dev.gradientGroup(mbs);
              const d = delta(dev.counters, before);
              const what = `${cfg.likelihood} nLayers ${cfg.nLayers} k=${k} (${sparse ? 'sparse' : 'dense'} upload)`;
              assert.equal(d.uploads, 1, `${what}: uploads`);
              assert.equal(d.uploadBytes, packedBytes, `${what}: upload bytes`);
              assert.equal(d.readbacks, 1, `${what}: readbacks`);
              assert.equal(
                d.readbackBytes,
                4 * (P + 4 * cfg.nLayers * k * cfg.nHidden + 2 * k),
                `${what}: readback bytes`,
              );
              if (process.env.ATLASVAE_TEST_VERBOSE) console.log(what, JSON.stringify(d));
              if (sparse) {
                kernels.push(d.kernels);
                sparseGrad = r.grad;
              } else
                assert.deepEqual(
                  r.grad,
                  sparseGrad,
                  `${what}: the dense upload gives the sparse upload's gradient exactly`,
                );
            } finally {
              setSparseUpload(true);
            }
          }
        }
        assert.ok(
          kernels.every((n) => n === kernels[0]),
          `kernels per call independent of k: ${kernels.join(', ')}`,
        );
        before = { ...dev.counters };
        await dev.evaluate(microbatches(cfg, cells, 1, 100, 2)[0]!.batch, null);
        const d = delta(dev.counters, before);
        assert.equal(d.uploads, 1, 'evaluate: one upload');
        assert.equal(d.readbacks, 1, 'evaluate: one readback');
        assert.equal(d.readbackBytes, 4 * 2 * 100, 'evaluate: reconstruction and KL of 100 cells');
        assert.equal(tf.memory().numTensors, tensorsBefore, 'calls leave no tensors behind');
      } finally {
        dev.dispose();
      }
    }
  },
);

// ---- log Γ and ψ of the device ops ----

const skipLgamma = skipUnlessShared('fixtures', 'lgamma_reference.json');
test(
  `device lgamma (${deviceTestBackend}): |error| ≤ 1e-5·max(1, |lgamma|); gradient and digamma within 1e-4 for x ≥ 1e-3`,
  { skip: skipLgamma },
  async () => {
    const tf = await useDeviceTestBackend();
    const ref: { x: number[]; lgamma: number[]; digamma: number[] } = JSON.parse(
      fs.readFileSync(sharedPath('fixtures', 'lgamma_reference.json')!, 'utf8'),
    );
    const ops = new DeviceOps(tf);
    try {
      const x = tf.tensor1d(ref.x);
      const w = tf.fill([ref.x.length], 0.5);
      const value = await ops.lgamma(x).data();
      const grad = await tf.mul(tf.grad((t: tfNs.Tensor) => ops.lgamma(t))(x, w), 2).data();
      const direct = await ops.digamma(x).data();
      ref.x.forEach((xv, i) => {
        const err = Math.abs(value[i]! - ref.lgamma[i]!) / Math.max(1, Math.abs(ref.lgamma[i]!));
        assert.ok(
          err <= 1e-5,
          `lgamma(${xv}) = ${value[i]}, reference ${ref.lgamma[i]} (scaled error ${err.toExponential(2)})`,
        );
        if (xv >= 1e-3) {
          for (const [what, v] of [
            ['gradient', grad[i]!],
            ['digamma', direct[i]!],
          ] as const) {
            const rel = Math.abs(v - ref.digamma[i]!) / Math.abs(ref.digamma[i]!);
            assert.ok(
              rel <= 1e-4,
              `${what} at ${xv} = ${v}, digamma ${ref.digamma[i]} (relative ${rel.toExponential(2)})`,
            );
          }
        }
      });
    } finally {
      ops.dispose();
    }
  },
);

// ---- bad input, non-finite results ----

test(
  `device model (${deviceTestBackend}): bad input is named; a NaN parameter flags every microbatch non-finite`,
  { skip: skipFixture },
  async () => {
    const tf = await useDeviceTestBackend();
    const c = fixture['nb']!;
    const cfg = defaultModelConfig(c.dims.genes, c.dims.n_batch, {
      nHidden: c.dims.hidden,
      nLatent: c.dims.latent,
      dropoutRate: 0.5,
    });
    const dev = DeviceModel.create(tf, cfg);
    try {
      const batch = denseToBatch(c.x, c.batch);
      const noise = microbatchNoise(cfg, 1, 1, 0, batch.nCells);
      const good: DeviceMicrobatch = { batch, noise, klWeight: 1 };
      await assert.rejects(dev.gradientGroup([]), /at least one microbatch/);
      await assert.rejects(
        dev.gradientGroup([good, { ...good, noise: { ...noise, eps: noise.eps.subarray(1) } }]),
        /microbatch 1: noise eps has 14 values, expected 15/,
      );
      await assert.rejects(
        dev.gradientGroup([{ ...good, noise: { ...noise, dropout: [noise.dropout![0]!.subarray(2)] } }]),
        /microbatch 0: dropout mask 0 has 38 values, expected 40/,
      );
      await assert.rejects(
        dev.gradientGroup([{ ...good, batch: { ...batch, batch: Int32Array.from([0, 1, 2, 0, 1]) } }]),
        /batch code 2 of cell 2 is outside 0\.\.1/,
      );
      await assert.rejects(
        dev.gradientGroup([{ ...good, batch: { ...batch, nGenes: 13 } }]),
        /microbatch 0 has 13 genes, the model 12/,
      );
      assert.throws(
        () => dev.setParams(new Float32Array(3)),
        /parameter vector has 3 floats, the layout needs \d+/,
      );
      await assert.rejects(dev.logLikelihood(batch, new Float32Array(2)), /z has 2 values, expected 15/);
      // a microbatch without masks in a group with masks keeps every unit, as the JS model does
      const plain = await dev.gradientGroup([{ ...good, noise: { ...noise, dropout: null } }]);
      const mixed = await dev.gradientGroup([good, { ...good, noise: { ...noise, dropout: null } }]);
      const masked = await dev.gradientGroup([good]);
      const sumBoth = masked.grad.map((v, i) => v + plain.grad[i]!);
      assert.ok(
        relErr(mixed.grad, sumBoth, 0, sumBoth.length) <= TOL,
        'a group sums its microbatches, masked or not',
      );
      assert.ok(
        relErr(plain.grad, masked.grad, 0, plain.grad.length) > 1e-3,
        'dropout masks change the gradient',
      );
      const params = initParams(cfg, 0);
      params[entry(dev.layout, 'px_r').offset] = NaN;
      dev.setParams(params);
      const r = await dev.gradientGroup([good, good]);
      assert.deepEqual(
        r.microbatches.map((t) => t.nonFinite),
        [true, true],
      );
      dev.dispose();
      await assert.rejects(dev.gradientGroup([good]), /used after dispose/);
    } finally {
      dev.dispose();
    }
  },
);
