// An opened HDF5 count matrix as a MatrixSource: obs columns (anndata ≥ 0.7 and ≥ 0.8 categoricals),
// barcodes, and one pass over the cells as CSR row chunks, every read a hyperslab (`slice`) of a
// dataset so that a pass holds one chunk of cells, never a whole matrix. CSC matrices are sorted
// into cell-major buckets on disk first.
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
import {
  type H5Dataset,
  type H5File,
  type H5Group,
  asInt32,
  attrString,
  guard,
  isDataset,
  isGroup,
  read,
  strings,
  toIndexArray,
  toNumbers,
} from './h5-read.js';

/** The matrix part: CSR, CSC or dense, shape [cells, genes] (or genes × cells for 10x). */
export interface MatrixLayout {
  kind: 'csr' | 'csc' | 'dense';
  data?: H5Dataset;
  indices?: H5Dataset;
  indptr?: H5Dataset;
  dense?: H5Dataset;
  nCells: number;
  nGenes: number;
  where: string;
}

export class Hdf5Source implements MatrixSource {
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
