// Cells of a prepared dataset by global index, as the CellSource training reads (getCells), as
// the Arrow message a worker receives (getCellsArrow), and as source rows and barcodes for
// writing results back: each copied from the cached record batches holding them.
import type { CellBatch, CellSource, DatasetManifest } from '@atlasvae/shared';
import { recordBatchSourceRows, recordBatchBarcodes, encodeCellRows } from '@atlasvae/shared/arrow';
import {
  type Block,
  RecordBatchCache,
  type RecordBatchCacheOptions,
  type RecordBatchCacheStats,
} from './record-batch-cache.js';

/** Cells of a prepared dataset by global index. */
export class DatasetSource implements CellSource {
  readonly nCells: number;
  readonly nGenes: number;
  readonly nBatch: number;
  private readonly batches: RecordBatchCache;

  constructor(
    readonly dir: string,
    readonly manifest: DatasetManifest,
    o: RecordBatchCacheOptions,
  ) {
    this.nCells = manifest.nCells;
    this.nGenes = manifest.nGenes;
    this.nBatch = manifest.batchCategories.length;
    this.batches = new RecordBatchCache(dir, manifest, o);
  }

  /** record batches decoded from disk (for tests and metrics) */
  get blocksRead(): number {
    return this.batches.blocksRead;
  }
  /** record batch lookups served from the cache */
  get cacheHits(): number {
    return this.batches.cacheHits;
  }
  /** reads into an evicted record batch's buffer instead of a fresh one */
  get buffersReused(): number {
    return this.batches.buffersReused;
  }

  /**
   * Starts loading the record batches holding these cells (e.g. the next step's) without waiting;
   * a later getCells finds them cached or in flight. Errors surface in that later call.
   */
  prefetch(indices: ArrayLike<number>): void {
    this.batches.prefetch(indices);
  }

  /** Cells in the order asked. */
  async getCells(indices: ArrayLike<number>): Promise<CellBatch> {
    return this.batches.withBlocks(indices, (keys, blocks) => this.copyCells(indices, keys, blocks));
  }

  private copyCells(indices: ArrayLike<number>, keys: Float64Array, blocks: Map<number, Block>): CellBatch {
    const { from, rows } = this.locate(indices, keys, blocks);
    const n = indices.length;
    const indptr = new Int32Array(n + 1);
    for (let i = 0; i < n; i++)
      indptr[i + 1] = indptr[i]! + from[i]!.indptr[rows[i]! + 1]! - from[i]!.indptr[rows[i]!]!;
    const nnz = indptr[n]!;
    const indicesOut = new Int32Array(nnz),
      countsOut = new Float32Array(nnz);
    const library = new Float32Array(n),
      batch = new Int32Array(n),
      label = new Int32Array(n),
      cellIndex = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const c = from[i]!,
        r = rows[i]!;
      const s = c.indptr[r]!,
        e = c.indptr[r + 1]!;
      indicesOut.set(c.indices.subarray(s, e), indptr[i]);
      countsOut.set(c.counts.subarray(s, e), indptr[i]);
      library[i] = c.library[r]!;
      batch[i] = c.batch[r]!;
      label[i] = c.label[r]!;
      cellIndex[i] = c.cellIndex[r]!;
    }
    return {
      nCells: n,
      nGenes: this.nGenes,
      indptr,
      indices: indicesOut,
      counts: countsOut,
      library,
      batch,
      label,
      cellIndex,
    };
  }

  /**
   * The wire form of a microbatch: Arrow IPC stream bytes of `getCells(indices)`, with each cell's
   * row copied once, from the cached record batch straight into the message.
   */
  async getCellsArrow(indices: ArrayLike<number>): Promise<Uint8Array> {
    return this.batches.withBlocks(indices, (keys, blocks) => {
      const { from, rows } = this.locate(indices, keys, blocks);
      return encodeCellRows(from, rows);
    });
  }

  /** For each asked cell, the decoded record batch holding it and its row there. */
  private locate(
    indices: ArrayLike<number>,
    keys: Float64Array,
    blocks: Map<number, Block>,
  ): { from: CellBatch[]; rows: Int32Array } {
    const n = indices.length;
    const rows = new Int32Array(n);
    const from = new Array<CellBatch>(n);
    let lastKey = -1;
    let b: CellBatch | null = null;
    for (let i = 0; i < n; i++) {
      if (keys[i] !== lastKey) {
        lastKey = keys[i]!;
        b = blocks.get(lastKey)!.cells;
      }
      from[i] = b!;
      rows[i] = indices[i]! - b!.cellIndex[0]!;
    }
    return { from, rows };
  }

  /** Source-file row and barcode of each cell, in the order asked (for writing results back). */
  async getSourceRows(indices: ArrayLike<number>): Promise<{ sourceRow: Uint32Array; barcodes: string[] }> {
    return this.batches.withBlocks(indices, (keys, blocks) => this.copySourceRows(indices, keys, blocks));
  }

  private copySourceRows(
    indices: ArrayLike<number>,
    keys: Float64Array,
    blocks: Map<number, Block>,
  ): { sourceRow: Uint32Array; barcodes: string[] } {
    const sourceRow = new Uint32Array(indices.length);
    const barcodes = new Array<string>(indices.length);
    const decoded = new Map<number, { rows: Uint32Array; codes: string[] }>();
    for (let i = 0; i < indices.length; i++) {
      const k = keys[i]!;
      let d = decoded.get(k);
      const blk = blocks.get(k)!;
      if (!d) {
        d = { rows: recordBatchSourceRows(blk.rb), codes: recordBatchBarcodes(blk.rb) };
        decoded.set(k, d);
      }
      const r = indices[i]! - blk.cells.cellIndex[0]!;
      sourceRow[i] = d.rows[r]!;
      barcodes[i] = d.codes[r]!;
    }
    return { sourceRow, barcodes };
  }

  /** Counters for monitoring (e.g. exported as Prometheus gauges/counters by the coordinator). */
  stats(): RecordBatchCacheStats {
    return this.batches.stats();
  }

  async close(): Promise<void> {
    await this.batches.close();
  }
}
