import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  loessFit,
  GeneMoments,
  ClippedMoments,
  clipModel,
  selectHvg,
  readMtxInMemory,
  readObsTsv,
  obsColumnFor,
  categorize,
} from '@atlasvae/coordinator/data';
import { Rng } from '@atlasvae/shared';
import { repoRoot, sharedPath, skipUnlessShared } from '../helpers/paths.js';

test('loess: reproduces a quadratic exactly and smooths noise towards the trend', () => {
  const rng = new Rng(5);
  const x = Array.from({ length: 400 }, () => rng.uniform() * 4 - 2);
  const quad = x.map((v) => 1.5 - 0.7 * v + 0.3 * v * v);
  const fit = loessFit(x, quad, 0.3, 2);
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(fit[i]! - quad[i]!) < 1e-9, `point ${i}`);
  const noisy = quad.map((v) => v + 0.5 * rng.normal());
  const f2 = loessFit(x, noisy, 0.3, 2);
  let errFit = 0,
    errRaw = 0;
  for (let i = 0; i < x.length; i++) {
    errFit += (f2[i]! - quad[i]!) ** 2;
    errRaw += (noisy[i]! - quad[i]!) ** 2;
  }
  assert.ok(errFit < errRaw / 5, `loess error ${errFit} vs noise ${errRaw}`);
});

test(
  'seurat_v3 HVG on kang matches the independently computed fixture',
  { skip: skipUnlessShared('data/kang_example_sce_1556/matrix.mtx.gz') },
  async () => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(repoRoot, 'test/fixtures/hvg_kang_seurat_v3.json'), 'utf8'),
    ) as {
      n_top_genes: number;
      by_batch: { genes: string[] };
      single_batch: { genes: string[] };
    };
    const dir = sharedPath('data/kang_example_sce_1556')!;
    const { batch: b, genes, barcodes } = await readMtxInMemory(dir);
    const batches = categorize(
      obsColumnFor(await readObsTsv(path.join(dir, 'labels.tsv')), 'batch', barcodes),
    );
    for (const [name, codes, nBatch] of [
      ['by_batch', batches.codes, batches.categories.length],
      ['single_batch', new Int32Array(b.nCells), 1],
    ] as const) {
      const m = new GeneMoments(nBatch, b.nGenes);
      for (let i = 0; i < b.nCells; i++)
        m.addCell(codes[i]!, b.indices, b.counts, b.indptr[i]!, b.indptr[i + 1]!);
      const c = new ClippedMoments(clipModel(m), b.nGenes);
      for (let i = 0; i < b.nCells; i++)
        c.addCell(codes[i]!, b.indices, b.counts, b.indptr[i]!, b.indptr[i + 1]!);
      const hv = selectHvg(m, c, fixture.n_top_genes);
      assert.deepEqual(
        hv.selected.map((g) => genes[g]),
        fixture[name].genes,
        name,
      );
    }
  },
);

test('loess: tiny inputs give finite fits', () => {
  for (const n of [1, 2, 3, 5]) {
    const x = Array.from({ length: n }, (_, i) => i * 0.5);
    const y = x.map((v) => 2 * v + 1);
    const fit = loessFit(x, y, 0.3, 2);
    assert.ok(
      fit.every((v) => Number.isFinite(v)),
      `n=${n}: ${fit.join()}`,
    );
    if (n >= 2) fit.forEach((v, i) => assert.ok(Math.abs(v - y[i]!) < 1e-9, `n=${n} point ${i}`));
  }
});
