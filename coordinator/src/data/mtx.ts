// 10x MatrixMarket folders: matrix.mtx[.gz] (genes × cells, coordinate format), features.tsv[.gz]
// or genes.tsv[.gz], barcodes.tsv[.gz]. The entry parser streams; `readMtxInMemory` builds a
// whole CSR batch (cells as rows) for small data sets and tests.
import path from 'node:path';
import fs from 'node:fs';
import { type CellBatch, InputError } from '@atlasvae/shared';
import { fileChunks, readTsvRows, firstExisting } from './text.js';

export interface MtxFiles {
  dir: string;
  matrix: string;
  features: string;
  barcodes: string;
}

export interface MtxHeader {
  /** genes */
  nRows: number;
  /** cells */
  nCols: number;
  nnz: number;
  field: 'integer' | 'real' | 'pattern';
}

export function findMtxFiles(dir: string): MtxFiles {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError(dir, 'not a folder');
  const pick = (names: string[], what: string): string => {
    const found = firstExisting(names.flatMap((n) => [path.join(dir, n), path.join(dir, n + '.gz')]));
    if (!found)
      throw new InputError(dir, `no ${what} (looked for ${names.map((n) => n + '[.gz]').join(', ')})`);
    return found;
  };
  return {
    dir,
    matrix: pick(['matrix.mtx'], 'matrix file'),
    features: pick(['features.tsv', 'genes.tsv'], 'gene list'),
    barcodes: pick(['barcodes.tsv'], 'barcode list'),
  };
}

/** Gene names (second column when present, else the first), ids (first column), feature types (third). */
export async function readGeneList(
  file: string,
): Promise<{ genes: string[]; geneIds: string[]; featureTypes: string[] | null }> {
  const rows = await readTsvRows(file);
  const genes: string[] = [];
  const geneIds: string[] = [];
  const types: string[] = [];
  for (const r of rows) {
    geneIds.push(r[0]);
    genes.push(r[1] || r[0]);
    types.push(r[2] ?? '');
  }
  return { genes, geneIds, featureTypes: types.every((t) => t !== '') ? types : null };
}

/** Barcodes: the first column of each line. */
export async function readBarcodes(file: string): Promise<string[]> {
  return (await readTsvRows(file)).map((r) => r[0]);
}

export interface MtxEntries {
  /** 0-based gene (row) */
  rows: Int32Array;
  /** 0-based cell (column) */
  cols: Int32Array;
  vals: Float64Array;
  n: number;
}

/**
 * The entries of a coordinate MatrixMarket file, block by block (one block per chunk of file
 * bytes; the arrays are reused between blocks). Checks the header, index ranges and the entry
 * count against the header.
 */
export async function* mtxEntryBlocks(
  file: string,
  onHeader: (h: MtxHeader) => void,
): AsyncGenerator<MtxEntries> {
  const p = new MtxParser(file, onHeader);
  let rest: Buffer | null = null;
  for await (const chunk of fileChunks(file)) {
    const buf: Buffer = rest ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      p.line(buf, start, nl > start && buf[nl - 1] === 13 ? nl - 1 : nl);
      start = nl + 1;
    }
    rest = start < buf.length ? Buffer.from(buf.subarray(start)) : null;
    if (p.block.n > 0) {
      yield p.block;
      p.block.n = 0;
    }
  }
  if (rest && rest.length > 0) p.line(rest, 0, rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length);
  if (p.block.n > 0) yield p.block;
  p.end();
}

class MtxParser {
  header: MtxHeader | null = null;
  private sizeSeen = false;
  lineNo = 0;
  count = 0;
  block: MtxEntries = {
    rows: new Int32Array(1 << 16),
    cols: new Int32Array(1 << 16),
    vals: new Float64Array(1 << 16),
    n: 0,
  };

  constructor(
    private readonly file: string,
    private readonly onHeader: (h: MtxHeader) => void,
  ) {}

  private bad(msg: string): never {
    throw new InputError(this.file, `line ${this.lineNo}: ${msg}`);
  }

  line(buf: Buffer, s: number, e: number): void {
    this.lineNo++;
    if (!this.header) {
      const line = buf.toString('latin1', s, e).trim();
      const m = /^%%MatrixMarket\s+matrix\s+(\w+)\s+(\w+)\s+(\w+)/i.exec(line);
      if (!m) this.bad('not a MatrixMarket file (expected a "%%MatrixMarket matrix coordinate ..." banner)');
      if (m[1]!.toLowerCase() !== 'coordinate')
        this.bad(`only coordinate (sparse) MatrixMarket is supported, found "${m[1]}"`);
      const field = m[2]!.toLowerCase();
      if (field !== 'integer' && field !== 'real' && field !== 'pattern' && field !== 'double')
        this.bad(`unsupported value type "${m[2]}"`);
      if (m[3]!.toLowerCase() !== 'general') this.bad(`unsupported symmetry "${m[3]}" (expected general)`);
      this.header = {
        nRows: 0,
        nCols: 0,
        nnz: 0,
        field: field === 'double' ? 'real' : field,
      };
      return;
    }
    if (e <= s || buf[s] === 37 /* % */) return;
    const h = this.header;
    if (!this.sizeSeen) {
      const parts = buf.toString('latin1', s, e).trim().split(/\s+/).map(Number);
      if (parts.length !== 3 || parts.some((x) => !Number.isInteger(x) || x < 0))
        this.bad('expected the size line "rows columns entries"');
      [h.nRows, h.nCols, h.nnz] = parts as [number, number, number];
      this.sizeSeen = true;
      this.onHeader(h);
      return;
    }
    // entry line: row col [value], parsed from bytes
    let p = s;
    while (p < e && (buf[p] === 32 || buf[p] === 9)) p++;
    let r = 0,
      dr = 0;
    while (p < e && buf[p]! >= 48 && buf[p]! <= 57) {
      r = r * 10 + buf[p]! - 48;
      p++;
      dr++;
    }
    while (p < e && (buf[p] === 32 || buf[p] === 9)) p++;
    let c = 0,
      dc = 0;
    while (p < e && buf[p]! >= 48 && buf[p]! <= 57) {
      c = c * 10 + buf[p]! - 48;
      p++;
      dc++;
    }
    if (dr === 0 || dc === 0) this.bad('malformed entry');
    let v = 1;
    if (h.field !== 'pattern') {
      while (p < e && (buf[p] === 32 || buf[p] === 9)) p++;
      const vs = p;
      let iv = 0,
        dv = 0;
      while (p < e && buf[p]! >= 48 && buf[p]! <= 57) {
        iv = iv * 10 + buf[p]! - 48;
        p++;
        dv++;
      }
      let q = p;
      while (q < e && (buf[q] === 32 || buf[q] === 9)) q++;
      if (dv > 0 && dv < 16 && q === e) v = iv;
      else {
        const txt = buf.toString('latin1', vs, e).trim();
        if (txt === '') this.bad('missing value');
        v = Number(txt);
        if (Number.isNaN(v) && !/^[-+]?nan$/i.test(txt)) this.bad(`malformed value "${txt}"`);
      }
    }
    if (r < 1 || r > h.nRows) this.bad(`row ${r} outside 1..${h.nRows}`);
    if (c < 1 || c > h.nCols) this.bad(`column ${c} outside 1..${h.nCols}`);
    if (this.count >= h.nnz) this.bad(`more entries than the ${h.nnz} the header declares`);
    const b = this.block;
    if (b.n === b.rows.length) {
      const grow = <T extends Int32Array | Float64Array>(a: T): T => {
        const x = new (a.constructor as new (n: number) => T)(a.length * 2);
        x.set(a);
        return x;
      };
      b.rows = grow(b.rows);
      b.cols = grow(b.cols);
      b.vals = grow(b.vals);
    }
    b.rows[b.n] = r - 1;
    b.cols[b.n] = c - 1;
    b.vals[b.n] = v;
    b.n++;
    this.count++;
  }

  end(): void {
    if (!this.header) throw new InputError(this.file, 'empty file');
    if (!this.sizeSeen) throw new InputError(this.file, 'missing size line');
    if (this.count !== this.header.nnz)
      throw new InputError(
        this.file,
        `truncated: the header declares ${this.header.nnz} entries, found ${this.count}`,
      );
  }
}

/** Just the header (banner and size line) of a MatrixMarket file. */
export async function readMtxHeader(file: string): Promise<MtxHeader> {
  let found: MtxHeader | null = null;
  const it = mtxEntryBlocks(file, (h) => {
    found = h;
  });
  try {
    // the first block comes from the first chunk of the file, which holds the header
    await it.next();
  } finally {
    await it.return(undefined);
  }
  if (!found) throw new InputError(file, 'no MatrixMarket size line in the first megabyte');
  return found;
}

/** Streams all entries through a callback (see mtxEntryBlocks). */
export async function streamMtxEntries(
  file: string,
  onHeader: (h: MtxHeader) => void,
  onEntries: (rows: Int32Array, cols: Int32Array, vals: Float64Array, n: number) => void,
): Promise<MtxHeader> {
  let header: MtxHeader | null = null;
  for await (const b of mtxEntryBlocks(file, (h) => {
    header = h;
    onHeader(h);
  }))
    onEntries(b.rows, b.cols, b.vals, b.n);
  return header!;
}

/** A whole 10x MatrixMarket folder as one CSR batch (cells are rows). */
export async function readMtxInMemory(
  dir: string,
): Promise<{ batch: CellBatch; genes: string[]; geneIds: string[]; barcodes: string[] }> {
  const files = findMtxFiles(dir);
  const { genes, geneIds } = await readGeneList(files.features);
  const barcodes = await readBarcodes(files.barcodes);
  let R: Int32Array = new Int32Array(0),
    C: Int32Array = new Int32Array(0),
    V: Float32Array = new Float32Array(0);
  let pos = 0;
  const h = await streamMtxEntries(
    files.matrix,
    (hd) => {
      if (hd.nRows !== genes.length)
        throw new InputError(
          files.matrix,
          `has ${hd.nRows} rows (genes) but ${path.basename(files.features)} lists ${genes.length} genes`,
        );
      if (hd.nCols !== barcodes.length)
        throw new InputError(
          files.matrix,
          `has ${hd.nCols} columns (cells) but ${path.basename(files.barcodes)} lists ${barcodes.length} barcodes`,
        );
      R = new Int32Array(hd.nnz);
      C = new Int32Array(hd.nnz);
      V = new Float32Array(hd.nnz);
    },
    (rows, cols, vals, n) => {
      R.set(rows.subarray(0, n), pos);
      C.set(cols.subarray(0, n), pos);
      for (let i = 0; i < n; i++) V[pos + i] = vals[i]!;
      pos += n;
    },
  );
  const batch = tripletsToCsr(R, C, V, h.nCols, h.nRows);
  return { batch, genes, geneIds, barcodes };
}

/**
 * CSR with cells as rows from (gene, cell, value) triplets: counting sort by cell, genes sorted
 * within each cell, duplicate entries summed. Explicit zeros are dropped.
 */
export function tripletsToCsr(
  geneOf: Int32Array,
  cellOf: Int32Array,
  val: Float32Array,
  nCells: number,
  nGenes: number,
): CellBatch {
  const indptr = new Int32Array(nCells + 1);
  for (let k = 0; k < cellOf.length; k++) if (val[k] !== 0) indptr[cellOf[k]! + 1]!++;
  for (let i = 0; i < nCells; i++) indptr[i + 1]! += indptr[i]!;
  const nnz = indptr[nCells]!;
  let indices = new Int32Array(nnz);
  let counts = new Float32Array(nnz);
  const fill = indptr.slice(0, nCells);
  for (let k = 0; k < cellOf.length; k++) {
    if (val[k] === 0) continue;
    const at = fill[cellOf[k]!]!++;
    indices[at] = geneOf[k]!;
    counts[at] = val[k]!;
  }
  // sort genes within each cell when needed; merge duplicates
  let dup = false;
  for (let i = 0; i < nCells; i++) {
    const s = indptr[i]!,
      e = indptr[i + 1]!;
    let sorted = true;
    for (let k = s + 1; k < e; k++)
      if (indices[k]! <= indices[k - 1]!) {
        sorted = false;
        break;
      }
    if (sorted) continue;
    const order = Array.from({ length: e - s }, (_, j) => s + j).sort((a, b) => indices[a]! - indices[b]!);
    const gi = order.map((k) => indices[k]!);
    const cv = order.map((k) => counts[k]!);
    for (let j = 0; j < gi.length; j++) {
      indices[s + j] = gi[j]!;
      counts[s + j] = cv[j]!;
    }
    for (let k = s + 1; k < e; k++) if (indices[k] === indices[k - 1]) dup = true;
  }
  let outPtr = indptr;
  if (dup) {
    outPtr = new Int32Array(nCells + 1);
    const ni = new Int32Array(nnz);
    const nc = new Float32Array(nnz);
    let w = 0;
    for (let i = 0; i < nCells; i++) {
      for (let k = indptr[i]!; k < indptr[i + 1]!; k++) {
        if (w > outPtr[i]! && ni[w - 1] === indices[k]) nc[w - 1]! += counts[k]!;
        else {
          ni[w] = indices[k]!;
          nc[w] = counts[k]!;
          w++;
        }
      }
      outPtr[i + 1] = w;
    }
    indices = ni.slice(0, w);
    counts = nc.slice(0, w);
  }
  const library = new Float32Array(nCells);
  for (let i = 0; i < nCells; i++) {
    let sum = 0;
    for (let k = outPtr[i]!; k < outPtr[i + 1]!; k++) sum += counts[k]!;
    library[i] = sum;
  }
  const cellIndex = new Uint32Array(nCells);
  for (let i = 0; i < nCells; i++) cellIndex[i] = i;
  return {
    nCells,
    nGenes,
    indptr: outPtr,
    indices,
    counts,
    library,
    batch: new Int32Array(nCells),
    label: new Int32Array(nCells).fill(-1),
    cellIndex,
  };
}
