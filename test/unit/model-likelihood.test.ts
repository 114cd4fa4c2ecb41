// Likelihood kernels (all four, per-gene and per-gene-batch dispersion) against central finite
// differences in float64, the gaussian value against its formula, and whole-model checks of the
// gaussian likelihood and gene-batch dispersion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultModelConfig, type ModelConfig, type CellBatch, Rng } from '@atlasvae/shared';
import {
  likelihood,
  negativeBinomialReference,
  createModel,
  entry,
  initParams,
  slice,
  microbatchNoise,
} from '@atlasvae/shared/model';

const G = 7;
const B = 5;
const K = 3;

function randomBatch(rng: Rng): CellBatch {
  const indptr = new Int32Array(B + 1);
  const idx: number[] = [];
  const vals: number[] = [];
  const library = new Float32Array(B);
  for (let i = 0; i < B; i++) {
    for (let g = 0; g < G; g++) {
      if (rng.uniform() < 0.5) {
        const v = 1 + rng.int(30);
        idx.push(g);
        vals.push(v);
        library[i]! += v;
      }
    }
    if (library[i] === 0) {
      idx.push(0);
      vals.push(3);
      library[i] = 3;
    }
    indptr[i + 1] = idx.length;
  }
  return {
    nCells: B,
    nGenes: G,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(vals),
    library,
    batch: Int32Array.from({ length: B }, (_, i) => i % K),
    label: new Int32Array(B).fill(-1),
    cellIndex: Uint32Array.from({ length: B }, (_, i) => i),
  };
}

function randomArray(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

function recSum(
  cfg: ModelConfig,
  batch: CellBatch,
  logits: Float32Array,
  drop: Float32Array | null,
  pxr: Float32Array | null,
): number {
  const r = likelihood({ cfg, batch, logits, dropLogits: drop, pxr, needGrad: false });
  return r.rec.reduce((a, b) => a + b, 0);
}

/** central difference of f with respect to arr[k], using the float32-representable step actually taken */
function fd(arr: Float32Array, k: number, f: () => number): number {
  const x = arr[k]!;
  const h = 1e-3 * Math.max(1, Math.abs(x));
  arr[k] = x + h;
  const up = arr[k];
  const fu = f();
  arr[k] = x - h;
  const down = arr[k];
  const fdn = f();
  arr[k] = x;
  return (fu - fdn) / (up - down);
}

function checkGrad(analytic: ArrayLike<number>, arr: Float32Array, f: () => number, what: string): void {
  for (let k = 0; k < arr.length; k++) {
    const num = fd(arr, k, f);
    const tol = 1e-5 + 1e-4 * Math.abs(num);
    assert.ok(
      Math.abs(analytic[k]! - num) <= tol,
      `${what}[${k}]: analytic ${analytic[k]}, finite difference ${num}`,
    );
  }
}

for (const lik of ['nb', 'zinb', 'poisson', 'gaussian'] as const) {
  for (const disp of ['gene', 'gene-batch'] as const) {
    if (lik === 'poisson' && disp === 'gene-batch') continue;
    test(`likelihood ${lik} (${disp} dispersion): gradients match finite differences`, () => {
      const rng = new Rng(42, lik.length, disp.length);
      const cfg = defaultModelConfig(G, K, {
        likelihood: lik,
        dispersion: disp,
      });
      const batch = randomBatch(rng);
      const logits = randomArray(rng, B * G, 1);
      const drop = lik === 'zinb' ? randomArray(rng, B * G, 1) : null;
      const pxr = lik === 'poisson' ? null : randomArray(rng, disp === 'gene-batch' ? G * K : G, 0.7);
      const out = likelihood({ cfg, batch, logits, dropLogits: drop, pxr, needGrad: true });
      const f = () => recSum(cfg, batch, logits, drop, pxr);
      checkGrad(out.dLogits!, logits, f, 'd rec/d logits');
      if (drop) checkGrad(out.dDrop!, drop, f, 'd rec/d dropout logits');
      if (pxr) checkGrad(out.dPxr!, pxr, f, 'd rec/d px_r');
      else assert.equal(out.dPxr, null);
    });
  }
}

test('gaussian likelihood value: −log N(log1p x; mean, exp(px_r)) summed over genes', () => {
  const rng = new Rng(7);
  const cfg = defaultModelConfig(G, K, { likelihood: 'gaussian', dispersion: 'gene-batch' });
  const batch = randomBatch(rng);
  const mean = randomArray(rng, B * G, 1);
  const pxr = randomArray(rng, G * K, 0.5);
  const rec = likelihood({ cfg, batch, logits: mean, dropLogits: null, pxr, needGrad: false }).rec;
  for (let i = 0; i < B; i++) {
    const x = new Float64Array(G);
    for (let p = batch.indptr[i]!; p < batch.indptr[i + 1]!; p++) x[batch.indices[p]!] = batch.counts[p]!;
    let expected = 0;
    for (let g = 0; g < G; g++) {
      const logVar = pxr[g * K + batch.batch[i]!]!;
      const y = Math.log1p(x[g]!);
      expected +=
        0.5 * Math.log(2 * Math.PI) + 0.5 * logVar + (y - mean[i * G + g]!) ** 2 / (2 * Math.exp(logVar));
    }
    assert.ok(
      Math.abs(rec[i]! - expected) < 1e-9 * Math.abs(expected),
      `cell ${i}: ${rec[i]} vs ${expected}`,
    );
  }
});

test('gene-batch dispersion with equal columns reproduces per-gene dispersion; its gradient splits by batch', () => {
  const rng = new Rng(11);
  const batch = randomBatch(rng);
  const gene = createModel(defaultModelConfig(G, K, { nHidden: 6, nLatent: 2, dropoutRate: 0 }));
  const gb = createModel(
    defaultModelConfig(G, K, { nHidden: 6, nLatent: 2, dropoutRate: 0, dispersion: 'gene-batch' }),
  );
  const pg = initParams(gene.config, 5);
  const pb = new Float32Array(gb.layout.size);
  for (const e of gene.layout.entries) {
    if (e.name === 'px_r') continue;
    pb.set(slice(gene.layout, pg, e.name), entry(gb.layout, e.name).offset);
  }
  const rg = slice(gene.layout, pg, 'px_r');
  const rb = slice(gb.layout, pb, 'px_r');
  for (let g = 0; g < G; g++) for (let b = 0; b < K; b++) rb[g * K + b] = rg[g]!;
  gene.setParams(pg);
  gb.setParams(pb);
  const noise = microbatchNoise(gene.config, 1, 0, 0, B);
  const a = gene.gradient(batch, noise, 0.7);
  const c = gb.gradient(batch, noise, 0.7);
  assert.ok(Math.abs(a.lossSum - c.lossSum) < 1e-9 * Math.abs(a.lossSum));
  const ga = slice(gene.layout, a.grad, 'px_r');
  const gc = slice(gb.layout, c.grad, 'px_r');
  for (let g = 0; g < G; g++) {
    let s = 0;
    for (let b = 0; b < K; b++) s += gc[g * K + b]!;
    assert.ok(Math.abs(s - ga[g]!) <= 1e-5 + 1e-5 * Math.abs(ga[g]!), `gene ${g}: Σ_b ${s} vs ${ga[g]}`);
  }
  // a batch without cells gets no dispersion gradient
  const only0: CellBatch = { ...batch, batch: new Int32Array(B) };
  const d = slice(gb.layout, gb.gradient(only0, noise, 0.7).grad, 'px_r');
  for (let g = 0; g < G; g++) for (let b = 1; b < K; b++) assert.equal(d[g * K + b], 0);
});

for (const lik of ['gaussian', 'nb'] as const) {
  test(`whole model (${lik}, gene-batch dispersion, 2 layers): gradient matches finite differences of the loss`, () => {
    const rng = new Rng(99, lik.length);
    const cfg = defaultModelConfig(G, K, {
      nHidden: 6,
      nLatent: 2,
      nLayers: 2,
      dropoutRate: 0.2,
      likelihood: lik,
      dispersion: 'gene-batch',
    });
    const model = createModel(cfg);
    const params = initParams(cfg, 3);
    const batch = randomBatch(rng);
    const noise = microbatchNoise(cfg, 2, 0, 0, B);
    model.setParams(params);
    const g = model.gradient(batch, noise, 0.5);
    const f = () => {
      model.setParams(params);
      return model.gradient(batch, noise, 0.5).lossSum;
    };
    // one entry of every parameter tensor, plus all of px_r
    for (const e of model.layout.entries) {
      const ks = e.name === 'px_r' ? Array.from({ length: e.size }, (_, i) => i) : [rng.int(e.size)];
      for (const k of ks) {
        const x = params[e.offset + k]!;
        const h = 1e-3; // small: BatchNorm over 5 cells and ReLU make the loss curve sharply
        params[e.offset + k] = x + h;
        const up = f();
        params[e.offset + k] = x - h;
        const down = f();
        params[e.offset + k] = x;
        const num = (up - down) / (2 * h);
        const an = g.grad[e.offset + k]!;
        assert.ok(
          Math.abs(an - num) <= 5e-3 + 1e-2 * Math.abs(num),
          `${e.name}[${k}]: analytic ${an}, finite difference ${num}`,
        );
      }
    }
  });
}

for (const lik of ['nb', 'zinb'] as const) {
  test(`fast ${lik} kernel equals the direct scvi form (values and gradients), including extreme dropout logits`, () => {
    const rng = new Rng(5, lik.length);
    const cfg = defaultModelConfig(G, K, { likelihood: lik, dispersion: 'gene-batch' });
    const batch = randomBatch(rng);
    const logits = randomArray(rng, B * G, 2);
    const drop = lik === 'zinb' ? randomArray(rng, B * G, 3) : null;
    if (drop) {
      drop[0] = -40;
      drop[1] = 40;
      drop[G + 2] = -35;
    }
    const pxr = randomArray(rng, G * K, 1.5);
    const inp = { cfg, batch, logits, dropLogits: drop, pxr, needGrad: true };
    const fast = likelihood(inp);
    const ref = negativeBinomialReference(inp);
    const same = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
      for (let k = 0; k < a.length; k++)
        assert.ok(
          Math.abs(a[k]! - b[k]!) <= 1e-7 + 1e-6 * Math.abs(b[k]!),
          `${what}[${k}]: ${a[k]} vs ${b[k]}`,
        );
    };
    same(fast.rec, ref.rec, 'rec');
    same(fast.dLogits!, ref.dLogits!, 'dLogits');
    same(fast.dPxr!, ref.dPxr!, 'dPxr');
    if (drop) same(fast.dDrop!, ref.dDrop!, 'dDrop');
  });
}
