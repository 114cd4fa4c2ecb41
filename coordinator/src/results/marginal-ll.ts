// Importance-sampled marginal log-likelihood, as scvi-tools' get_marginal_ll: with the encoder's
// q(z|x) as proposal,  log p(x) ≈ logsumexp_s [log p(x|z_s) + log p(z_s) − log q(z_s|x)] − log S.
// (scvi reports its negative; we report log p(x) itself so it compares directly to the ELBO.)
// The estimate is a lower bound that tightens with S and, in expectation, is never below the ELBO.

import type { CellBatch } from '@atlasvae/shared/batch';
import type { VaeModelApi } from '@atlasvae/shared/model/types';
import { Rng } from '@atlasvae/shared/rng';

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);
export const MARGINAL_STREAM = 0x4d4c4c4b; // "MLLK"

/**
 * Per-cell log p(x) estimates for one batch. The noise comes from Rng(MARGINAL_STREAM, seed, chunk),
 * so a result depends only on (seed, chunk, model, cells).
 */
export function marginalLogLikelihood(
  model: VaeModelApi,
  batch: CellBatch,
  samples: number,
  seed: number,
  chunk: number,
): Float64Array {
  if (!(samples >= 1)) throw new Error('marginal log-likelihood needs at least one sample');
  const n = batch.nCells;
  const L = model.config.nLatent;
  const { qm, qv } = model.encode(batch);
  const logDetQ = new Float64Array(n); // Σ_d 0.5·log q_v per cell
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < L; d++) s += 0.5 * Math.log(qv[i * L + d]!);
    logDetQ[i] = s;
  }
  const rng = new Rng(MARGINAL_STREAM, seed, chunk);
  const eps = new Float32Array(n * L);
  const z = new Float32Array(n * L);
  // running logsumexp per cell: max and Σ exp(w − max)
  const runMax = new Float64Array(n).fill(-Infinity);
  const runSum = new Float64Array(n);
  for (let s = 0; s < samples; s++) {
    rng.fillNormal(eps);
    for (let t = 0; t < n * L; t++) z[t] = qm[t]! + Math.sqrt(qv[t]!) * eps[t]!;
    const logPx = model.logLikelihood(batch, z);
    for (let i = 0; i < n; i++) {
      let logPz = 0;
      let logQz = 0;
      for (let d = 0; d < L; d++) {
        const zi = z[i * L + d]!;
        const e = eps[i * L + d]!;
        logPz -= 0.5 * zi * zi + HALF_LOG_2PI;
        // log N(z; m, v) with z − m = sqrt(v)·ε
        logQz -= 0.5 * e * e + HALF_LOG_2PI;
      }
      logQz -= logDetQ[i]!;
      const w = logPx[i]! + logPz - logQz;
      if (w > runMax[i]!) {
        runSum[i] = runSum[i]! * Math.exp(runMax[i]! - w) + 1;
        runMax[i] = w;
      } else {
        runSum[i]! += Math.exp(w - runMax[i]!);
      }
    }
  }
  const out = new Float64Array(n);
  const logS = Math.log(samples);
  for (let i = 0; i < n; i++) out[i] = runMax[i]! + Math.log(runSum[i]!) - logS;
  return out;
}
