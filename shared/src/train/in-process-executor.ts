// The in-process step executor: this process computes each step's microbatches in order with the
// hand-written model, sums them in microbatch order exactly as the fleet does (GradientAccumulator),
// and applies the one optimizer step (applyAccumulated). `trainInProcess` runs the one training loop
// (loop.ts) over it: what `train-local` and the tests' single-process references use.
import type { CellBatch, CellSource } from '../batch.js';
import type { ModelConfig, TrainConfig } from '../config.js';
import type { CheckpointPosition } from '../checkpoint.js';
import type { PlannedStep } from '../plan.js';
import { microbatchNoise } from '../model/noise.js';
import { createModel, type VaeModel } from '../model/vae.js';
import { checkGradNorm, checkStepLoss } from './divergence.js';
import type { EarlyStopping } from './early-stopping.js';
import type { EpochRecord } from './history.js';
import {
  TrainingLoop,
  type LoopData,
  type LoopObserver,
  type StateSnapshot,
  type StepExecutor,
  type StepReport,
  type TrainOutcome,
} from './loop.js';
import { applyAccumulated, GradientAccumulator, initTrainingState, type TrainingState } from './step.js';
import { validationElbo } from './trainer.js';

export class InProcessExecutor implements StepExecutor<CellBatch[]> {
  constructor(
    private readonly source: CellSource,
    /** updated in place, step by step */
    readonly state: TrainingState,
    /** the model the steps compute with (its parameters are set before each step) */
    readonly model: VaeModel,
    private readonly modelConfig: ModelConfig,
    private readonly trainConfig: TrainConfig,
    /** checked before each step (e.g. set by a signal handler); absent: the run is never stopped */
    private readonly shouldStop: (() => boolean) | null = null,
  ) {}

  get stopRequested(): boolean {
    return this.shouldStop?.() ?? false;
  }

  snapshot(): StateSnapshot {
    const s = this.state;
    return {
      params: s.params.slice(),
      buffers: s.buffers.slice(),
      adam: { m: s.adam.m.slice(), v: s.adam.v.slice(), t: s.adam.t },
    };
  }

  begin(): Promise<void> {
    return Promise.resolve();
  }

  end(): void {}

  async prepare(step: PlannedStep): Promise<CellBatch[]> {
    const out: CellBatch[] = [];
    for (const cells of step.microbatches) out.push(await this.source.getCells(cells));
    return out;
  }

  async run(
    pos: CheckpointPosition,
    stepsInEpoch: number,
    klWeight: number,
    batches: CellBatch[],
    dataWaitMs: number,
    t0: number,
  ): Promise<StepReport> {
    const { state, model, modelConfig: mc, trainConfig: tc } = this;
    model.setParams(state.params);
    const acc = GradientAccumulator.for(state);
    acc.reset();
    const tCompute = performance.now();
    for (let mb = 0; mb < batches.length; mb++) {
      const batch = batches[mb]!;
      acc.add(
        model.gradient(batch, microbatchNoise(mc, tc.seed, pos.globalStep, mb, batch.nCells), klWeight),
      );
    }
    const computeMs = performance.now() - tCompute;
    // the same divergence decision as the fleet's: before the step on its loss terms, after it on
    // the gradient norm
    checkStepLoss(pos.globalStep, pos.epoch, {
      loss: acc.loss,
      reconstruction: acc.reconstruction,
      kl: acc.kl,
    });
    const tApply = performance.now();
    state.epoch = pos.epoch;
    const s = applyAccumulated(state, acc, tc, mc);
    const applyMs = performance.now() - tApply;
    checkGradNorm(pos.globalStep, pos.epoch, s.gradNorm);
    // an in-memory source never yields to the event loop: let signal handlers run between steps
    if (this.shouldStop) await new Promise((r) => setImmediate(r));
    return {
      globalStep: pos.globalStep,
      epoch: pos.epoch,
      stepInEpoch: pos.stepInEpoch,
      stepsInEpoch,
      nCells: s.cells,
      microbatches: batches.length,
      loss: s.loss,
      reconstruction: s.reconstruction,
      kl: s.kl,
      klWeight,
      totalMs: performance.now() - t0,
      computeMs,
      communicationMs: 0,
      applyMs,
      aggregationMs: s.aggregationMs,
      optimizerMs: s.optimizerMs,
      gradNorm: s.gradNorm,
      dataWaitMs,
      broadcastMs: 0,
      workers: 1,
      redone: 0,
    };
  }
}

export interface InProcessOptions {
  source: CellSource;
  modelConfig: ModelConfig;
  trainConfig: TrainConfig;
  trainCells: Uint32Array;
  /** held-out cells evaluated at each epoch's end (none: no validation ELBO) */
  validationCells: Uint32Array;
  /** continue from this state (it is updated in place); default: fresh state from the seed */
  state?: TrainingState;
  /** the epochs the state has trained (a resumed run): history and early stopping continue them */
  history?: EpochRecord[];
  /** stop once this many optimizer steps have been taken in total (K-steps mode) */
  maxSteps?: number;
  /** cells per evaluation chunk */
  evalChunk?: number;
  /** checked before each step: true ends training there (e.g. after SIGINT) */
  shouldStop?: () => boolean;
  observers?: Partial<LoopObserver>[];
  /** write checkpoints of the run to `path` every `every` steps (0: at the end only) */
  checkpoint?: { path: string; every: number; data: Omit<LoopData, 'train'> };
}

export interface InProcessResult extends TrainOutcome {
  /** the final state (the same object as `options.state` when given) */
  state: TrainingState;
  /** the model holding the final parameters and buffers */
  model: VaeModel;
  earlyStopping?: EarlyStopping;
}

/** Train in this process: the one training loop over an InProcessExecutor. */
export async function trainInProcess(o: InProcessOptions): Promise<InProcessResult> {
  const { source, modelConfig: mc, trainConfig: tc } = o;
  if (source.nGenes !== mc.nGenes)
    throw new RangeError(`the data has ${source.nGenes} genes, the model ${mc.nGenes}`);
  const state = o.state ?? initTrainingState(mc, tc.seed);
  const model = createModel(mc);
  const exec = new InProcessExecutor(source, state, model, mc, tc, o.shouldStop ?? null);
  const validator =
    o.validationCells.length === 0
      ? null
      : async (params: Float32Array, buffers: Float32Array, epoch: number) => {
          model.setParams(params);
          model.setBuffers(buffers);
          return validationElbo(model, source, o.validationCells, tc.seed, epoch, o.evalChunk);
        };
  const meta = o.checkpoint?.data ?? {
    genes: [],
    batchCategories: [],
    labelCategories: [],
    manifestHash: null,
  };
  const outcome = await new TrainingLoop(
    {
      modelConfig: mc,
      trainConfig: tc,
      data: { ...meta, train: o.trainCells },
      position: { epoch: state.epoch, stepInEpoch: state.stepInEpoch, globalStep: state.globalStep },
      history: o.history ?? [],
    },
    {
      checkpointEvery: o.checkpoint?.every ?? 0,
      checkpointPath: o.checkpoint?.path ?? null,
      maxSteps: o.maxSteps ?? null,
      validator,
    },
    exec,
    o.observers ?? [],
  ).run();
  Object.assign(state, outcome.position);
  model.setParams(state.params);
  model.setBuffers(state.buffers);
  return { ...outcome, state, model };
}
