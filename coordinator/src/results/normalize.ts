// scVI normalized expression: the decoder's scale (expected frequency of each gene) times a
// common library size (scvi's library_size, default 1e4) or each cell's observed library, for
// chosen genes, optionally decoded as if every cell came from one batch (scvi's transform_batch).

import { forEachChunk, type ChunkPlan } from './cell-stream.js';
import { normalizedCells, type InferenceEngine } from './engine.js';
import { createTableWriter, type Column } from './table-writer.js';
import { nameOf, type CellNaming } from './cell-names.js';

export interface NormalizeOptions {
  /** a number, or 'observed' for each cell's own total counts */
  librarySize: number | 'observed';
  /** model gene indices to write, in output order */
  genes: Int32Array;
  geneNames: string[];
  /** model batch code to decode every cell as */
  transformBatch?: number;
  /** posterior samples averaged (0: at the posterior mean) */
  samples: number;
  seed: number;
  naming: CellNaming;
  onChunk?: (cells: number) => void;
}

export async function writeNormalizedExpression(
  engine: InferenceEngine,
  plan: ChunkPlan,
  out: string,
  opts: NormalizeOptions,
): Promise<{ nCells: number; nGenes: number }> {
  const writer = createTableWriter(out);
  const width = opts.genes.length;
  try {
    await forEachChunk(
      plan,
      engine.parallelism,
      (c) =>
        Promise.all([
          normalizedCells(engine, c.batch, {
            samples: opts.samples,
            transformBatch: opts.transformBatch,
            seed: opts.seed,
            chunk: c.index,
            genes: opts.genes,
          }),
          opts.naming.lookup?.(c.batch.cellIndex),
        ]),
      async (c, [scale, id]) => {
        const n = c.batch.nCells;
        const cols: Record<string, Column> = {};
        if (id) cols.cell = id.barcodes;
        cols.cell_index = c.batch.cellIndex;
        cols.batch = Array.from(c.datasetBatch, (b) => nameOf(opts.naming.batchNames, b));
        cols.label = Array.from(c.batch.label, (l) => nameOf(opts.naming.labelNames, l));
        for (let g = 0; g < width; g++) {
          const v = new Float32Array(n);
          for (let i = 0; i < n; i++) {
            const lib = opts.librarySize === 'observed' ? c.batch.library[i]! : opts.librarySize;
            v[i] = scale[i * width + g]! * lib;
          }
          cols[opts.geneNames[g]!] = v;
        }
        await writer.write(cols);
        opts.onChunk?.(n);
      },
    );
    await writer.close();
  } catch (e) {
    writer.abort();
    throw e;
  }
  return { nCells: plan.cells.length, nGenes: width };
}

/** Model gene indices for a user's gene list (names, in the order given); unknown names are an error. */
export function resolveGenes(
  requested: string[] | null,
  modelGenes: string[],
  source: string,
): { indices: Int32Array; names: string[] } {
  if (!requested) return { indices: Int32Array.from(modelGenes.keys()), names: modelGenes.slice() };
  const pos = new Map(modelGenes.map((g, i) => [g, i]));
  const missing = requested.filter((g) => !pos.has(g));
  if (missing.length) {
    const shown = missing.slice(0, 5).join(', ');
    throw new Error(
      `${source}: ${missing.length} gene(s) are not in the model's gene list: ${shown}${missing.length > 5 ? ', …' : ''}`,
    );
  }
  const dup = requested.find((g, i) => requested.indexOf(g) !== i);
  if (dup) throw new Error(`${source}: gene ${dup} is listed twice`);
  return { indices: Int32Array.from(requested.map((g) => pos.get(g)!)), names: requested.slice() };
}
