// Every obs (cell metadata) column of the input, kept beside a prepared dataset in `obs.arrow`,
// one row per source row: categoricals as categories (a dictionary column), numbers as float64,
// other strings as strings while they fit a size limit. `embed` copies them into its outputs and
// `umap --color-by` colours by any of them, as scanpy's sc.pl.umap(color=…) does.
import fs from 'node:fs';
import path from 'node:path';
import {
  Table,
  tableFromIPC,
  tableToIPC,
  vectorFromArray,
  Dictionary,
  Utf8,
  Int32,
  type Vector,
} from 'apache-arrow';
import { InputError } from '@atlasvae/shared';
import type { ObsValues } from './source.js';

export const OBS_FILE = 'obs.arrow';
/** characters of all values of one string column together; longer columns are not kept */
export const MAX_STRING_COLUMN_CHARS = 64 << 20;

export type ObsColumn =
  | { name: string; kind: 'category'; codes: Int32Array; categories: string[] }
  | { name: string; kind: 'number'; values: Float64Array }
  | { name: string; kind: 'string'; values: string[] };

const MISSING = new Set(['', 'NA', 'nan', 'NaN']);

/**
 * A column as kept: categoricals stay categories; string values that all parse as numbers become
 * numbers; strings with few distinct values (≤ half the cells, ≤ 10,000) become categories; other
 * strings stay strings unless longer than the limit (then null, with the reason in `skipped`).
 */
export function keepObsColumn(name: string, v: ObsValues, skipped: (why: string) => void): ObsColumn | null {
  if (!Array.isArray(v)) return { name, kind: 'category', codes: v.codes, categories: v.categories };
  let numeric = true;
  let chars = 0;
  const distinct = new Set<string>();
  for (const s of v) {
    chars += s.length;
    if (!MISSING.has(s)) {
      if (numeric && !Number.isFinite(Number(s))) numeric = false;
      if (distinct.size <= 10_000) distinct.add(s);
    }
  }
  if (numeric)
    return { name, kind: 'number', values: Float64Array.from(v, (s) => (MISSING.has(s) ? NaN : Number(s))) };
  if (distinct.size <= Math.min(10_000, Math.max(1, v.length / 2))) {
    const categories = [...distinct].sort();
    const code = new Map(categories.map((c, i) => [c, i]));
    return { name, kind: 'category', codes: Int32Array.from(v, (s) => code.get(s) ?? -1), categories };
  }
  if (chars > MAX_STRING_COLUMN_CHARS) {
    skipped(
      `obs column "${name}" not kept: its strings hold ${chars} characters, over the ${MAX_STRING_COLUMN_CHARS} limit`,
    );
    return null;
  }
  return { name, kind: 'string', values: v.slice() };
}

/** Write the kept columns (all of `nRows` source rows) as an Arrow IPC file in `dir`. */
export function writeObsFile(dir: string, columns: ObsColumn[], nRows: number): void {
  if (columns.length === 0) return;
  const vectors: Record<string, Vector> = {};
  for (const c of columns) {
    if (c.kind === 'category') {
      // a dictionary column of the category names; a missing value (−1) is null
      const values = Array.from(c.codes, (k) => c.categories[k] ?? null);
      vectors[c.name] = vectorFromArray(values, new Dictionary(new Utf8(), new Int32()));
    } else if (c.kind === 'number') {
      vectors[c.name] = vectorFromArray(c.values);
    } else {
      vectors[c.name] = vectorFromArray(c.values, new Utf8());
    }
    if (vectors[c.name]!.length !== nRows)
      throw new Error(
        `internal: obs column ${c.name} has ${vectors[c.name]!.length} rows, the source ${nRows}`,
      );
  }
  fs.writeFileSync(path.join(dir, OBS_FILE), tableToIPC(new Table(vectors), 'file'));
}

/** The obs columns kept beside a dataset (null when it has none), values by source row. */
export interface ObsStore {
  names: string[];
  /** kind of a column, or undefined when it is not kept */
  kind(name: string): ObsColumn['kind'] | undefined;
  /** a column's value per source row, as text ('' when missing) */
  strings(name: string, rows: ArrayLike<number>): string[];
  /** a numeric column's values per source row (NaN when missing) */
  numbers(name: string, rows: ArrayLike<number>): Float64Array;
}

export function readObsFile(dir: string): ObsStore | null {
  const file = path.join(dir, OBS_FILE);
  if (!fs.existsSync(file)) return null;
  let t;
  try {
    t = tableFromIPC(fs.readFileSync(file));
  } catch (e) {
    throw new InputError(file, `not a readable Arrow IPC file (${(e as Error).message})`);
  }
  const table = t;
  const kinds = new Map<string, ObsColumn['kind']>();
  for (const f of table.schema.fields) {
    kinds.set(
      f.name,
      f.type instanceof Dictionary ? 'category' : f.typeId === new Utf8().typeId ? 'string' : 'number',
    );
  }
  const col = (name: string): Vector => {
    const c = table.getChild(name);
    if (!c)
      throw new InputError(file, `no obs column "${name}"; kept columns: ${[...kinds.keys()].join(', ')}`);
    return c;
  };
  return {
    names: [...kinds.keys()],
    kind: (name) => kinds.get(name),
    strings(name, rows) {
      const c = col(name);
      return Array.from(rows, (r) => {
        const v = c.get(r) as string | number | bigint | boolean | null | undefined;
        return v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v)) ? '' : String(v);
      });
    },
    numbers(name, rows) {
      const c = col(name);
      return Float64Array.from(rows, (r) => {
        const v = c.get(r) as string | number | bigint | boolean | null | undefined;
        return typeof v === 'number' ? v : NaN;
      });
    },
  };
}
