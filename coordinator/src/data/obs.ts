// Cell metadata tables (a TSV with a header, the first column the barcode) and categorical codes.
import { InputError } from '@atlasvae/shared';
import { readTsvRows } from './text.js';

export interface ObsTable {
  file: string;
  /** first column of each data row */
  barcodes: string[];
  /** every other column by its header name, in file row order */
  columns: Map<string, string[]>;
}

/** A metadata TSV: header line, first column barcodes, other columns by name. */
export async function readObsTsv(file: string): Promise<ObsTable> {
  const rows = await readTsvRows(file);
  const header = rows[0];
  if (!header) throw new InputError(file, 'empty metadata table');
  const names = header.slice(1);
  const columns = new Map<string, string[]>();
  for (const n of names) columns.set(n, []);
  const barcodes: string[] = [];
  for (let i = 1; i < rows.length; i++) {
    const r = rows[i]!;
    if (r.length !== header.length)
      throw new InputError(file, `line ${i + 1} has ${r.length} fields, the header has ${header.length}`);
    barcodes.push(r[0]);
    for (let j = 0; j < names.length; j++) columns.get(names[j]!)!.push(r[j + 1]!);
  }
  return { file, barcodes, columns };
}

/** One column of the table, reordered to follow `barcodes`; every barcode must be present. */
export function obsColumnFor(table: ObsTable, key: string, barcodes: readonly string[]): string[] {
  const col = table.columns.get(key);
  if (!col)
    throw new InputError(
      table.file,
      `no column "${key}"; columns are: ${[...table.columns.keys()].join(', ')}`,
    );
  const rowOf = new Map<string, number>();
  table.barcodes.forEach((b, i) => rowOf.set(b, i));
  const out = new Array<string>(barcodes.length);
  let missing = 0;
  let example = '';
  for (let i = 0; i < barcodes.length; i++) {
    const r = rowOf.get(barcodes[i]!);
    if (r === undefined) {
      if (missing++ === 0) example = barcodes[i]!;
      continue;
    }
    out[i] = col[r]!;
  }
  if (missing > 0)
    throw new InputError(
      table.file,
      `${missing} of ${barcodes.length} cells have no row (e.g. barcode "${example}")`,
    );
  return out;
}

export interface Categorical {
  /** code per cell; -1 for missing values */
  codes: Int32Array;
  categories: string[];
}

const MISSING = new Set(['', 'NA', 'nan', 'NaN']);

/**
 * Codes for string values; categories sorted (as pandas orders them), missing values -1.
 * `categories` may be given to keep an existing order.
 */
export function categorize(values: readonly string[], categories?: string[]): Categorical {
  const cats = categories ?? [...new Set(values.filter((v) => !MISSING.has(v)))].sort();
  const codeOf = new Map<string, number>();
  cats.forEach((c, i) => codeOf.set(c, i));
  const codes = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) codes[i] = codeOf.get(values[i]!) ?? -1;
  return { codes, categories: cats };
}
