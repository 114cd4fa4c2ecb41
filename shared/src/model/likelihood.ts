// Fused likelihood kernels: one pass per cell over its genes computes −log p(x | z) and, when asked,
// its gradient with respect to the decoder head's logits, the ZINB dropout logits and px_r.
// The lgamma/digamma terms of NB and ZINB are evaluated only at nonzero counts (for integer x they
// cancel where x = 0). Arithmetic in float64, results stored as float32.
import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';
import {
  digammaScalar,
  digammaShiftDiff,
  fastExp,
  lgammaScalar,
  lgammaShiftDiff,
  logFactorial,
} from './special.js';

/** eps inside the logs, as scvi's log_nb_positive / log_zinb_positive */
export const LIKELIHOOD_EPS = 1e-8;
const LOG_2PI = Math.log(2 * Math.PI);

export interface LikelihoodInput {
  cfg: ModelConfig;
  batch: CellBatch;
  /** [nCells, nGenes] scale-head logits (before softmax); for gaussian the mean of log1p(x) */
  logits: Float32Array;
  /** [nCells, nGenes] zinb dropout logits, else null */
  dropLogits: Float32Array | null;
  /** px_r slice ([G] or [G, nBatch]) or null for poisson */
  pxr: Float32Array | null;
  needGrad: boolean;
  /** write dLogits/dDrop as [nGenes, nCells] (what the backward products want) instead of [nCells, nGenes] */
  transposedGrads?: boolean;
}

export interface LikelihoodOutput {
  /** −log p(x | z) per cell */
  rec: Float64Array;
  /** d Σ rec / d logits ([nCells, nGenes], or [nGenes, nCells] with transposedGrads) */
  dLogits: Float32Array | null;
  dDrop: Float32Array | null;
  /** d Σ rec / d px_r, in px_r's layout */
  dPxr: Float64Array | null;
}

/** Per-(batch row, gene) tables of dispersion terms: row r = batch code for gene-batch, else row 0. */
interface DispersionTables {
  rows: number;
  theta: Float64Array;
  logThetaEps: Float64Array;
  thetaOverThetaEps: Float64Array;
  lgTheta: Float64Array;
  dgTheta: Float64Array;
}

function dispersionTables(cfg: ModelConfig, pxr: Float32Array, withDigamma: boolean): DispersionTables {
  const G = cfg.nGenes;
  const rows = cfg.dispersion === 'gene-batch' ? cfg.nBatch : 1;
  const n = rows * G;
  const t: DispersionTables = {
    rows,
    theta: new Float64Array(n),
    logThetaEps: new Float64Array(n),
    thetaOverThetaEps: new Float64Array(n),
    lgTheta: new Float64Array(n),
    dgTheta: new Float64Array(withDigamma ? n : 0),
  };
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < G; g++) {
      const raw = rows === 1 ? pxr[g]! : pxr[g * rows + r]!;
      const th = Math.exp(raw);
      const j = r * G + g;
      t.theta[j] = th;
      t.logThetaEps[j] = Math.log(th + LIKELIHOOD_EPS);
      t.thetaOverThetaEps[j] = th / (th + LIKELIHOOD_EPS);
      t.lgTheta[j] = lgammaScalar(th);
      if (withDigamma) t.dgTheta[j] = digammaScalar(th);
    }
  }
  return t;
}

/** exp(logit − row max) of row `i` of logits into `out`; returns their sum (the softmax denominator) */
function expRow(logits: Float32Array, i: number, G: number, out: Float64Array): number {
  const o = i * G;
  let max = -Infinity;
  for (let g = 0; g < G; g++) if (logits[o + g]! > max) max = logits[o + g]!;
  let sum = 0;
  for (let g = 0; g < G; g++) {
    const e = fastExp(logits[o + g]! - max);
    out[g] = e;
    sum += e;
  }
  return sum;
}

/** softmax of row `i` of logits into `out` */
function softmaxRow(logits: Float32Array, i: number, G: number, out: Float64Array): void {
  const inv = 1 / expRow(logits, i, G, out);
  for (let g = 0; g < G; g++) out[g]! *= inv;
}

function softplus(v: number): number {
  return v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
}

function sigmoid(v: number): number {
  return v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
}

export function likelihood(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg } = inp;
  switch (cfg.likelihood) {
    case 'nb':
      return negativeBinomialFast(inp);
    case 'zinb':
      return zeroInflatedFast(inp);
    case 'poisson':
      return poisson(inp);
    case 'gaussian':
      return gaussian(inp);
    default:
      throw new Error(`unknown likelihood ${String(cfg.likelihood)}`);
  }
}

/** strides (per cell, per gene) of the gradient outputs */
function gradStrides(inp: LikelihoodInput): [number, number] {
  return inp.transposedGrads ? [1, inp.batch.nCells] : [inp.cfg.nGenes, 1];
}

function dispersionRow(cfg: ModelConfig, batch: CellBatch, i: number): number {
  return cfg.dispersion === 'gene-batch' ? batch.batch[i]! : 0;
}

/** Fold per-(row, gene) dispersion gradients back into px_r's layout ([G] or [G, nBatch]). */
function toPxrLayout(cfg: ModelConfig, acc: Float64Array, rows: number): Float64Array {
  if (rows === 1) return acc;
  const G = cfg.nGenes;
  const out = new Float64Array(G * rows);
  for (let r = 0; r < rows; r++) for (let g = 0; g < G; g++) out[g * rows + r] = acc[r * G + g]!;
  return out;
}

/**
 * NB in two passes per cell: a branch-free dense pass treating every count as 0 (one exp, one log and
 * one division per gene), then a correction at the nonzero counts only.
 */
function negativeBinomialFast(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const G = cfg.nGenes;
  const B = batch.nCells;
  const [si, sg] = gradStrides(inp);
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const theta = tab.theta;
  const lte = tab.logThetaEps;
  const tte = tab.thetaOverThetaEps;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const lthmuRow = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    const invSum = 1 / expRow(logits, i, G, s);
    const muScale = batch.library[i]! * invSum;
    const off = dispersionRow(cfg, batch, i) * G;
    let ll = 0;
    let sumB = 0;
    if (needGrad) {
      for (let g = 0; g < G; g++) {
        const mu = s[g]! * muScale;
        const th = theta[off + g]!;
        const denom = th + mu + EPS;
        const lthmu = Math.log(denom);
        lthmuRow[g] = lthmu;
        const d = lte[off + g]! - lthmu;
        ll += th * d;
        const thInv = th / denom;
        const b = -mu * thInv;
        bb[g] = b;
        sumB += b;
        dPxr![off + g]! -= (d + tte[off + g]! - thInv) * th;
      }
    } else {
      for (let g = 0; g < G; g++) {
        const th = theta[off + g]!;
        const lthmu = Math.log(th + s[g]! * muScale + EPS);
        lthmuRow[g] = lthmu;
        ll += th * (lte[off + g]! - lthmu);
      }
    }
    for (let p = indptr[i]!; p < indptr[i + 1]!; p++) {
      const x = counts[p]!;
      if (!(x > 0)) continue;
      const g = indices[p]!;
      const j = off + g;
      const mu = s[g]! * muScale;
      const th = theta[j]!;
      const lthmu = lthmuRow[g]!;
      ll += x * (Math.log(mu + EPS) - lthmu) + lgammaShiftDiff(x, th, tab.lgTheta[j]!) - logFactorial(x);
      if (needGrad) {
        const inv = 1 / (th + mu + EPS);
        const b = mu * (x / (mu + EPS) - x * inv);
        bb[g]! += b;
        sumB += b;
        dPxr![j]! -= (-x * inv + digammaShiftDiff(x, th, tab.dgTheta[j]!)) * th;
      }
    }
    rec[i] = -ll;
    if (needGrad) {
      const dl = dLogits!;
      const c = sumB * invSum;
      const gi = i * si;
      for (let g = 0; g < G; g++) dl[gi + g * sg] = s[g]! * c - bb[g]!;
    }
  }
  return { rec, dLogits, dDrop: null, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}

/**
 * ZINB in one pass per cell with few transcendentals: with q = e^(−π) and r = (θ/(θ+μ))^θ (as
 * exp(θ(log(θ+eps) − log(θ+μ+eps)))), a zero count has log p = log((1 + q r)/(1 + q)), and
 * sigmoid(t) = q r/(1 + q r), sigmoid(−π) = q/(1 + q) come for free. Very negative π (q overflowing)
 * falls back to the softplus forms.
 */
function zeroInflatedFast(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const drop = inp.dropLogits;
  if (!drop) throw new Error('zinb needs dropout logits');
  const G = cfg.nGenes;
  const B = batch.nCells;
  const [si, sg] = gradStrides(inp);
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const theta = tab.theta;
  const lte = tab.logThetaEps;
  const tte = tab.thetaOverThetaEps;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dDrop = needGrad ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    const ro = i * G;
    const invSum = 1 / expRow(logits, i, G, s);
    const muScale = batch.library[i]! * invSum;
    const off = dispersionRow(cfg, batch, i) * G;
    let p = indptr[i]!;
    const end = indptr[i + 1]!;
    let next = p < end ? indices[p]! : G;
    let ll = 0;
    let sumB = 0;
    for (let g = 0; g < G; g++) {
      const mu = s[g]! * muScale;
      const j = off + g;
      const th = theta[j]!;
      const denom = th + mu + EPS;
      const lthmu = Math.log(denom);
      const d = lte[j]! - lthmu;
      const pi = drop[ro + g]!;
      let x = 0;
      if (g === next) {
        x = counts[p]!;
        p++;
        next = p < end ? indices[p]! : G;
      }
      const thInv = th / denom;
      let b: number;
      let dth: number;
      let dpi: number;
      if (x > 0) {
        // −softplus(−π) − π = −softplus(π)
        const spPos = pi > 0 ? pi + Math.log1p(fastExp(-pi)) : Math.log1p(fastExp(pi));
        ll +=
          -spPos +
          th * d +
          x * (Math.log(mu + EPS) - lthmu) +
          lgammaShiftDiff(x, th, tab.lgTheta[j]!) -
          logFactorial(x);
        if (!needGrad) continue;
        const inv = 1 / denom;
        b = mu * (-thInv + x / (mu + EPS) - x * inv);
        dth = d + tte[j]! - thInv - x * inv + digammaShiftDiff(x, th, tab.dgTheta[j]!);
        dpi = 1 / (1 + fastExp(-pi)); // d(−log p)/dπ = sigmoid(π)
      } else {
        let sgT: number;
        let sgNegPi: number;
        if (pi > -30) {
          const q = fastExp(-pi);
          const qr = q * fastExp(th * d);
          ll += Math.log((1 + qr) / (1 + q));
          sgT = qr / (1 + qr);
          sgNegPi = q / (1 + q);
        } else {
          const t = -pi + th * d;
          ll += softplus(t) - softplus(-pi);
          sgT = sigmoid(t);
          sgNegPi = sigmoid(-pi);
        }
        if (!needGrad) continue;
        b = -mu * sgT * thInv;
        dth = sgT * (d + tte[j]! - thInv);
        dpi = sgT - sgNegPi;
      }
      bb[g] = b;
      sumB += b;
      dPxr![j]! -= dth * th;
      dDrop![i * si + g * sg] = dpi;
    }
    rec[i] = -ll;
    if (needGrad) {
      const dl = dLogits!;
      const c = sumB * invSum;
      const gi = i * si;
      for (let g = 0; g < G; g++) dl[gi + g * sg] = s[g]! * c - bb[g]!;
    }
  }
  return { rec, dLogits, dDrop, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}

/**
 * NB or ZINB written directly from scvi's log_nb_positive / log_zinb_positive, one branchy pass per
 * gene: the reference the fast kernels are tested against.
 */
export function negativeBinomialReference(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const [si, sg] = gradStrides(inp);
  const zinb = cfg.likelihood === 'zinb';
  const drop = inp.dropLogits;
  if (zinb && !drop) throw new Error('zinb needs dropout logits');
  const G = cfg.nGenes;
  const B = batch.nCells;
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dDrop = needGrad && zinb ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    softmaxRow(logits, i, G, s);
    const lib = batch.library[i]!;
    const off = dispersionRow(cfg, batch, i) * G;
    const ro = i * G;
    let p = indptr[i]!;
    const end = indptr[i + 1]!;
    let next = p < end ? indices[p]! : G;
    let ll = 0;
    let sumB = 0;
    for (let g = 0; g < G; g++) {
      const mu = lib * s[g]!;
      const j = off + g;
      const th = tab.theta[j]!;
      const denom = th + mu + EPS;
      const lthmu = Math.log(denom);
      const thTerm = th * (tab.logThetaEps[j]! - lthmu);
      let x = 0;
      if (g === next) {
        x = counts[p]!;
        p++;
        next = p < end ? indices[p]! : G;
      }
      const pi = zinb ? drop![ro + g]! : 0;
      const spNegPi = zinb ? softplus(-pi) : 0;
      if (x > 0) {
        const lmu = Math.log(mu + EPS);
        const lg = lgammaShiftDiff(x, th, tab.lgTheta[j]!) - logFactorial(x);
        ll += thTerm + x * (lmu - lthmu) + lg + (zinb ? -spNegPi - pi : 0);
        if (needGrad) {
          const inv = 1 / denom;
          const dmu = -th * inv + x / (mu + EPS) - x * inv;
          const dth =
            tab.logThetaEps[j]! -
            lthmu +
            tab.thetaOverThetaEps[j]! -
            th * inv -
            x * inv +
            digammaShiftDiff(x, th, tab.dgTheta[j]!);
          const b = mu * dmu;
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= dth * th;
          if (zinb) dDrop![i * si + g * sg] = sigmoid(pi); // −(sigmoid(−π) − 1)
        }
      } else if (zinb) {
        const t = -pi + thTerm;
        ll += softplus(t) - spNegPi;
        if (needGrad) {
          const inv = 1 / denom;
          const sgm = sigmoid(t);
          const b = mu * (-sgm * th * inv);
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= sgm * (tab.logThetaEps[j]! - lthmu + tab.thetaOverThetaEps[j]! - th * inv) * th;
          dDrop![i * si + g * sg] = sgm - sigmoid(-pi);
        }
      } else {
        ll += thTerm;
        if (needGrad) {
          const inv = 1 / denom;
          const b = -mu * th * inv;
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= (tab.logThetaEps[j]! - lthmu + tab.thetaOverThetaEps[j]! - th * inv) * th;
        }
      }
    }
    rec[i] = -ll;
    if (needGrad) for (let g = 0; g < G; g++) dLogits![i * si + g * sg] = -(bb[g]! - s[g]! * sumB);
  }
  return { rec, dLogits, dDrop, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}

function poisson(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const [si, sg] = gradStrides(inp);
  const G = cfg.nGenes;
  const B = batch.nCells;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const s = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    softmaxRow(logits, i, G, s);
    const lib = batch.library[i]!;
    // Σ_g (x log μ − μ − log x!) with Σ_g μ = lib
    let ll = -lib;
    let xSum = 0;
    for (let p = indptr[i]!; p < indptr[i + 1]!; p++) {
      const x = counts[p]!;
      if (x === 0) continue;
      ll += x * Math.log(lib * s[indices[p]!]!) - logFactorial(x);
      xSum += x;
    }
    rec[i] = -ll;
    if (needGrad) {
      // d rec/d logit_g = −(b_g − s_g Σ b) with b = x − μ
      const gi = i * si;
      const sumB = xSum - lib;
      for (let g = 0; g < G; g++) dLogits![gi + g * sg] = lib * s[g]! + s[g]! * sumB;
      for (let p = indptr[i]!; p < indptr[i + 1]!; p++) dLogits![gi + indices[p]! * sg]! -= counts[p]!;
    }
  }
  return { rec, dLogits, dDrop: null, dPxr: null };
}

function gaussian(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const [si, sg] = gradStrides(inp);
  const G = cfg.nGenes;
  const B = batch.nCells;
  const pxr = inp.pxr!;
  const rows = cfg.dispersion === 'gene-batch' ? cfg.nBatch : 1;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(G * rows) : null;
  const y = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    y.fill(0);
    for (let p = indptr[i]!; p < indptr[i + 1]!; p++) y[indices[p]!] = Math.log1p(counts[p]!);
    const r = dispersionRow(cfg, batch, i);
    const ro = i * G;
    let nll = 0;
    for (let g = 0; g < G; g++) {
      const k = rows === 1 ? g : g * rows + r;
      const logVar = pxr[k]!;
      const invVar = Math.exp(-logVar);
      const d = y[g]! - logits[ro + g]!;
      const q = d * d * invVar;
      nll += 0.5 * (q + logVar + LOG_2PI);
      if (needGrad) {
        dLogits![i * si + g * sg] = -d * invVar;
        dPxr![k]! += 0.5 * (1 - q);
      }
    }
    rec[i] = nll;
  }
  return { rec, dLogits, dDrop: null, dPxr };
}

/** Normalised expression per cell (rows sum to 1) from the head's logits. */
export function scaleFromLogits(cfg: ModelConfig, logits: Float32Array, nCells: number): Float32Array {
  const G = cfg.nGenes;
  const out = new Float32Array(nCells * G);
  const row = new Float64Array(G);
  for (let i = 0; i < nCells; i++) {
    if (cfg.likelihood === 'gaussian') {
      // the head predicts log1p expression: normalise expm1 of it
      let sum = 0;
      for (let g = 0; g < G; g++) {
        const v = Math.expm1(Math.max(0, logits[i * G + g]!));
        row[g] = v;
        sum += v;
      }
      for (let g = 0; g < G; g++) row[g] = sum > 0 ? row[g]! / sum : 1 / G;
    } else softmaxRow(logits, i, G, row);
    for (let g = 0; g < G; g++) out[i * G + g] = row[g]!;
  }
  return out;
}
