// The Arrow schema of a cell (one row per cell: global index, sparse gene indices and counts,
// library size, batch and label codes) for minibatch messages, and its shard variant with the
// source row and barcode.
import { Field, Schema, List, Int32, Uint32, Float32, Utf8 } from 'apache-arrow';

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

export const int32 = new Int32();
export const float32 = new Float32();
export const uint32 = new Uint32();
export const genesType = new List(new Field('item', int32, false));
export const countsType = new List(new Field('item', float32, false));

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
