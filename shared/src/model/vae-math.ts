// Small per-cell transforms shared by the training pass (vae.ts) and the evaluation-mode passes
// (vae-evaluation.ts): dense log1p of the counts, the batch one-hot appended to decoder inputs, and
// the Gaussian KL per cell.
import type { CellBatch } from '../batch.js';

/** log1p of the counts as a dense [nCells, nGenes] matrix */
export function log1pDense(
  b: CellBatch,
  out: Float32Array = new Float32Array(b.nCells * b.nGenes),
): Float32Array {
  for (let i = 0; i < b.nCells; i++) {
    const row = i * b.nGenes;
    for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++) out[row + b.indices[k]!] = Math.log1p(b.counts[k]!);
  }
  return out;
}

/** [n × d] rows followed by the one-hot batch code: [n × (d + nBatch)] */
export function concatOneHot(
  x: Float32Array,
  n: number,
  d: number,
  batch: Int32Array,
  nBatch: number,
): Float32Array {
  const w = d + nBatch;
  const out = new Float32Array(n * w);
  for (let i = 0; i < n; i++) {
    out.set(x.subarray(i * d, (i + 1) * d), i * w);
    const b = batch[i]!;
    if (b < 0 || b >= nBatch)
      throw new RangeError(`batch code ${b} of cell ${i} is outside 0..${nBatch - 1}`);
    out[i * w + d + b] = 1;
  }
  return out;
}

/** KL(q(z | x) ‖ N(0, I)) per cell from the posterior means and variances [n × L] */
export function klPerCell(qm: Float32Array, qv: Float32Array, n: number, L: number): Float64Array {
  const kl = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let l = 0; l < L; l++) {
      const k = i * L + l;
      s += qv[k]! + qm[k]! * qm[k]! - 1 - Math.log(qv[k]!);
    }
    kl[i] = 0.5 * s;
  }
  return kl;
}
