// prepare on the real test data: the same cells from every input format, exact read-back,
// layers, HVG, gene lists, external sort.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import {
  prepareDataset,
  type PrepareOptions,
  openDataset,
  readMtxInMemory,
  readObsTsv,
  obsColumnFor,
  categorize,
  writeH5ad,
} from '@atlasvae/coordinator/data';
import type { DatasetManifest, CellBatch } from '@atlasvae/shared';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';

const KANG = 'data/kang_example_sce_1556';
const MIX = 'data/mixology_5cl_celseq2_3plates';

function prep(
  o: Partial<PrepareOptions> & { input: string; out: string },
): ReturnType<typeof prepareDataset> {
  return prepareDataset({ shardCells: 65536, seed: 0, allowNonInteger: false, ...o });
}

/** Everything about the cells (not where they came from). */
function content(m: DatasetManifest): unknown {
  return {
    nCells: m.nCells,
    nGenes: m.nGenes,
    nnz: m.nnz,
    genes: m.genes,
    geneIds: m.geneIds,
    batch: m.batchCategories,
    label: m.labelCategories,
    shards: m.shards.map((s) => [s.cells, s.nnz, s.sha256]),
    split: m.split,
    dropped: m.droppedZeroCountCells,
  };
}

async function readAll(dir: string): Promise<CellBatch> {
  const ds = await openDataset(dir, { verifyChecksums: true });
  const b = await ds.source.getCells(Uint32Array.from({ length: ds.manifest.nCells }, (_, i) => i));
  await ds.close();
  return b;
}

test(
  'kang: .h5ad, 10x .h5, MTX, CSC, dense and raw/X .h5ad, and a shuffled MTX give identical datasets equal to the input',
  { skip: skipUnlessShared(KANG, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(KANG)!;
    const tmp = tempDir();
    const labels = path.join(dir, 'labels.tsv');
    const keys = { batchKey: 'batch', labelKey: 'cell_type' };
    const ref = await readMtxInMemory(dir);
    const obs = await readObsTsv(labels);
    const batch = categorize(obsColumnFor(obs, 'batch', ref.barcodes));
    const label = categorize(obsColumnFor(obs, 'cell_type', ref.barcodes));

    // variants written here from the reference matrix
    await writeH5ad(
      path.join(tmp, 'csc.h5ad'),
      ref.batch,
      ref.genes,
      ref.barcodes,
      { batch, cell_type: label },
      { layout: 'csc', geneIds: ref.geneIds },
    );
    await writeH5ad(
      path.join(tmp, 'dense.h5ad'),
      ref.batch,
      ref.genes,
      ref.barcodes,
      { batch: obsColumnFor(obs, 'batch', ref.barcodes), cell_type: label },
      { layout: 'dense', geneIds: ref.geneIds, dtype: '<d' },
    );
    // counts in raw/X, log-normalized values in X (as after scanpy's normalize_total + log1p)
    const logX = { ...ref.batch, counts: ref.batch.counts.map((v) => Math.log1p(v / 3)) };
    await writeH5ad(
      path.join(tmp, 'raw.h5ad'),
      ref.batch,
      ref.genes,
      ref.barcodes,
      { batch, cell_type: label },
      { layout: 'csr', target: 'raw', otherX: logX, geneIds: ref.geneIds },
    );
    await assert.rejects(
      prep({ input: path.join(tmp, 'raw.h5ad'), out: path.join(tmp, 'no') }),
      /raw\.h5ad: non-integer value/,
    );
    const shuffled = path.join(tmp, 'shuffled');
    fs.mkdirSync(shuffled);
    const lines = zlib
      .gunzipSync(fs.readFileSync(path.join(dir, 'matrix.mtx.gz')))
      .toString()
      .split('\n');
    const head = lines.slice(0, 2),
      body = lines.slice(2).filter((l) => l);
    for (let i = body.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [body[i], body[j]] = [body[j]!, body[i]!];
    }
    fs.writeFileSync(path.join(shuffled, 'matrix.mtx'), [...head, ...body, ''].join('\n'));
    fs.copyFileSync(path.join(dir, 'genes.tsv'), path.join(shuffled, 'genes.tsv'));
    fs.copyFileSync(path.join(dir, 'barcodes.tsv'), path.join(shuffled, 'barcodes.tsv'));

    const runs: [string, Partial<PrepareOptions>][] = [
      [path.join(dir, 'kang_example_sce_1556.h5ad'), keys],
      [path.join(dir, 'kang_example_sce_1556.10x.h5'), { ...keys, obs: labels }],
      [dir, { ...keys, obs: labels }],
      [path.join(tmp, 'csc.h5ad'), { ...keys, sortBucketEntries: 50000 }],
      [path.join(tmp, 'dense.h5ad'), keys],
      [shuffled, { ...keys, obs: labels, sortBucketEntries: 30000 }],
      [path.join(tmp, 'raw.h5ad'), { ...keys, useRaw: true }],
    ];
    const manifests: DatasetManifest[] = [];
    for (const [input, o] of runs) {
      const out = path.join(tmp, `out-${manifests.length}`);
      manifests.push((await prep({ input, out, shardCells: 700, ...o })).manifest);
    }
    assert.deepEqual(
      manifests.map((m) => m.source.format),
      ['h5ad', '10x-h5', 'mtx', 'h5ad', 'h5ad', 'mtx', 'h5ad'],
    );
    for (let k = 1; k < manifests.length; k++)
      assert.deepEqual(content(manifests[k]!), content(manifests[0]!), `run ${k} (${runs[k]![0]})`);
    const m = manifests[0]!;
    assert.equal(m.nCells, 1556);
    assert.equal(m.shards.length, 3);
    assert.deepEqual(m.batchCategories, ['ctrl101', 'ctrl107', 'stim101', 'stim107']);
    assert.equal(m.geneIds![0], 'ENSG00000188290');

    // the shards hold exactly the input matrix, labels and batches
    const back = await readAll(path.join(tmp, 'out-0'));
    for (const k of ['indptr', 'indices', 'counts', 'library'] as const)
      assert.deepEqual(back[k], ref.batch[k], k);
    assert.deepEqual([...back.batch], [...batch.codes]);
    assert.deepEqual([...back.label], [...label.codes]);
    assert.ok(!fs.readdirSync(tmp).some((f) => f.includes('partial')));
    assert.equal(
      fs.readdirSync(path.join(tmp, 'out-0')).filter((f) => f.startsWith('atlasvae-sort')).length,
      0,
    );
    fs.rmSync(tmp, { recursive: true });
  },
);

test(
  'anndata 0.7 layout (h5sparse X, obs/__categories) reads like the current one',
  { skip: skipUnlessShared(KANG, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(KANG)!;
    const tmp = tempDir();
    const ref = await readMtxInMemory(dir);
    const obs = await readObsTsv(path.join(dir, 'labels.tsv'));
    const batch = categorize(obsColumnFor(obs, 'batch', ref.barcodes));
    const h5 = (await import('h5wasm/node')).default;
    await h5.ready;
    const file = path.join(tmp, 'old.h5ad');
    const f = new h5.File(file, 'w');
    const X = f.create_group('X');
    X.create_attribute('h5sparse_format', 'csr');
    X.create_attribute(
      'h5sparse_shape',
      new BigInt64Array([BigInt(ref.batch.nCells), BigInt(ref.batch.nGenes)]),
    );
    X.create_dataset({ name: 'data', data: ref.batch.counts });
    X.create_dataset({ name: 'indices', data: ref.batch.indices });
    X.create_dataset({ name: 'indptr', data: ref.batch.indptr });
    const o = f.create_group('obs');
    o.create_attribute('_index', 'index');
    o.create_dataset({ name: 'index', data: ref.barcodes });
    o.create_dataset({ name: 'batch', data: Int8Array.from(batch.codes) });
    o.create_group('__categories').create_dataset({ name: 'batch', data: batch.categories });
    const v = f.create_group('var');
    v.create_attribute('_index', 'index');
    v.create_dataset({ name: 'index', data: ref.genes });
    f.close();
    const old = await prep({ input: file, out: path.join(tmp, 'old'), batchKey: 'batch' });
    const cur = await prep({
      input: path.join(dir, 'kang_example_sce_1556.h5ad'),
      out: path.join(tmp, 'cur'),
      batchKey: 'batch',
    });
    assert.deepEqual(
      old.manifest.shards.map((x) => x.sha256),
      cur.manifest.shards.map((x) => x.sha256),
    );
    assert.deepEqual(old.manifest.batchCategories, cur.manifest.batchCategories);
    fs.rmSync(tmp, { recursive: true });
  },
);

test(
  'mixology: --layer counts is read exactly; log-normalized X is refused; HVG agrees across formats',
  { skip: skipUnlessShared(MIX, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(MIX)!;
    const h5ad = path.join(dir, 'mixology_5cl_celseq2_3plates.h5ad');
    const tmp = tempDir();
    await assert.rejects(
      prep({ input: h5ad, out: path.join(tmp, 'x'), batchKey: 'batch' }),
      /mixology_5cl_celseq2_3plates\.h5ad: non-integer value .* use --layer/,
    );
    assert.deepEqual(fs.readdirSync(tmp), [], 'nothing left behind');
    const { manifest } = await prep({
      input: h5ad,
      out: path.join(tmp, 'counts'),
      layer: 'counts',
      batchKey: 'batch',
      labelKey: 'cell_type',
    });
    const ref = await readMtxInMemory(dir);
    assert.equal(manifest.nCells, 909);
    assert.equal(manifest.nGenes, 16074);
    assert.equal(manifest.nnz, ref.batch.indptr[909]);
    const back = await readAll(path.join(tmp, 'counts'));
    assert.deepEqual(back.counts, ref.batch.counts);
    assert.deepEqual(back.indices, ref.batch.indices);

    const hvgA = await prep({
      input: h5ad,
      out: path.join(tmp, 'hvg-a'),
      layer: 'counts',
      batchKey: 'batch',
      nTopGenes: 1000,
    });
    const hvgB = await prep({
      input: path.join(dir, 'mixology_5cl_celseq2_3plates.10x.h5'),
      out: path.join(tmp, 'hvg-b'),
      obs: path.join(dir, 'labels.tsv'),
      batchKey: 'batch',
      nTopGenes: 1000,
    });
    assert.equal(hvgA.manifest.nGenes, 1000);
    assert.deepEqual(hvgA.manifest.genes, hvgB.manifest.genes);
    assert.deepEqual(
      hvgA.manifest.shards.map((s) => s.sha256),
      hvgB.manifest.shards.map((s) => s.sha256),
    );
    assert.deepEqual(hvgA.manifest.hvg, {
      flavor: 'seurat_v3',
      nTopGenes: 1000,
      batchKey: 'batch',
      nSourceGenes: 16074,
    });
    fs.rmSync(tmp, { recursive: true });
  },
);

test(
  '--genes imposes a gene list in order; missing genes are zeros, counted and warned about',
  { skip: skipUnlessShared(KANG, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(KANG)!;
    const tmp = tempDir();
    const list = path.join(tmp, 'genes.txt');
    fs.writeFileSync(
      list,
      ['ISG15', 'NOT_A_GENE', 'HES4', 'ENSG00000175756', 'ALSO_MISSING'].join('\n') + '\n',
    );
    const { manifest, warnings } = await prep({
      input: path.join(dir, 'kang_example_sce_1556.h5ad'),
      out: path.join(tmp, 'q'),
      genes: list,
    });
    assert.deepEqual(manifest.genes, ['ISG15', 'NOT_A_GENE', 'HES4', 'ENSG00000175756', 'ALSO_MISSING']);
    assert.equal(manifest.missingGenes, 2);
    assert.ok(warnings.some((w) => /2 of 5 genes .* not in/.test(w)));
    const ref = await readMtxInMemory(dir);
    const ds = await openDataset(path.join(tmp, 'q'));
    // kept cells: those with counts in ISG15 (1), HES4 (0), AURKAIP1 (2)
    const dense = (b: CellBatch, i: number, g: number): number => {
      for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++) if (b.indices[k] === g) return b.counts[k]!;
      return 0;
    };
    const kept: number[] = [];
    for (let i = 0; i < ref.batch.nCells; i++)
      if (dense(ref.batch, i, 0) + dense(ref.batch, i, 1) + dense(ref.batch, i, 2) > 0) kept.push(i);
    assert.equal(manifest.nCells, kept.length);
    assert.equal(manifest.droppedZeroCountCells, 1556 - kept.length);
    const b = await ds.source.getCells(Uint32Array.from({ length: manifest.nCells }, (_, i) => i));
    const src = await ds.source.getSourceRows([0, manifest.nCells - 1]);
    assert.deepEqual([...src.sourceRow], [kept[0], kept[kept.length - 1]]);
    for (let i = 0; i < kept.length; i++) {
      const r = kept[i]!;
      assert.deepEqual(
        [dense(b, i, 0), dense(b, i, 1), dense(b, i, 2), dense(b, i, 3), dense(b, i, 4)],
        [dense(ref.batch, r, 1), 0, dense(ref.batch, r, 0), dense(ref.batch, r, 2), 0],
      );
    }
    await ds.close();
    fs.rmSync(tmp, { recursive: true });
  },
);

test('10x input with antibody features: only "Gene Expression" features are kept (and ranked by HVG)', async () => {
  const tmp = tempDir();
  const dir = path.join(tmp, 'citeseq');
  fs.mkdirSync(dir);
  const feats = [
    ['G0', 'Gene Expression'],
    ['AB0', 'Antibody Capture'],
    ['G1', 'Gene Expression'],
    ['G2', 'Gene Expression'],
    ['AB1', 'Antibody Capture'],
  ];
  fs.writeFileSync(path.join(dir, 'features.tsv'), feats.map(([n, t]) => `id-${n}\t${n}\t${t}\n`).join(''));
  const nCells = 60;
  fs.writeFileSync(
    path.join(dir, 'barcodes.tsv'),
    Array.from({ length: nCells }, (_, i) => `c${i}\n`).join(''),
  );
  const entries: string[] = [];
  for (let c = 0; c < nCells; c++) {
    // antibodies vary most; G1 and G2 vary, G0 barely
    const row = [2 + (c % 2), c % 3 === 0 ? 300 : 1, 1 + (c % 5) * 4, c % 4 === 0 ? 20 : 1, c % 2 ? 500 : 2];
    row.forEach((v, g) => entries.push(`${g + 1} ${c + 1} ${v}`));
  }
  fs.writeFileSync(
    path.join(dir, 'matrix.mtx'),
    `%%MatrixMarket matrix coordinate integer general\n5 ${nCells} ${entries.length}\n${entries.join('\n')}\n`,
  );
  const all = await prep({ input: dir, out: path.join(tmp, 'all') });
  assert.deepEqual(all.manifest.genes, ['G0', 'G1', 'G2']);
  assert.deepEqual(all.manifest.geneIds, ['id-G0', 'id-G1', 'id-G2']);
  assert.ok(
    all.warnings.some((w) =>
      /kept the 3 "Gene Expression" features .* left out 2 "Antibody Capture"/.test(w),
    ),
  );
  const back = await readAll(path.join(tmp, 'all'));
  assert.equal(back.library[0], 2 + 1 + 20); // cell 0: G0 2, G1 1, G2 20 (antibodies 300 and 2 left out)
  const hvg = await prep({ input: dir, out: path.join(tmp, 'hvg'), nTopGenes: 2 });
  assert.equal(hvg.manifest.nGenes, 2);
  assert.ok(hvg.manifest.genes.every((g) => g.startsWith('G')));
  fs.rmSync(tmp, { recursive: true });
});
