// Where inference runs. Results code asks an InferenceEngine for per-chunk answers; the local
// engine runs the model in this process, a fleet engine can hand the same requests to workers.
// Requests are pure functions of (parameters, cells, explicit seeds), so the answer does not
// depend on which engine (or which worker) computed it.

import type { CellBatch } from '@atlasvae/shared/batch';
import type { VaeModelApi, CellTerms } from '@atlasvae/shared/model/types';
import type { ModelConfig } from '@atlasvae/shared/config';
import { Rng } from '@atlasvae/shared/rng';
import { marginalLogLikelihood } from './marginal-ll.js';

export interface NormalizeRequest {
  /** posterior samples averaged; 0 = use the posterior mean z = q_m */
  samples: number;
  /** decode every cell as if from this model batch code */
  transformBatch?: number;
  /** noise key */
  seed: number;
  chunk: number;
  /** gene indices to return (all genes when absent) */
  genes?: Int32Array;
}

export interface InferenceEngine {
  readonly config: ModelConfig;
  /** how many chunks callers should keep in flight */
  readonly parallelism: number;
  encode(batch: CellBatch): Promise<{ qm: Float32Array; qv: Float32Array }>;
  /** evaluation-mode reconstruction and KL per cell with the given ε (null: z = q_m) */
  evaluate(batch: CellBatch, eps: Float32Array | null): Promise<CellTerms>;
  marginalLogLikelihood(batch: CellBatch, samples: number, seed: number, chunk: number): Promise<Float64Array>;
  /** decoder scale (rows sum to 1 over all genes) at the selected genes, [nCells, nSelected] */
  normalizedScale(batch: CellBatch, req: NormalizeRequest): Promise<Float32Array>;
  close(): Promise<void>;
}

export const NORMALIZE_STREAM = 0x4e4f524d; // "NORM"

/** Decoder scale averaged over posterior samples (or at the mean), restricted to `genes`. */
export function normalizedScale(model: VaeModelApi, batch: CellBatch, req: NormalizeRequest): Float32Array {
  const n = batch.nCells;
  const G = model.config.nGenes;
  const L = model.config.nLatent;
  const sel = req.genes;
  const width = sel ? sel.length : G;
  const { qm, qv } = model.encode(batch);
  const out = new Float32Array(n * width);
  const draws = Math.max(1, req.samples);
  const rng = req.samples > 0 ? new Rng(NORMALIZE_STREAM, req.seed, req.chunk) : null;
  const z = new Float32Array(n * L);
  for (let s = 0; s < draws; s++) {
    if (rng) for (let t = 0; t < n * L; t++) z[t] = qm[t]! + Math.sqrt(qv[t]!) * rng.normal();
    else z.set(qm);
    const scale = model.decodeScale(batch, z, req.transformBatch);
    for (let i = 0; i < n; i++) {
      const row = i * G;
      const o = i * width;
      if (sel) for (let g = 0; g < width; g++) out[o + g]! += scale[row + sel[g]!]!;
      else for (let g = 0; g < G; g++) out[o + g]! += scale[row + g]!;
    }
  }
  if (draws > 1) for (let t = 0; t < out.length; t++) out[t]! /= draws;
  return out;
}

/** Runs the model in this process. */
export class LocalEngine implements InferenceEngine {
  readonly parallelism = 1;
  constructor(private readonly model: VaeModelApi) {}

  get config(): ModelConfig {
    return this.model.config;
  }

  async encode(batch: CellBatch): Promise<{ qm: Float32Array; qv: Float32Array }> {
    return this.model.encode(batch);
  }

  async evaluate(batch: CellBatch, eps: Float32Array | null): Promise<CellTerms> {
    return this.model.evaluate(batch, eps);
  }

  async marginalLogLikelihood(batch: CellBatch, samples: number, seed: number, chunk: number): Promise<Float64Array> {
    return marginalLogLikelihood(this.model, batch, samples, seed, chunk);
  }

  async normalizedScale(batch: CellBatch, req: NormalizeRequest): Promise<Float32Array> {
    return normalizedScale(this.model, batch, req);
  }

  async close(): Promise<void> {
    this.model.dispose();
  }
}
