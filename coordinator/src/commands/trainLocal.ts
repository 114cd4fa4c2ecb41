// `atlasvae train-local`: train in this one process on a 10x MatrixMarket folder held in memory
// (no workers, no prepared dataset). Same plan, noise and optimizer step as distributed training.
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { JS_MODEL_BACKEND_CHOICES, initBackend, type BackendChoice } from '@atlasvae/shared/backend';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type DispersionMode,
  type Likelihood,
  assembleCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  CliError,
  InputError,
  log,
  trainValidationSplit,
} from '@atlasvae/shared';
import {
  InMemoryCellSource,
  train,
  type EpochSummary,
  type TrainingState,
  DivergenceError,
} from '@atlasvae/shared/train';
import { readMtxInMemory } from '../data/mtx.js';
import { onStopSignals } from '@atlasvae/shared/runtime';
import { EXIT_DIVERGED } from '../server/run.js';
import { earlyStoppingConfig, earlyStoppingOptions } from '../earlyStoppingFlags.js';
import { refuseOverwrite } from '../outputs.js';
import { categorize, obsColumnFor, readObsTsv } from '../data/obs.js';

const LIKELIHOODS: readonly Likelihood[] = ['nb', 'zinb', 'poisson', 'gaussian'];
const DISPERSIONS: readonly DispersionMode[] = ['gene', 'gene-batch'];

function positiveInt(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 1) throw new CliError(`--${name} must be a positive integer, got ${v}`);
  return v;
}

export const trainLocalCommand = (y: Argv): Argv =>
  y.command(
    'train-local',
    'Train scVI in this single process on a 10x MatrixMarket folder (counts held in memory)',
    (b) =>
      b
        .option('mtx', {
          type: 'string',
          demandOption: true,
          describe: 'folder with matrix.mtx[.gz] (genes × cells), features/genes.tsv[.gz], barcodes.tsv[.gz]',
        })
        .option('labels', {
          type: 'string',
          describe:
            'cell metadata TSV (first column barcode); default: labels.tsv in the folder when present',
        })
        .option('batch-key', {
          type: 'string',
          describe: 'metadata column used as the batch covariate (default: one batch)',
        })
        .option('label-key', {
          type: 'string',
          default: 'cell_type',
          describe: 'metadata column of cell-type labels (stored in the checkpoint when present)',
        })
        .option('epochs', {
          type: 'number',
          describe: "epochs (default: scvi's min(round(20000 / cells × 400), 400))",
        })
        .option('kl-warmup', { type: 'number', default: 400, describe: 'epochs of linear KL warm-up' })
        .option('seed', {
          type: 'number',
          default: 0,
          describe: 'seed of initialisation, split, plan and noise',
        })
        .option('likelihood', { choices: LIKELIHOODS, default: 'nb' as Likelihood })
        .option('dispersion', { choices: DISPERSIONS, default: 'gene' as DispersionMode })
        .option('n-hidden', { type: 'number', default: 128 })
        .option('n-latent', { type: 'number', default: 10 })
        .option('n-layers', { type: 'number', default: 1 })
        .option('dropout', { type: 'number', default: 0.1 })
        .option('batch-size', { type: 'number', default: 128, describe: 'cells per optimizer step' })
        .option('lr', { type: 'number', default: 1e-3, describe: 'Adam learning rate (> 0)' })
        .option('max-steps', { type: 'number', describe: 'stop after this many optimizer steps' })
        .option('backend', {
          choices: JS_MODEL_BACKEND_CHOICES,
          default: 'auto' as BackendChoice,
          describe: 'compute backend',
        })
        .option('out', {
          type: 'string',
          describe: 'checkpoint file to write at the end (written atomically; also on SIGINT/SIGTERM)',
        })
        .option('force', { type: 'boolean', default: false, describe: 'replace an existing --out file' })
        .options(earlyStoppingOptions)
        .option('resume', {
          type: 'string',
          describe:
            'continue from this checkpoint (its model and training configuration; --epochs may extend it)',
        })
        .example(
          '$0 train-local --mtx data/pbmc --batch-key batch --epochs 100 --out pbmc.ckpt',
          'train on a MatrixMarket folder with a batch covariate',
        )
        .example(
          '$0 train-local --mtx data/pbmc --batch-key batch --resume pbmc.ckpt --epochs 200 --out pbmc200.ckpt',
          'continue exactly where a checkpoint stopped',
        ),
    async (a) => {
      const dir = a.mtx;
      if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError(dir, 'not a folder');
      const dropout = a.dropout;
      if (!(dropout >= 0 && dropout < 1)) throw new CliError(`--dropout must be in [0, 1), got ${dropout}`);
      if (!(Number.isFinite(a.lr) && a.lr > 0))
        throw new CliError(`--lr must be a finite number > 0, got ${a.lr}`);
      if (!(Number.isFinite(a['kl-warmup']) && a['kl-warmup'] >= 0))
        throw new CliError(`--kl-warmup must be a finite number ≥ 0, got ${a['kl-warmup']}`);
      if (!Number.isSafeInteger(a.seed) || a.seed < 0)
        throw new CliError(`--seed must be a non-negative integer, got ${a.seed}`);
      const earlyStopping = earlyStoppingConfig(a);
      // writing back to the checkpoint it resumes from continues that run: no --force needed
      if (a.out && !(a.resume && path.resolve(a.out) === path.resolve(a.resume)))
        refuseOverwrite(a.out, a.force, '--out');
      const { batch: all, genes, barcodes } = await readMtxInMemory(dir);
      if (all.nCells < 3) throw new InputError(dir, `only ${all.nCells} cells: too few to train`);
      const labelsFile =
        a.labels ?? (fs.existsSync(path.join(dir, 'labels.tsv')) ? path.join(dir, 'labels.tsv') : undefined);
      let batchCategories = ['0'];
      let labelCategories: string[] = [];
      if (a['batch-key'] && !labelsFile)
        throw new CliError('--batch-key needs a metadata table: give --labels FILE');
      if (labelsFile) {
        const obs = await readObsTsv(labelsFile);
        if (a['batch-key']) {
          const c = categorize(obsColumnFor(obs, a['batch-key'], barcodes));
          const missing = c.codes.indexOf(-1);
          if (missing >= 0)
            throw new InputError(
              labelsFile,
              `cell ${barcodes[missing]} has no value in column "${a['batch-key']}"`,
            );
          all.batch.set(c.codes);
          batchCategories = c.categories;
        }
        if (obs.columns.has(a['label-key'])) {
          const c = categorize(obsColumnFor(obs, a['label-key'], barcodes));
          all.label.set(c.codes);
          labelCategories = c.categories;
        }
      }
      const backend = await initBackend(a.backend, (m) => log.info(m));
      const source = new InMemoryCellSource(all, batchCategories.length);
      let modelConfig = defaultModelConfig(all.nGenes, batchCategories.length, {
        likelihood: a.likelihood,
        dispersion: a.dispersion,
        nHidden: positiveInt('n-hidden', a['n-hidden'])!,
        nLatent: positiveInt('n-latent', a['n-latent'])!,
        nLayers: positiveInt('n-layers', a['n-layers'])!,
        dropoutRate: dropout,
      });
      const batchSize = positiveInt('batch-size', a['batch-size'])!;
      let trainConfig = defaultTrainConfig(all.nCells, {
        seed: a.seed,
        nEpochsKlWarmup: a['kl-warmup'],
        lr: a.lr,
        globalBatch: batchSize,
        microbatch: batchSize,
        ...(a.epochs !== undefined ? { epochs: positiveInt('epochs', a.epochs)! } : {}),
        ...(earlyStopping ? { earlyStopping } : {}),
      });
      let state: TrainingState | undefined;
      const history: EpochSummary[] = [];
      if (a.resume) {
        const ckpt = loadCheckpoint(a.resume);
        if (ckpt.genes.length !== genes.length || ckpt.genes.some((g, i) => g !== genes[i])) {
          throw new InputError(
            a.resume,
            `was trained on ${ckpt.genes.length} genes that differ from the ${genes.length} genes of ${dir}`,
          );
        }
        if (ckpt.batchCategories.join('\u0000') !== batchCategories.join('\u0000')) {
          throw new InputError(
            a.resume,
            `has batches [${ckpt.batchCategories.join(', ')}], the data [${batchCategories.join(', ')}]`,
          );
        }
        modelConfig = ckpt.modelConfig;
        trainConfig = {
          ...ckpt.trainConfig,
          ...(a.epochs !== undefined ? { epochs: positiveInt('epochs', a.epochs)! } : {}),
          ...(earlyStopping ? { earlyStopping } : {}),
        };
        state = {
          params: ckpt.params,
          buffers: ckpt.buffers,
          adam: ckpt.adam,
          globalStep: ckpt.position.globalStep,
          epoch: ckpt.position.epoch,
          stepInEpoch: ckpt.position.stepInEpoch,
        };
        history.push(...(ckpt.history as EpochSummary[]));
        log.info(`resuming ${a.resume} at epoch ${state.epoch + 1}, step ${state.globalStep}`);
      }
      const split = trainValidationSplit(all.nCells, trainConfig.seed, trainConfig.trainFraction);
      log.info(
        `train-local: ${all.nCells} cells × ${all.nGenes} genes, ${batchCategories.length} batches, ${split.train.length} train / ${split.validation.length} validation, ${trainConfig.epochs} epochs, ${modelConfig.likelihood}, backend ${backend}`,
      );
      const t0 = performance.now();
      let stopRequested = false;
      const signals = onStopSignals((sig) => {
        stopRequested = true;
        log.warn(
          `${sig}: stopping after the current step${a.out ? `, writing ${a.out}` : ''} (${sig} again quits at once)`,
        );
      });
      const result = await train({
        source,
        modelConfig,
        trainConfig,
        trainCells: split.train,
        validationCells: split.validation,
        state,
        maxSteps: positiveInt('max-steps', a['max-steps']),
        shouldStop: () => stopRequested,
        previousEpochs: history,
        onEpoch: (e) => {
          history.push(e);
          log.info(
            `epoch ${e.epoch + 1}/${trainConfig.epochs}: train ELBO ${e.trainElbo.toFixed(2)}, validation ELBO ${e.validationElbo.toFixed(2)}, kl weight ${e.klWeight.toFixed(3)}, ${(e.cells / e.seconds).toFixed(0)} cells/s`,
          );
        },
      })
        .catch((e: unknown) => {
          // nothing is written: --out keeps what it held (a resumed run's checkpoint stays finite)
          if (e instanceof DivergenceError)
            throw new CliError(e.withCheckpoint(a.resume ?? null).message, EXIT_DIVERGED);
          throw e;
        })
        .finally(() => signals.dispose());
      if (result.earlyStopping) log.info(result.earlyStopping.describe());
      const seconds = (performance.now() - t0) / 1000;
      if (a.out) {
        const s = result.state;
        const ckpt = assembleCheckpoint({
          modelConfig,
          trainConfig,
          params: s.params,
          buffers: s.buffers,
          adam: s.adam,
          position: { epoch: s.epoch, stepInEpoch: s.stepInEpoch, globalStep: s.globalStep },
          genes,
          batchCategories,
          labelCategories,
          manifestHash: null,
          history,
          earlyStopping: result.earlyStopping ?? null,
        });
        saveCheckpoint(a.out, ckpt);
        log.info(`checkpoint written to ${a.out}`);
      }
      const last = history[history.length - 1];
      process.stdout.write(
        JSON.stringify({
          cells: all.nCells,
          genes: all.nGenes,
          epochs: result.state.epoch,
          steps: result.state.globalStep,
          stopped: result.stopped,
          seconds: Number(seconds.toFixed(2)),
          trainElbo: last?.trainElbo ?? null,
          validationElbo: last?.validationElbo ?? null,
          backend,
          checkpoint: a.out ?? null,
        }) + '\n',
      );
    },
  );
