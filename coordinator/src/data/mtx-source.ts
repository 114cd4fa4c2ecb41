// A 10x MatrixMarket folder as a row source. 10x writes entries column (cell) by column, so rows
// stream straight out of the parser; a file in any other order goes through the external sort.
// Whether the file is cell-sorted is found by one parse-only pass the first time rows are asked.
import { InputError } from '@atlasvae/shared';
import { CellBuckets } from './buckets.js';
import {
  findMtxFiles,
  mtxEntryBlocks,
  readMtxHeader,
  readGeneList,
  readBarcodes,
  type MtxFiles,
  type MtxHeader,
} from './mtx.js';
import {
  CHUNK_ENTRIES,
  CHUNK_MAX_CELLS,
  type MatrixSource,
  type ObsValues,
  type OpenSourceOptions,
  type RowChunk,
  canonicalRows,
} from './source.js';
import path from 'node:path';

class MtxSource implements MatrixSource {
  readonly format = 'mtx' as const;
  readonly file: string;
  nCells: number;
  nGenes: number;
  private cellSorted: boolean | null = null;
  private buckets: CellBuckets | null = null;

  constructor(
    private readonly files: MtxFiles,
    private readonly header: MtxHeader,
    readonly genes: string[],
    readonly geneIds: string[],
    readonly featureTypes: string[] | null,
    private readonly barcodes: string[],
    private readonly o: OpenSourceOptions,
  ) {
    this.file = files.matrix;
    this.nCells = header.nCols;
    this.nGenes = header.nRows;
  }

  obsKeys(): string[] {
    return [];
  }

  obsColumn(key: string): ObsValues {
    throw new InputError(
      this.files.dir,
      `no obs column "${key}": a MatrixMarket folder has no cell metadata; pass --obs TSV`,
    );
  }

  async allBarcodes(): Promise<string[]> {
    return this.barcodes;
  }

  private async isCellSorted(): Promise<boolean> {
    if (this.cellSorted !== null) return this.cellSorted;
    let last = -1,
      sorted = true;
    const it = mtxEntryBlocks(this.file, () => undefined);
    for await (const b of it) {
      for (let k = 0; k < b.n; k++) {
        const c = b.cols[k]!;
        if (c < last) {
          sorted = false;
          break;
        }
        last = c;
      }
      if (!sorted) {
        await it.return(undefined);
        break;
      }
    }
    this.cellSorted = sorted;
    return sorted;
  }

  async *rows(): AsyncGenerator<RowChunk> {
    if (await this.isCellSorted()) yield* this.streamRows();
    else yield* this.sortedRows();
  }

  /** cells in file order: a chunk is emitted once a later cell starts and it is large enough */
  private async *streamRows(): AsyncGenerator<RowChunk> {
    let start = 0; // first cell of the chunk being built
    let cur = 0; // cell currently receiving entries
    let indptr: number[] = [0];
    let gi = new Int32Array(1 << 16),
      vi = new Float64Array(1 << 16);
    let n = 0;
    const take = (end: number): RowChunk => {
      // cells start..end-1 (some possibly empty)
      while (indptr.length < end - start + 1) indptr.push(n);
      const chunk: RowChunk = {
        start,
        nCells: end - start,
        indptr: Int32Array.from(indptr),
        indices: gi.slice(0, n),
        values: vi.slice(0, n),
        barcodes: this.barcodes.slice(start, end),
      };
      start = end;
      indptr = [0];
      n = 0;
      return chunk;
    };
    for await (const b of mtxEntryBlocks(this.file, () => undefined)) {
      for (let k = 0; k < b.n; k++) {
        const c = b.cols[k]!;
        if (c !== cur) {
          if (c < cur)
            throw new InputError(
              this.file,
              'entries are not in cell order although a first pass found them so (file changed while reading?)',
            );
          // close the cells before c
          while (indptr.length < c - start + 1) indptr.push(n);
          cur = c;
          if (n >= CHUNK_ENTRIES || cur - start >= CHUNK_MAX_CELLS)
            yield canonicalRows(this.file, take(cur), this.nGenes);
        }
        if (n === gi.length) {
          const g2 = new Int32Array(n * 2);
          g2.set(gi);
          gi = g2;
          const v2 = new Float64Array(n * 2);
          v2.set(vi);
          vi = v2;
        }
        gi[n] = b.rows[k]!;
        vi[n] = b.vals[k]!;
        n++;
      }
    }
    yield canonicalRows(this.file, take(this.nCells), this.nGenes);
  }

  private async *sortedRows(): AsyncGenerator<RowChunk> {
    this.buckets?.close();
    const buckets = new CellBuckets(this.nCells, this.header.nnz, this.o.tmpDir, this.o.sortBucketEntries);
    this.buckets = buckets;
    try {
      for await (const b of mtxEntryBlocks(this.file, () => undefined)) {
        for (let k = 0; k < b.n; k++) buckets.add(b.cols[k]!, b.rows[k]!, b.vals[k]!);
      }
      yield* buckets.rows(async (s, e) => this.barcodes.slice(s, e));
    } finally {
      buckets.close();
      if (this.buckets === buckets) this.buckets = null;
    }
  }

  async close(): Promise<void> {
    this.buckets?.close();
  }
}

export async function openMtxSource(dir: string, o: OpenSourceOptions): Promise<MatrixSource> {
  const files = findMtxFiles(dir);
  const header = await readMtxHeader(files.matrix);
  const { genes, geneIds, featureTypes } = await readGeneList(files.features);
  const barcodes = await readBarcodes(files.barcodes);
  if (header.nRows !== genes.length)
    throw new InputError(
      files.matrix,
      `has ${header.nRows} rows (genes) but ${path.basename(files.features)} lists ${genes.length} genes`,
    );
  if (header.nCols !== barcodes.length)
    throw new InputError(
      files.matrix,
      `has ${header.nCols} columns (cells) but ${path.basename(files.barcodes)} lists ${barcodes.length} barcodes`,
    );
  return new MtxSource(files, header, genes, geneIds, featureTypes, barcodes, o);
}
