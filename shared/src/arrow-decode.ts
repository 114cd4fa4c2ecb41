// Arrow to CellBatch: record batches of either schema and minibatch messages decoded into views of
// the message bytes where Arrow's alignment allows, every malformation a CellBatchFormatError.
import { RecordBatch, RecordBatchReader, type Data } from 'apache-arrow';
import type { CellBatch } from './batch.js';
import { COL } from './arrow-schema.js';

/** Thrown for Arrow bytes that are not a valid cell batch. */
export class CellBatchFormatError extends Error {
  constructor(problem: string) {
    super(`invalid cell batch: ${problem}`);
    this.name = 'CellBatchFormatError';
  }
}

function child(rb: RecordBatch, name: string): Data {
  const idx = rb.schema.fields.findIndex((f) => f.name === name);
  const data = rb.data.children[idx];
  if (idx < 0 || !data) throw new CellBatchFormatError(`missing column "${name}"`);
  return data;
}

function values<T extends Int32Array | Uint32Array | Float32Array>(
  d: Data,
  ctor: { new (n: number): T; BYTES_PER_ELEMENT: number },
  name: string,
  n: number,
): T {
  const v = d.values as unknown;
  if (!(v instanceof ctor)) throw new CellBatchFormatError(`column "${name}" has the wrong type`);
  const arr = v;
  const start = d.offset;
  if (arr.length < start + n) throw new CellBatchFormatError(`column "${name}" is too short`);
  return (start === 0 && arr.length === n ? arr : arr.subarray(start, start + n)) as T;
}

/**
 * The CellBatch held by a record batch of either schema (views where possible). `checkAllGenes`
 * false checks only each row's first and last gene index (enough for rows known to be sorted,
 * e.g. checksummed shards; messages from the network get the full check).
 */
export function recordBatchToCellBatch(rb: RecordBatch, nGenes: number, checkAllGenes = true): CellBatch {
  const n = rb.numRows;
  const g = child(rb, COL.genes);
  const c = child(rb, COL.counts);
  const go = g.valueOffsets as unknown;
  const co = c.valueOffsets as unknown;
  if (!(go instanceof Int32Array) || !(co instanceof Int32Array) || !g.children[0] || !c.children[0])
    throw new CellBatchFormatError('genes and counts must be List<Int32> and List<Float32>');
  let indptr = go.subarray(g.offset, g.offset + n + 1);
  const cOff = co.subarray(c.offset, c.offset + n + 1);
  if (indptr.length !== n + 1) throw new CellBatchFormatError('genes offsets are too short');
  for (let i = 0; i <= n; i++)
    if (indptr[i] !== cOff[i]) throw new CellBatchFormatError('genes and counts have different row lengths');
  const base = indptr[0]!;
  const nnz = indptr[n]! - base;
  const gi = g.children[0].values as unknown;
  const cv = c.children[0].values as unknown;
  if (!(gi instanceof Int32Array) || !(cv instanceof Float32Array))
    throw new CellBatchFormatError('genes and counts must be List<Int32> and List<Float32>');
  const giOff = g.children[0].offset,
    cvOff = c.children[0].offset;
  if (gi.length < giOff + base + nnz || cv.length < cvOff + base + nnz)
    throw new CellBatchFormatError('list values are too short');
  const indices = gi.subarray(giOff + base, giOff + base + nnz);
  const counts = cv.subarray(cvOff + base, cvOff + base + nnz);
  if (base !== 0) {
    const re = new Int32Array(n + 1);
    for (let i = 0; i <= n; i++) re[i] = indptr[i]! - base;
    indptr = re;
  }
  for (let i = 0; i < n; i++)
    if (indptr[i + 1]! < indptr[i]!) throw new CellBatchFormatError('row offsets decrease');
  if (checkAllGenes) {
    for (let k = 0; k < nnz; k++) {
      const x = indices[k]!;
      if (x < 0 || x >= nGenes) throw new CellBatchFormatError(`gene index ${x} outside 0..${nGenes - 1}`);
    }
  } else {
    for (let i = 0; i < n; i++) {
      if (indptr[i + 1] === indptr[i]) continue;
      const lo = indices[indptr[i]!]!,
        hi = indices[indptr[i + 1]! - 1]!;
      if (lo < 0 || hi >= nGenes || hi < lo)
        throw new CellBatchFormatError(`gene indices of row ${i} outside 0..${nGenes - 1} or unsorted`);
    }
  }
  return {
    nCells: n,
    nGenes,
    indptr,
    indices,
    counts,
    library: values(child(rb, COL.library), Float32Array, COL.library, n),
    batch: values(child(rb, COL.batch), Int32Array, COL.batch, n),
    label: values(child(rb, COL.label), Int32Array, COL.label, n),
    cellIndex: values(child(rb, COL.cell), Uint32Array, COL.cell, n),
  };
}

/** Source rows of a shard record batch. */
export function recordBatchSourceRows(rb: RecordBatch): Uint32Array {
  return values(child(rb, COL.sourceRow), Uint32Array, COL.sourceRow, rb.numRows);
}

/** Barcodes of a shard record batch. */
export function recordBatchBarcodes(rb: RecordBatch): string[] {
  const d = child(rb, COL.barcode);
  const offs = d.valueOffsets as unknown;
  const bytes = d.values as unknown;
  if (!(offs instanceof Int32Array) || !(bytes instanceof Uint8Array))
    throw new CellBatchFormatError(`column "${COL.barcode}" must be Utf8`);
  const at = offs.subarray(d.offset, d.offset + rb.numRows + 1);
  if (at.length !== rb.numRows + 1)
    throw new CellBatchFormatError(`column "${COL.barcode}" has too few offsets`);
  const dec = new TextDecoder();
  const out: string[] = [];
  for (let i = 0; i < rb.numRows; i++) out.push(dec.decode(bytes.subarray(at[i], at[i + 1])));
  return out;
}

/** A minibatch from Arrow IPC stream bytes; throws CellBatchFormatError on anything malformed. */
export function decodeCellBatch(bytes: Uint8Array, nGenes: number): CellBatch {
  let batches: RecordBatch[];
  try {
    const reader = RecordBatchReader.from(bytes);
    batches = [...reader];
  } catch (e) {
    throw new CellBatchFormatError(`not an Arrow IPC stream (${(e as Error).message})`);
  }
  if (batches.length === 0) throw new CellBatchFormatError('no record batch');
  const parts = batches.map((rb) => recordBatchToCellBatch(rb, nGenes));
  return parts.length === 1 ? parts[0]! : concatCellBatches(parts);
}

/** Cells of several batches, in order, as one batch. */
export function concatCellBatches(parts: CellBatch[]): CellBatch {
  const nGenes = parts[0]!.nGenes;
  const n = parts.reduce((s, p) => s + p.nCells, 0);
  const nnz = parts.reduce((s, p) => s + p.indptr[p.nCells]!, 0);
  const out: CellBatch = {
    nCells: n,
    nGenes,
    indptr: new Int32Array(n + 1),
    indices: new Int32Array(nnz),
    counts: new Float32Array(nnz),
    library: new Float32Array(n),
    batch: new Int32Array(n),
    label: new Int32Array(n),
    cellIndex: new Uint32Array(n),
  };
  let row = 0,
    at = 0;
  for (const p of parts) {
    const pn = p.indptr[p.nCells]!;
    out.indices.set(p.indices.subarray(0, pn), at);
    out.counts.set(p.counts.subarray(0, pn), at);
    for (let i = 1; i <= p.nCells; i++) out.indptr[row + i] = at + p.indptr[i]!;
    out.library.set(p.library, row);
    out.batch.set(p.batch, row);
    out.label.set(p.label, row);
    out.cellIndex.set(p.cellIndex, row);
    row += p.nCells;
    at += pn;
  }
  return out;
}
