// From command-line options to a training setup: the dataset, the model and training
// configuration (fresh, or from a checkpoint on --resume), and the optimizer state.

import fs from 'node:fs';
import path from 'node:path';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type Likelihood,
  type DispersionMode,
  type ModelConfig,
  type TrainConfig,
  loadCheckpoint,
  type CheckpointPosition,
  CliError,
  InputError,
} from '@atlasvae/shared';
import type { EarlyStoppingConfig } from '@atlasvae/shared/train';
import { openDataset, type Dataset } from '../data/dataset.js';
import { trainingData, type TrainingData } from './data.js';
import { SharedStepOptimizer } from './optimizer.js';
import type { StreamParams, TrainingSetup } from './coordinator.js';
import { earlyStoppingConfig } from '../early-stopping-flags.js';

/** Flags of every training command (`train`, `coordinator`, `train-local`). */
export interface CommonTrainingFlags {
  epochs?: number;
  'max-steps'?: number;
  seed: number;
  'global-batch'?: number;
  microbatch?: number;
  lr?: number;
  'kl-warmup'?: number;
  'n-hidden': number;
  'n-latent': number;
  'n-layers': number;
  dropout: number;
  likelihood: Likelihood;
  dispersion: DispersionMode;
  checkpoint?: string;
  'checkpoint-every': number;
  /** replace an existing checkpoint file when not resuming */
  force?: boolean;
  /** held-out cells evaluated at the end of each epoch (0: none) */
  'validation-cells'?: number;
  'early-stopping'?: boolean;
  'early-stopping-patience'?: number;
}

/** Flags of the fleet's commands (`train`, `coordinator`). */
export interface TrainingFlags extends CommonTrainingFlags {
  data: string;
  resume: boolean;
  'step-timeout': number;
  /** send parameters as they leave Adam: to workers on other hosts (auto), to all, or to none */
  'stream-params'?: StreamParams;
  /** workers on this host read parameters from shared-memory files (auto) or the socket (never) */
  'shared-memory'?: 'auto' | 'never';
}

function positiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v <= 0))
    throw new CliError(`--${name} must be a positive integer (got ${v})`);
}

/** Where a run without --checkpoint keeps its model: beside the dataset folder, `atlas/` → `atlas.ckpt`. */
export function defaultCheckpointPath(data: string): string {
  return `${path.resolve(data)}.ckpt`;
}

/** The smallest default microbatch: BatchNorm statistics over fewer cells get noisy. */
export const MIN_DEFAULT_MICROBATCH = 32;

/** One worker: scvi's step (`defaultTrainConfig`), 128 cells at Adam's lr 1e-3. */
export const SCVI_GLOBAL_BATCH = defaultTrainConfig(1).globalBatch;
export const SCVI_LR = defaultTrainConfig(1).lr;
/**
 * Several workers: 256 cells per step at 2.5 times scvi's learning rate, so two workers each
 * compute a whole 128-cell microbatch (half a step's cells cost more than half its time). Held-out
 * ELBO on kang and mouse_brain_10k within 0.5% of scvi's step (docs/distributed.md).
 */
export const FLEET_GLOBAL_BATCH = 256;
export const FLEET_LR = 2.5e-3;

export interface DefaultBatchSizes {
  globalBatch: number;
  microbatch: number;
  lr: number;
}

/**
 * Default batch sizes and learning rate for a run planned for `workers` workers (`--local-workers`
 * of `train`, `--min-workers` of `coordinator`; one process is one worker). One worker: scvi's
 * 128-cell step at lr 1e-3. Two or more: a 256-cell step at lr 2.5e-3, split into one microbatch per
 * worker (at least 32 cells; beyond 8 workers the step grows to 32 × workers). A global batch given
 * keeps scvi's lr unless --lr is given too. Fixed at the start and recorded in the checkpoint, so the
 * result never depends on how many workers happen to connect.
 */
export function defaultBatchSizes(
  workers: number,
  globalBatch?: number,
  microbatch?: number,
  lr?: number,
): DefaultBatchSizes {
  const n = Math.max(1, Math.floor(workers));
  const fleet = n > 1 && globalBatch === undefined;
  const global =
    globalBatch ?? (n > 1 ? Math.max(FLEET_GLOBAL_BATCH, MIN_DEFAULT_MICROBATCH * n) : SCVI_GLOBAL_BATCH);
  const micro = microbatch ?? Math.max(Math.min(MIN_DEFAULT_MICROBATCH, global), Math.ceil(global / n));
  return { globalBatch: global, microbatch: Math.min(micro, global), lr: lr ?? (fleet ? FLEET_LR : SCVI_LR) };
}

/** The flags every training command shares, checked (a clear error naming the flag); returns the
 * early-stopping configuration they ask for. */
export function checkTrainingFlags(f: CommonTrainingFlags): EarlyStoppingConfig | undefined {
  for (const k of [
    'epochs',
    'max-steps',
    'global-batch',
    'microbatch',
    'n-hidden',
    'n-latent',
    'n-layers',
  ] as const)
    positiveInt(k, f[k]);
  if (!Number.isInteger(f['checkpoint-every']) || f['checkpoint-every'] < 0)
    throw new CliError('--checkpoint-every must be a non-negative integer');
  for (const k of ['lr', 'kl-warmup', 'dropout'] as const) {
    const v = f[k];
    if (v === undefined) continue;
    const ok = Number.isFinite(v) && (k === 'lr' ? v > 0 : k === 'dropout' ? v >= 0 && v < 1 : v >= 0);
    if (!ok)
      throw new CliError(
        `--${k} must be ${k === 'lr' ? 'a finite number > 0' : k === 'dropout' ? 'in [0, 1)' : 'a finite number ≥ 0'} (got ${v})`,
      );
  }
  const nValidation = f['validation-cells'] ?? 0;
  if (!Number.isInteger(nValidation) || nValidation < 0)
    throw new CliError('--validation-cells must be a non-negative integer');
  const earlyStopping = earlyStoppingConfig(f);
  if (earlyStopping && f['validation-cells'] === 0)
    throw new CliError('--early-stopping monitors the validation ELBO: it needs --validation-cells > 0');
  if (!Number.isSafeInteger(f.seed) || f.seed < 0)
    throw new CliError(`--seed must be a non-negative integer (got ${f.seed})`);
  return earlyStopping;
}

/** Fails when a fresh run would replace an earlier run's checkpoint without --force. */
export function refuseCheckpointOverwrite(
  checkpointPath: string,
  resume: boolean,
  force: boolean | undefined,
): void {
  if (!resume && !force && fs.existsSync(checkpointPath)) {
    throw new CliError(
      `${checkpointPath} exists (an earlier run's model): pass --resume to continue it, --force to replace it, or --checkpoint PATH to write another file`,
    );
  }
}

export interface PreparedTraining {
  /** the checkpoint file of this run (--checkpoint, or the default beside the dataset) */
  checkpointPath: string;
  setup: TrainingSetup;
  dataset: Dataset;
  data: TrainingData;
  resumed: boolean;
  maxSteps: number | null;
}

export async function prepareTraining(
  f: TrainingFlags,
  log: (m: string) => void,
  plannedWorkers = 1,
): Promise<PreparedTraining> {
  const earlyStopping = checkTrainingFlags(f);
  if (!(f['step-timeout'] > 0)) throw new CliError('--step-timeout must be a positive number of seconds');
  const checkpointPath = f.checkpoint ?? defaultCheckpointPath(f.data);
  refuseCheckpointOverwrite(checkpointPath, f.resume, f.force);
  const dataset = await openDataset(f.data);
  const data = trainingData(dataset);
  if (data.train.length === 0) throw new InputError(f.data, 'the dataset has no training cells');

  if (f.resume && fs.existsSync(checkpointPath)) {
    const c = loadCheckpoint(checkpointPath);
    if (c.manifestHash && data.manifestHash && c.manifestHash !== data.manifestHash) {
      throw new InputError(
        checkpointPath,
        `was trained on another dataset than ${f.data} (manifest hash differs)`,
      );
    }
    if (c.modelConfig.nGenes !== data.nGenes || c.modelConfig.nBatch !== data.nBatch) {
      throw new InputError(
        checkpointPath,
        `model is for ${c.modelConfig.nGenes} genes × ${c.modelConfig.nBatch} batches, the dataset has ${data.nGenes} × ${data.nBatch}`,
      );
    }
    const trainConfig: TrainConfig = {
      ...c.trainConfig,
      epochs: f.epochs ?? c.trainConfig.epochs,
      ...(earlyStopping ? { earlyStopping } : {}),
    };
    const setup: TrainingSetup = {
      modelConfig: c.modelConfig,
      trainConfig,
      data,
      optimizer: SharedStepOptimizer.fromCheckpoint(c),
      position: { ...c.position },
      history: c.history,
    };
    log(
      `resuming from ${checkpointPath}: epoch ${c.position.epoch}, step ${c.position.stepInEpoch} of the epoch, ${c.position.globalStep} steps done`,
    );
    return { checkpointPath, setup, dataset, data, resumed: true, maxSteps: f['max-steps'] ?? null };
  }
  if (f.resume) log(`--resume: ${checkpointPath} does not exist yet; starting from scratch`);

  const modelConfig: ModelConfig = defaultModelConfig(data.nGenes, data.nBatch, {
    nHidden: f['n-hidden'],
    nLatent: f['n-latent'],
    nLayers: f['n-layers'],
    dropoutRate: f.dropout,
    likelihood: f.likelihood,
    dispersion: f.dispersion,
  });
  const batches = defaultBatchSizes(plannedWorkers, f['global-batch'], f.microbatch, f.lr);
  const over: Partial<TrainConfig> = { seed: f.seed, ...batches };
  if (earlyStopping) over.earlyStopping = earlyStopping;
  if (f.epochs !== undefined) over.epochs = f.epochs;
  if (f['kl-warmup'] !== undefined) over.nEpochsKlWarmup = f['kl-warmup'];
  const trainConfig = defaultTrainConfig(dataset.manifest.nCells, over);
  if (trainConfig.microbatch > trainConfig.globalBatch) trainConfig.microbatch = trainConfig.globalBatch;
  const position: CheckpointPosition = { epoch: 0, stepInEpoch: 0, globalStep: 0 };
  const setup: TrainingSetup = {
    modelConfig,
    trainConfig,
    data,
    optimizer: SharedStepOptimizer.fresh(modelConfig, trainConfig),
    position,
    history: [],
  };
  return { checkpointPath, setup, dataset, data, resumed: false, maxSteps: f['max-steps'] ?? null };
}
