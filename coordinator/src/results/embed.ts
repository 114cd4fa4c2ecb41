// Latent embedding of every cell (posterior means q_m, optionally variances q_v) streamed to an
// Arrow/CSV table, or scattered into obsm of a copy of the source .h5ad.

import { forEachChunk, type ChunkPlan } from './cell-stream.js';
import { encodeCells, type InferenceEngine } from './engine.js';
import { createTableWriter, type Column } from './table-writer.js';
import { writeH5adWithObsm, h5adObsCount } from './h5ad-obsm.js';
import { nameOf, type CellNaming } from './cell-names.js';

export const OBSM_KEY = 'X_atlasvae';

export interface EmbedOptions {
  variance: boolean;
  naming: CellNaming;
  onChunk?: (cells: number) => void;
}

/** Column names of the latent coordinates: z_0 … z_{L-1}, and z_var_0 … for variances. */
export function latentColumns(nLatent: number, prefix = 'z_'): string[] {
  return Array.from({ length: nLatent }, (_, d) => `${prefix}${d}`);
}

export async function writeEmbeddingTable(
  engine: InferenceEngine,
  plan: ChunkPlan,
  out: string,
  opts: EmbedOptions,
): Promise<{ nCells: number }> {
  const L = engine.config.nLatent;
  const writer = createTableWriter(out);
  try {
    await forEachChunk(
      plan,
      engine.parallelism,
      async (c) => {
        const [enc, id] = await Promise.all([
          encodeCells(engine, c.batch),
          opts.naming.lookup?.(c.batch.cellIndex),
        ]);
        return { ...enc, id };
      },
      async (c, { qm, qv, id }) => {
        const n = c.batch.nCells;
        const cols: Record<string, Column> = {};
        if (id) cols.cell = id.barcodes;
        cols.cell_index = c.batch.cellIndex;
        cols.batch = Array.from(c.datasetBatch, (b) => nameOf(opts.naming.batchNames, b));
        cols.label = Array.from(c.batch.label, (l) => nameOf(opts.naming.labelNames, l));
        latentColumns(L).forEach((name, d) => {
          const v = new Float32Array(n);
          for (let i = 0; i < n; i++) v[i] = qm[i * L + d]!;
          cols[name] = v;
        });
        if (opts.variance) {
          latentColumns(L, 'z_var_').forEach((name, d) => {
            const v = new Float32Array(n);
            for (let i = 0; i < n; i++) v[i] = qv[i * L + d]!;
            cols[name] = v;
          });
        }
        // then the input's other obs columns, as scanpy users find them in adata.obs (after the
        // latent columns: the first columns keep their places for existing readers)
        const obs = opts.naming.obs;
        if (obs && id) {
          for (const name of obs.names) {
            if (name in cols || /^z_(var_)?\d+$/.test(name)) continue;
            cols[name] =
              obs.kind(name) === 'number' ? obs.numbers(name, id.sourceRow) : obs.strings(name, id.sourceRow);
          }
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
  return { nCells: plan.cells.length };
}

/**
 * Embedding into obsm['X_atlasvae'] (and obsm['X_atlasvae_var']) of a copy of `sourceH5ad`, one
 * row per source row; rows of cells that are not in the dataset (e.g. dropped for zero counts) are NaN.
 */
export async function writeEmbeddingH5ad(
  engine: InferenceEngine,
  plan: ChunkPlan,
  sourceH5ad: string,
  out: string,
  opts: EmbedOptions,
): Promise<{ nCells: number; nObs: number; missing: number }> {
  const L = engine.config.nLatent;
  const nObs = await h5adObsCount(sourceH5ad);
  const mean = new Float32Array(nObs * L).fill(NaN);
  const variance = opts.variance ? new Float32Array(nObs * L).fill(NaN) : null;
  let filled = 0;
  await forEachChunk(
    plan,
    engine.parallelism,
    async (c) => {
      const [enc, id] = await Promise.all([
        encodeCells(engine, c.batch),
        opts.naming.lookup?.(c.batch.cellIndex),
      ]);
      return { ...enc, rows: id ? id.sourceRow : c.batch.cellIndex };
    },
    (c, { qm, qv, rows }) => {
      for (let i = 0; i < c.batch.nCells; i++) {
        const r = rows[i]!;
        if (!(r >= 0 && r < nObs))
          throw new Error(`cell ${c.batch.cellIndex[i]} maps to row ${r} outside the source's ${nObs} rows`);
        mean.set(qm.subarray(i * L, (i + 1) * L), r * L);
        variance?.set(qv.subarray(i * L, (i + 1) * L), r * L);
        filled++;
      }
      opts.onChunk?.(c.batch.nCells);
    },
  );
  const matrices = [{ key: OBSM_KEY, values: mean, dim: L }];
  if (variance) matrices.push({ key: `${OBSM_KEY}_var`, values: variance, dim: L });
  await writeH5adWithObsm(sourceH5ad, out, matrices);
  return { nCells: plan.cells.length, nObs, missing: nObs - filled };
}
