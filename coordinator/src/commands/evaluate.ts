// `atlasvae evaluate`: ELBO terms, marginal log-likelihood and latent-space metrics as a JSON report.
import type { Argv } from 'yargs';
import { refuseOverwrite } from '../outputs.js';
import { CliError, log, writeFileAtomic } from '@atlasvae/shared';
import { openResultsInputs, allCells } from '../results/inputs.js';
import {
  withModelAndData,
  requireOption,
  requirePositiveInt,
  requireNonNegativeInt,
  chunkProgress,
} from './results-options.js';
import { fleetChoice } from './results-options.js';
import { evaluateModel } from '../results/evaluate.js';

const SPLITS = ['all', 'train', 'validation'] as const;

export function evaluateCommand(y: Argv): Argv {
  return y.command(
    'evaluate',
    'Evaluate a model on a dataset: ELBO, marginal log-likelihood, kNN cell-type accuracy, batch mixing (JSON report)',
    (c) =>
      withModelAndData(c)
        .option('split', {
          choices: SPLITS,
          default: 'all' as const,
          describe: "cells to evaluate (the dataset's own train/validation split)",
        })
        .option('samples', {
          type: 'number',
          default: 100,
          describe: 'importance samples per cell for the marginal log-likelihood (0 skips it)',
        })
        .option('out', { type: 'string', describe: 'write the JSON report here (it is printed either way)' })
        .option('per-cell', {
          type: 'string',
          describe: 'also write per-cell terms (reconstruction, kl, elbo, marginal_ll) to .arrow/.csv',
        })
        .option('noise-epoch', {
          type: 'number',
          describe:
            "key of the ELBO's noise: the epoch whose validation noise to reuse (default: the checkpoint's last epoch)",
        })
        .option('seed', {
          type: 'number',
          describe:
            "seed of the ELBO and marginal noise, folds and subsamples (default: the checkpoint's training seed)",
        })
        .option('k', { type: 'number', default: 15, describe: 'neighbours of the kNN classifier' })
        .option('folds', {
          type: 'number',
          default: 5,
          describe: 'cross-validation folds of the kNN classifier',
        })
        .option('mixing-k', {
          type: 'number',
          default: 50,
          describe: 'neighbours for the batch-mixing entropy',
        })
        .option('max-metric-cells', {
          type: 'number',
          default: 20000,
          describe: 'latent metrics on a seeded subsample of at most this many cells (exact kNN is O(n²))',
        })
        .example('$0 evaluate --checkpoint model.ckpt --data atlas/ --out report.json', 'the full report')
        .example(
          '$0 evaluate --checkpoint model.ckpt --data query/ --as-batch ctrl --samples 0',
          "a query dataset prepared with the model's genes; no marginal likelihood",
        ),
    async (a) => {
      const samples = requireNonNegativeInt('samples', a.samples);
      const k = requirePositiveInt('k', a.k);
      const folds = requirePositiveInt('folds', a.folds);
      if (folds < 2) throw new CliError('--folds must be at least 2');
      if (a.out) refuseOverwrite(a.out, a.force);
      const started = Date.now();
      const inputs = await openResultsInputs({
        checkpoint: requireOption('checkpoint', a.checkpoint),
        data: requireOption('data', a.data),
        backend: a.backend,
        asBatch: a['as-batch'],
        fleet: fleetChoice(a),
        chunkCells: a['chunk-cells'],
      });
      try {
        const ck = inputs.checkpoint;
        const seed = a.seed ?? ck.trainConfig.seed;
        // the trainer evaluates validation ELBO at the end of each epoch with noise (seed, epoch, chunk)
        const noiseEpoch = a['noise-epoch'] ?? Math.max(0, ck.position.epoch - 1);
        const cells =
          a.split === 'all'
            ? allCells(inputs.dataset)
            : a.split === 'train'
              ? inputs.dataset.train
              : inputs.dataset.validation;
        if (cells.length === 0) throw new CliError(`${a.data}: the ${a.split} split has no cells`);
        const plan = {
          source: inputs.dataset.source,
          cells,
          chunkSize: requirePositiveInt('chunk-cells', a['chunk-cells']),
          batchMap: inputs.batchMap,
        };
        const progress = chunkProgress('evaluate', plan);
        const report = await evaluateModel(inputs.engine, plan, {
          samples,
          seed,
          elboNoise: { seed, epoch: noiseEpoch },
          knnK: k,
          knnFolds: folds,
          mixingK: requirePositiveInt('mixing-k', a['mixing-k']),
          maxMetricCells: requirePositiveInt('max-metric-cells', a['max-metric-cells']),
          naming: inputs.naming,
          perCellOut: a['per-cell'],
          onChunk: progress.tick,
          onPhase: (p) => {
            progress.finish();
            log.info(`evaluate: ${p}`);
          },
        });
        progress.finish();
        const full = {
          checkpoint: a.checkpoint,
          data: a.data,
          split: a.split,
          backend: inputs.backend,
          seed,
          noiseEpoch,
          likelihood: ck.modelConfig.likelihood,
          ...report,
          seconds: (Date.now() - started) / 1000,
        };
        const json = JSON.stringify(full, null, 2) + '\n';
        if (a.out) writeFileAtomic(a.out, Buffer.from(json));
        process.stdout.write(json);
      } finally {
        await inputs.close();
      }
    },
  );
}
