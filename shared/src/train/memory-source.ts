// A CellSource over a count matrix held in memory as one CSR batch (all cells, global order).
import { selectRows, type CellBatch, type CellSource } from '../batch.js';

export class InMemoryCellSource implements CellSource {
  readonly nCells: number;
  readonly nGenes: number;
  constructor(
    readonly all: CellBatch,
    readonly nBatch: number,
  ) {
    this.nCells = all.nCells;
    this.nGenes = all.nGenes;
    for (let i = 0; i < all.nCells; i++) {
      const b = all.batch[i]!;
      if (b < 0 || b >= nBatch)
        throw new RangeError(`cell ${i} has batch code ${b}, outside 0..${nBatch - 1}`);
    }
  }

  getCells(indices: ArrayLike<number>): CellBatch {
    return selectRows(this.all, indices);
  }
}
