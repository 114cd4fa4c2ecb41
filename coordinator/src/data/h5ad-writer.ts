// Writes AnnData .h5ad files (anndata ≥ 0.8 layout) through h5wasm: a streaming CSR writer for the
// synthetic atlas, and a whole-matrix writer (CSR, CSC or dense; X, a layer or raw/X) used to
// exercise the readers.
import fs from 'node:fs';
import path from 'node:path';
import type { CellBatch } from '@atlasvae/shared';
import type { CellSink, SimulatedCell, SimulationOptions } from './simulate.js';
import { simulatedNames } from './simulate.js';

type H5File = InstanceType<typeof h5wasm.File>;
type H5Group = InstanceType<typeof h5wasm.Group>;

// h5wasm is loaded on first use: importing it is slow, and every command that never touches an
// .h5ad (train, worker, --help) would pay for it at start-up (docs/benchmarks.md).
type H5wasm = (typeof import('h5wasm/node'))['default'];
/** the library, set by `h5()` before anything here uses it */
let h5wasm: H5wasm;
let ready: Promise<H5wasm> | null = null;
export async function h5(): Promise<H5wasm> {
  ready ??= import('h5wasm/node').then(async (m) => {
    await m.default.ready;
    return m.default;
  });
  h5wasm = await ready;
  return h5wasm;
}

function encodingAttrs(
  g: H5Group | InstanceType<typeof h5wasm.Dataset>,
  type: string,
  version: string,
): void {
  g.create_attribute('encoding-type', type);
  g.create_attribute('encoding-version', version);
}

function emptyDict(f: H5Group, name: string): void {
  encodingAttrs(f.create_group(name), 'dict', '0.1.0');
}

function stringArray(g: H5Group, name: string, values: string[]): void {
  const d = g.create_dataset({ name, data: values });
  encodingAttrs(d, 'string-array', '0.2.0');
}

export type ObsColumn = { codes: Int32Array; categories: string[] } | string[];

function writeDataframe(f: H5File, name: string, index: string[], columns: Record<string, ObsColumn>): void {
  const g = f.create_group(name);
  g.create_attribute('_index', '_index');
  g.create_attribute('column-order', Object.keys(columns));
  encodingAttrs(g, 'dataframe', '0.2.0');
  stringArray(g, '_index', index);
  for (const [k, col] of Object.entries(columns)) {
    if (Array.isArray(col)) {
      stringArray(g, k, col);
      continue;
    }
    const c = g.create_group(k);
    encodingAttrs(c, 'categorical', '0.2.0');
    c.create_attribute('ordered', 0);
    const codes = col.categories.length < 127 ? Int8Array.from(col.codes) : Int32Array.from(col.codes);
    encodingAttrs(c.create_dataset({ name: 'codes', data: codes }), 'array', '0.2.0');
    stringArray(c, 'categories', col.categories);
  }
}

function openNew(file: string): { f: H5File; tmp: string } {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.partial-${process.pid}`;
  const f = new h5wasm.File(tmp, 'w');
  encodingAttrs(f, 'anndata', '0.1.0');
  return { f, tmp };
}

export interface WholeH5adOptions {
  layout: 'csr' | 'csc' | 'dense';
  /** where the counts go: X (default), layers/NAME, or raw/X */
  target?: { layer: string } | 'raw' | 'X';
  /** written to X when the counts go elsewhere (e.g. log-normalized values) */
  otherX?: CellBatch;
  geneIds?: string[];
  /** value dtype of the matrix */
  dtype?: '<f' | '<d' | '<i';
}

function matrixGroup(
  parent: H5Group,
  name: string,
  b: CellBatch,
  layout: WholeH5adOptions['layout'],
  dtype: string,
): void {
  const shape = [b.nCells, b.nGenes];
  const nnz = b.indptr[b.nCells]!;
  const cast = (v: Float32Array): Float32Array | Float64Array | Int32Array =>
    dtype === '<d' ? Float64Array.from(v) : dtype === '<i' ? Int32Array.from(v) : v;
  if (layout === 'dense') {
    const dense = new Float32Array(b.nCells * b.nGenes);
    for (let i = 0; i < b.nCells; i++)
      for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++)
        dense[i * b.nGenes + b.indices[k]!] = b.counts[k]!;
    const d = parent.create_dataset({
      name,
      data: cast(dense),
      shape,
      dtype,
      chunks: [Math.min(64, b.nCells), b.nGenes],
    });
    encodingAttrs(d, 'array', '0.2.0');
    return;
  }
  const g = parent.create_group(name);
  encodingAttrs(g, layout === 'csr' ? 'csr_matrix' : 'csc_matrix', '0.1.0');
  g.create_attribute('shape', new BigInt64Array(shape.map(BigInt)));
  if (layout === 'csr') {
    g.create_dataset({
      name: 'data',
      data: cast(b.counts.slice(0, nnz)),
      dtype,
      chunks: [Math.max(1, Math.min(nnz, 4096))],
    });
    g.create_dataset({
      name: 'indices',
      data: b.indices.slice(0, nnz),
      dtype: '<i',
      chunks: [Math.max(1, Math.min(nnz, 4096))],
    });
    g.create_dataset({ name: 'indptr', data: BigInt64Array.from(b.indptr, (x) => BigInt(x)), dtype: '<q' });
    return;
  }
  // CSC: columns are genes
  const colPtr = new Int32Array(b.nGenes + 1);
  for (let k = 0; k < nnz; k++) colPtr[b.indices[k]! + 1]!++;
  for (let j = 0; j < b.nGenes; j++) colPtr[j + 1]! += colPtr[j]!;
  const fill = colPtr.slice(0, b.nGenes);
  const rows = new Int32Array(nnz);
  const vals = new Float32Array(nnz);
  for (let i = 0; i < b.nCells; i++) {
    for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++) {
      const at = fill[b.indices[k]!]!++;
      rows[at] = i;
      vals[at] = b.counts[k]!;
    }
  }
  g.create_dataset({ name: 'data', data: cast(vals), dtype, chunks: [Math.max(1, Math.min(nnz, 4096))] });
  g.create_dataset({ name: 'indices', data: rows, dtype: '<i', chunks: [Math.max(1, Math.min(nnz, 4096))] });
  g.create_dataset({ name: 'indptr', data: colPtr, dtype: '<i' });
}

/** A whole in-memory matrix as an .h5ad (tests and small exports). */
export async function writeH5ad(
  file: string,
  b: CellBatch,
  genes: string[],
  barcodes: string[],
  obs: Record<string, ObsColumn>,
  o: WholeH5adOptions,
): Promise<void> {
  await h5();
  const { f, tmp } = openNew(file);
  try {
    const target = o.target ?? 'X';
    const dtype = o.dtype ?? '<f';
    if (target === 'X') matrixGroup(f, 'X', b, o.layout, dtype);
    else matrixGroup(f, 'X', o.otherX ?? b, 'csr', '<f');
    const layers = f.create_group('layers');
    encodingAttrs(layers, 'dict', '0.1.0');
    if (typeof target === 'object') matrixGroup(layers, target.layer, b, o.layout, dtype);
    if (target === 'raw') {
      const raw = f.create_group('raw');
      encodingAttrs(raw, 'raw', '0.1.0');
      matrixGroup(raw, 'X', b, o.layout, dtype);
      const v = raw.create_group('var');
      v.create_attribute('_index', '_index');
      v.create_attribute('column-order', o.geneIds ? ['gene_ids'] : []);
      encodingAttrs(v, 'dataframe', '0.2.0');
      stringArray(v, '_index', genes);
      if (o.geneIds) stringArray(v, 'gene_ids', o.geneIds);
    }
    writeDataframe(f, 'obs', barcodes, obs);
    writeDataframe(f, 'var', genes, o.geneIds ? { gene_ids: o.geneIds } : {});
    for (const k of ['obsm', 'obsp', 'uns', 'varm', 'varp']) emptyDict(f, k);
    f.close();
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      f.close();
    } catch {
      /* closed */
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

const FLUSH_ENTRIES = 1 << 20;

/** Streams simulated cells into an .h5ad with CSR X, obs batch and cell_type categoricals. */
export class H5adCellSink implements CellSink {
  private data = new Float32Array(FLUSH_ENTRIES);
  private indices = new Int32Array(FLUSH_ENTRIES);
  private fill = 0;
  private written = 0;
  private indptr: BigInt64Array;
  private batch: Int8Array | Int32Array;
  private type: Int8Array | Int32Array;
  private cells = 0;

  private constructor(
    private readonly file: string,
    private readonly tmp: string,
    private readonly f: H5File,
    private readonly o: SimulationOptions,
  ) {
    this.indptr = new BigInt64Array(o.cells + 1);
    this.batch = o.batches < 127 ? new Int8Array(o.cells) : new Int32Array(o.cells);
    this.type = o.cellTypes < 127 ? new Int8Array(o.cells) : new Int32Array(o.cells);
    const X = f.create_group('X');
    encodingAttrs(X, 'csr_matrix', '0.1.0');
    X.create_attribute('shape', new BigInt64Array([BigInt(o.cells), BigInt(o.genes)]));
    X.create_dataset({
      name: 'data',
      data: new Float32Array(0),
      shape: [0],
      maxshape: [null],
      chunks: [65536],
      dtype: '<f',
    });
    X.create_dataset({
      name: 'indices',
      data: new Int32Array(0),
      shape: [0],
      maxshape: [null],
      chunks: [65536],
      dtype: '<i',
    });
  }

  static async create(file: string, o: SimulationOptions): Promise<H5adCellSink> {
    await h5();
    const { f, tmp } = openNew(file);
    return new H5adCellSink(file, tmp, f, o);
  }

  add(c: SimulatedCell): void {
    if (this.fill + c.nnz > this.data.length) this.flush();
    if (c.nnz > this.data.length) {
      this.data = new Float32Array(c.nnz);
      this.indices = new Int32Array(c.nnz);
    }
    this.data.set(c.counts, this.fill);
    this.indices.set(c.genes, this.fill);
    this.fill += c.nnz;
    this.batch[c.index] = c.batch;
    this.type[c.index] = c.type;
    this.indptr[c.index + 1] = BigInt(this.written + this.fill);
    this.cells++;
  }

  private flush(): void {
    if (this.fill === 0) return;
    const X = this.f.get('X') as H5Group;
    const n0 = this.written,
      n1 = this.written + this.fill;
    for (const [name, arr] of [
      ['data', this.data],
      ['indices', this.indices],
    ] as const) {
      const d = X.get(name) as InstanceType<typeof h5wasm.Dataset>;
      d.resize([n1]);
      d.write_slice([[n0, n1]], arr.subarray(0, this.fill));
    }
    this.written = n1;
    this.fill = 0;
  }

  async finish(): Promise<void> {
    this.flush();
    const X = this.f.get('X') as H5Group;
    X.create_dataset({ name: 'indptr', data: this.indptr, dtype: '<q' });
    const names = simulatedNames(this.o);
    const width = String(this.o.cells - 1).length;
    const barcodes = Array.from({ length: this.o.cells }, (_, i) => `SIM${String(i).padStart(width, '0')}`);
    writeDataframe(this.f, 'obs', barcodes, {
      cell_type: { codes: Int32Array.from(this.type), categories: names.typeNames },
      batch: { codes: Int32Array.from(this.batch), categories: names.batchNames },
    });
    writeDataframe(this.f, 'var', names.genes, {});
    const layers = this.f.create_group('layers');
    encodingAttrs(layers, 'dict', '0.1.0');
    for (const k of ['obsm', 'obsp', 'uns', 'varm', 'varp']) emptyDict(this.f, k);
    this.f.close();
    fs.renameSync(this.tmp, this.file);
  }

  async abort(): Promise<void> {
    try {
      this.f.close();
    } catch {
      /* closed */
    }
    fs.rmSync(this.tmp, { force: true });
  }
}
