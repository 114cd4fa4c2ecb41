// A minibatch of cells as sparse rows (CSR) with per-cell metadata: the unit that flows from
// the data layer to the model, and (Arrow-encoded) over the wire.

export interface CellBatch {
  nCells: number;
  nGenes: number;
  /** length nCells + 1 */
  indptr: Int32Array;
  /** gene index of each stored count, ascending within a row */
  indices: Int32Array;
  /** raw counts (integers unless the dataset allowed otherwise) */
  counts: Float32Array;
  /** observed total counts per cell */
  library: Float32Array;
  /** batch code per cell (0..nBatch-1) */
  batch: Int32Array;
  /** label code per cell, -1 when unknown */
  label: Int32Array;
  /** global cell index in the dataset */
  cellIndex: Uint32Array;
}

/** Anything that can hand out cells by global index: an in-memory matrix, a prepared Arrow dataset. */
export interface CellSource {
  readonly nCells: number;
  readonly nGenes: number;
  readonly nBatch: number;
  /** rows in the order given */
  getCells(indices: ArrayLike<number>): CellBatch | Promise<CellBatch>;
}

/** Dense row-major [nCells, nGenes] copy of the counts. */
export function densify(b: CellBatch): Float32Array {
  const out = new Float32Array(b.nCells * b.nGenes);
  for (let i = 0; i < b.nCells; i++) {
    const row = i * b.nGenes;
    for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++) out[row + b.indices[k]!] = b.counts[k]!;
  }
  return out;
}

/** Rows `rows` of `b`, in that order, as a new batch. */
export function selectRows(b: CellBatch, rows: ArrayLike<number>): CellBatch {
  const n = rows.length;
  const indptr = new Int32Array(n + 1);
  let nnz = 0;
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    nnz += b.indptr[r + 1]! - b.indptr[r]!;
    indptr[i + 1] = nnz;
  }
  const indices = new Int32Array(nnz);
  const counts = new Float32Array(nnz);
  const library = new Float32Array(n);
  const batch = new Int32Array(n);
  const label = new Int32Array(n);
  const cellIndex = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    const s = b.indptr[r]!,
      e = b.indptr[r + 1]!;
    indices.set(b.indices.subarray(s, e), indptr[i]);
    counts.set(b.counts.subarray(s, e), indptr[i]);
    library[i] = b.library[r]!;
    batch[i] = b.batch[r]!;
    label[i] = b.label[r]!;
    cellIndex[i] = b.cellIndex[r]!;
  }
  return { nCells: n, nGenes: b.nGenes, indptr, indices, counts, library, batch, label, cellIndex };
}
