// Fused likelihood kernels: one pass per cell over its genes computes −log p(x | z) and, when asked,
// its gradient with respect to the decoder head's logits, the ZINB dropout logits and px_r.
// The lgamma/digamma terms of NB and ZINB are evaluated only at nonzero counts (for integer x they
// cancel where x = 0). Arithmetic in float64, results stored as float32.
// This module dispatches on the likelihood and holds the two simple families (poisson, gaussian);
// nb and zinb are in likelihood-nb.ts, what all kernels share in likelihood-common.ts.
import type { ModelConfig } from '../config.js';
import {
  dispersionRow,
  gradStrides,
  softmaxRow,
  type LikelihoodInput,
  type LikelihoodOutput,
} from './likelihood-common.js';
import { negativeBinomialFast, zeroInflatedFast } from './likelihood-nb.js';
import { logFactorial } from './special.js';

export { LIKELIHOOD_EPS, type LikelihoodInput, type LikelihoodOutput } from './likelihood-common.js';
export { negativeBinomialReference } from './likelihood-nb.js';

const LOG_2PI = Math.log(2 * Math.PI);

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
