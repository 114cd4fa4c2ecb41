// Where inference runs. Results code sends an InferenceEngine requests (shared/model/inference:
// encode, evaluate, marginal, normalize) chunk by chunk; the local engine runs the model in this
// process, the fleet engine (fleet.ts) hands the same requests to WebSocket workers. Requests are
// pure functions of (parameters, buffers, cells, keys), so the answer does not depend on the engine.

import type { CellBatch, ModelConfig } from '@atlasvae/shared';
import {
  type VaeModelApi,
  type CellTerms,
  runInference,
  type InferOutput,
  type InferRequest,
} from '@atlasvae/shared/model';

export interface InferenceEngine {
  readonly config: ModelConfig;
  /** how many chunks callers should keep in flight */
  readonly parallelism: number;
  /** where the work runs, for logs and reports (e.g. "local wasm", "3 workers") */
  describe(): string;
  run(batch: CellBatch, req: InferRequest): Promise<InferOutput>;
  close(): Promise<void>;
}

const BASE: Omit<InferRequest, 'op'> = {
  seed: 0,
  chunk: 0,
  noiseEpoch: -1,
  samples: 0,
  transformBatch: -1,
  genes: null,
};

/** Posterior means and variances, [nCells, nLatent] each. */
export async function encodeCells(
  engine: InferenceEngine,
  batch: CellBatch,
): Promise<{ qm: Float32Array; qv: Float32Array }> {
  const { f32 } = await engine.run(batch, { ...BASE, op: 'encode' });
  const half = f32.length / 2;
  return { qm: f32.subarray(0, half), qv: f32.subarray(half) };
}

/** Evaluation-mode reconstruction and KL per cell; ε from the trainer's validation noise (seed, epoch, chunk), or z = q_m when `noise` is null. */
export async function evaluateCells(
  engine: InferenceEngine,
  batch: CellBatch,
  noise: { seed: number; epoch: number } | null,
  chunk: number,
): Promise<CellTerms> {
  const { f32 } = await engine.run(batch, {
    ...BASE,
    op: 'evaluate',
    seed: noise?.seed ?? 0,
    noiseEpoch: noise ? noise.epoch : -1,
    chunk,
  });
  return { reconstruction: f32.subarray(0, batch.nCells), kl: f32.subarray(batch.nCells) };
}

export async function marginalCells(
  engine: InferenceEngine,
  batch: CellBatch,
  samples: number,
  seed: number,
  chunk: number,
): Promise<Float64Array> {
  return (await engine.run(batch, { ...BASE, op: 'marginal', samples, seed, chunk })).f64;
}

export async function normalizedCells(
  engine: InferenceEngine,
  batch: CellBatch,
  o: { samples: number; seed: number; chunk: number; transformBatch?: number; genes?: Int32Array },
): Promise<Float32Array> {
  const req: InferRequest = {
    ...BASE,
    op: 'normalize',
    samples: o.samples,
    seed: o.seed,
    chunk: o.chunk,
    transformBatch: o.transformBatch ?? -1,
    genes: o.genes ?? null,
  };
  return (await engine.run(batch, req)).f32;
}

/** Runs the model in this process. */
export class LocalEngine implements InferenceEngine {
  readonly parallelism = 1;
  constructor(
    private readonly model: VaeModelApi,
    private readonly backend = 'local',
  ) {}

  get config(): ModelConfig {
    return this.model.config;
  }

  describe(): string {
    return `in-process (${this.backend})`;
  }

  async run(batch: CellBatch, req: InferRequest): Promise<InferOutput> {
    return runInference(this.model, batch, req);
  }

  async close(): Promise<void> {
    this.model.dispose();
  }
}
