// `atlasvae umap`: a UMAP picture of the latent space, coloured by cell type, batch or any obs column.
import type { Argv } from 'yargs';
import { CliError, log } from '@atlasvae/shared';
import { openResultsInputs } from '../results/inputs.js';
import { subsampleIndices } from '../results/latent-metrics.js';
import { withModelAndData, requirePositiveInt, chunkProgress } from './results-options.js';
import { fleetChoice } from './results-options.js';
import { readEmbeddingFile } from '../results/embedding-file.js';
import { colorCodes } from '../results/color-values.js';
import { forEachChunk } from '../results/cell-stream.js';
import { encodeCells } from '../results/engine.js';
import { writeUmapPng } from '../results/umap-plot.js';
import { Progress } from '../progress.js';
import { refuseOverwrite } from '../outputs.js';

export function umapCommand(y: Argv): Argv {
  return y.command(
    'umap',
    'UMAP of the latent space as a PNG coloured by cell type, batch or any obs column, with a legend',
    (c) =>
      withModelAndData(c)
        .option('embedding', {
          type: 'string',
          describe: 'an embedding from `atlasvae embed` (.arrow or .csv) instead of --checkpoint/--data',
        })
        .option('out', { type: 'string', demandOption: true, describe: 'output .png' })
        .option('color-by', {
          type: 'string',
          default: 'label',
          describe:
            'colour cells by cell type (label), batch, or any obs column the dataset (or --embedding file) kept, e.g. condition; numbers in 8 ranges',
        })
        .option('max-cells', {
          type: 'number',
          describe: 'plot a seeded random subsample of at most this many cells',
        })
        .option('seed', { type: 'number', default: 0, describe: 'seed of UMAP and the subsample' })
        .option('width', { type: 'number', default: 1000, describe: 'image width in pixels' })
        .option('height', { type: 'number', default: 800, describe: 'image height in pixels' })
        .option('neighbors', { type: 'number', default: 15, describe: 'UMAP n_neighbors' })
        .option('min-dist', { type: 'number', default: 0.3, describe: 'UMAP min_dist' })
        .option('epochs', {
          type: 'number',
          describe: 'UMAP optimisation epochs (default: umap-js: 500 below 10k cells, 200 above)',
        })
        .example(
          '$0 umap --embedding latent.arrow --out umap.png',
          'from an embedding file, coloured by cell type',
        )
        .example(
          '$0 umap --checkpoint model.ckpt --data atlas/ --color-by batch --max-cells 100000 --out batches.png',
          'straight from a model, 100k cells',
        )
        .example(
          '$0 umap --checkpoint model.ckpt --data atlas/ --color-by condition --out condition.png',
          'by an obs column of the input',
        ),
    async (a) => {
      if (!a.out.toLowerCase().endsWith('.png')) throw new CliError(`${a.out}: the output must be a .png`);
      refuseOverwrite(a.out, a.force);
      const width = requirePositiveInt('width', a.width);
      const height = requirePositiveInt('height', a.height);
      if (width < 200 || height < 150)
        throw new CliError('--width/--height: the image must be at least 200 × 150');
      const colorBy = a['color-by'];
      const maxCells =
        a['max-cells'] === undefined ? Infinity : requirePositiveInt('max-cells', a['max-cells']);
      let latent: Float32Array, dim: number, codes: Int32Array, names: string[], what: string;
      let total: number | undefined;
      if (a.embedding) {
        if (a.checkpoint || a.data)
          throw new CliError('give either --embedding or --checkpoint/--data, not both');
        const e = await readEmbeddingFile(a.embedding);
        const values = e.column(colorBy);
        if (!values)
          throw new CliError(
            `${a.embedding}: has no ${colorBy} column to colour by; its columns: ${e.columnNames.join(', ')}`,
          );
        ({ codes, names } = colorCodes(values));
        ({ latent, dim } = e);
        what = a.embedding;
      } else {
        if (!a.checkpoint || !a.data) throw new CliError('give --embedding FILE, or --checkpoint and --data');
        const inputs = await openResultsInputs({
          checkpoint: a.checkpoint,
          data: a.data,
          backend: a.backend,
          asBatch: a['as-batch'],
          fleet: fleetChoice(a),
          chunkCells: a['chunk-cells'],
        });
        try {
          const m = inputs.dataset.manifest;
          dim = inputs.checkpoint.modelConfig.nLatent;
          // subsample before encoding: a million-cell atlas plotted at --max-cells costs --max-cells
          total = m.nCells;
          const cells = subsampleIndices(m.nCells, maxCells, a.seed);
          latent = new Float32Array(cells.length * dim);
          codes = new Int32Array(cells.length);
          const plan = {
            source: inputs.dataset.source,
            cells,
            chunkSize: requirePositiveInt('chunk-cells', a['chunk-cells']),
            batchMap: inputs.batchMap,
          };
          const progress = chunkProgress('embed', plan);
          // label and batch from the dataset's own codes; any other column from the kept obs columns
          const obs = inputs.naming.obs ?? null;
          const byObs = colorBy !== 'label' && colorBy !== 'batch';
          if (byObs && !obs?.kind(colorBy)) {
            throw new CliError(
              `${a.data}: no obs column "${colorBy}" to colour by (${obs ? `kept columns: ${[...new Set(['label', 'batch', ...obs.names])].join(', ')}` : 'the dataset keeps no obs columns: prepare it again to keep them'})`,
            );
          }
          const obsValues: string[] = byObs ? new Array<string>(cells.length) : [];
          await forEachChunk(
            plan,
            inputs.engine.parallelism,
            async (c) => ({
              enc: await encodeCells(inputs.engine, c.batch),
              rows: byObs ? (await inputs.naming.lookup!(c.batch.cellIndex)).sourceRow : null,
            }),
            (c, { enc, rows }) => {
              latent.set(enc.qm, c.offset * dim);
              if (rows)
                obs!.strings(colorBy, rows).forEach((v, i) => {
                  obsValues[c.offset + i] = v;
                });
              else codes.set(colorBy === 'label' ? c.batch.label : c.datasetBatch, c.offset);
              progress.tick(c.batch.nCells);
            },
          );
          progress.finish();
          if (byObs) ({ codes, names } = colorCodes(obsValues));
          else names = colorBy === 'label' ? m.labelCategories : m.batchCategories;
          if (colorBy === 'label' && names.length === 0)
            log.warn(`${a.data}: the dataset has no cell-type labels; all cells are drawn as unknown`);
          what = a.data;
        } finally {
          await inputs.close();
        }
      }
      const n = total ?? codes.length;
      const shown = Math.min(codes.length, maxCells);
      log.info(
        `umap: ${shown.toLocaleString('en-US')} of ${n.toLocaleString('en-US')} cells, finding neighbours`,
      );
      let layout: Progress | null = null;
      const r = writeUmapPng(a.out, {
        latent,
        dim,
        codes,
        names,
        seed: a.seed,
        maxCells,
        totalCells: total,
        width,
        height,
        title: `atlasvae UMAP of ${what.replace(/\/+$/, '').split('/').pop()} by ${colorBy}`,
        umap: {
          nNeighbors: requirePositiveInt('neighbors', a.neighbors),
          minDist: a['min-dist'],
          nEpochs: a.epochs,
          onEpoch: (e, total) => {
            layout ??= new Progress({ label: 'umap layout', unit: 'epochs', totalSteps: total });
            layout.update({ cells: 0, completedSteps: e });
          },
        },
      });
      (layout as Progress | null)?.finish();
      log.info(
        `${a.out}: ${width}×${height} PNG, ${r.nPlotted.toLocaleString('en-US')} cells, ${names.length} ${colorBy === 'label' ? 'cell types' : colorBy === 'batch' ? 'batches' : `${colorBy} values`}`,
      );
    },
  );
}
