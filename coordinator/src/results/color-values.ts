// What `umap --color-by COLUMN` colours by: categories as they are; a numeric column with many
// distinct values in 8 equal-count ranges (a legend of colours, not a colour bar).
import { encodeCategories } from './embedding-file.js';

export const NUMERIC_BINS = 8;

/** Codes and legend names for a column's values ('' = missing, drawn as unknown). */
export function colorCodes(values: string[]): { codes: Int32Array; names: string[] } {
  const present = values.filter((v) => v !== '');
  const numeric = present.length > 0 && present.every((v) => Number.isFinite(Number(v)));
  if (!numeric || new Set(present).size <= NUMERIC_BINS * 2) return encodeCategories(values);
  const sorted = Float64Array.from(present, Number).sort();
  // upper edges of equal-count bins (duplicates merged: a value never spans two bins)
  const edges: number[] = [];
  for (let b = 1; b <= NUMERIC_BINS; b++) {
    const e = sorted[Math.min(sorted.length - 1, Math.ceil((b * sorted.length) / NUMERIC_BINS) - 1)]!;
    const last = edges.at(-1);
    if (last === undefined || e > last) edges.push(e);
  }
  const fmt = (x: number): string =>
    Math.abs(x) >= 1000 || Number.isInteger(x) ? String(Math.round(x)) : x.toPrecision(3);
  const names = edges.map((e, i) => `${fmt(i === 0 ? sorted[0]! : edges[i - 1]!)}–${fmt(e)}`);
  const codes = Int32Array.from(values, (v) => {
    if (v === '') return -1;
    const x = Number(v);
    let b = 0;
    while (b < edges.length - 1 && x > edges[b]!) b++;
    return b;
  });
  return { codes, names };
}
