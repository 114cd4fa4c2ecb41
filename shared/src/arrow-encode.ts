// CellBatch to Arrow: record batches built straight from the batch's typed arrays (makeData), and
// minibatch messages (IPC stream bytes) written into one buffer, byte-identical to Arrow's own
// stream writer (kept here as the reference encoder).
import {
  Schema,
  Utf8,
  Struct,
  Table,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  type Data,
} from 'apache-arrow';
import {
  Message,
  RecordBatch as RecordBatchHeader,
  FieldNode,
  BufferRegion,
} from 'apache-arrow/ipc/metadata/message';
import type { CellBatch } from './batch.js';
import {
  cellBatchSchema,
  countsType,
  float32,
  genesType,
  int32,
  shardSchema,
  uint32,
  type ShardExtra,
} from './arrow-schema.js';

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
