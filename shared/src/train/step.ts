// One optimizer step from a list of microbatch gradients: the single place where gradients are
// combined, so the single-process trainer and the distributed coordinator agree by construction.
// Deterministic: microbatches are always folded in microbatch order, never arrival order.
import type { ModelConfig, TrainConfig } from '../config.js';
import { bufferLayout, initBuffers, initParams, paramLayout } from '../model/layout.js';
import type { MicrobatchGradient } from '../model/types.js';
import { adamStepScaled, initAdam, type AdamState } from './adam.js';
import { OptimizerMemory, optimizerMemoryOf } from './optimizer-memory.js';

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
  return inOptimizerMemory({
    params: initParams(modelCfg, seed),
    buffers: initBuffers(modelCfg),
    adam: initAdam(size),
    globalStep: 0,
    epoch: 0,
    stepInEpoch: 0,
  });
}

/**
 * The same state with its parameters and Adam moments copied into an OptimizerMemory, where the
 * SIMD kernels run on them (the state itself if they are there already, or if the memory cannot be
 * had: the JavaScript loops give the same bits). Hold no references to the old arrays.
 */
export function inOptimizerMemory(s: TrainingState): TrainingState {
  if (optimizerMemoryOf(s.params)) return s;
  const mem = OptimizerMemory.create(s.params.length);
  if (!mem) return s;
  mem.params.set(s.params);
  mem.m.set(s.adam.m);
  mem.v.set(s.adam.v);
  return { ...s, params: mem.params, adam: { m: mem.m, v: mem.v, t: s.adam.t } };
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

/**
 * Sums microbatch gradients into one reused float64 buffer, strictly in microbatch order: the
 * caller adds microbatch k only after 0…k−1 (the coordinator adds each result as soon as it and
 * all earlier ones have arrived, so summing overlaps the wait for the slowest microbatch instead
 * of sitting on the step's critical path). Also carries the step's cell count, loss sums and
 * BatchNorm batch statistics (copied, in order) for `applyAccumulated`.
 */
export class GradientAccumulator {
  readonly sum: Float64Array;
  /** with a memory, the sum is its own and the SIMD kernel adds */
  private readonly memory: OptimizerMemory | null;
  private readonly bnStats: Float32Array[] = [];
  /** microbatches added since the last reset */
  count = 0;
  cells = 0;
  loss = 0;
  reconstruction = 0;
  kl = 0;
  /** milliseconds spent in add() since the last reset */
  ms = 0;

  constructor(
    readonly size: number,
    memory?: OptimizerMemory,
  ) {
    if (memory && memory.size !== size)
      throw new RangeError(`accumulator of ${size} floats over an optimizer memory of ${memory.size}`);
    this.memory = memory ?? null;
    this.sum = memory ? memory.sum : new Float64Array(size);
  }

  /** The accumulator for `state`: over its optimizer memory's sum when it has one (one per memory), else one per size. */
  static for(state: TrainingState): GradientAccumulator {
    const n = state.params.length;
    const mem = optimizerMemoryOf(state.params);
    if (mem) {
      let acc = memoryAccumulators.get(mem);
      if (!acc) memoryAccumulators.set(mem, (acc = new GradientAccumulator(n, mem)));
      return acc;
    }
    let acc = accumulators.get(n);
    if (!acc) accumulators.set(n, (acc = new GradientAccumulator(n)));
    return acc;
  }

  reset(): void {
    this.count = 0;
    this.cells = 0;
    this.loss = 0;
    this.reconstruction = 0;
    this.kl = 0;
    this.ms = 0;
    this.bnStats.length = 0;
  }

  /** Add the next microbatch (in microbatch order). */
  add(r: MicrobatchGradient): void {
    this.addGroup(r.grad, [r]);
  }

  /**
   * Add the next group of microbatches (in microbatch order): `grad` is their gradients summed by
   * the worker (one float32 vector, added once), `microbatches` each one's cell count, loss sums
   * and BatchNorm statistics (their `grad` is not read). The sum differs from adding them one by
   * one in rounding only; the result depends on the group boundaries, which the plan fixes.
   */
  addGroup(grad: Float32Array, microbatches: readonly MicrobatchGradient[]): void {
    if (microbatches.length === 0) return;
    const t0 = performance.now();
    const n = this.size;
    if (grad.length !== n)
      throw new RangeError(`applyStep: gradient of ${grad.length} floats, parameters have ${n}`);
    if (this.count === 0) this.sum.set(grad);
    else if (this.memory) this.memory.addToSum(grad);
    else addInto(this.sum, grad);
    for (const r of microbatches) {
      this.count++;
      this.cells += r.nCells;
      this.loss += r.lossSum;
      this.reconstruction += r.reconstructionSum;
      this.kl += r.klSum;
      this.bnStats.push(r.bnStats.slice());
    }
    this.ms += performance.now() - t0;
  }

  /** the BatchNorm batch statistics added so far, in microbatch order */
  get batchStats(): readonly Float32Array[] {
    return this.bnStats;
  }
}

/** s += g elementwise (float64 += float32), unrolled by 4: ~1.5× faster than the plain loop in V8
 * and the same additions, so the same bits. */
function addInto(s: Float64Array, g: Float32Array): void {
  const n = g.length;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s[i]! += g[i]!;
    s[i + 1]! += g[i + 1]!;
    s[i + 2]! += g[i + 2]!;
    s[i + 3]! += g[i + 3]!;
  }
  for (; i < n; i++) s[i]! += g[i]!;
}

/** one accumulator per parameter count, reused by applyStep (saves a large allocation per step) */
const accumulators = new Map<number, GradientAccumulator>();
/** and one per optimizer memory, over that memory's sum */
const memoryAccumulators = new WeakMap<OptimizerMemory, GradientAccumulator>();

/**
 * Apply one optimizer step to `state` (in place): sum the microbatch gradients in the order given
 * (microbatch order), divide by the step's total cells, take an Adam step, then fold each
 * microbatch's BatchNorm batch statistics into the running statistics in the same order with
 * PyTorch momentum (running = (1 − m)·running + m·stat).
 */
export function applyStep(
  state: TrainingState,
  results: MicrobatchGradient[],
  trainCfg: TrainConfig,
  modelCfg: ModelConfig,
): StepSummary {
  if (results.length === 0) throw new RangeError('applyStep: no microbatch results');
  const acc = GradientAccumulator.for(state);
  acc.reset();
  for (const r of results) acc.add(r);
  return applyAccumulated(state, acc, trainCfg, modelCfg);
}

/** The optimizer half of applyStep: Adam on the accumulated sum / cells, then the BatchNorm merge
 * in microbatch order. `aggregationMs` reports the accumulator's summing time. With `onParams`,
 * Adam runs in ranges and `onParams(start, end)` sees each range of final parameters as soon as
 * it is done (the same bits as without). */
export function applyAccumulated(
  state: TrainingState,
  acc: GradientAccumulator,
  trainCfg: TrainConfig,
  modelCfg: ModelConfig,
  onParams?: (start: number, end: number) => void,
): StepSummary {
  if (acc.count === 0) throw new RangeError('applyStep: no microbatch results');
  if (acc.size !== state.params.length)
    throw new RangeError(`applyStep: gradient of ${acc.size} floats, parameters have ${state.params.length}`);
  const t1 = performance.now();
  const cells = acc.cells;
  const sq = adamStepScaled(
    state.params,
    acc.sum,
    1 / cells,
    state.adam,
    { lr: trainCfg.lr, eps: trainCfg.adamEps, weightDecay: trainCfg.weightDecay },
    onParams,
  );
  foldBatchNormStats(
    state.buffers,
    acc.batchStats.map((bnStats) => ({ bnStats })),
    modelCfg,
  );
  state.globalStep += 1;
  state.stepInEpoch += 1;
  return {
    globalStep: state.globalStep,
    epoch: state.epoch,
    cells,
    loss: acc.loss / cells,
    reconstruction: acc.reconstruction / cells,
    kl: acc.kl / cells,
    gradNorm: Math.sqrt(sq),
    aggregationMs: acc.ms,
    optimizerMs: performance.now() - t1,
  };
}

/** running = (1 − m)·running + m·stat for each microbatch in order (stats in buffer-layout order). */
export function foldBatchNormStats(
  buffers: Float32Array,
  results: readonly Pick<MicrobatchGradient, 'bnStats'>[],
  modelCfg: ModelConfig,
): void {
  const size = bufferLayout(modelCfg).size;
  if (buffers.length !== size)
    throw new RangeError(`buffers have ${buffers.length} floats, the layout needs ${size}`);
  const m = modelCfg.bnMomentum;
  for (const r of results) {
    if (r.bnStats.length !== size)
      throw new RangeError(`BatchNorm statistics of ${r.bnStats.length} floats, expected ${size}`);
    for (let i = 0; i < size; i++) buffers[i] = (1 - m) * buffers[i]! + m * r.bnStats[i]!;
  }
}

/** Move to the start of the next epoch. */
export function advanceEpoch(state: TrainingState): void {
  state.epoch += 1;
  state.stepInEpoch = 0;
}
