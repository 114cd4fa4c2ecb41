// The model's contract with the rest of the system (trainer, coordinator, workers, results).
// Every trainable parameter lives in one flat Float32Array with named slices: the wire format.

import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';

export interface ParamEntry {
  /** PyTorch-style name, e.g. `enc.lin.weight`, `px_r` */
  name: string;
  /** shape in PyTorch layout ([out, in] for Linear weights) */
  shape: number[];
  offset: number;
  size: number;
}

export interface ParamLayout {
  entries: ParamEntry[];
  /** total number of floats */
  size: number;
}

/** Per-microbatch randomness, drawn in JS from (seed, step, microbatch) so any process reproduces it. */
export interface MicrobatchNoise {
  /** reparametrization noise ε, [nCells, nLatent] row-major */
  eps: Float32Array;
  /** encoder dropout masks, one per encoder hidden layer, [nCells, nHidden], values 0 or 1/(1-p); null when dropout is 0 */
  dropout: Float32Array[] | null;
}

/** What a worker returns for one microbatch. */
export interface MicrobatchGradient {
  /** d(Σ over cells of loss_i)/dθ: summed, not averaged; length = parameter layout size */
  grad: Float32Array;
  nCells: number;
  /** Σ over cells of −log p(x|z) */
  reconstructionSum: number;
  /** Σ over cells of KL(q(z|x) ‖ N(0, I)) */
  klSum: number;
  /** Σ over cells of reconstruction + klWeight · KL */
  lossSum: number;
  /** BatchNorm batch statistics in buffer-layout order: per BN layer its batch mean then its
   * unbiased batch variance (what PyTorch folds into running_var) */
  bnStats: Float32Array;
}

/** Per-cell terms in evaluation mode. */
export interface CellTerms {
  reconstruction: Float32Array;
  kl: Float32Array;
}

export interface VaeModelApi {
  readonly config: ModelConfig;
  readonly layout: ParamLayout;
  /** BatchNorm running mean/var buffers (not trainable) */
  readonly bufferLayout: ParamLayout;
  setParams(flat: Float32Array): void;
  getParams(): Float32Array;
  setBuffers(flat: Float32Array): void;
  getBuffers(): Float32Array;
  /** Training mode (batch statistics, dropout from `noise`): summed gradient of one microbatch.
   * With `out`, the gradient and BatchNorm statistics are written into those arrays (returned as
   * `grad` and `bnStats`), e.g. straight into an outgoing message, instead of fresh ones. */
  gradient(
    batch: CellBatch,
    noise: MicrobatchNoise,
    klWeight: number,
    out?: GradientOutput,
  ): MicrobatchGradient;
  /** Evaluation mode (running statistics, no dropout). z = q_m + sqrt(q_v)·eps, or z = q_m when eps is null. */
  evaluate(batch: CellBatch, eps: Float32Array | null): CellTerms;
  /** Evaluation mode posterior q(z|x): means and variances, [nCells, nLatent]. */
  encode(batch: CellBatch): { qm: Float32Array; qv: Float32Array };
  /** log p(x|z) per cell for given latent samples z [nCells, nLatent] (evaluation mode). */
  logLikelihood(batch: CellBatch, z: Float32Array): Float32Array;
  /** Decoder output `scale` (softmax, rows sum to 1) for z [nCells, nLatent], with every cell's
   * batch replaced by `transformBatch` when given: [nCells, nGenes]. */
  decodeScale(batch: CellBatch, z: Float32Array, transformBatch?: number): Float32Array;
  dispose(): void;
}

/** Caller-owned arrays a gradient is written into: `grad` of the parameter layout's size, `bnStats` of the buffer layout's. */
export interface GradientOutput {
  grad: Float32Array;
  bnStats: Float32Array;
}
