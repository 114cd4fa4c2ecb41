// Cells in chunks, in order, with a bounded number of chunks in flight: the loop every results
// command runs, so millions of cells stream through bounded memory.

import type { CellBatch, CellSource } from '@atlasvae/shared';

export interface ChunkPlan {
  source: CellSource;
  /** global cell indices to process, in output order */
  cells: Uint32Array;
  chunkSize: number;
  /** dataset batch code → model batch code (query datasets); identity when absent */
  batchMap?: Int32Array;
}

export interface Chunk {
  /** chunk number (noise key) */
  index: number;
  /** rows of this chunk in the plan's cell order start here */
  offset: number;
  /** cells with batch codes already mapped to the model's */
  batch: CellBatch;
  /** the dataset's own batch codes of these cells */
  datasetBatch: Int32Array;
}

export function chunkCount(plan: ChunkPlan): number {
  return Math.ceil(plan.cells.length / plan.chunkSize);
}

async function loadChunk(plan: ChunkPlan, index: number): Promise<Chunk> {
  const offset = index * plan.chunkSize;
  const ids = plan.cells.subarray(offset, Math.min(offset + plan.chunkSize, plan.cells.length));
  const batch = await plan.source.getCells(ids);
  if (batch.nCells !== ids.length)
    throw new Error(`data source returned ${batch.nCells} cells for ${ids.length} requested`);
  if (plan.batchMap) {
    const map = plan.batchMap;
    const mapped = new Int32Array(batch.nCells);
    for (let i = 0; i < batch.nCells; i++) {
      const code = batch.batch[i]!;
      const model = map[code];
      if (model === undefined)
        throw new Error(
          `cell ${batch.cellIndex[i]} has batch code ${code}; the dataset has ${map.length} batches`,
        );
      mapped[i] = model;
    }
    return { index, offset, batch: { ...batch, batch: mapped }, datasetBatch: batch.batch };
  }
  return { index, offset, batch, datasetBatch: batch.batch };
}

/**
 * Run `work` on every chunk with up to `inFlight` chunks computing at once, and hand the results
 * to `consume` strictly in chunk order.
 */
export async function forEachChunk<R>(
  plan: ChunkPlan,
  inFlight: number,
  work: (c: Chunk) => Promise<R>,
  consume: (c: Chunk, r: R) => Promise<void> | void,
): Promise<void> {
  const total = chunkCount(plan);
  const pending: Promise<[Chunk, R]>[] = [];
  let next = 0;
  const launch = (): void => {
    const i = next++;
    const p = loadChunk(plan, i).then(async (c) => [c, await work(c)] as [Chunk, R]);
    p.catch(() => undefined); // awaited in order below; this only silences an early unhandled rejection
    pending.push(p);
  };
  while (next < total && pending.length < Math.max(1, inFlight)) launch();
  while (pending.length) {
    const [c, r] = await pending.shift()!;
    if (next < total) launch();
    await consume(c, r);
  }
}
