// The Arrow form of a CellBatch: one row per cell (global index, sparse gene indices and counts,
// library size, batch and label codes). The same schema is used for minibatch messages on the
// wire (Arrow IPC stream bytes) and, with two extra columns (source row, barcode), for the
// record batches of a prepared dataset's shard files.
//
// Vectors are built straight from the batch's typed arrays (makeData), and decoding returns
// views into the message bytes where Arrow's alignment allows, so there are no per-cell objects.
//
// This module is the entry point (@atlasvae/shared/arrow): the schema is in arrow-schema.ts, the
// encoders in arrow-encode.ts, the decoders in arrow-decode.ts.
export { COL, cellBatchSchema, shardSchema, type ShardExtra } from './arrow-schema.js';
export * from './arrow-encode.js';
export * from './arrow-decode.js';
