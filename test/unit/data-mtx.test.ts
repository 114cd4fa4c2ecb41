import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { readMtxInMemory, readObsTsv, obsColumnFor, categorize } from '@atlasvae/coordinator/data';
import { densify, InputError } from '@atlasvae/shared';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';

function writeMtxFolder(dir: string, mtx: string, genes: string[], barcodes: string[], gz = false): void {
  fs.mkdirSync(dir, { recursive: true });
  const put = (name: string, text: string) =>
    gz
      ? fs.writeFileSync(path.join(dir, name + '.gz'), zlib.gzipSync(text))
      : fs.writeFileSync(path.join(dir, name), text);
  put('matrix.mtx', mtx);
  put('features.tsv', genes.map((g) => `ID_${g}\t${g}\tGene Expression\n`).join(''));
  put('barcodes.tsv', barcodes.map((b) => b + '\n').join(''));
}

test('readMtxInMemory: unsorted entries and duplicates become sorted CSR rows per cell', async () => {
  const dir = tempDir();
  // 3 genes x 2 cells; entries out of order, one duplicate (summed)
  const mtx =
    '%%MatrixMarket matrix coordinate integer general\n%comment\n3 2 5\n3 1 4\n1 2 7\n1 1 2\n2 2 1\n1 2 3\n';
  writeMtxFolder(dir, mtx, ['a', 'b', 'c'], ['x', 'y'], true);
  const { batch, genes, geneIds, barcodes } = await readMtxInMemory(dir);
  assert.deepEqual(genes, ['a', 'b', 'c']);
  assert.deepEqual(geneIds, ['ID_a', 'ID_b', 'ID_c']);
  assert.deepEqual(barcodes, ['x', 'y']);
  assert.deepEqual([...densify(batch)], [2, 0, 4, 10, 1, 0]);
  assert.deepEqual([...batch.indptr], [0, 2, 4]);
  assert.deepEqual([...batch.library], [6, 11]);
  assert.deepEqual([...batch.label], [-1, -1]);
  assert.deepEqual([...batch.cellIndex], [0, 1]);
  fs.rmSync(dir, { recursive: true });
});

test('readMtxInMemory: truncated file and wrong dimensions name the file', async () => {
  const dir = tempDir();
  writeMtxFolder(
    dir,
    '%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 2\n2 1 1\n',
    ['a', 'b', 'c'],
    ['x', 'y'],
  );
  await assert.rejects(
    readMtxInMemory(dir),
    (e: unknown) => e instanceof InputError && /matrix\.mtx: truncated/.test(e.message),
  );
  writeMtxFolder(
    dir,
    '%%MatrixMarket matrix coordinate integer general\n3 2 1\n1 1 2\n',
    ['a', 'b'],
    ['x', 'y'],
  );
  await assert.rejects(
    readMtxInMemory(dir),
    (e: unknown) => e instanceof InputError && /3 rows \(genes\) but features\.tsv lists 2/.test(e.message),
  );
  writeMtxFolder(
    dir,
    '%%MatrixMarket matrix coordinate integer general\n3 2 1\n4 1 2\n',
    ['a', 'b', 'c'],
    ['x', 'y'],
  );
  await assert.rejects(readMtxInMemory(dir), /row 4 outside 1\.\.3/);
  fs.rmSync(dir, { recursive: true });
});

test(
  'readMtxInMemory: kang MTX matches its text entries; labels match by barcode',
  { skip: skipUnlessShared('data/kang_example_sce_1556/matrix.mtx.gz') },
  async () => {
    const dir = sharedPath('data/kang_example_sce_1556')!;
    const { batch, genes, barcodes } = await readMtxInMemory(dir);
    assert.equal(batch.nCells, 1556);
    assert.equal(batch.nGenes, 1267);
    assert.equal(genes[1], 'ISG15');
    const lines = zlib
      .gunzipSync(fs.readFileSync(path.join(dir, 'matrix.mtx.gz')))
      .toString()
      .split('\n')
      .filter((l) => l && !l.startsWith('%'));
    const nnz = Number(lines[0]!.split(' ')[2]);
    assert.equal(batch.indptr[batch.nCells], nnz);
    // every 997th entry, checked against the dense copy
    const dense = densify(batch);
    let total = 0;
    for (let k = 1; k < lines.length; k++) total += Number(lines[k]!.split(' ')[2]);
    for (let k = 1; k < lines.length; k += 997) {
      const [g, c, v] = lines[k]!.split(' ').map(Number) as [number, number, number];
      assert.equal(dense[(c - 1) * 1267 + (g - 1)], v);
    }
    assert.equal(
      batch.library.reduce((a, b) => a + b, 0),
      total,
    );
    const obs = await readObsTsv(sharedPath('data/kang_example_sce_1556/labels.tsv')!);
    const ct = categorize(obsColumnFor(obs, 'cell_type', barcodes));
    assert.equal(ct.categories.length, 5);
    assert.ok(ct.codes.every((c) => c >= 0));
    assert.throws(
      () => obsColumnFor(obs, 'celltype', barcodes),
      /no column "celltype"; columns are: cell_type, batch, condition/,
    );
  },
);
