// `atlasvae embed`: latent means (and variances) of every cell to Arrow, CSV, or obsm of an .h5ad.
import path from 'node:path';
import type { Argv } from 'yargs';
import { refuseOverwrite } from '../outputs.js';
import { CliError, loadCheckpoint, log } from '@atlasvae/shared';
import { openResultsInputs, allCells } from '../results/inputs.js';
import { withModelAndData, requireOption, requirePositiveInt, chunkProgress } from './results-options.js';
import { fleetChoice } from './results-options.js';
import { writeEmbeddingTable, writeEmbeddingH5ad, OBSM_KEY } from '../results/embed.js';
import { tableFormatOf } from '../results/table-writer.js';
import type { ChunkPlan } from '../results/cell-stream.js';

export function embedCommand(y: Argv): Argv {
  return y.command(
    'embed',
    'Latent embedding (posterior means, optionally variances) of every cell, to .arrow, .csv or an .h5ad obsm',
    (c) =>
      withModelAndData(c)
        .option('out', {
          type: 'string',
          describe: 'output file: .arrow, .csv, .tsv, or .h5ad (a copy of the source with obsm/X_atlasvae)',
        })
        .option('variance', {
          type: 'boolean',
          default: false,
          describe: 'also write the posterior variances (z_var_* columns, obsm/X_atlasvae_var)',
        })
        .option('source-h5ad', {
          type: 'string',
          describe: "the .h5ad to copy for .h5ad output (default: the dataset's source file)",
        })
        .option('list-genes', {
          type: 'boolean',
          default: false,
          describe: "print the model's genes, one per line (for `prepare --genes`), and exit",
        })
        .example(
          '$0 embed --checkpoint run/model.ckpt --data atlas/ --out latent.arrow',
          'latent means as an Arrow table',
        )
        .example(
          '$0 embed --checkpoint run/model.ckpt --data pbmc/ --out pbmc_latent.h5ad',
          "obsm['X_atlasvae'] in a copy of the source .h5ad",
        ),
    async (a) => {
      const ckptPath = requireOption('checkpoint', a.checkpoint);
      if (a['list-genes']) {
        process.stdout.write(loadCheckpoint(ckptPath).genes.join('\n') + '\n');
        return;
      }
      const out = requireOption('out', a.out);
      refuseOverwrite(out, a.force);
      const isH5ad = path.extname(out).toLowerCase() === '.h5ad';
      if (!isH5ad && !tableFormatOf(out))
        throw new CliError(`${out}: unknown output format (use .arrow, .csv, .tsv or .h5ad)`);
      const inputs = await openResultsInputs({
        checkpoint: ckptPath,
        data: requireOption('data', a.data),
        backend: a.backend,
        asBatch: a['as-batch'],
        fleet: fleetChoice(a),
        chunkCells: a['chunk-cells'],
      });
      try {
        const plan: ChunkPlan = {
          source: inputs.dataset.source,
          cells: allCells(inputs.dataset),
          chunkSize: requirePositiveInt('chunk-cells', a['chunk-cells']),
          batchMap: inputs.batchMap,
        };
        const progress = chunkProgress('embed', plan);
        const opts = { variance: a.variance, naming: inputs.naming, onChunk: progress.tick };
        if (isH5ad) {
          const m = inputs.dataset.manifest;
          const source = a['source-h5ad'] ?? (m.source.format === 'h5ad' ? m.source.path : undefined);
          if (!source)
            throw new CliError(
              `the dataset was prepared from ${m.source.format} (${m.source.path}), not an .h5ad: name the .h5ad to copy with --source-h5ad`,
            );
          const r = await writeEmbeddingH5ad(inputs.engine, plan, source, out, opts);
          progress.finish();
          log.info(
            `${out}: obsm/${OBSM_KEY} [${r.nObs} × ${inputs.checkpoint.modelConfig.nLatent}] for ${r.nCells} cells${r.missing ? ` (${r.missing} source rows not in the dataset are NaN)` : ''}`,
          );
        } else {
          const r = await writeEmbeddingTable(inputs.engine, plan, out, opts);
          progress.finish();
          log.info(
            `${out}: ${r.nCells} cells × ${inputs.checkpoint.modelConfig.nLatent} latent dimensions${a.variance ? ' (+ variances)' : ''}`,
          );
        }
      } finally {
        await inputs.close();
      }
    },
  );
}
