// How results name cells: their dataset's batch and label category names, and (when the dataset
// keeps them) each cell's barcode and row in the source file, looked up a chunk at a time.
import type { ObsStore } from '../data/obs-store.js';

export interface CellIdentity {
  /** row of each cell in the source file (for writing back into the .h5ad) */
  sourceRow: Uint32Array;
  barcodes: string[];
}

export interface CellNaming {
  batchNames: string[];
  labelNames: string[];
  /** barcodes and source rows of global cell indices, in the order given */
  lookup?: (cells: Uint32Array) => Promise<CellIdentity>;
  /** the input's obs columns kept beside the dataset (by source row), when it has them */
  obs?: ObsStore | null;
}

export function nameOf(names: string[], code: number): string {
  return names[code] ?? '';
}
