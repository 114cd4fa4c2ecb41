// The Arrow form of a CellBatch: one row per cell (global index, sparse gene indices and counts,
// library size, batch and label codes). The same schema is used for minibatch messages on the
// wire (Arrow IPC stream bytes) and, with two extra columns (source row, barcode), for the
// record batches of a prepared dataset's shard files.
//
// Vectors are built straight from the batch's typed arrays (makeData), and decoding returns
// views into the message bytes where Arrow's alignment allows, so there are no per-cell objects.
import {
  Field,
  Schema,
  List,
  Int32,
  Uint32,
  Float32,
  Utf8,
  Struct,
  Table,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  RecordBatchReader,
  type Data,
} from 'apache-arrow';
import {
  Message,
  RecordBatch as RecordBatchHeader,
  FieldNode,
  BufferRegion,
} from 'apache-arrow/ipc/metadata/message';
import type { CellBatch } from './batch.js';

export const COL = {
  cell: 'cell',
  genes: 'genes',
  counts: 'counts',
  library: 'library',
  batch: 'batch',
  label: 'label',
  sourceRow: 'source_row',
  barcode: 'barcode',
} as const;

const int32 = new Int32();
const float32 = new Float32();
const uint32 = new Uint32();
const genesType = new List(new Field('item', int32, false));
const countsType = new List(new Field('item', float32, false));

const wireFields = [
  new Field(COL.cell, uint32, false),
  new Field(COL.genes, genesType, false),
  new Field(COL.counts, countsType, false),
  new Field(COL.library, float32, false),
  new Field(COL.batch, int32, false),
  new Field(COL.label, int32, false),
];

/** Minibatch messages: the CellBatch fields. */
export const cellBatchSchema = new Schema(wireFields);
/** Shard record batches: plus the cell's row in the source file and its barcode. */
export const shardSchema = new Schema([
  ...wireFields,
  new Field(COL.sourceRow, uint32, false),
  new Field(COL.barcode, new Utf8(), false),
]);

/** Per-cell columns a shard stores beyond the CellBatch. */
export interface ShardExtra {
  sourceRow: Uint32Array;
  barcodes: readonly string[];
}

function columnData(b: CellBatch): Data[] {
  const n = b.nCells;
  const nnz = b.indptr[n]! - b.indptr[0]!;
  let offsets = b.indptr;
  let indices = b.indices;
  let counts = b.counts;
  if (b.indptr[0] !== 0) {
    // a batch whose rows start inside its arrays: rebase so offsets start at 0
    const base = b.indptr[0]!;
    offsets = new Int32Array(n + 1);
    for (let i = 0; i <= n; i++) offsets[i] = b.indptr[i]! - base;
    indices = b.indices.subarray(base, base + nnz);
    counts = b.counts.subarray(base, base + nnz);
  } else if (indices.length !== nnz) {
    indices = indices.subarray(0, nnz);
    counts = counts.subarray(0, nnz);
  }
  return [
    makeData({ type: uint32, length: n, nullCount: 0, data: b.cellIndex }),
    makeData({
      type: genesType,
      length: n,
      nullCount: 0,
      valueOffsets: offsets,
      child: makeData({ type: int32, length: nnz, nullCount: 0, data: indices }),
    }),
    // a separate offsets array: Arrow's writer merges overlapping views of one buffer when joining output chunks
    makeData({
      type: countsType,
      length: n,
      nullCount: 0,
      valueOffsets: offsets.slice(),
      child: makeData({ type: float32, length: nnz, nullCount: 0, data: counts }),
    }),
    makeData({ type: float32, length: n, nullCount: 0, data: b.library }),
    makeData({ type: int32, length: n, nullCount: 0, data: b.batch }),
    makeData({ type: int32, length: n, nullCount: 0, data: b.label }),
  ];
}

const utf8Encoder = new TextEncoder();

function utf8Data(strings: readonly string[]): Data<Utf8> {
  const parts = strings.map((s) => utf8Encoder.encode(s));
  const offsets = new Int32Array(strings.length + 1);
  for (let i = 0; i < parts.length; i++) offsets[i + 1] = offsets[i]! + parts[i]!.length;
  const bytes = new Uint8Array(offsets[strings.length]!);
  for (let i = 0; i < parts.length; i++) bytes.set(parts[i]!, offsets[i]);
  return makeData({
    type: new Utf8(),
    length: strings.length,
    nullCount: 0,
    valueOffsets: offsets,
    data: bytes,
  });
}

/** A record batch of the wire schema, or of the shard schema when `extra` is given. */
export function cellBatchToRecordBatch(b: CellBatch, extra?: ShardExtra): RecordBatch {
  const children = columnData(b);
  let schema = cellBatchSchema;
  if (extra) {
    if (extra.sourceRow.length !== b.nCells || extra.barcodes.length !== b.nCells)
      throw new Error('shard extra columns must have one value per cell');
    children.push(
      makeData({ type: uint32, length: b.nCells, nullCount: 0, data: extra.sourceRow }),
      utf8Data(extra.barcodes),
    );
    schema = shardSchema;
  }
  const data = makeData({ type: new Struct(schema.fields), length: b.nCells, nullCount: 0, children });
  return new RecordBatch(schema, data);
}

/** The schema message of an IPC stream as a stream writer frames it (8-byte aligned). */
export function streamSchemaFrame(schema: Schema): Uint8Array {
  const bytes = RecordBatchStreamWriter.writeAll(new Table(schema)).toUint8Array(true);
  return bytes.slice(0, bytes.length - 8); // without the end-of-stream marker
}

let wireSchemaFrame: Uint8Array | null = null;
function schemaFrame(): Uint8Array {
  return (wireSchemaFrame ??= streamSchemaFrame(cellBatchSchema));
}

/**
 * An uninitialised byte array (every byte is written by the caller): zero-filling a fresh
 * ~300 KB message costs as much as filling it. Outside Node, a zeroed one.
 */
function allocBytes(n: number): Uint8Array {
  const B = (globalThis as { Buffer?: { allocUnsafeSlow(n: number): Uint8Array } }).Buffer;
  if (!B) return new Uint8Array(n);
  const b = B.allocUnsafeSlow(n);
  // a plain Uint8Array over the Buffer's own ArrayBuffer (callers compare and slice it as one)
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

const pad8 = (x: number): number => (x + 7) & ~7;

/** Typed views of one message body's buffers, in the order of the wire schema's columns. */
interface BodyViews {
  cell: Uint32Array;
  genesOffsets: Int32Array;
  genes: Int32Array;
  countsOffsets: Int32Array;
  counts: Float32Array;
  library: Float32Array;
  batch: Int32Array;
  label: Int32Array;
}

/**
 * Writes one minibatch message (IPC stream: schema, one record batch, end-of-stream) straight into
 * a single buffer: the header is Arrow's own flatbuffer encoding, the body buffers are laid out as
 * Arrow's writer lays them out (no validity bitmaps, each buffer padded to 8 bytes), and `fill`
 * writes the columns into their final place. Byte-identical to RecordBatchStreamWriter's output.
 */
function writeMessage(n: number, nnz: number, fill: (v: BodyViews) => void): Uint8Array {
  const schema = schemaFrame();
  const nodes: FieldNode[] = [];
  const regions: BufferRegion[] = [];
  let pos = 0;
  const at: number[] = [];
  const buffer = (bytes: number): void => {
    regions.push(new BufferRegion(pos, 0)); // validity bitmap: none, no nulls
    regions.push(new BufferRegion(pos, pad8(bytes)));
    at.push(pos, bytes);
    pos += pad8(bytes);
  };
  nodes.push(new FieldNode(n, 0));
  buffer(4 * n); // cell
  nodes.push(new FieldNode(n, 0));
  buffer(4 * (n + 1)); // genes offsets
  nodes.push(new FieldNode(nnz, 0));
  buffer(4 * nnz); // genes values
  nodes.push(new FieldNode(n, 0));
  buffer(4 * (n + 1)); // counts offsets
  nodes.push(new FieldNode(nnz, 0));
  buffer(4 * nnz); // counts values
  for (let k = 0; k < 3; k++) {
    nodes.push(new FieldNode(n, 0));
    buffer(4 * n);
  } // library, batch, label
  const bodyLength = pos;
  const meta = Message.encode(Message.from(new RecordBatchHeader(n, nodes, regions, null), bodyLength));
  const metaFrame = pad8(meta.length + 8);
  const bodyStart = schema.length + metaFrame;
  const total = bodyStart + bodyLength + 8;
  const out = allocBytes(total);
  out.set(schema, 0);
  const dv = new DataView(out.buffer, out.byteOffset, total);
  dv.setInt32(schema.length, -1, true); // continuation marker
  dv.setInt32(schema.length + 4, metaFrame - 8, true);
  out.set(meta, schema.length + 8);
  out.fill(0, schema.length + 8 + meta.length, bodyStart);
  for (let i = 0; i < at.length; i += 2) {
    const end = bodyStart + at[i]! + at[i + 1]!;
    out.fill(0, end, bodyStart + at[i]! + pad8(at[i + 1]!)); // padding bytes
  }
  dv.setInt32(bodyStart + bodyLength, -1, true); // end of stream
  dv.setInt32(bodyStart + bodyLength + 4, 0, true);
  const ab = out.buffer,
    o = out.byteOffset + bodyStart; // 8-aligned: typed views need no copy
  fill({
    cell: new Uint32Array(ab, o + at[0]!, n),
    genesOffsets: new Int32Array(ab, o + at[2]!, n + 1),
    genes: new Int32Array(ab, o + at[4]!, nnz),
    countsOffsets: new Int32Array(ab, o + at[6]!, n + 1),
    counts: new Float32Array(ab, o + at[8]!, nnz),
    library: new Float32Array(ab, o + at[10]!, n),
    batch: new Int32Array(ab, o + at[12]!, n),
    label: new Int32Array(ab, o + at[14]!, n),
  });
  return out;
}

/** Arrow IPC stream bytes (one record batch) of a minibatch. */
export function encodeCellBatch(b: CellBatch): Uint8Array {
  const n = b.nCells;
  const base = b.indptr[0]!;
  const nnz = b.indptr[n]! - base;
  return writeMessage(n, nnz, (v) => {
    v.cell.set(b.cellIndex.subarray(0, n));
    for (let i = 0; i <= n; i++) v.genesOffsets[i] = b.indptr[i]! - base;
    v.countsOffsets.set(v.genesOffsets);
    v.genes.set(b.indices.subarray(base, base + nnz));
    v.counts.set(b.counts.subarray(base, base + nnz));
    v.library.set(b.library.subarray(0, n));
    v.batch.set(b.batch.subarray(0, n));
    v.label.set(b.label.subarray(0, n));
  });
}

/**
 * Arrow IPC stream bytes of cells gathered from several batches: cell i of the message is row
 * `rows[i]` of `from[i]`. Each row is copied once, straight into the message (what serving a
 * microbatch out of cached record batches needs); the bytes equal encodeCellBatch of the
 * gathered batch.
 */
export function encodeCellRows(from: readonly CellBatch[], rows: ArrayLike<number>): Uint8Array {
  const n = rows.length;
  if (from.length !== n) throw new Error('encodeCellRows: one source batch per row');
  let nnz = 0;
  for (let i = 0; i < n; i++) {
    const c = from[i]!,
      r = rows[i]!;
    if (!(r >= 0 && r < c.nCells)) throw new RangeError(`row ${r} outside 0..${c.nCells - 1}`);
    nnz += c.indptr[r + 1]! - c.indptr[r]!;
  }
  return writeMessage(n, nnz, (v) => {
    let p = 0;
    v.genesOffsets[0] = 0;
    for (let i = 0; i < n; i++) {
      const c = from[i]!,
        r = rows[i]!;
      const s = c.indptr[r]!,
        e = c.indptr[r + 1]!;
      if (e - s > 16) {
        v.genes.set(c.indices.subarray(s, e), p);
        v.counts.set(c.counts.subarray(s, e), p);
      } else {
        for (let k = s; k < e; k++) {
          v.genes[p + k - s] = c.indices[k]!;
          v.counts[p + k - s] = c.counts[k]!;
        }
      }
      p += e - s;
      v.genesOffsets[i + 1] = p;
      v.cell[i] = c.cellIndex[r]!;
      v.library[i] = c.library[r]!;
      v.batch[i] = c.batch[r]!;
      v.label[i] = c.label[r]!;
    }
    v.countsOffsets.set(v.genesOffsets);
  });
}

/** Arrow IPC stream bytes of a minibatch, through Arrow's own stream writer (the reference encoder). */
export function encodeCellBatchWithArrowWriter(b: CellBatch): Uint8Array {
  return RecordBatchStreamWriter.writeAll([cellBatchToRecordBatch(b)]).toUint8Array(true);
}

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
