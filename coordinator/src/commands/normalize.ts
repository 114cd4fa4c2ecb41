// `atlasvae normalize`: scVI normalized expression (decoder scale × library size) for chosen genes.
import type { Argv } from 'yargs';
import { refuseOverwrite } from '../outputs.js';
import { CliError, log } from '@atlasvae/shared';
import { openResultsInputs, allCells } from '../results/inputs.js';
import {
  withModelAndData,
  requireOption,
  requirePositiveInt,
  requireNonNegativeInt,
  chunkProgress,
  parseGeneList,
} from './results-options.js';
import { fleetChoice } from './results-options.js';
import { writeNormalizedExpression, resolveGenes } from '../results/normalize.js';
import { tableFormatOf } from '../results/table-writer.js';

export function normalizeCommand(y: Argv): Argv {
  return y.command(
    'normalize',
    'scVI normalized expression (decoder frequencies × library size) per cell for chosen genes, to .arrow or .csv',
    (c) =>
      withModelAndData(c)
        .option('out', { type: 'string', describe: 'output table: .arrow, .csv or .tsv' })
        .option('library-size', {
          type: 'string',
          default: '1e4',
          describe: "common library size, or 'observed' for each cell's total counts",
        })
        .option('transform-batch', {
          type: 'string',
          describe: 'decode every cell as if from this batch (scvi transform_batch)',
        })
        .option('genes', {
          type: 'string',
          describe: 'genes to write: g1,g2,… or a file with one gene per line (default: all)',
        })
        .option('samples', {
          type: 'number',
          default: 0,
          describe: 'average over this many posterior samples of z (0: at the posterior mean)',
        })
        .option('seed', { type: 'number', default: 0, describe: 'seed of the posterior samples' })
        .example(
          '$0 normalize --checkpoint model.ckpt --data atlas/ --genes CD3E,MS4A1,LYZ --out expr.csv',
          'three genes at library size 10,000',
        )
        .example(
          '$0 normalize --checkpoint model.ckpt --data atlas/ --transform-batch ctrl --out expr.arrow',
          'all genes, every cell decoded as batch "ctrl"',
        ),
    async (a) => {
      const out = requireOption('out', a.out);
      refuseOverwrite(out, a.force);
      if (!tableFormatOf(out)) throw new CliError(`${out}: unknown output format (use .arrow, .csv or .tsv)`);
      const libArg = a['library-size'];
      const librarySize = libArg === 'observed' ? 'observed' : Number(libArg);
      if (librarySize !== 'observed' && !(librarySize > 0))
        throw new CliError(`--library-size must be a positive number or 'observed' (got ${libArg})`);
      const samples = requireNonNegativeInt('samples', a.samples);
      const requested = parseGeneList(a.genes);
      const inputs = await openResultsInputs({
        checkpoint: requireOption('checkpoint', a.checkpoint),
        data: requireOption('data', a.data),
        backend: a.backend,
        asBatch: a['as-batch'],
        fleet: fleetChoice(a),
        chunkCells: a['chunk-cells'],
      });
      try {
        let genes;
        try {
          genes = resolveGenes(
            requested?.genes ?? null,
            inputs.checkpoint.genes,
            requested?.source ?? '--genes',
          );
        } catch (e) {
          throw new CliError((e as Error).message);
        }
        let transformBatch: number | undefined;
        if (a['transform-batch'] !== undefined) {
          const names = inputs.checkpoint.batchCategories;
          transformBatch = names.indexOf(a['transform-batch']);
          if (transformBatch < 0)
            throw new CliError(
              `--transform-batch ${a['transform-batch']}: the model's batches are ${names.join(', ')}`,
            );
        }
        const plan = {
          source: inputs.dataset.source,
          cells: allCells(inputs.dataset),
          chunkSize: requirePositiveInt('chunk-cells', a['chunk-cells']),
          batchMap: inputs.batchMap,
        };
        const progress = chunkProgress('normalize', plan);
        const r = await writeNormalizedExpression(inputs.engine, plan, out, {
          librarySize,
          genes: genes.indices,
          geneNames: genes.names,
          transformBatch,
          samples,
          seed: a.seed,
          naming: inputs.naming,
          onChunk: progress.tick,
        });
        progress.finish();
        log.info(
          `${out}: ${r.nCells} cells × ${r.nGenes} genes, library size ${librarySize}${transformBatch !== undefined ? `, as batch ${a['transform-batch']}` : ''}`,
        );
      } finally {
        await inputs.close();
      }
    },
  );
}
