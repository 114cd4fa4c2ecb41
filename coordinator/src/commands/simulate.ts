// `atlasvae simulate`: a synthetic atlas written straight into the prepared-dataset format.
import type { Argv } from 'yargs';
import {
  simulateToDataset,
  defaultSimulationOptions,
  simulatedNames,
  type CellSink,
} from '../data/simulate.js';
import { checkOutputDir } from '../data/writer.js';
import { MtxCellSink } from '../data/mtx-writer.js';
import { H5adCellSink } from '../data/h5ad-writer.js';
import { Progress } from '../progress.js';
import { CliError } from '@atlasvae/shared';

export function simulateCommand(y: Argv): Argv {
  return y.command(
    'simulate',
    'Generate a synthetic atlas (NB counts from latent cell types, batch effects) as a prepared dataset',
    (c) =>
      c
        .option('cells', { type: 'number', demandOption: true, describe: 'number of cells' })
        .option('genes', { type: 'number', demandOption: true, describe: 'number of genes' })
        .option('out', { type: 'string', demandOption: true, describe: 'output dataset folder' })
        .option('batches', {
          type: 'number',
          default: defaultSimulationOptions.batches,
          describe: 'technical batches',
        })
        .option('cell-types', {
          type: 'number',
          default: defaultSimulationOptions.cellTypes,
          describe: 'latent cell types',
        })
        .option('library-median', {
          type: 'number',
          default: defaultSimulationOptions.libraryMedian,
          describe: 'median total counts per cell',
        })
        .option('seed', {
          type: 'number',
          default: 0,
          describe: 'random seed (simulation and train/validation split)',
        })
        .option('shard-cells', { type: 'number', default: 65536, describe: 'cells per shard file' })
        .option('write-h5ad', { type: 'string', describe: 'also write the counts as an AnnData .h5ad (CSR)' })
        .option('write-mtx', { type: 'string', describe: 'also write a 10x MatrixMarket folder' })
        .option('force', {
          type: 'boolean',
          default: false,
          describe: 'replace an existing dataset at --out',
        })
        .example(
          '$0 simulate --cells 1000000 --genes 2000 --batches 4 --out atlas/',
          'a million-cell synthetic atlas',
        ),
    async (a) => {
      const cells = a.cells,
        genes = a.genes;
      for (const [k, v] of [
        ['cells', cells],
        ['genes', genes],
        ['batches', a.batches],
        ['cell-types', a['cell-types']],
      ] as const) {
        if (!Number.isInteger(v) || v < 1) throw new CliError(`--${k} must be a positive integer (got ${v})`);
      }
      if (cells >= 2 ** 32) throw new CliError('--cells must be below 2^32');
      checkOutputDir(a.out, a.force);
      const o = {
        ...defaultSimulationOptions,
        cells,
        genes,
        batches: a.batches,
        cellTypes: a['cell-types'],
        libraryMedian: a['library-median'],
        seed: a.seed,
      };
      const names = simulatedNames(o);
      const sinks: CellSink[] = [];
      if (a['write-mtx'])
        sinks.push(new MtxCellSink(a['write-mtx'], names.genes, cells, names.batchNames, names.typeNames));
      const progress = new Progress({ label: 'simulate', unit: 'cells', totalSteps: cells });
      let last = 0;
      if (a['write-h5ad']) sinks.push(await H5adCellSink.create(a['write-h5ad'], o));
      const m = await simulateToDataset({
        ...o,
        out: a.out,
        shardCells: a['shard-cells'],
        extraSinks: sinks,
        onProgress: (done) => {
          progress.update({ cells: done - last, completedSteps: done });
          last = done;
        },
      });
      progress.finish();
      console.log(
        `${a.out}: ${m.nCells} cells × ${m.nGenes} genes, ${m.nnz} nonzero counts in ${m.shards.length} shard(s); ${m.droppedZeroCountCells} zero-count cells dropped`,
      );
    },
  );
}
