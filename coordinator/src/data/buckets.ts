// External sort of (cell, gene, value) entries into cell-major order, for inputs stored gene-major
// (CSC .h5ad) or in arbitrary order (unsorted MatrixMarket): entries are appended to temporary
// files, one per range of cells ("bucket"), then each bucket is loaded alone and turned into CSR
// rows. Memory: a small write buffer per bucket plus one bucket.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import type { RowChunk } from './source.js';

/** bytes per entry on disk: cell (int32), gene (int32), value (float64) */
const ENTRY_BYTES = 16;
const BUFFER_ENTRIES = 4096;
/**
 * entries per bucket kept in memory when it is sorted: small enough that the rows being filled
 * by the counting sort stay in the CPU cache (the sort scatters every entry to its cell's row)
 */
export const BUCKET_TARGET_ENTRIES = 1 << 20;
/** at most this many bucket files open at once (larger buckets beyond ~500M entries) */
const MAX_BUCKETS = 512;

export class CellBuckets {
  readonly dir: string;
  readonly bucketCells: number;
  private readonly fds: number[] = [];
  /** per bucket: a write buffer of BUFFER_ENTRIES records, with int32 and float64 views */
  private readonly bufs: { bytes: Uint8Array; i32: Int32Array; f64: Float64Array }[] = [];
  private readonly fill: Int32Array;
  private raw = new ArrayBuffer(0);
  private readonly counts: Float64Array;

  /** `expectedEntries` sizes buckets so that each holds about BUCKET_TARGET_ENTRIES entries */
  constructor(
    readonly nCells: number,
    expectedEntries: number,
    tmpRoot = os.tmpdir(),
    bucketEntries = BUCKET_TARGET_ENTRIES,
  ) {
    const perCell = Math.max(1, expectedEntries / Math.max(1, nCells));
    bucketEntries = Math.max(bucketEntries, Math.ceil(expectedEntries / MAX_BUCKETS));
    this.bucketCells = Math.max(1, Math.min(nCells, Math.floor(bucketEntries / perCell)));
    const n = Math.max(1, Math.ceil(nCells / this.bucketCells));
    this.dir = fs.mkdtempSync(path.join(tmpRoot, 'atlasvae-sort-'));
    this.fill = new Int32Array(n);
    this.counts = new Float64Array(n);
    for (let b = 0; b < n; b++) {
      this.fds.push(fs.openSync(path.join(this.dir, `bucket-${b}`), 'w+'));
      const ab = new ArrayBuffer(BUFFER_ENTRIES * ENTRY_BYTES);
      this.bufs.push({ bytes: new Uint8Array(ab), i32: new Int32Array(ab), f64: new Float64Array(ab) });
    }
  }

  add(cell: number, gene: number, value: number): void {
    const b = Math.floor(cell / this.bucketCells);
    const buf = this.bufs[b]!;
    const k = this.fill[b]!;
    buf.i32[4 * k] = cell;
    buf.i32[4 * k + 1] = gene;
    buf.f64[2 * k + 1] = value;
    this.counts[b]!++;
    if (++this.fill[b]! === BUFFER_ENTRIES) this.flush(b);
  }

  private flush(b: number): void {
    const len = this.fill[b]! * ENTRY_BYTES;
    let off = 0;
    while (off < len) off += fs.writeSync(this.fds[b]!, this.bufs[b]!.bytes, off, len - off);
    this.fill[b] = 0;
  }

  /** CSR row chunks, one per bucket, in cell order; `barcodesFor(start, end)` names the cells. */
  async *rows(barcodesFor: (start: number, end: number) => Promise<string[]>): AsyncGenerator<RowChunk> {
    for (let b = 0; b < this.fds.length; b++) this.flush(b);
    for (let b = 0; b < this.fds.length; b++) {
      const start = b * this.bucketCells;
      const nCells = Math.min(this.bucketCells, this.nCells - start);
      const n = this.counts[b]!;
      // one read buffer for all buckets (they are about the same size), viewed as records
      if (this.raw.byteLength < n * ENTRY_BYTES) this.raw = new ArrayBuffer(Math.ceil(n * 1.1) * ENTRY_BYTES);
      const raw = new Uint8Array(this.raw, 0, n * ENTRY_BYTES);
      let off = 0;
      while (off < raw.length) {
        const r = fs.readSync(this.fds[b]!, raw, off, raw.length - off, off);
        if (r === 0)
          throw new Error(`temporary file ${path.join(this.dir, `bucket-${b}`)} is shorter than written`);
        off += r;
      }
      fs.closeSync(this.fds[b]!);
      fs.rmSync(path.join(this.dir, `bucket-${b}`), { force: true });
      this.fds[b] = -1;
      yield {
        ...entriesToRows(this.raw, n, start, nCells),
        barcodes: await barcodesFor(start, start + nCells),
      };
    }
  }

  close(): void {
    for (const fd of this.fds)
      if (fd >= 0)
        try {
          fs.closeSync(fd);
        } catch {
          /* closed */
        }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Counting sort by cell, then genes ascending within a cell; duplicate entries summed. */
function entriesToRows(
  raw: ArrayBuffer,
  n: number,
  start: number,
  nCells: number,
): Omit<RowChunk, 'barcodes'> {
  // records (little-endian, as written): cell at int32 4k, gene at int32 4k+1, value at float64 2k+1
  const i32 = new Int32Array(raw, 0, n * 4);
  const f64 = new Float64Array(raw, 0, n * 2);
  const indptr = new Int32Array(nCells + 1);
  for (let k = 0; k < n; k++) indptr[i32[4 * k]! - start + 1]!++;
  for (let i = 0; i < nCells; i++) indptr[i + 1]! += indptr[i]!;
  const pos = indptr.slice(0, nCells);
  const indices = new Int32Array(n);
  const values = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const at = pos[i32[4 * k]! - start]!++;
    indices[at] = i32[4 * k + 1]!;
    values[at] = f64[2 * k + 1]!;
  }
  // sort within cells (insertion sort: rows are usually nearly sorted) and merge duplicates
  let w = 0;
  const out = new Int32Array(nCells + 1);
  for (let i = 0; i < nCells; i++) {
    const s = indptr[i]!,
      e = indptr[i + 1]!;
    let sorted = true;
    for (let k = s + 1; k < e; k++)
      if (indices[k]! < indices[k - 1]!) {
        sorted = false;
        break;
      }
    if (!sorted && e - s > 64) {
      const order = Array.from({ length: e - s }, (_, j) => s + j).sort((a, b) => indices[a]! - indices[b]!);
      const gi = order.map((k) => indices[k]!),
        vi = order.map((k) => values[k]!);
      indices.set(gi, s);
      values.set(vi, s);
      sorted = true;
    }
    for (let k = sorted ? e : s + 1; k < e; k++) {
      const g = indices[k]!,
        v = values[k]!;
      let j = k - 1;
      while (j >= s && indices[j]! > g) {
        indices[j + 1] = indices[j]!;
        values[j + 1] = values[j]!;
        j--;
      }
      indices[j + 1] = g;
      values[j + 1] = v;
    }
    const rowStart = w;
    for (let k = s; k < e; k++) {
      if (w > rowStart && indices[w - 1] === indices[k]) values[w - 1]! += values[k]!;
      else {
        indices[w] = indices[k]!;
        values[w] = values[k]!;
        w++;
      }
    }
    out[i + 1] = w;
  }
  return { start, nCells, indptr: out, indices: indices.subarray(0, w), values: values.subarray(0, w) };
}
