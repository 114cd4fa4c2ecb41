// How results name cells: their dataset's batch and label category names, and optionally a
// barcode and a row in the source file, looked up by global cell index.

export interface CellNaming {
  batchNames: string[];
  labelNames: string[];
  /** barcode of a global cell index, when the dataset keeps them */
  barcode?: (cell: number) => string;
  /** row of a global cell index in the source file (for writing back into the .h5ad) */
  sourceRow?: (cell: number) => number;
}

export function nameOf(names: string[], code: number): string {
  return code >= 0 && code < names.length ? names[code]! : '';
}
