// The one training loop, over a step executor: epochs of the seeded plan, the KL warm-up, the next
// step prepared while the current one computes, held-out evaluation at each epoch's end, early
// stopping, checkpoints, the history and the progress events. What turns a planned step into a
// step result is the executor's business: the fleet of workers (the coordinator) or this process
// (in-process-executor.ts). The loop imports nothing of either.

import fs from 'node:fs';
import { epochPlan, type PlannedStep } from '../plan.js';
import { klWeightForEpoch, type ModelConfig, type TrainConfig } from '../config.js';
import { assembleCheckpoint, saveCheckpoint, type CheckpointPosition } from '../checkpoint.js';
import { DivergenceError } from './divergence.js';
import { EarlyStopping } from './early-stopping.js';
import type { EpochRecord } from './history.js';

export type { EpochRecord } from './history.js';

/** One completed optimizer step, as the executor reports it. */
export interface StepReport {
  globalStep: number;
  epoch: number;
  stepInEpoch: number;
  stepsInEpoch: number;
  nCells: number;
  microbatches: number;
  /** mean over the step's cells */
  loss: number;
  reconstruction: number;
  kl: number;
  klWeight: number;
  /** wall time of the whole step, from dispatch to parameters broadcast */
  totalMs: number;
  /** longest per-worker sum of gradient compute time reported by workers (the critical path's compute) */
  computeMs: number;
  /** waiting for results beyond the workers' compute: transfer, (de)serialization, queuing, idle */
  communicationMs: number;
  /** the optimizer step after the last result arrived (Adam + BatchNorm merge): the coordinator's
   * compute on the step's critical path */
  applyMs: number;
  /** summing microbatch gradients in microbatch order, each as soon as it and all earlier ones
   * arrived (mostly overlapped with waiting for the slowest microbatch) */
  aggregationMs: number;
  optimizerMs: number;
  /** L2 norm of the step's mean gradient */
  gradNorm: number;
  /** fetching and encoding Arrow microbatches that were not prefetched in time */
  dataWaitMs: number;
  /** encoding and sending the new parameters to every worker */
  broadcastMs: number;
  workers: number;
  redone: number;
}

/** What the loop reports; every callback is optional and called synchronously. */
export interface LoopObserver {
  stepCompleted(s: StepReport): void;
  epochCompleted(e: Omit<EpochRecord, 'partial'> & { ms: number }): void;
  checkpointWritten(info: { path: string; globalStep: number; bytes: number; ms: number }): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}

export type LoopObservers = Partial<LoopObserver>[];

/** Calls `name` on every observer that has it, in list order (observers of the loop and of its executors). */
export function notifyObservers<O extends { [M in keyof O]: (...a: never[]) => void }, K extends keyof O>(
  list: Partial<O>[],
  name: K,
  ...args: Parameters<O[K]>
): void {
  for (const o of list) {
    const f = o[name] as ((...a: Parameters<O[K]>) => void) | undefined;
    if (f) f.apply(o, args);
  }
}

/** Evaluates the held-out ELBO for the parameters and buffers at the end of an epoch. */
export type Validator = (
  params: Float32Array,
  buffers: Float32Array,
  epoch: number,
) => Promise<{ elbo: number; reconstruction: number; kl: number }>;

/** The data set facts the loop needs: the cells its plans draw from, what a checkpoint records. */
export interface LoopData {
  /** indices of the training cells, ascending */
  train: Uint32Array;
  genes: string[];
  batchCategories: string[];
  labelCategories: string[];
  manifestHash: string | null;
}

export interface TrainingSetup {
  modelConfig: ModelConfig;
  trainConfig: TrainConfig;
  data: LoopData;
  /** where to start: the next step to run */
  position: CheckpointPosition;
  /** epochs already trained (a resumed run), the last possibly partial */
  history: EpochRecord[];
}

/** A copy of the optimizer state: what a checkpoint and the held-out evaluation read. */
export interface StateSnapshot {
  params: Float32Array;
  buffers: Float32Array;
  adam: { m: Float32Array; v: Float32Array; t: number };
}

export interface TrainOutcome {
  position: CheckpointPosition;
  history: EpochRecord[];
  stopped: 'finished' | 'max-steps' | 'interrupted' | 'early-stopping';
  lastCheckpoint: string | null;
  /** set when early stopping ended the run */
  earlyStopping?: EarlyStopping;
}

/** A stop request that could not wait for the current step (it was abandoned, not applied). */
export class StepAbandoned extends Error {}

/** What runs the planned steps. `P` is a step prepared for it (e.g. its microbatches encoded). */
export interface StepExecutor<P> {
  /** a copy of the current parameters, buffers and Adam state */
  snapshot(): StateSnapshot;
  /** before the first step: start watching steps; with `needWorkers`, wait until enough can compute */
  begin(needWorkers: boolean): Promise<void>;
  /** after the last step (also when the loop throws) */
  end(): void;
  /** a stop was requested: the loop ends before the next step */
  readonly stopRequested: boolean;
  /** read and encode a planned step (runs while the previous step computes) */
  prepare(step: PlannedStep): Promise<P>;
  /**
   * Compute the step at `pos`, sum its microbatches in order and apply the optimizer step.
   * `onFirstResult` is called once when a core becomes idle (the step's first result). Throws
   * StepAbandoned when a stop could not wait for it, a DivergenceError when it diverged.
   */
  run(
    pos: CheckpointPosition,
    stepsInEpoch: number,
    klWeight: number,
    prepared: P,
    dataWaitMs: number,
    t0: number,
    onFirstResult: () => void,
  ): Promise<StepReport>;
}

export interface LoopOptions {
  /** write a checkpoint every this many steps (0: only at the end) */
  checkpointEvery: number;
  checkpointPath: string | null;
  /** stop after this many optimizer steps in total (null: run all epochs) */
  maxSteps: number | null;
  validator: Validator | null;
}

interface EpochAcc {
  epoch: number;
  nCells: number;
  loss: number;
  reconstruction: number;
  kl: number;
}

export class TrainingLoop<P> {
  /** early stopping of this run (when configured and validated) */
  private earlyStopping: EarlyStopping | null = null;

  constructor(
    private readonly setup: TrainingSetup,
    private readonly opts: LoopOptions,
    private readonly exec: StepExecutor<P>,
    private readonly observers: LoopObservers,
  ) {}

  private emit<K extends keyof LoopObserver>(name: K, ...args: Parameters<LoopObserver[K]>): void {
    notifyObservers(this.observers, name, ...args);
  }

  async run(): Promise<TrainOutcome> {
    const { trainConfig: tc, data } = this.setup;
    const exec = this.exec;
    const pos = { ...this.setup.position };
    const history = this.setup.history.filter((h) => !h.partial);
    const partial = this.setup.history.find((h) => h.partial && h.epoch === pos.epoch);
    let acc: EpochAcc = partial
      ? {
          epoch: pos.epoch,
          nCells: partial.nCells,
          loss: partial.loss * partial.nCells,
          reconstruction: partial.reconstruction * partial.nCells,
          kl: partial.kl * partial.nCells,
        }
      : { epoch: pos.epoch, nCells: 0, loss: 0, reconstruction: 0, kl: 0 };
    let lastCheckpoint: string | null = null;
    let stopped: TrainOutcome['stopped'] = 'finished';
    const early =
      tc.earlyStopping && this.opts.validator ? EarlyStopping.replay(tc.earlyStopping, history) : null;
    if (early && early.wait >= early.config.patience) stopped = 'early-stopping';
    this.earlyStopping = early;

    const nothingToDo =
      pos.epoch >= tc.epochs || (this.opts.maxSteps !== null && pos.globalStep >= this.opts.maxSteps);
    await exec.begin(!nothingToDo);
    const planFor = (epoch: number): PlannedStep[] => epochPlan(data.train, { ...tc, seed: tc.seed, epoch });
    let plan = pos.epoch < tc.epochs ? planFor(pos.epoch) : [];
    let epochStart = performance.now();
    // the next step's microbatches are read and encoded while the current step computes
    let prefetch: Promise<P> | null = null;
    const nextPlanned = (): PlannedStep | null => {
      if (pos.stepInEpoch + 1 < plan.length) return plan[pos.stepInEpoch + 1]!;
      if (pos.epoch + 1 < tc.epochs) return planFor(pos.epoch + 1)[0] ?? null;
      return null;
    };

    try {
      while (stopped === 'finished' && pos.epoch < tc.epochs) {
        if (pos.stepInEpoch >= plan.length) {
          // epoch finished
          const rec = await this.closeEpoch(acc, performance.now() - epochStart);
          history.push(rec);
          pos.epoch++;
          pos.stepInEpoch = 0;
          acc = { epoch: pos.epoch, nCells: 0, loss: 0, reconstruction: 0, kl: 0 };
          epochStart = performance.now();
          if (early && rec.validationElbo !== undefined && early.observe(rec.epoch, rec.validationElbo)) {
            stopped = 'early-stopping';
            this.emit('log', 'info', early.describe());
            break;
          }
          if (pos.epoch < tc.epochs) plan = planFor(pos.epoch);
          continue;
        }
        if (this.opts.maxSteps !== null && pos.globalStep >= this.opts.maxSteps) {
          stopped = 'max-steps';
          break;
        }
        if (exec.stopRequested) {
          stopped = 'interrupted';
          break;
        }
        const planned = plan[pos.stepInEpoch]!;
        const t0 = performance.now();
        const items = await (prefetch ?? exec.prepare(planned));
        const dataWaitMs = performance.now() - t0;
        const nextP = nextPlanned();
        prefetch = null;
        // Read and encode the next step's microbatches once a core is idle: when this step's first
        // result arrives (its worker now waits for the others), else when the step ends. Started at
        // the broadcast instead, it competes with workers starting the step on a machine whose
        // cores they fill (measured: a worker waiting ~5 ms for a core to begin its microbatch).
        const startPrefetch = (): void => {
          if (prefetch || !nextP) return;
          prefetch = exec.prepare(nextP);
          prefetch.catch(() => undefined);
        };
        let report: StepReport;
        try {
          report = await exec.run(
            pos,
            plan.length,
            klWeightForEpoch(pos.epoch, tc),
            items,
            dataWaitMs,
            t0,
            startPrefetch,
          );
        } catch (e) {
          if (!(e instanceof StepAbandoned)) throw e;
          this.emit(
            'log',
            'warn',
            `step ${pos.globalStep + 1} abandoned: it did not complete after the stop request (a resume redoes it)`,
          );
          stopped = 'interrupted';
          break;
        }
        startPrefetch();
        acc.nCells += report.nCells;
        acc.loss += report.loss * report.nCells;
        acc.reconstruction += report.reconstruction * report.nCells;
        acc.kl += report.kl * report.nCells;
        pos.globalStep++;
        pos.stepInEpoch++;
        this.emit('stepCompleted', report);
        if (this.opts.checkpointEvery > 0 && pos.globalStep % this.opts.checkpointEvery === 0) {
          lastCheckpoint = this.checkpoint(pos, history, acc) ?? lastCheckpoint;
        }
      }
    } catch (e) {
      if (!(e instanceof DivergenceError)) throw e;
      // name the last checkpoint (this run's, or the one it resumed from): finite by construction
      const path = this.opts.checkpointPath;
      throw e.withCheckpoint(lastCheckpoint ?? (path && fs.existsSync(path) ? path : null));
    } finally {
      exec.end();
    }
    lastCheckpoint = this.checkpoint(pos, history, acc) ?? lastCheckpoint;
    const out: EpochRecord[] = [...history];
    if (acc.nCells > 0 && pos.stepInEpoch > 0) out.push(epochRecord(acc, true));
    return {
      position: pos,
      history: out,
      stopped,
      lastCheckpoint,
      ...(stopped === 'early-stopping' && early ? { earlyStopping: early } : {}),
    };
  }

  private async closeEpoch(acc: EpochAcc, ms: number): Promise<EpochRecord> {
    const rec = epochRecord(acc, false);
    rec.klWeight = klWeightForEpoch(acc.epoch, this.setup.trainConfig);
    const validator = this.opts.validator;
    if (validator) {
      this.emit('log', 'debug', `epoch ${acc.epoch + 1}: evaluating the held-out ELBO`);
      const snap = this.exec.snapshot();
      const v = await validator(snap.params, snap.buffers, acc.epoch);
      rec.validationElbo = v.elbo;
      rec.validationReconstruction = v.reconstruction;
      rec.validationKl = v.kl;
    }
    this.emit('epochCompleted', { ...rec, ms });
    return rec;
  }

  private checkpoint(pos: CheckpointPosition, history: EpochRecord[], acc: EpochAcc): string | null {
    const path = this.opts.checkpointPath;
    if (!path) return null;
    const t0 = performance.now();
    const { modelConfig, trainConfig, data } = this.setup;
    const snap = this.exec.snapshot();
    const hist: EpochRecord[] = [...history];
    if (acc.nCells > 0 && pos.stepInEpoch > 0) hist.push(epochRecord(acc, true));
    const ckpt = assembleCheckpoint({
      modelConfig,
      trainConfig,
      params: snap.params,
      buffers: snap.buffers,
      adam: snap.adam,
      position: pos,
      genes: data.genes,
      batchCategories: data.batchCategories,
      labelCategories: data.labelCategories,
      manifestHash: data.manifestHash,
      history: hist,
      earlyStopping: this.earlyStopping,
    });
    saveCheckpoint(path, ckpt);
    this.emit('checkpointWritten', {
      path,
      globalStep: pos.globalStep,
      bytes: 4 * (snap.params.length * 3 + snap.buffers.length),
      ms: performance.now() - t0,
    });
    return path;
  }
}

function epochRecord(acc: EpochAcc, partial: boolean): EpochRecord {
  const n = Math.max(1, acc.nCells);
  const r: EpochRecord = {
    epoch: acc.epoch,
    nCells: acc.nCells,
    loss: acc.loss / n,
    reconstruction: acc.reconstruction / n,
    kl: acc.kl / n,
    elbo: (acc.reconstruction + acc.kl) / n,
  };
  if (partial) r.partial = true;
  return r;
}
