// Read an embedding written by `atlasvae embed` back (Arrow or CSV): latent columns z_0…, and the
// batch and label names per cell, for plotting.

import fs from 'node:fs';
import readline from 'node:readline';
import { tableFromIPC } from 'apache-arrow';
import { InputError } from '@atlasvae/shared';
import { tableFormatOf } from './table-writer.js';

export interface EmbeddingData {
  nCells: number;
  dim: number;
  /** [nCells, dim] */
  latent: Float32Array;
  batch: string[] | null;
  label: string[] | null;
  /** any other column's values as text (null when the file has no such column) */
  column(name: string): string[] | null;
  /** the file's columns other than the latent ones */
  columnNames: string[];
}

const LATENT = /^z_(\d+)$/;

function latentOrder(names: string[], file: string): { names: string[]; dim: number } {
  const z = names.filter((n) => LATENT.test(n)).sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)));
  if (!z.length)
    throw new InputError(
      file,
      `has no latent columns z_0, z_1, … (columns: ${names.slice(0, 8).join(', ')})`,
    );
  z.forEach((n, i) => {
    if (n !== `z_${i}`)
      throw new InputError(file, `latent columns are not z_0 … z_${z.length - 1} (found ${n})`);
  });
  return { names: z, dim: z.length };
}

export async function readEmbeddingFile(file: string): Promise<EmbeddingData> {
  if (!fs.existsSync(file)) throw new InputError(file, 'embedding file does not exist');
  const fmt = tableFormatOf(file);
  if (fmt === 'arrow') return readArrow(file);
  if (fmt === 'csv' || fmt === 'tsv') return readDelimited(file, fmt === 'csv' ? ',' : '\t');
  throw new InputError(
    file,
    'unknown embedding format (expected .arrow or .csv/.tsv as written by `atlasvae embed`)',
  );
}

function readArrow(file: string): EmbeddingData {
  let t;
  try {
    t = tableFromIPC(fs.readFileSync(file));
  } catch (e) {
    throw new InputError(file, `not a readable Arrow IPC file (${(e as Error).message})`);
  }
  const { names, dim } = latentOrder(
    t.schema.fields.map((f) => f.name),
    file,
  );
  const n = t.numRows;
  const latent = new Float32Array(n * dim);
  names.forEach((name, d) => {
    const col = t.getChild(name)!.toArray() as ArrayLike<number>;
    for (let i = 0; i < n; i++) latent[i * dim + d] = col[i]!;
  });
  const strings = (name: string): string[] | null => {
    const c = t.getChild(name);
    if (!c) return null;
    return Array.from({ length: c.length }, (_, i) => {
      const v = c.get(i) as string | number | bigint | boolean | null | undefined;
      return v == null || (typeof v === 'number' && Number.isNaN(v)) ? '' : String(v);
    });
  };
  const columnNames = t.schema.fields.map((f) => f.name).filter((x) => !LATENT.test(x));
  return {
    nCells: n,
    dim,
    latent,
    batch: strings('batch'),
    label: strings('label'),
    column: strings,
    columnNames,
  };
}

/** Split one CSV/TSV line, honouring double quotes. */
export function splitDelimited(line: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i++;
        } else quoted = false;
      } else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === sep) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

async function readDelimited(file: string, sep: string): Promise<EmbeddingData> {
  const rl = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  let header: string[] | null = null;
  let zIdx: number[] = [];
  let bIdx = -1,
    lIdx = -1;
  const chunks: number[] = [];
  const others: string[][] = [];
  let line = 0;
  for await (const text of rl) {
    line++;
    if (!text) continue;
    const f = splitDelimited(text, sep);
    if (!header) {
      header = f;
      const { names } = latentOrder(header, file);
      zIdx = names.map((n) => header!.indexOf(n));
      bIdx = header.indexOf('batch');
      lIdx = header.indexOf('label');
      for (let j = 0; j < header.length; j++) others.push([]);
      continue;
    }
    if (f.length !== header.length)
      throw new InputError(file, `line ${line} has ${f.length} fields, the header has ${header.length}`);
    for (const j of zIdx) {
      const v = Number(f[j]);
      if (Number.isNaN(v) && f[j] !== 'NaN')
        throw new InputError(file, `line ${line}: ${JSON.stringify(f[j])} is not a number`);
      chunks.push(v);
    }
    for (let j = 0; j < f.length; j++) if (!zIdx.includes(j)) others[j]!.push(f[j]!);
  }
  if (!header) throw new InputError(file, 'is empty');
  const dim = zIdx.length;
  const h = header;
  const column = (name: string): string[] | null =>
    h.indexOf(name) >= 0 && !zIdx.includes(h.indexOf(name)) ? others[h.indexOf(name)]! : null;
  return {
    nCells: chunks.length / dim,
    dim,
    latent: Float32Array.from(chunks),
    batch: bIdx >= 0 ? column('batch') : null,
    label: lIdx >= 0 ? column('label') : null,
    column,
    columnNames: h.filter((_, j) => !zIdx.includes(j)),
  };
}

/** Category codes (first-seen order sorted by name) of string values; '' is unknown (-1). */
export function encodeCategories(values: string[]): { codes: Int32Array; names: string[] } {
  const names = [...new Set(values.filter((v) => v !== ''))].sort();
  const pos = new Map(names.map((n, i) => [n, i]));
  return { codes: Int32Array.from(values, (v) => (v === '' ? -1 : pos.get(v)!)), names };
}
