// Held-out evaluation helpers of the in-process model: the validation ELBO per cell (what the
// training loop records at each epoch's end) and posterior means. Training itself is the one loop
// (loop.ts) over an executor (in-process-executor.ts, or the coordinator's fleet).
import type { CellSource } from '../batch.js';
import { validationNoise } from '../model/noise.js';
import type { VaeModel } from '../model/vae.js';

export interface ElboSummary {
  elbo: number;
  reconstruction: number;
  kl: number;
}

/**
 * Validation ELBO per cell: evaluation mode, z sampled with noise keyed by (seed, epoch, chunk).
 * `evalBatch` cells go through the model at a time (default: a whole chunk): evaluation mode makes
 * each cell's terms independent of its neighbours, and each sub-batch takes its rows of the
 * chunk's noise, so the result does not depend on it; a small one bounds the memory the
 * evaluation needs (the coordinator's held-out ELBO on a large atlas).
 */
export async function validationElbo(
  model: VaeModel,
  source: CellSource,
  cells: Uint32Array,
  seed: number,
  epoch: number,
  chunk = 1024,
  evalBatch = chunk,
): Promise<ElboSummary> {
  if (cells.length === 0) return { elbo: NaN, reconstruction: NaN, kl: NaN };
  const L = model.config.nLatent;
  let rec = 0;
  let kl = 0;
  for (let c = 0, start = 0; start < cells.length; c++, start += chunk) {
    const end = Math.min(start + chunk, cells.length);
    const noise = validationNoise(model.config, seed, epoch, c, end - start);
    for (let s = start; s < end; s += evalBatch) {
      const e = Math.min(s + evalBatch, end);
      const batch = await source.getCells(cells.subarray(s, e));
      const terms = model.evaluate(batch, noise.subarray((s - start) * L, (e - start) * L));
      for (let i = 0; i < batch.nCells; i++) {
        rec += terms.reconstruction[i]!;
        kl += terms.kl[i]!;
      }
    }
  }
  return { elbo: (rec + kl) / cells.length, reconstruction: rec / cells.length, kl: kl / cells.length };
}

/** Posterior means q_m (evaluation mode) of `cells`, [cells.length, nLatent]. */
export async function latentMeans(
  model: VaeModel,
  source: CellSource,
  cells: ArrayLike<number>,
  chunk = 1024,
): Promise<Float32Array> {
  const L = model.config.nLatent;
  const out = new Float32Array(cells.length * L);
  const idx = Uint32Array.from(cells);
  for (let start = 0; start < idx.length; start += chunk) {
    const batch = await source.getCells(idx.subarray(start, Math.min(start + chunk, idx.length)));
    out.set(model.encode(batch).qm, start * L);
  }
  return out;
}
