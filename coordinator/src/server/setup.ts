// From command-line options to a training setup: the dataset, the model and training
// configuration (fresh, or from a checkpoint on --resume), and the optimizer state.

import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
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
import { openDataset, type Dataset } from '../data/dataset.js';
import { trainingData, type TrainingData } from './data.js';
import { SharedStepOptimizer } from './optimizer.js';
import type { StreamParams, TrainingSetup } from './coordinator.js';
import { STREAM_PARAMS } from './coordinator.js';
import { earlyStoppingConfig, earlyStoppingOptions } from '../earlyStoppingFlags.js';

export interface TrainingFlags {
  data: string;
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
  resume: boolean;
  /** replace an existing checkpoint file when not resuming */
  force?: boolean;
  'step-timeout': number;
  /** send parameters as they leave Adam: to workers on other hosts (auto), to all, or to none */
  'stream-params'?: StreamParams;
  /** workers on this host read parameters from shared-memory files (auto) or the socket (never) */
  'shared-memory'?: 'auto' | 'never';
  /** held-out cells evaluated at the end of each epoch (0: none) */
  'validation-cells'?: number;
  'early-stopping'?: boolean;
  'early-stopping-patience'?: number;
}

/** Options shared by `coordinator` and `train`. */
export function trainingOptions<T>(y: Argv<T>) {
  return y
    .option('data', {
      type: 'string',
      demandOption: true,
      describe: 'prepared dataset folder (from `atlasvae prepare` or `atlasvae simulate`)',
    })
    .option('epochs', {
      type: 'number',
      describe: "epochs to train (default: scvi's min(round(20000 / cells × 400), 400))",
    })
    .option('max-steps', {
      type: 'number',
      describe: 'stop after this many optimizer steps in total (the plan position is checkpointed)',
    })
    .option('seed', { type: 'number', default: 0, describe: 'seed of initialisation, epoch plans and noise' })
    .option('global-batch', {
      type: 'number',
      describe: 'cells per optimizer step (default: 128, or 32 × workers beyond 4 workers)',
    })
    .option('microbatch', {
      type: 'number',
      describe:
        'cells per gradient computation; a step is split into microbatches of about this size (default: the global batch / workers, at least 32, so every worker has one; recorded in the checkpoint)',
    })
    .option('lr', { type: 'number', describe: 'Adam learning rate (default 1e-3)' })
    .option('kl-warmup', { type: 'number', describe: "epochs of linear KL warm-up (default 400, scvi's)" })
    .option('n-hidden', { type: 'number', default: 128, describe: 'hidden units per layer' })
    .option('n-latent', { type: 'number', default: 10, describe: 'latent dimensions' })
    .option('n-layers', { type: 'number', default: 1, describe: 'hidden layers in encoder and decoder' })
    .option('dropout', { type: 'number', default: 0.1, describe: 'encoder dropout rate' })
    .option('likelihood', {
      choices: ['nb', 'zinb', 'poisson', 'gaussian'] as const,
      default: 'nb' as Likelihood,
      describe: 'count likelihood',
    })
    .option('dispersion', {
      choices: ['gene', 'gene-batch'] as const,
      default: 'gene' as DispersionMode,
      describe: 'NB dispersion per gene or per gene and batch',
    })
    .option('checkpoint', {
      type: 'string',
      describe:
        'checkpoint file, written atomically every --checkpoint-every steps and at the end (default: DATA.ckpt beside the dataset folder)',
    })
    .option('checkpoint-every', {
      type: 'number',
      default: 500,
      describe: 'steps between checkpoints (0: only at the end)',
    })
    .option('resume', {
      type: 'boolean',
      default: false,
      describe: 'continue from --checkpoint (when it exists) exactly where it stopped',
    })
    .option('force', {
      type: 'boolean',
      default: false,
      describe:
        'replace an existing --checkpoint file (without it, a run that would overwrite one refuses to start)',
    })
    .option('step-timeout', {
      type: 'number',
      default: 120,
      describe: 'seconds a worker may hold a microbatch before it is handed to another worker',
    })
    .option('stream-params', {
      choices: STREAM_PARAMS,
      default: 'auto' as StreamParams,
      describe:
        'send each range of new parameters while Adam computes the next: auto = to workers on other hosts (on this host their reading competes with Adam for the cores)',
    })
    .option('shared-memory', {
      choices: ['auto', 'never'] as const,
      default: 'auto' as 'auto' | 'never',
      describe:
        'workers on this host read each new parameter vector from a shared-memory file (/dev/shm) instead of the socket, when they can open it',
    })
    .option('validation-cells', {
      type: 'number',
      default: 10000,
      describe: 'held-out cells whose ELBO the coordinator evaluates after each epoch (0: none)',
    })
    .options(earlyStoppingOptions);
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

/**
 * Default batch sizes for a run planned for `workers` workers (`--local-workers` of `train`,
 * `--min-workers` of `coordinator`): the global batch stays scvi's 128 cells (the optimizer steps
 * per epoch are unchanged) and is split into one microbatch per worker; beyond 4 workers the
 * microbatch stays at 32 cells and the global batch grows to 32 × workers. Fixed at the start and
 * recorded in the checkpoint, so the result never depends on how many workers happen to connect.
 */
export function defaultBatchSizes(
  workers: number,
  globalBatch?: number,
  microbatch?: number,
): { globalBatch: number; microbatch: number } {
  const n = Math.max(1, Math.floor(workers));
  const global = globalBatch ?? Math.max(128, MIN_DEFAULT_MICROBATCH * n);
  const micro = microbatch ?? Math.max(Math.min(MIN_DEFAULT_MICROBATCH, global), Math.ceil(global / n));
  return { globalBatch: global, microbatch: Math.min(micro, global) };
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
  if (!(f['step-timeout'] > 0)) throw new CliError('--step-timeout must be a positive number of seconds');
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
  const earlyStopping = earlyStoppingConfig(f);
  if (earlyStopping && f['validation-cells'] === 0)
    throw new CliError('--early-stopping monitors the validation ELBO: it needs --validation-cells > 0');
  if (!Number.isSafeInteger(f.seed) || f.seed < 0)
    throw new CliError(`--seed must be a non-negative integer (got ${f.seed})`);
  const checkpointPath = f.checkpoint ?? defaultCheckpointPath(f.data);
  if (!f.resume && !f.force && fs.existsSync(checkpointPath)) {
    throw new CliError(
      `${checkpointPath} exists (an earlier run's model): pass --resume to continue it, --force to replace it, or --checkpoint PATH to write another file`,
    );
  }
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
  const batches = defaultBatchSizes(plannedWorkers, f['global-batch'], f.microbatch);
  const over: Partial<TrainConfig> = { seed: f.seed, ...batches };
  if (earlyStopping) over.earlyStopping = earlyStopping;
  if (f.epochs !== undefined) over.epochs = f.epochs;
  if (f.lr !== undefined) over.lr = f.lr;
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
