// `atlasvae prepare`: an .h5ad, 10x .h5 or MatrixMarket folder → a prepared Arrow dataset.
import type { Argv } from 'yargs';
import { prepareDataset } from '../data/prepare.js';
import { Progress } from '../progress.js';
import { getLogger } from '@atlasvae/shared';

export function prepareCommand(y: Argv): Argv {
  return y.command(
    'prepare <input>',
    'Turn an .h5ad, 10x .h5 or MatrixMarket folder into a sharded Arrow dataset for training',
    (c) =>
      c
        .positional('input', {
          type: 'string',
          demandOption: true,
          describe: '.h5ad file, 10x .h5 file, or MatrixMarket folder',
        })
        .option('out', { type: 'string', demandOption: true, describe: 'output dataset folder' })
        .option('batch-key', {
          type: 'string',
          describe: 'obs column (or --obs TSV column) with the batch of each cell',
        })
        .option('label-key', {
          type: 'string',
          describe: 'obs column (or --obs TSV column) with the cell type',
        })
        .option('obs', {
          type: 'string',
          describe: 'cell metadata TSV (header line; first column the barcode)',
        })
        .option('layer', { type: 'string', describe: '.h5ad: read counts from layers/NAME instead of X' })
        .option('use-raw', { type: 'boolean', default: false, describe: '.h5ad: read counts from raw/X' })
        .option('n-top-genes', {
          type: 'number',
          describe: 'keep the N most variable genes (seurat_v3, batch-aware with --batch-key)',
        })
        .option('genes', {
          type: 'string',
          describe:
            'genes to keep, in order: a file with one per line, or a prepared dataset folder (its genes.tsv); missing genes become zeros',
        })
        .option('shard-cells', { type: 'number', default: 65536, describe: 'cells per shard file' })
        .option('seed', { type: 'number', default: 0, describe: 'seed of the 90/10 train/validation split' })
        .option('allow-non-integer', {
          type: 'boolean',
          default: false,
          describe: 'accept non-integer values (the NB likelihood expects counts)',
        })
        .option('force', {
          type: 'boolean',
          default: false,
          describe: 'replace an existing dataset at --out',
        })
        .example(
          '$0 prepare pbmc.h5ad --out pbmc/ --batch-key sample --label-key cell_type --n-top-genes 2000',
          'AnnData input with HVG selection',
        )
        .example(
          '$0 prepare filtered_feature_bc_matrix/ --obs labels.tsv --batch-key batch --out ds/',
          'a 10x MatrixMarket folder with a metadata table',
        ),
    async (a) => {
      let progress: Progress | null = null;
      let last = 0,
        lastPhase = '';
      const { manifest } = await prepareDataset({
        input: a.input,
        out: a.out,
        batchKey: a['batch-key'],
        labelKey: a['label-key'],
        obs: a.obs,
        layer: a.layer,
        useRaw: a['use-raw'],
        nTopGenes: a['n-top-genes'],
        genes: a.genes,
        shardCells: a['shard-cells'],
        seed: a.seed,
        allowNonInteger: a['allow-non-integer'],
        force: a.force,
        onProgress: (phase, done, total) => {
          if (phase !== lastPhase) {
            progress?.finish();
            progress = new Progress({ label: `prepare (${phase})`, unit: 'cells', totalSteps: total });
            last = 0;
            lastPhase = phase;
          }
          progress!.update({ cells: done - last, completedSteps: done });
          last = done;
        },
        onWarning: (m) => getLogger('prepare').warn(m),
      });
      (progress as Progress | null)?.finish();
      console.log(
        `${a.out}: ${manifest.nCells} cells × ${manifest.nGenes} genes, ${manifest.nnz} nonzero counts in ${manifest.shards.length} shard(s); ` +
          `${manifest.batchCategories.length} batch(es), ${manifest.labelCategories.length} label(s); ${manifest.droppedZeroCountCells} zero-count cells dropped`,
      );
    },
  );
}
