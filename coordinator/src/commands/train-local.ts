// `atlasvae train-local`: train in this one process on a 10x MatrixMarket folder held in memory
// (no workers, no prepared dataset): the one training loop over the in-process executor, with the
// same plan, noise, microbatch order and optimizer step as the fleet, and the same training flags.
import fs from 'node:fs';
import path from 'node:path';
import type { Argv } from 'yargs';
import { JS_MODEL_BACKEND_CHOICES, initBackend } from '@atlasvae/shared/backend';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type TrainConfig,
  loadCheckpoint,
  CliError,
  InputError,
  log,
  trainValidationSplit,
} from '@atlasvae/shared';
import {
  InMemoryCellSource,
  trainInProcess,
  type EpochRecord,
  type TrainingState,
  DivergenceError,
} from '@atlasvae/shared/train';
import { readMtxInMemory } from '../data/mtx.js';
import { onStopSignals } from '@atlasvae/shared/runtime';
import { EXIT_DIVERGED } from '../server/run.js';
import {
  checkTrainingFlags,
  defaultBatchSizes,
  refuseCheckpointOverwrite,
  type CommonTrainingFlags,
} from '../server/setup.js';
import { spreadSubset } from '../server/validation.js';
import { categorize, obsColumnFor, readObsTsv } from '../data/obs.js';
import { trainingOptions } from './training-options.js';

/** Old spellings: each still works, with one warning naming the new flag. */
const deprecatedOptions = {
  'batch-size': { type: 'number', hidden: true, describe: 'deprecated: --global-batch' },
  out: { type: 'string', hidden: true, describe: 'deprecated: --checkpoint' },
} as const;

/** What the flags ask of the checkpoint file: where to read a resumed run from, where to write. */
function checkpointFiles(a: { checkpoint?: string; out?: string; resume?: string }): {
  write: string | null;
  resumeFrom: string | null;
} {
  if (a.out !== undefined) {
    log.warn('--out is deprecated: use --checkpoint');
    if (a.checkpoint !== undefined) throw new CliError('--out is the old name of --checkpoint: give one');
  }
  const write = a.checkpoint ?? a.out ?? null;
  // `--resume` alone is the boolean (resume from --checkpoint); `--resume FILE` the old spelling
  if (a.resume === undefined || a.resume === 'false') return { write, resumeFrom: null };
  if (a.resume === '' || a.resume === 'true') {
    if (!write) throw new CliError('--resume continues --checkpoint FILE: give --checkpoint');
    return { write, resumeFrom: write };
  }
  log.warn(`--resume FILE is deprecated: use --checkpoint ${a.resume} --resume`);
  return { write: write ?? a.resume, resumeFrom: a.resume };
}

export const trainLocalCommand = (y: Argv): Argv =>
  y.command(
    'train-local',
    'Train scVI in this single process on a 10x MatrixMarket folder (counts held in memory)',
    (b) =>
      trainingOptions(
        b
          .option('mtx', {
            type: 'string',
            demandOption: true,
            describe:
              'folder with matrix.mtx[.gz] (genes × cells), features/genes.tsv[.gz], barcodes.tsv[.gz]',
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
          }),
        'none: the model is not written',
      )
        .option('resume', {
          type: 'string',
          describe:
            'continue from --checkpoint exactly where it stopped (its model and training configuration; --epochs may extend it)',
        })
        .option('backend', {
          choices: JS_MODEL_BACKEND_CHOICES,
          default: 'auto' as const,
          describe: 'compute backend',
        })
        .options(deprecatedOptions)
        .example(
          '$0 train-local --mtx data/pbmc --batch-key batch --epochs 100 --checkpoint pbmc.ckpt',
          'train on a MatrixMarket folder with a batch covariate',
        )
        .example(
          '$0 train-local --mtx data/pbmc --batch-key batch --checkpoint pbmc.ckpt --resume --epochs 200',
          'continue exactly where a checkpoint stopped, to 200 epochs',
        ),
    async (a) => {
      const dir = a.mtx;
      if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError(dir, 'not a folder');
      if (a['batch-size'] !== undefined) {
        log.warn('--batch-size is deprecated: use --global-batch');
        if (a['global-batch'] !== undefined)
          throw new CliError('--batch-size is the old name of --global-batch: give one');
      }
      const flags: CommonTrainingFlags = {
        ...a,
        'global-batch': a['global-batch'] ?? a['batch-size'],
      };
      const earlyStopping = checkTrainingFlags(flags);
      const files = checkpointFiles(a);
      // writing back to the checkpoint it resumes from continues that run: no --force needed
      if (files.write)
        refuseCheckpointOverwrite(
          files.write,
          files.resumeFrom !== null && path.resolve(files.write) === path.resolve(files.resumeFrom),
          a.force,
        );
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
        nHidden: a['n-hidden'],
        nLatent: a['n-latent'],
        nLayers: a['n-layers'],
        dropoutRate: a.dropout,
      });
      // one process is one worker: the microbatch defaults to the global batch
      const over: Partial<TrainConfig> = {
        seed: a.seed,
        ...defaultBatchSizes(1, flags['global-batch'], a.microbatch, a.lr),
      };
      if (a.epochs !== undefined) over.epochs = a.epochs;
      if (a['kl-warmup'] !== undefined) over.nEpochsKlWarmup = a['kl-warmup'];
      if (earlyStopping) over.earlyStopping = earlyStopping;
      let trainConfig = defaultTrainConfig(all.nCells, over);
      let state: TrainingState | undefined;
      let history: EpochRecord[] = [];
      const resumeFrom = files.resumeFrom && fs.existsSync(files.resumeFrom) ? files.resumeFrom : null;
      if (files.resumeFrom && !resumeFrom)
        log.info(`--resume: ${files.resumeFrom} does not exist yet; starting from scratch`);
      if (resumeFrom) {
        const ckpt = loadCheckpoint(resumeFrom);
        if (ckpt.genes.length !== genes.length || ckpt.genes.some((g, i) => g !== genes[i])) {
          throw new InputError(
            resumeFrom,
            `was trained on ${ckpt.genes.length} genes that differ from the ${genes.length} genes of ${dir}`,
          );
        }
        if (ckpt.batchCategories.join('\u0000') !== batchCategories.join('\u0000')) {
          throw new InputError(
            resumeFrom,
            `has batches [${ckpt.batchCategories.join(', ')}], the data [${batchCategories.join(', ')}]`,
          );
        }
        modelConfig = ckpt.modelConfig;
        trainConfig = {
          ...ckpt.trainConfig,
          ...(a.epochs !== undefined ? { epochs: a.epochs } : {}),
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
        history = ckpt.history;
        log.info(`resuming ${resumeFrom} at epoch ${state.epoch + 1}, step ${state.globalStep}`);
      }
      const split = trainValidationSplit(all.nCells, trainConfig.seed, trainConfig.trainFraction);
      log.info(
        `train-local: ${all.nCells} cells × ${all.nGenes} genes, ${batchCategories.length} batches, ${split.train.length} train / ${split.validation.length} validation, ${trainConfig.epochs} epochs, ${modelConfig.likelihood}, backend ${backend}`,
      );
      const t0 = performance.now();
      let stopRequested = false;
      const out = files.write;
      const signals = onStopSignals((sig) => {
        stopRequested = true;
        log.warn(
          `${sig}: stopping after the current step${out ? `, writing ${out}` : ''} (${sig} again quits at once)`,
        );
      });
      const validationCells = spreadSubset(split.validation, a['validation-cells']);
      const result = await trainInProcess({
        source,
        modelConfig,
        trainConfig,
        trainCells: split.train,
        validationCells,
        ...(state ? { state } : {}),
        history,
        ...(a['max-steps'] !== undefined ? { maxSteps: a['max-steps'] } : {}),
        shouldStop: () => stopRequested,
        observers: [
          {
            epochCompleted: (e) =>
              log.info(
                `epoch ${e.epoch + 1}/${trainConfig.epochs}: train ELBO ${e.elbo.toFixed(2)}, validation ELBO ${(e.validationElbo ?? NaN).toFixed(2)}, kl weight ${(e.klWeight ?? NaN).toFixed(3)}, ${(e.nCells / (e.ms / 1000)).toFixed(0)} cells/s`,
              ),
            checkpointWritten: (c) => log.debug(`checkpoint written to ${c.path} (step ${c.globalStep})`),
            log: (level, m) => log[level](m),
          },
        ],
        ...(out
          ? {
              checkpoint: {
                path: out,
                every: a['checkpoint-every'],
                data: { genes, batchCategories, labelCategories, manifestHash: null },
              },
            }
          : {}),
      })
        .catch((e: unknown) => {
          // the error names the last checkpoint with finite parameters (this run's or the resumed one)
          if (e instanceof DivergenceError) throw new CliError(e.message, EXIT_DIVERGED);
          throw e;
        })
        .finally(() => signals.dispose());
      const seconds = (performance.now() - t0) / 1000;
      if (out) log.info(`checkpoint written to ${out}`);
      const last = result.history.filter((h) => !h.partial).at(-1);
      process.stdout.write(
        JSON.stringify({
          cells: all.nCells,
          genes: all.nGenes,
          epochs: result.position.epoch,
          steps: result.position.globalStep,
          stopped: result.stopped,
          seconds: Number(seconds.toFixed(2)),
          trainElbo: last?.elbo ?? null,
          validationElbo: last?.validationElbo ?? null,
          backend,
          checkpoint: out,
        }) + '\n',
      );
    },
  );
