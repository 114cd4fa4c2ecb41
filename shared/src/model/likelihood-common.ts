// What every likelihood kernel shares: the input/output contract, the dispersion tables (θ and its
// log/lgamma/digamma per batch row and gene), the per-row softmax and the gradient strides.
import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';
import { digammaScalar, fastExp, lgammaScalar } from './special.js';

/** eps inside the logs, as scvi's log_nb_positive / log_zinb_positive */
export const LIKELIHOOD_EPS = 1e-8;

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
export interface DispersionTables {
  rows: number;
  theta: Float64Array;
  logThetaEps: Float64Array;
  thetaOverThetaEps: Float64Array;
  lgTheta: Float64Array;
  dgTheta: Float64Array;
}

export function dispersionTables(
  cfg: ModelConfig,
  pxr: Float32Array,
  withDigamma: boolean,
): DispersionTables {
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
export function expRow(logits: Float32Array, i: number, G: number, out: Float64Array): number {
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
export function softmaxRow(logits: Float32Array, i: number, G: number, out: Float64Array): void {
  const inv = 1 / expRow(logits, i, G, out);
  for (let g = 0; g < G; g++) out[g]! *= inv;
}

/** strides (per cell, per gene) of the gradient outputs */
export function gradStrides(inp: LikelihoodInput): [number, number] {
  return inp.transposedGrads ? [1, inp.batch.nCells] : [inp.cfg.nGenes, 1];
}

export function dispersionRow(cfg: ModelConfig, batch: CellBatch, i: number): number {
  return cfg.dispersion === 'gene-batch' ? batch.batch[i]! : 0;
}

/** Fold per-(row, gene) dispersion gradients back into px_r's layout ([G] or [G, nBatch]). */
export function toPxrLayout(cfg: ModelConfig, acc: Float64Array, rows: number): Float64Array {
  if (rows === 1) return acc;
  const G = cfg.nGenes;
  const out = new Float64Array(G * rows);
  for (let r = 0; r < rows; r++) for (let g = 0; g < G; g++) out[g * rows + r] = acc[r * G + g]!;
  return out;
}
