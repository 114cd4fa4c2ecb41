// HDF5 inputs through h5wasm's Node build, which reads the file on disk (NODERAWFS): every read
// below is a hyperslab (`slice`) of a dataset, so a pass holds one chunk of cells, never a whole
// matrix. AnnData .h5ad (X, a layer or raw/X; CSR, CSC or dense; obs as anndata ≥ 0.7 writes it)
// and 10x CellRanger .h5 (v3 `matrix/` with `features/`, v2 `<genome>/` with `genes`).
import path from 'node:path';
import h5wasm from 'h5wasm/node';
import { InputError } from '@atlasvae/shared';
import { CellBuckets } from './buckets.js';
import {
  CHUNK_ENTRIES,
  CHUNK_MAX_CELLS,
  type MatrixSource,
  type ObsValues,
  type OpenSourceOptions,
  type RowChunk,
  canonicalRows,
} from './source.js';

type H5File = InstanceType<typeof h5wasm.File>;
type H5Group = InstanceType<typeof h5wasm.Group>;
type H5Dataset = InstanceType<typeof h5wasm.Dataset>;

interface ErrorSwitch {
  activate_throwing_error_handler(): number;
  deactivate_throwing_error_handler(): number;
}
let ready: Promise<ErrorSwitch> | null = null;
let errors: ErrorSwitch | null = null;
async function h5(): Promise<void> {
  ready ??= h5wasm.ready as unknown as Promise<ErrorSwitch>;
  errors = await ready;
}

/** The innermost message of an HDF5 error stack ("truncated file: eof = …"). */
function hdf5Problem(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const lines = text
    .split('\n')
    .map((l) => /#\d+: .* in [\w]+\(\): (.*)$/.exec(l)?.[1])
    .filter((x): x is string => !!x);
  return lines.at(-1) ?? text.split('\n')[0]!;
}

/**
 * Runs h5wasm calls with HDF5's errors thrown (instead of printed to stderr and ignored) and
 * reported as an InputError naming the file. Only around our own calls: h5wasm's default
 * handler is restored afterwards for other users in the process.
 */
function guard<T>(file: string, what: string, fn: () => T): T {
  errors?.activate_throwing_error_handler();
  try {
    return fn();
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(file, `cannot read ${what}: ${hdf5Problem(e)} (truncated or corrupt file?)`);
  } finally {
    errors?.deactivate_throwing_error_handler();
  }
}

function isGroup(e: unknown): e is H5Group {
  return e instanceof h5wasm.Group;
}
function isDataset(e: unknown): e is H5Dataset {
  return e instanceof h5wasm.Dataset;
}

function attr(e: H5Group | H5Dataset, name: string): unknown {
  const a = e.attrs[name];
  if (!a) return undefined;
  const v = a.value as unknown;
  return v;
}

function attrString(e: H5Group | H5Dataset, name: string): string | undefined {
  const v = attr(e, name);
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
  return undefined;
}

/** numbers from any numeric typed array h5wasm returns (bigint ones converted) */
function toNumbers(v: unknown, file: string, what: string): Float64Array | Float32Array | Int32Array {
  if (v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array) return v;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return int64ToNumbers(v);
  if (
    v instanceof Int8Array ||
    v instanceof Int16Array ||
    v instanceof Uint8Array ||
    v instanceof Uint16Array
  )
    return Int32Array.from(v);
  if (v instanceof Uint32Array) return Float64Array.from(v);
  throw new InputError(file, `${what} is not numeric`);
}

/**
 * 64-bit integers (10x stores indices and indptr as int64) as numbers: the low 32-bit words when
 * every value is in 0..2^31-1 (little-endian), which avoids a BigInt conversion per value.
 */
function int64ToNumbers(v: BigInt64Array | BigUint64Array): Int32Array | Float64Array {
  const words = new Int32Array(v.buffer, v.byteOffset, v.length * 2);
  const out = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const lo = words[2 * i]!;
    if (words[2 * i + 1] !== 0 || lo < 0) return Float64Array.from(v as ArrayLike<bigint>, (x) => Number(x));
    out[i] = lo;
  }
  return out;
}

/** int32 indices without a copy when they already are */
function asInt32(a: Float64Array | Float32Array | Int32Array): Int32Array {
  return a instanceof Int32Array ? a : Int32Array.from(a);
}

function toIndexArray(v: unknown, file: string, what: string): Float64Array | Int32Array {
  const a = toNumbers(v, file, what);
  return a instanceof Float32Array ? Float64Array.from(a) : a;
}

function strings(v: unknown, file: string, what: string): string[] {
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x.replace(/\0+$/, '') : String(x)));
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number | bigint>, (x) => String(x));
  if (typeof v === 'string') return [v];
  throw new InputError(file, `${what} is not a list of strings`);
}

function read(file: string, d: H5Dataset, what: string, start?: number, end?: number): unknown {
  return guard(file, what, () => (start === undefined ? d.value : d.slice([[start, end!]])));
}

function need<T>(x: T | null | undefined, file: string, msg: string): T {
  if (x === null || x === undefined) throw new InputError(file, msg);
  return x;
}

/** The matrix part: CSR, CSC or dense, shape [cells, genes] (or genes × cells for 10x). */
interface MatrixLayout {
  kind: 'csr' | 'csc' | 'dense';
  data?: H5Dataset;
  indices?: H5Dataset;
  indptr?: H5Dataset;
  dense?: H5Dataset;
  nCells: number;
  nGenes: number;
  where: string;
}

function sparseLayout(
  file: string,
  g: H5Group,
  where: string,
  kind: 'csr' | 'csc',
  nCells: number,
  nGenes: number,
): MatrixLayout {
  const get = (n: string): H5Dataset => {
    const d = g.get(n);
    if (!isDataset(d)) throw new InputError(file, `${where}/${n} is missing`);
    return d;
  };
  const data = get('data'),
    indices = get('indices'),
    indptr = get('indptr');
  const nnz = data.shape?.[0] ?? 0;
  if ((indices.shape?.[0] ?? -1) !== nnz)
    throw new InputError(file, `${where}: data has ${nnz} entries but indices has ${indices.shape?.[0]}`);
  const nMajor = kind === 'csr' ? nCells : nGenes;
  if ((indptr.shape?.[0] ?? -1) !== nMajor + 1)
    throw new InputError(
      file,
      `${where}: indptr has ${indptr.shape?.[0]} entries, expected ${nMajor + 1} for shape [${nCells}, ${nGenes}]`,
    );
  return { kind, data, indices, indptr, nCells, nGenes, where };
}

/** A matrix shape read from the file (`what` names where): exactly two whole sizes. */
function matrixShape(file: string, what: string, shape: ArrayLike<number>): [number, number] {
  const [rows, cols, ...more] = Array.from(shape);
  if (rows === undefined || cols === undefined || more.length > 0)
    throw new InputError(file, `${what} is [${Array.from(shape).join(', ')}], not a 2-d matrix shape`);
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0)
    throw new InputError(file, `${what} is [${rows}, ${cols}]: sizes must be whole numbers ≥ 0`);
  return [rows, cols];
}

/** X-like element of an .h5ad at `where` (group or dataset). */
function h5adMatrix(file: string, f: H5File, where: string): MatrixLayout {
  const e = f.get(where);
  if (!e) throw new InputError(file, `has no ${where}`);
  if (isDataset(e)) {
    const [nCells, nGenes] = matrixShape(file, `${where}'s shape`, e.shape ?? []);
    return { kind: 'dense', dense: e, nCells, nGenes, where };
  }
  if (!isGroup(e)) throw new InputError(file, `${where} is not a matrix`);
  const enc = attrString(e, 'encoding-type') ?? attrString(e, 'h5sparse_format');
  const shapeAttr = attr(e, 'shape') ?? attr(e, 'h5sparse_shape');
  if (!shapeAttr || !ArrayBuffer.isView(shapeAttr))
    throw new InputError(file, `${where} has no shape attribute`);
  const shape = matrixShape(
    file,
    `${where}'s shape attribute`,
    Array.from(shapeAttr as unknown as ArrayLike<number | bigint>, Number),
  );
  if (enc === 'csr_matrix' || enc === 'csr') return sparseLayout(file, e, where, 'csr', ...shape);
  if (enc === 'csc_matrix' || enc === 'csc') return sparseLayout(file, e, where, 'csc', ...shape);
  throw new InputError(file, `${where} has unsupported encoding "${enc}"`);
}

/** Names of a dataframe group's index and columns (anndata ≥ 0.7 layout). */
function dataframeIndex(file: string, g: H5Group, where: string): H5Dataset {
  const name = attrString(g, '_index') ?? '_index';
  const d = g.get(name);
  if (!isDataset(d)) throw new InputError(file, `${where} has no index "${name}"`);
  return d;
}

class Hdf5Source implements MatrixSource {
  format: 'h5ad' | '10x-h5';
  nCells: number;
  nGenes: number;
  genes: string[];
  geneIds: string[] | null;
  featureTypes: string[] | null;
  private obsGroup: H5Group | null = null;
  private barcodeSet: H5Dataset;
  private buckets: CellBuckets | null = null;

  constructor(
    readonly file: string,
    private readonly f: H5File,
    private readonly m: MatrixLayout,
    meta: {
      format: 'h5ad' | '10x-h5';
      genes: string[];
      geneIds: string[] | null;
      featureTypes?: string[] | null;
      barcodes: H5Dataset;
      obs: H5Group | null;
    },
    private readonly o: OpenSourceOptions,
  ) {
    this.format = meta.format;
    this.nCells = m.nCells;
    this.nGenes = m.nGenes;
    this.genes = meta.genes;
    this.geneIds = meta.geneIds;
    this.featureTypes = meta.featureTypes ?? null;
    this.barcodeSet = meta.barcodes;
    this.obsGroup = meta.obs;
    if (this.genes.length !== this.nGenes)
      throw new InputError(
        file,
        `the matrix has ${this.nGenes} genes but the gene list has ${this.genes.length}`,
      );
    for (const [what, list] of [
      ['ids', this.geneIds],
      ['feature types', this.featureTypes],
    ] as const)
      if (list && list.length !== this.nGenes)
        throw new InputError(file, `the matrix has ${this.nGenes} genes but ${list.length} gene ${what}`);
    const nb = this.barcodeSet.shape?.[0] ?? -1;
    if (nb !== this.nCells)
      throw new InputError(file, `the matrix has ${this.nCells} cells but there are ${nb} barcodes`);
  }

  obsKeys(): string[] {
    const g = this.obsGroup;
    if (!g) return [];
    return guard(this.file, 'obs', () => this.obsKeyList(g));
  }

  private obsKeyList(g: H5Group): string[] {
    const index = attrString(g, '_index') ?? '_index';
    return g.keys().filter((k) => k !== index && k !== '__categories');
  }

  obsColumn(key: string): ObsValues {
    return guard(this.file, `obs/${key}`, () => this.readObsColumn(key));
  }

  private readObsColumn(key: string): ObsValues {
    const g = this.obsGroup;
    const keys = this.obsKeys();
    if (!g || !keys.includes(key)) {
      throw new InputError(
        this.file,
        keys.length
          ? `no obs column "${key}"; obs columns are: ${keys.join(', ')}`
          : `no obs column "${key}" (the file has no cell metadata; pass --obs TSV)`,
      );
    }
    const e = g.get(key);
    const where = `obs/${key}`;
    if (isGroup(e)) {
      // anndata ≥ 0.8 categorical: codes + categories
      const codes = e.get('codes'),
        cats = e.get('categories');
      if (!isDataset(codes) || !isDataset(cats))
        throw new InputError(this.file, `${where} is a group but not a categorical (codes, categories)`);
      return this.categorical(
        codes,
        strings(read(this.file, cats, `${where}/categories`), this.file, `${where}/categories`),
        where,
      );
    }
    if (!isDataset(e)) throw new InputError(this.file, `${where} is not readable`);
    // anndata 0.7: codes in obs/KEY, categories in obs/__categories/KEY
    const old = g.get(`__categories/${key}`);
    if (isDataset(old))
      return this.categorical(
        e,
        strings(read(this.file, old, `obs/__categories/${key}`), this.file, where),
        where,
      );
    const v = read(this.file, e, where);
    const values = strings(v, this.file, where);
    if (values.length !== this.nCells)
      throw new InputError(this.file, `${where} has ${values.length} values for ${this.nCells} cells`);
    return values;
  }

  private categorical(codesSet: H5Dataset, categories: string[], where: string): ObsValues {
    const raw = toNumbers(read(this.file, codesSet, `${where}/codes`), this.file, `${where}/codes`);
    if (raw.length !== this.nCells)
      throw new InputError(this.file, `${where} has ${raw.length} codes for ${this.nCells} cells`);
    const codes = Int32Array.from(raw);
    for (const c of codes)
      if (c < -1 || c >= categories.length)
        throw new InputError(this.file, `${where} has code ${c} outside its ${categories.length} categories`);
    return { codes, categories };
  }

  async allBarcodes(): Promise<string[]> {
    return strings(read(this.file, this.barcodeSet, 'the cell barcodes'), this.file, 'the cell barcodes');
  }

  private barcodes(start: number, end: number): string[] {
    if (end <= start) return [];
    return strings(
      read(this.file, this.barcodeSet, 'the cell barcodes', start, end),
      this.file,
      'the cell barcodes',
    );
  }

  rows(): AsyncIterable<RowChunk> {
    if (this.m.kind === 'csr') return this.csrRows();
    if (this.m.kind === 'dense') return this.denseRows();
    return this.cscRows();
  }

  private readIndptr(): Float64Array | Int32Array {
    const m = this.m;
    const p = toIndexArray(read(this.file, m.indptr!, `${m.where}/indptr`), this.file, `${m.where}/indptr`);
    const nnz = m.data!.shape?.[0] ?? 0;
    if (p[0] !== 0) throw new InputError(this.file, `${m.where}/indptr does not start at 0`);
    for (let i = 1; i < p.length; i++)
      if (p[i]! < p[i - 1]!) throw new InputError(this.file, `${m.where}/indptr decreases at ${i}`);
    if (p[p.length - 1] !== nnz)
      throw new InputError(
        this.file,
        `${m.where}/indptr ends at ${p[p.length - 1]} but there are ${nnz} entries`,
      );
    return p;
  }

  private async *csrRows(): AsyncGenerator<RowChunk> {
    const m = this.m;
    const indptr = this.readIndptr();
    for (let s = 0; s < m.nCells;) {
      let e = s + 1;
      while (e < m.nCells && e - s < CHUNK_MAX_CELLS && indptr[e + 1]! - indptr[s]! <= CHUNK_ENTRIES) e++;
      const a = indptr[s]!,
        b = indptr[e]!;
      const indices =
        b > a
          ? asInt32(
              toNumbers(
                read(this.file, m.indices!, `${m.where}/indices`, a, b),
                this.file,
                `${m.where}/indices`,
              ),
            )
          : new Int32Array(0);
      const values =
        b > a
          ? toNumbers(read(this.file, m.data!, `${m.where}/data`, a, b), this.file, `${m.where}/data`)
          : new Float32Array(0);
      const ptr = new Int32Array(e - s + 1);
      for (let i = 0; i <= e - s; i++) ptr[i] = indptr[s + i]! - a;
      yield canonicalRows(
        `${this.file} (${m.where})`,
        { start: s, nCells: e - s, indptr: ptr, indices, values, barcodes: this.barcodes(s, e) },
        m.nGenes,
      );
      s = e;
    }
  }

  private async *denseRows(): AsyncGenerator<RowChunk> {
    const m = this.m;
    const per = Math.max(1, Math.min(CHUNK_MAX_CELLS, Math.floor(CHUNK_ENTRIES / Math.max(1, m.nGenes))));
    for (let s = 0; s < m.nCells; s += per) {
      const e = Math.min(m.nCells, s + per);
      const block = toNumbers(read(this.file, m.dense!, m.where, s, e), this.file, m.where);
      if (block.length !== (e - s) * m.nGenes) throw new InputError(this.file, `${m.where}: short read`);
      let nnz = 0;
      for (let k = 0; k < block.length; k++) if (block[k] !== 0) nnz++;
      const indptr = new Int32Array(e - s + 1);
      const indices = new Int32Array(nnz);
      const values = new Float64Array(nnz);
      let w = 0;
      for (let i = 0; i < e - s; i++) {
        const row = i * m.nGenes;
        for (let g = 0; g < m.nGenes; g++) {
          const v = block[row + g]!;
          if (v !== 0) {
            indices[w] = g;
            values[w] = v;
            w++;
          }
        }
        indptr[i + 1] = w;
      }
      yield { start: s, nCells: e - s, indptr, indices, values, barcodes: this.barcodes(s, e) };
    }
  }

  /** CSC: read gene-major, sort into cell-major buckets on disk, then serve rows per bucket. */
  private async *cscRows(): AsyncGenerator<RowChunk> {
    const m = this.m;
    const gp = this.readIndptr();
    const nnz = gp[gp.length - 1]!;
    this.buckets?.close();
    const buckets = new CellBuckets(m.nCells, nnz, this.o.tmpDir, this.o.sortBucketEntries);
    this.buckets = buckets;
    try {
      for (let g0 = 0; g0 < m.nGenes;) {
        let g1 = g0 + 1;
        while (g1 < m.nGenes && gp[g1 + 1]! - gp[g0]! <= CHUNK_ENTRIES) g1++;
        const a = gp[g0]!,
          b = gp[g1]!;
        if (b > a) {
          const cells = toNumbers(
            read(this.file, m.indices!, `${m.where}/indices`, a, b),
            this.file,
            `${m.where}/indices`,
          );
          const vals = toNumbers(
            read(this.file, m.data!, `${m.where}/data`, a, b),
            this.file,
            `${m.where}/data`,
          );
          for (let g = g0; g < g1; g++) {
            for (let k = gp[g]! - a; k < gp[g + 1]! - a; k++) {
              const c = cells[k]!;
              if (!(c >= 0 && c < m.nCells))
                throw new InputError(
                  this.file,
                  `${m.where}/indices has cell ${c} outside 0..${m.nCells - 1} (gene ${g})`,
                );
              buckets.add(c, g, vals[k]!);
            }
          }
        }
        g0 = g1;
      }
      yield* buckets.rows(async (s, e) => this.barcodes(s, e));
    } finally {
      buckets.close();
      if (this.buckets === buckets) this.buckets = null;
    }
  }

  async close(): Promise<void> {
    this.buckets?.close();
    try {
      this.f.close();
    } catch {
      /* closed */
    }
  }
}

export async function openHdf5Source(file: string, o: OpenSourceOptions): Promise<MatrixSource> {
  await h5();
  const f = guard(file, 'the HDF5 file', () => new h5wasm.File(path.resolve(file), 'r'));
  try {
    return guard(file, 'the file structure', () => openKnownLayout(file, f, o));
  } catch (e) {
    try {
      f.close();
    } catch {
      /* closed */
    }
    throw e;
  }
}

function openKnownLayout(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  {
    const keys = f.keys();
    if (keys.includes('X') || keys.includes('obs')) return openH5ad(file, f, o);
    if (o.layer || o.useRaw)
      throw new InputError(file, '--layer and --use-raw apply to .h5ad input only (this is a 10x .h5)');
    if (keys.includes('matrix')) return open10xV3(file, f, o);
    for (const k of keys) {
      const g = f.get(k);
      if (isGroup(g) && g.keys().includes('gene_names')) return open10xV2(file, f, g, k, o);
    }
    throw new InputError(
      file,
      `HDF5 file is neither AnnData (no X/obs) nor 10x (no matrix group); top-level entries: ${keys.join(', ') || 'none'}`,
    );
  }
}

function openH5ad(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  let where = 'X';
  let varWhere = 'var';
  if (o.useRaw && o.layer) throw new InputError(file, 'use either --layer or --use-raw, not both');
  if (o.layer) {
    const layers = f.get('layers');
    const names = isGroup(layers) ? layers.keys() : [];
    if (!names.includes(o.layer))
      throw new InputError(file, `no layer "${o.layer}"; layers are: ${names.join(', ') || 'none'}`);
    where = `layers/${o.layer}`;
  }
  if (o.useRaw) {
    if (!isGroup(f.get('raw'))) throw new InputError(file, 'has no raw (--use-raw)');
    where = 'raw/X';
    varWhere = 'raw/var';
  }
  const m = h5adMatrix(file, f, where);
  const v = f.get(varWhere);
  if (!isGroup(v)) throw new InputError(file, `has no ${varWhere} dataframe`);
  const varIndex = dataframeIndex(file, v, varWhere);
  const genes = strings(read(file, varIndex, `${varWhere} index`), file, `${varWhere} index`);
  let geneIds: string[] | null = null;
  for (const k of ['gene_ids', 'gene_id', 'feature_id', 'ids']) {
    const d = v.get(k);
    if (isDataset(d)) {
      geneIds = strings(read(file, d, `${varWhere}/${k}`), file, `${varWhere}/${k}`);
      break;
    }
  }
  const obs = need(f.get('obs'), file, 'has no obs dataframe');
  if (!isGroup(obs))
    throw new InputError(
      file,
      'obs is stored in an old layout (compound dataset) that is not supported; re-save it with anndata ≥ 0.7',
    );
  const barcodes = dataframeIndex(file, obs, 'obs');
  return new Hdf5Source(file, f, m, { format: 'h5ad', genes, geneIds, barcodes, obs }, o);
}

function open10xV3(file: string, f: H5File, o: OpenSourceOptions): MatrixSource {
  const g = f.get('matrix') as H5Group;
  const shapeSet = g.get('shape');
  if (!isDataset(shapeSet)) throw new InputError(file, 'matrix/shape is missing');
  const [nGenes, nCells] = matrixShape(
    file,
    'matrix/shape',
    toNumbers(read(file, shapeSet, 'matrix/shape'), file, 'matrix/shape'),
  );
  // 10x stores genes × cells as CSC: its columns (cells) are our rows
  const m = sparseLayout(file, g, 'matrix', 'csr', nCells, nGenes);
  const feats = g.get('features');
  if (!isGroup(feats)) throw new InputError(file, 'matrix/features is missing');
  const nameSet = feats.get('name'),
    idSet = feats.get('id');
  if (!isDataset(nameSet)) throw new InputError(file, 'matrix/features/name is missing');
  const genes = strings(read(file, nameSet, 'matrix/features/name'), file, 'matrix/features/name');
  const geneIds = isDataset(idSet)
    ? strings(read(file, idSet, 'matrix/features/id'), file, 'matrix/features/id')
    : null;
  const typeSet = feats.get('feature_type');
  const featureTypes = isDataset(typeSet)
    ? strings(read(file, typeSet, 'matrix/features/feature_type'), file, 'matrix/features/feature_type')
    : null;
  const barcodes = g.get('barcodes');
  if (!isDataset(barcodes)) throw new InputError(file, 'matrix/barcodes is missing');
  return new Hdf5Source(
    file,
    f,
    m,
    { format: '10x-h5', genes, geneIds, featureTypes, barcodes, obs: null },
    o,
  );
}

function open10xV2(file: string, f: H5File, g: H5Group, genome: string, o: OpenSourceOptions): MatrixSource {
  const shapeSet = g.get('shape');
  if (!isDataset(shapeSet)) throw new InputError(file, `${genome}/shape is missing`);
  const [nGenes, nCells] = matrixShape(
    file,
    `${genome}/shape`,
    toNumbers(read(file, shapeSet, `${genome}/shape`), file, `${genome}/shape`),
  );
  const m = sparseLayout(file, g, genome, 'csr', nCells, nGenes);
  const genes = strings(
    read(file, g.get('gene_names') as H5Dataset, `${genome}/gene_names`),
    file,
    `${genome}/gene_names`,
  );
  const idSet = g.get('genes');
  const geneIds = isDataset(idSet)
    ? strings(read(file, idSet, `${genome}/genes`), file, `${genome}/genes`)
    : null;
  const barcodes = g.get('barcodes');
  if (!isDataset(barcodes)) throw new InputError(file, `${genome}/barcodes is missing`);
  return new Hdf5Source(file, f, m, { format: '10x-h5', genes, geneIds, barcodes, obs: null }, o);
}
