// A count matrix being read for preparation: cells come out as CSR row chunks in source order,
// whatever the storage layout (CSR, CSC, dense, MatrixMarket), so a pass over the atlas never
// holds more than one chunk.
import fs from 'node:fs';
import { InputError } from '@atlasvae/shared';

export interface RowChunk {
  /** source row of the first cell */
  start: number;
  nCells: number;
  /** length nCells + 1, starting at 0 */
  indptr: Int32Array;
  /** source gene index per entry, ascending within a cell */
  indices: Int32Array;
  values: Float32Array | Float64Array | Int32Array;
  /** barcode per cell */
  barcodes: string[];
}

/** An obs column: categorical (codes, -1 missing) or plain values. */
export type ObsValues = { codes: Int32Array; categories: string[] } | string[];

export interface MatrixSource {
  file: string;
  format: 'h5ad' | '10x-h5' | 'mtx';
  nCells: number;
  nGenes: number;
  genes: string[];
  geneIds: string[] | null;
  /** 10x feature type per gene ("Gene Expression", "Antibody Capture", …) when the input has them */
  featureTypes: string[] | null;
  /** obs columns stored in the file itself (h5ad) */
  obsKeys(): string[];
  obsColumn(key: string): ObsValues;
  /** every barcode, in source order */
  allBarcodes(): Promise<string[]>;
  /** one pass over the cells */
  rows(): AsyncIterable<RowChunk>;
  close(): Promise<void>;
}

/** entries read per chunk: bounds the memory of a pass */
export const CHUNK_ENTRIES = 1 << 21;
export const CHUNK_MAX_CELLS = 8192;

const HDF5_MAGIC = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Whether a file starts with the HDF5 signature (at offset 0; user blocks are not looked for). */
export function isHdf5(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(8);
    const n = fs.readSync(fd, b, 0, 8, 0);
    return n === 8 && b.equals(HDF5_MAGIC);
  } finally {
    fs.closeSync(fd);
  }
}

export interface OpenSourceOptions {
  layer?: string;
  useRaw?: boolean;
  /** folder for temporary files (external sort) */
  tmpDir?: string;
  /** entries per external-sort bucket (default BUCKET_TARGET_ENTRIES; small values exercise many buckets) */
  sortBucketEntries?: number;
}

/** Opens INPUT by what it is: a MatrixMarket folder, an .h5ad, or a 10x .h5. */
export async function openSource(input: string, o: OpenSourceOptions = {}): Promise<MatrixSource> {
  if (!fs.existsSync(input)) throw new InputError(input, 'no such file or folder');
  if (fs.statSync(input).isDirectory()) {
    const { openMtxSource } = await import('./mtx-source.js');
    if (o.layer || o.useRaw) throw new InputError(input, '--layer and --use-raw apply to .h5ad input only');
    return openMtxSource(input, o);
  }
  if (!isHdf5(input)) {
    throw new InputError(
      input,
      fs.statSync(input).size === 0
        ? 'empty file'
        : 'not an HDF5 file (.h5ad or 10x .h5) and not a MatrixMarket folder',
    );
  }
  const { openHdf5Source } = await import('./h5-layouts.js');
  return openHdf5Source(input, o);
}

/**
 * Gene indices checked against the gene count; rows sorted by gene with duplicates summed when
 * the input is not canonical (MatrixMarket and scipy matrices do not promise either).
 */
export function canonicalRows(file: string, c: RowChunk, nGenes: number): RowChunk {
  let ok = true;
  const ptr = c.indptr,
    idx = c.indices; // locals: this loop sees every entry of the input
  for (let i = 0, s = ptr[0]!; i < c.nCells; i++) {
    const e = ptr[i + 1]!;
    let prev = -1;
    for (let k = s; k < e; k++) {
      const g = idx[k]!;
      if (g <= prev) ok = false;
      prev = g;
    }
    // ascending rows: their first and last index bound the rest (unsorted rows are checked below)
    if (e > s && (!(idx[s]! >= 0) || !(idx[e - 1]! < nGenes) || !ok)) {
      for (let k = s; k < e; k++) {
        const g = idx[k]!;
        if (!(g >= 0 && g < nGenes))
          throw new InputError(file, `gene index ${g} outside 0..${nGenes - 1} in cell ${c.start + i}`);
      }
    }
    s = e;
  }
  if (ok) return c;
  const indptr = new Int32Array(c.nCells + 1);
  const indices = new Int32Array(c.indices.length);
  const values = new Float64Array(c.indices.length);
  let w = 0;
  for (let i = 0; i < c.nCells; i++) {
    const s = c.indptr[i]!,
      e = c.indptr[i + 1]!;
    const order = Array.from({ length: e - s }, (_, j) => s + j).sort(
      (a, b) => c.indices[a]! - c.indices[b]!,
    );
    const rowStart = w;
    for (const k of order) {
      if (w > rowStart && indices[w - 1] === c.indices[k]) values[w - 1]! += c.values[k]!;
      else {
        indices[w] = c.indices[k]!;
        values[w] = c.values[k]!;
        w++;
      }
    }
    indptr[i + 1] = w;
  }
  return { ...c, indptr, indices: indices.slice(0, w), values: values.slice(0, w) };
}
