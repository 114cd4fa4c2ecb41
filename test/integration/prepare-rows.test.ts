// CSR .h5ad rows as files really hold them: unsorted genes, duplicates, explicit zeros, empty
// cells and bad gene indices, through prepare's row checks and its write pass (the fast path for
// clean rows and the general one) — the dataset must equal the canonical matrix.
import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { prepareDataset, writeH5ad, openDataset } from '@atlasvae/coordinator/data';
import type { CellBatch } from '@atlasvae/shared';
import { tempDir } from '../helpers/paths.js';

/** rows as (gene, value) lists, in file order */
function csr(rows: [number, number][][], nGenes: number): CellBatch {
  const indptr = new Int32Array(rows.length + 1);
  rows.forEach((r, i) => (indptr[i + 1] = indptr[i]! + r.length));
  const n = rows.length;
  return {
    nCells: n,
    nGenes,
    indptr,
    indices: Int32Array.from(rows.flat().map((e) => e[0])),
    counts: Float32Array.from(rows.flat().map((e) => e[1])),
    library: new Float32Array(n),
    batch: new Int32Array(n),
    label: new Int32Array(n),
    cellIndex: new Uint32Array(n),
  };
}

test('prepare: CSR rows clean, unsorted, with duplicates or explicit zeros, and empty cells read back canonically', async () => {
  const tmp = tempDir();
  const genes = ['a', 'b', 'c', 'd', 'e'];
  const rows: [number, number][][] = [
    [
      [0, 1],
      [2, 3],
      [4, 2],
    ], // clean
    [
      [3, 2],
      [1, 5],
    ], // unsorted
    [
      [1, 0],
      [2, 4],
    ], // explicit zero
    [], // empty: dropped
    [
      [4, 1],
      [4, 2],
      [0, 7],
    ], // duplicate gene, unsorted
    [[2, 0]], // only a zero: dropped
    [
      [1, 1],
      [2, 1],
      [3, 1],
      [4, 1],
    ], // clean
  ];
  const expected = [
    { genes: [0, 2, 4], counts: [1, 3, 2], row: 0 },
    { genes: [1, 3], counts: [5, 2], row: 1 },
    { genes: [2], counts: [4], row: 2 },
    { genes: [0, 4], counts: [7, 3], row: 4 },
    { genes: [1, 2, 3, 4], counts: [1, 1, 1, 1], row: 6 },
  ];
  const barcodes = rows.map((_, i) => `c${i}`);
  const input = path.join(tmp, 'rows.h5ad');
  await writeH5ad(
    input,
    csr(rows, genes.length),
    genes,
    barcodes,
    { batch: rows.map((_, i) => `b${i % 2}`) },
    { layout: 'csr' },
  );
  const out = path.join(tmp, 'ds');
  const { manifest } = await prepareDataset({
    input,
    out,
    batchKey: 'batch',
    shardCells: 65536,
    seed: 0,
    allowNonInteger: false,
  });
  assert.equal(manifest.nCells, expected.length);
  assert.equal(manifest.droppedZeroCountCells, 2);
  const ds = await openDataset(out);
  const b = await ds.source.getCells(expected.map((_, i) => i));
  const src = await ds.source.getSourceRows(expected.map((_, i) => i));
  expected.forEach((e, i) => {
    assert.deepEqual([...b.indices.subarray(b.indptr[i], b.indptr[i + 1])], e.genes, `cell ${i}`);
    assert.deepEqual([...b.counts.subarray(b.indptr[i], b.indptr[i + 1])], e.counts, `cell ${i}`);
    assert.equal(
      b.library[i],
      e.counts.reduce((x, y) => x + y, 0),
    );
    assert.equal(b.batch[i], e.row % 2);
    assert.equal(src.sourceRow[i], e.row);
    assert.equal(src.barcodes[i], `c${e.row}`);
  });
  await ds.close();

  // a gene index outside the genes, in a clean (ascending) row and in an unsorted one
  for (const bad of [
    [
      [0, 1],
      [5, 1],
    ],
    [
      [6, 1],
      [2, 1],
    ],
    [
      [-1, 1],
      [3, 1],
    ],
  ] as [number, number][][]) {
    const file = path.join(tmp, 'bad.h5ad');
    await writeH5ad(file, csr([[[0, 1]], bad], genes.length), genes, ['x', 'y'], {}, { layout: 'csr' });
    await assert.rejects(
      prepareDataset({
        input: file,
        out: path.join(tmp, 'bad'),
        shardCells: 65536,
        seed: 0,
        allowNonInteger: false,
      }),
      /bad\.h5ad.*gene index -?\d outside 0\.\.4 in cell 1/,
    );
  }
});
