// Single-process training over any CellSource: per epoch the seeded plan's steps, each a list of
// microbatches whose gradients applyStep sums in microbatch order (exactly what the distributed
// coordinator does), KL warm-up by epoch, and train/validation ELBO per cell at the end of each epoch.
import type { CellSource } from '../batch.js';
import { klWeightForEpoch, type ModelConfig, type TrainConfig } from '../config.js';
import { epochPlan } from '../plan.js';
import { microbatchNoise, validationNoise } from '../model/noise.js';
import { createModel, type VaeModel } from '../model/vae.js';
import { advanceEpoch, applyStep, initTrainingState, type StepSummary, type TrainingState } from './step.js';
import { checkGradNorm, checkStepLoss } from './divergence.js';
import { EarlyStopping } from './earlyStopping.js';

export interface EpochSummary {
  epoch: number;
  klWeight: number;
  steps: number;
  cells: number;
  /** training loss per cell (reconstruction + klWeight · KL), training mode */
  trainLoss: number;
  /** training ELBO per cell as scvi reports it: reconstruction + unweighted KL, training mode */
  trainElbo: number;
  trainReconstruction: number;
  trainKl: number;
  /** validation ELBO per cell (scvi's elbo_validation: evaluation mode, sampled z, reconstruction + KL); NaN without validation cells */
  validationElbo: number;
  validationReconstruction: number;
  validationKl: number;
  seconds: number;
}

export interface TrainOptions {
  source: CellSource;
  modelConfig: ModelConfig;
  trainConfig: TrainConfig;
  trainCells: Uint32Array;
  validationCells: Uint32Array;
  /** continue from this state (it is updated in place); default: fresh state from the seed */
  state?: TrainingState;
  /** stop once this many optimizer steps have been taken in total (K-steps mode) */
  maxSteps?: number;
  onStep?: (s: StepSummary, state: TrainingState) => void | Promise<void>;
  onEpoch?: (e: EpochSummary, state: TrainingState) => void | Promise<void>;
  /** cells per evaluation chunk */
  evalChunk?: number;
  /** checked before each step: true ends training there (e.g. after SIGINT) */
  shouldStop?: () => boolean;
  /** epochs already trained (a resumed run): early stopping replays their validation ELBOs */
  previousEpochs?: { epoch: number; validationElbo?: number }[];
}

/** why train() returned */
export type TrainStop = 'finished' | 'max-steps' | 'interrupted' | 'early-stopping';

export interface TrainResult {
  stopped: TrainStop;
  /** set when early stopping ended the run */
  earlyStopping?: EarlyStopping;
  state: TrainingState;
  history: EpochSummary[];
  /** the model holding the final parameters and buffers */
  model: VaeModel;
}

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

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { source, modelConfig: mc, trainConfig: tc } = opts;
  if (source.nGenes !== mc.nGenes)
    throw new RangeError(`the data has ${source.nGenes} genes, the model ${mc.nGenes}`);
  const state = opts.state ?? initTrainingState(mc, tc.seed);
  const model = createModel(mc);
  const history: EpochSummary[] = [];
  const maxSteps = opts.maxSteps ?? Infinity;
  const early = tc.earlyStopping ? EarlyStopping.replay(tc.earlyStopping, opts.previousEpochs ?? []) : null;
  let stopped: TrainStop = 'finished';
  if (early && early.wait >= early.config.patience) stopped = 'early-stopping';
  while (stopped === 'finished' && state.epoch < tc.epochs && state.globalStep < maxSteps) {
    const t0 = performance.now();
    const epoch = state.epoch;
    const klWeight = klWeightForEpoch(epoch, tc);
    const plan = epochPlan(opts.trainCells, { ...tc, epoch });
    let cells = 0,
      loss = 0,
      rec = 0,
      kl = 0,
      steps = 0;
    for (let s = state.stepInEpoch; s < plan.length; s++) {
      if (state.globalStep >= maxSteps) break;
      if (opts.shouldStop) {
        // an in-memory source never yields to the event loop: let signal handlers run between steps
        await new Promise((r) => setImmediate(r));
        if (opts.shouldStop()) {
          stopped = 'interrupted';
          break;
        }
      }
      model.setParams(state.params);
      const results = [];
      let stepLoss = 0,
        stepRec = 0,
        stepKl = 0;
      for (let mb = 0; mb < plan[s]!.microbatches.length; mb++) {
        const batch = await source.getCells(plan[s]!.microbatches[mb]!);
        const g = model.gradient(
          batch,
          microbatchNoise(mc, tc.seed, state.globalStep, mb, batch.nCells),
          klWeight,
        );
        stepLoss += g.lossSum;
        stepRec += g.reconstructionSum;
        stepKl += g.klSum;
        results.push(g);
      }
      // the same divergence decision as the coordinator's: before the step, on its loss terms;
      // after it, on the gradient norm
      const step = state.globalStep;
      checkStepLoss(step, epoch, { loss: stepLoss, reconstruction: stepRec, kl: stepKl });
      const summary = applyStep(state, results, tc, mc);
      checkGradNorm(step, epoch, summary.gradNorm);
      cells += summary.cells;
      loss += summary.loss * summary.cells;
      rec += summary.reconstruction * summary.cells;
      kl += summary.kl * summary.cells;
      steps++;
      if (opts.onStep) await opts.onStep(summary, state);
    }
    if (state.stepInEpoch < plan.length) {
      // stopped by maxSteps or a stop request mid-epoch
      if (stopped === 'finished') stopped = 'max-steps';
      break;
    }
    model.setParams(state.params);
    model.setBuffers(state.buffers);
    const v = await validationElbo(model, source, opts.validationCells, tc.seed, epoch, opts.evalChunk);
    const summary: EpochSummary = {
      epoch,
      klWeight,
      steps,
      cells,
      trainLoss: loss / cells,
      trainElbo: (rec + kl) / cells,
      trainReconstruction: rec / cells,
      trainKl: kl / cells,
      validationElbo: v.elbo,
      validationReconstruction: v.reconstruction,
      validationKl: v.kl,
      seconds: (performance.now() - t0) / 1000,
    };
    history.push(summary);
    advanceEpoch(state);
    if (opts.onEpoch) await opts.onEpoch(summary, state);
    if (early?.observe(epoch, v.elbo)) stopped = 'early-stopping';
  }
  if (stopped === 'finished' && state.epoch < tc.epochs) stopped = 'max-steps';
  model.setParams(state.params);
  model.setBuffers(state.buffers);
  return {
    stopped,
    ...(stopped === 'early-stopping' && early ? { earlyStopping: early } : {}),
    state,
    history,
    model,
  };
}
