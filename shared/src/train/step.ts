// One optimizer step from a list of microbatch gradients: the single place where gradients are
// combined, so the single-process trainer and the distributed coordinator agree by construction.
// Deterministic: microbatches are always folded in microbatch order, never arrival order.
import type { ModelConfig, TrainConfig } from '../config.js';
import { bufferLayout, initBuffers, initParams, paramLayout } from '../model/layout.js';
import type { MicrobatchGradient } from '../model/types.js';
import { adamStepSum, initAdam, type AdamState } from './adam.js';

export interface TrainingState {
  params: Float32Array;
  /** BatchNorm running statistics (buffer layout) */
  buffers: Float32Array;
  adam: AdamState;
  /** optimizer steps taken since the start of training */
  globalStep: number;
  /** current epoch (0-based) */
  epoch: number;
  /** steps already taken in the current epoch */
  stepInEpoch: number;
}

export interface StepSummary {
  globalStep: number;
  epoch: number;
  cells: number;
  /** means per cell over the step's cells */
  loss: number;
  reconstruction: number;
  kl: number;
  /** L2 norm of the mean gradient (before weight decay) */
  gradNorm: number;
  /** milliseconds summing the microbatch gradients, and in Adam + BatchNorm merge (step-time metrics) */
  aggregationMs: number;
  optimizerMs: number;
}

export function initTrainingState(modelCfg: ModelConfig, seed: number): TrainingState {
  const size = paramLayout(modelCfg).size;
  return {
    params: initParams(modelCfg, seed),
    buffers: initBuffers(modelCfg),
    adam: initAdam(size),
    globalStep: 0,
    epoch: 0,
    stepInEpoch: 0,
  };
}

/** A deep copy (for snapshots and checkpoints). */
export function cloneTrainingState(s: TrainingState): TrainingState {
  return {
    params: s.params.slice(),
    buffers: s.buffers.slice(),
    adam: { m: s.adam.m.slice(), v: s.adam.v.slice(), t: s.adam.t },
    globalStep: s.globalStep,
    epoch: s.epoch,
    stepInEpoch: s.stepInEpoch,
  };
}

/** reused gradient accumulator (saves a large allocation per step) */
let scratch = new Float64Array(0);

/**
 * Apply one optimizer step to `state` (in place): sum the microbatch gradients in the order given
 * (microbatch order), divide by the step's total cells, take an Adam step, then fold each
 * microbatch's BatchNorm batch statistics into the running statistics in the same order with
 * PyTorch momentum (running = (1 − m)·running + m·stat).
 */
export function applyStep(state: TrainingState, results: MicrobatchGradient[], trainCfg: TrainConfig, modelCfg: ModelConfig): StepSummary {
  if (results.length === 0) throw new RangeError('applyStep: no microbatch results');
  const t0 = performance.now();
  const n = state.params.length;
  let cells = 0;
  let loss = 0;
  let rec = 0;
  let kl = 0;
  for (const r of results) {
    if (r.grad.length !== n) throw new RangeError(`applyStep: gradient of ${r.grad.length} floats, parameters have ${n}`);
    cells += r.nCells;
    loss += r.lossSum;
    rec += r.reconstructionSum;
    kl += r.klSum;
  }
  // Σ of all but the last microbatch in microbatch order; Adam adds the last one and divides by cells
  let partial: Float64Array | null = null;
  if (results.length > 1) {
    if (scratch.length !== n) scratch = new Float64Array(n);
    partial = scratch;
    const g0 = results[0]!.grad;
    for (let i = 0; i < n; i++) partial[i] = g0[i]!;
    for (let k = 1; k < results.length - 1; k++) {
      const g = results[k]!.grad;
      for (let i = 0; i < n; i++) partial[i] += g[i]!;
    }
  }
  const t1 = performance.now();
  const sq = adamStepSum(state.params, partial, results[results.length - 1]!.grad, 1 / cells, state.adam, { lr: trainCfg.lr, eps: trainCfg.adamEps, weightDecay: trainCfg.weightDecay });
  foldBatchNormStats(state.buffers, results, modelCfg);
  state.globalStep += 1;
  state.stepInEpoch += 1;
  return {
    globalStep: state.globalStep, epoch: state.epoch, cells, loss: loss / cells, reconstruction: rec / cells, kl: kl / cells, gradNorm: Math.sqrt(sq),
    aggregationMs: t1 - t0, optimizerMs: performance.now() - t1,
  };
}

/** running = (1 − m)·running + m·stat for each microbatch in order (stats in buffer-layout order). */
export function foldBatchNormStats(buffers: Float32Array, results: MicrobatchGradient[], modelCfg: ModelConfig): void {
  const size = bufferLayout(modelCfg).size;
  if (buffers.length !== size) throw new RangeError(`buffers have ${buffers.length} floats, the layout needs ${size}`);
  const m = modelCfg.bnMomentum;
  for (const r of results) {
    if (r.bnStats.length !== size) throw new RangeError(`BatchNorm statistics of ${r.bnStats.length} floats, expected ${size}`);
    for (let i = 0; i < size; i++) buffers[i] = (1 - m) * buffers[i]! + m * r.bnStats[i]!;
  }
}

/** Move to the start of the next epoch. */
export function advanceEpoch(state: TrainingState): void {
  state.epoch += 1;
  state.stepInEpoch = 0;
}
