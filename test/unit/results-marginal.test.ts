// The importance-sampled marginal likelihood checked against a model whose log p(x) is known in
// closed form: linear-Gaussian, p(z) = N(0, I), p(x|z) = N(W z + b, σ² I), so p(x) = N(b, W Wᵀ + σ² I)
// and the exact posterior is Gaussian. It implements the model contract's inference methods.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { densify, type CellBatch, defaultModelConfig, Rng } from '@atlasvae/shared';
import { type VaeModelApi, type CellTerms, marginalLogLikelihood } from '@atlasvae/shared/model';

const G = 4,
  L = 2,
  SIGMA2 = 0.5;
const W = [
  [1, 0.5],
  [-0.3, 1.2],
  [0.8, -0.7],
  [0.2, 0.1],
];
const B = [1, 2, 0.5, 3];

function cholesky(a: number[][]): number[][] {
  const n = a.length;
  const l = a.map(() => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = a[i]![j]!;
      for (let k = 0; k < j; k++) s -= l[i]![k]! * l[j]![k]!;
      l[i]![j] = i === j ? Math.sqrt(s) : s / l[j]![j]!;
    }
  return l;
}

/** log N(x; mean, cov) */
function logNormal(x: number[], mean: number[], cov: number[][]): number {
  const l = cholesky(cov);
  const n = x.length;
  const y = new Array<number>(n).fill(0); // L y = x − mean
  for (let i = 0; i < n; i++) {
    let s = x[i]! - mean[i]!;
    for (let k = 0; k < i; k++) s -= l[i]![k]! * y[k]!;
    y[i] = s / l[i]![i]!;
  }
  let logDet = 0;
  for (let i = 0; i < n; i++) logDet += 2 * Math.log(l[i]![i]!);
  return -0.5 * (y.reduce((s, v) => s + v * v, 0) + logDet + n * Math.log(2 * Math.PI));
}

/** exact posterior: precision P = I + Wᵀ W / σ², mean = P⁻¹ Wᵀ (x − b) / σ² (L = 2: invert directly) */
function posterior(x: number[]): { mean: number[]; cov: number[][] } {
  const p = [
    [1, 0],
    [0, 1],
  ];
  for (let a = 0; a < L; a++)
    for (let c = 0; c < L; c++) for (let g = 0; g < G; g++) p[a]![c]! += (W[g]![a]! * W[g]![c]!) / SIGMA2;
  const det = p[0]![0]! * p[1]![1]! - p[0]![1]! * p[1]![0]!;
  const cov = [
    [p[1]![1]! / det, -p[0]![1]! / det],
    [-p[1]![0]! / det, p[0]![0]! / det],
  ];
  const r = [0, 0];
  for (let a = 0; a < L; a++) for (let g = 0; g < G; g++) r[a]! += (W[g]![a]! * (x[g]! - B[g]!)) / SIGMA2;
  return {
    mean: [cov[0]![0]! * r[0]! + cov[0]![1]! * r[1]!, cov[1]![0]! * r[0]! + cov[1]![1]! * r[1]!],
    cov,
  };
}

/** Linear-Gaussian model; `inflate` widens the encoder's variances (an inexact posterior) and
 * its means ignore posterior correlation (diagonal q, like the VAE's). */
function linearGaussianModel(inflate: number, diagonalExact: boolean): VaeModelApi {
  const cfg = defaultModelConfig(G, 1, { nLatent: L, likelihood: 'gaussian' });
  const unused = (): never => {
    throw new Error('not used by the marginal likelihood');
  };
  return {
    config: cfg,
    layout: { entries: [], size: 0 },
    bufferLayout: { entries: [], size: 0 },
    setParams: unused,
    getParams: unused,
    setBuffers: unused,
    getBuffers: unused,
    gradient: unused,
    evaluate: (): CellTerms => unused(),
    decodeScale: unused,
    dispose: () => {},
    encode(batch: CellBatch) {
      const x = densify(batch);
      const qm = new Float32Array(batch.nCells * L);
      const qv = new Float32Array(batch.nCells * L);
      for (let i = 0; i < batch.nCells; i++) {
        const post = posterior(Array.from(x.subarray(i * G, (i + 1) * G)));
        for (let a = 0; a < L; a++) {
          qm[i * L + a] = post.mean[a]!;
          // the diagonal of the exact covariance, or its conditional variance (exact when W's columns are orthogonal)
          qv[i * L + a] =
            (diagonalExact ? post.cov[a]![a]! : 1 / (1 + W.reduce((s, w) => s + w[a]! * w[a]!, 0) / SIGMA2)) *
            inflate;
        }
      }
      return { qm, qv };
    },
    logLikelihood(batch: CellBatch, z: Float32Array) {
      const x = densify(batch);
      const out = new Float32Array(batch.nCells);
      for (let i = 0; i < batch.nCells; i++) {
        let s = 0;
        for (let g = 0; g < G; g++) {
          let mu = B[g]!;
          for (let a = 0; a < L; a++) mu += W[g]![a]! * z[i * L + a]!;
          s += -0.5 * ((x[i * G + g]! - mu) ** 2 / SIGMA2 + Math.log(2 * Math.PI * SIGMA2));
        }
        out[i] = s;
      }
      return out;
    },
  };
}

function denseBatch(rows: number[][]): CellBatch {
  const n = rows.length;
  const indptr = new Int32Array(n + 1);
  const indices: number[] = [];
  const counts: number[] = [];
  rows.forEach((r, i) => {
    r.forEach((v, g) => {
      indices.push(g);
      counts.push(v);
    });
    indptr[i + 1] = indices.length;
  });
  return {
    nCells: n,
    nGenes: G,
    indptr,
    indices: Int32Array.from(indices),
    counts: Float32Array.from(counts),
    library: Float32Array.from(rows.map((r) => r.reduce((a, b) => a + b, 0))),
    batch: new Int32Array(n),
    label: new Int32Array(n).fill(-1),
    cellIndex: Uint32Array.from(rows.map((_, i) => i)),
  };
}

const rng = new Rng(11);
const cells = Array.from({ length: 6 }, () => B.map((b) => b + 2 * rng.normal()));
const truth = cells.map((x) => {
  const cov = W.map((wi, i) => W.map((wj, j) => wi[0]! * wj[0]! + wi[1]! * wj[1]! + (i === j ? SIGMA2 : 0)));
  return logNormal(x, B, cov);
});

test('importance sampling converges to the closed-form log p(x) with an inexact posterior', () => {
  const model = linearGaussianModel(1.6, false);
  const est = marginalLogLikelihood(model, denseBatch(cells), 4000, 1, 0);
  for (let i = 0; i < cells.length; i++) {
    assert.ok(Math.abs(est[i]! - truth[i]!) < 0.02, `cell ${i}: ${est[i]} vs ${truth[i]}`);
  }
  // averaged over many draws, the S-sample estimate is a bound that tightens with S (IWAE):
  // E[S=1] (the ELBO) < E[S=8] < log p(x)
  const meanEstimate = (S: number): number => {
    let tot = 0;
    for (let r = 0; r < 300; r++)
      tot += marginalLogLikelihood(model, denseBatch(cells), S, 2, r).reduce((a, b) => a + b, 0);
    return tot / 300;
  };
  const trueSum = truth.reduce((a, b) => a + b, 0);
  const e1 = meanEstimate(1),
    e8 = meanEstimate(8);
  assert.ok(e1 < e8 && e8 < trueSum, `E[S=1] ${e1} < E[S=8] ${e8} < log p(x) ${trueSum}`);
});

test('is deterministic in (seed, chunk) and changes with either', () => {
  const model = linearGaussianModel(1.6, false);
  const b = denseBatch(cells);
  assert.deepEqual(marginalLogLikelihood(model, b, 20, 3, 7), marginalLogLikelihood(model, b, 20, 3, 7));
  assert.notDeepEqual(marginalLogLikelihood(model, b, 20, 3, 7), marginalLogLikelihood(model, b, 20, 3, 8));
});
