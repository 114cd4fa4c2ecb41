// prepare refuses bad input with a message naming the file and the problem, and leaves nothing behind.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { prepareDataset, type PrepareOptions } from '@atlasvae/coordinator/data';
import { InputError, CliError } from '@atlasvae/shared';
import { cliPath, sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';

const KANG = 'data/kang_example_sce_1556';

function mtxFolder(dir: string, mtx: string, genes = ['g1', 'g2', 'g3'], barcodes = ['c1', 'c2']): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'matrix.mtx'), mtx);
  fs.writeFileSync(path.join(dir, 'genes.tsv'), genes.map((g) => `${g}\t${g}\n`).join(''));
  fs.writeFileSync(path.join(dir, 'barcodes.tsv'), barcodes.join('\n') + '\n');
  return dir;
}

const HEAD = '%%MatrixMarket matrix coordinate real general\n3 2 3\n';

/** prepare must fail with `re`, and leave neither the output nor a temporary folder */
async function refuses(
  tmp: string,
  o: Partial<PrepareOptions> & { input: string },
  re: RegExp,
): Promise<void> {
  const out = path.join(tmp, 'out');
  const before = fs.readdirSync(tmp).sort();
  await assert.rejects(
    prepareDataset({ shardCells: 65536, seed: 0, allowNonInteger: false, out, ...o }),
    (e: unknown) => {
      assert.ok(e instanceof CliError, `CliError expected, got ${String(e)}`);
      assert.match((e as Error).message, re);
      return true;
    },
  );
  assert.deepEqual(fs.readdirSync(tmp).sort(), before, 'no output left behind');
}

test('bad counts in MatrixMarket input: negative, NaN, non-integer, wrong sizes, truncation', async () => {
  const tmp = tempDir();
  const m = (name: string, body: string, genes?: string[], barcodes?: string[]): string =>
    mtxFolder(path.join(tmp, 'in', name), body, genes, barcodes);
  // MatrixMarket entries are named as the file numbers them: row (gene) and column (cell) from 1
  await refuses(
    tmp,
    { input: m('neg', HEAD + '1 1 2\n2 1 -1\n3 2 1\n') },
    /in\/neg: negative value -1 at column 1 \(barcode c1\), row 2 of the MatrixMarket file/,
  );
  await refuses(
    tmp,
    { input: m('nan', HEAD + '1 1 2\n2 2 nan\n3 2 1\n') },
    /in\/nan: NaN at column 2 \(barcode c2\), row 2 of the MatrixMarket file/,
  );
  await refuses(
    tmp,
    { input: m('frac', HEAD + '1 1 2\n2 2 0.5\n3 2 1\n') },
    /in\/frac: non-integer value 0\.5 at column 2 \(barcode c2\), row 2 of the MatrixMarket file/,
  );
  const ok = await prepareDataset({
    input: path.join(tmp, 'in', 'frac'),
    out: path.join(tmp, 'frac-ok'),
    shardCells: 10,
    seed: 0,
    allowNonInteger: true,
  });
  assert.equal(ok.manifest.integerCounts, false);
  fs.rmSync(path.join(tmp, 'frac-ok'), { recursive: true });
  await refuses(
    tmp,
    { input: m('genes', HEAD + '1 1 2\n', ['g1', 'g2']) },
    /matrix\.mtx: has 3 rows \(genes\) but genes\.tsv lists 2 genes/,
  );
  await refuses(
    tmp,
    { input: m('cells', HEAD + '1 1 2\n', undefined, ['c1']) },
    /matrix\.mtx: has 2 columns \(cells\) but barcodes\.tsv lists 1 barcodes/,
  );
  await refuses(
    tmp,
    { input: m('short', HEAD + '1 1 2\n2 1 1\n') },
    /matrix\.mtx: truncated: the header declares 3 entries, found 2/,
  );
  await refuses(
    tmp,
    { input: m('range', HEAD + '1 1 2\n4 1 1\n3 2 1\n') },
    /matrix\.mtx: line 4: row 4 outside 1\.\.3/,
  );
  await refuses(tmp, { input: m('banner', 'hello\n') }, /matrix\.mtx: line 1: not a MatrixMarket file/);
  // a gzip file cut short
  const gz = m('gz', '');
  fs.rmSync(path.join(gz, 'matrix.mtx'));
  const big =
    HEAD.replace('3 2 3', '3 2 3000') +
    Array.from({ length: 3000 }, (_, i) => `${1 + (i % 3)} ${1 + (i % 2)} ${i}\n`).join('');
  const z = zlib.gzipSync(big);
  fs.writeFileSync(path.join(gz, 'matrix.mtx.gz'), z.subarray(0, z.length >> 1));
  await refuses(tmp, { input: gz }, /matrix\.mtx\.gz: corrupt or truncated gzip data/);
  // all cells empty
  await refuses(
    tmp,
    { input: m('empty', HEAD.replace('3 2 3', '3 2 1') + '1 1 0\n') },
    /every cell has zero counts/,
  );
  fs.rmSync(tmp, { recursive: true });
});

test(
  'unknown keys, layers and barcodes list what exists',
  { skip: skipUnlessShared(KANG, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(KANG)!;
    const h5ad = path.join(dir, 'kang_example_sce_1556.h5ad');
    const tmp = tempDir();
    await refuses(
      tmp,
      { input: h5ad, batchKey: 'sample' },
      /kang_example_sce_1556\.h5ad: no obs column "sample"; obs columns are: batch, cell_type, condition/,
    );
    await refuses(tmp, { input: h5ad, layer: 'counts' }, /no layer "counts"; layers are: none/);
    await refuses(tmp, { input: h5ad, useRaw: true }, /has no raw/);
    await refuses(
      tmp,
      { input: dir, batchKey: 'batch' },
      /a MatrixMarket folder has no cell metadata; pass --obs TSV/,
    );
    await refuses(
      tmp,
      { input: dir, batchKey: 'donor', obs: path.join(dir, 'labels.tsv') },
      /labels\.tsv: no column "donor"; columns are: cell_type, batch, condition/,
    );
    const partial = path.join(tmp, 'partial.tsv');
    fs.writeFileSync(
      partial,
      fs.readFileSync(path.join(dir, 'labels.tsv'), 'utf8').split('\n').slice(0, 100).join('\n') + '\n',
    );
    await refuses(
      tmp,
      { input: dir, batchKey: 'batch', obs: partial },
      /partial\.tsv: 1457 of 1556 cells have no row/,
    );
    fs.rmSync(partial);
    fs.mkdirSync(path.join(tmp, 'notadataset'));
    fs.writeFileSync(path.join(tmp, 'notadataset', 'precious.txt'), 'x');
    await assert.rejects(
      prepareDataset({
        input: h5ad,
        out: path.join(tmp, 'notadataset'),
        shardCells: 65536,
        seed: 0,
        allowNonInteger: false,
      }),
      /exists and is not a prepared dataset/,
    );
    fs.rmSync(tmp, { recursive: true });
  },
);

test(
  'truncated, corrupt and garbage HDF5 files are named and described; the CLI prints one line',
  { skip: skipUnlessShared(KANG, 'matrix.mtx.gz') },
  async () => {
    const dir = sharedPath(KANG)!;
    const tmp = tempDir();
    const inputs = path.join(tmp, 'in');
    fs.mkdirSync(inputs);
    const h5ad = fs.readFileSync(path.join(dir, 'kang_example_sce_1556.h5ad'));
    const tenx = fs.readFileSync(path.join(dir, 'kang_example_sce_1556.10x.h5'));
    fs.writeFileSync(path.join(inputs, 'cut.h5ad'), h5ad.subarray(0, h5ad.length >> 1));
    fs.writeFileSync(path.join(inputs, 'cut.h5'), tenx.subarray(0, tenx.length - 1000));
    const flipped = Buffer.from(h5ad);
    for (let i = 600000; i < 600400; i++) flipped[i] = 0xab;
    fs.writeFileSync(path.join(inputs, 'corrupt.h5ad'), flipped);
    fs.writeFileSync(
      path.join(inputs, 'garbage.h5ad'),
      Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37) & 255)),
    );
    fs.writeFileSync(path.join(inputs, 'empty.h5'), '');
    await refuses(
      tmp,
      { input: path.join(inputs, 'cut.h5ad') },
      /cut\.h5ad: cannot read the HDF5 file: truncated file: eof = \d+/,
    );
    await refuses(
      tmp,
      { input: path.join(inputs, 'cut.h5') },
      /cut\.h5: cannot read the HDF5 file: truncated file/,
    );
    await refuses(
      tmp,
      { input: path.join(inputs, 'corrupt.h5ad') },
      /corrupt\.h5ad: cannot read X\/\w+: .*(truncated or corrupt file\?)/,
    );
    await refuses(tmp, { input: path.join(inputs, 'garbage.h5ad') }, /garbage\.h5ad: not an HDF5 file/);
    await refuses(tmp, { input: path.join(inputs, 'empty.h5') }, /empty\.h5: empty file/);
    const r = spawnSync(
      process.execPath,
      [cliPath, 'prepare', path.join(inputs, 'cut.h5ad'), '--out', path.join(tmp, 'out')],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^atlasvae: .*cut\.h5ad: cannot read the HDF5 file: truncated file/);
    assert.doesNotMatch(r.stderr, /HDF5-DIAG|\n\s+at /, 'no HDF5 diagnostics or stack trace');
    assert.ok(!fs.existsSync(path.join(tmp, 'out')));
    assert.ok(InputError);
    fs.rmSync(tmp, { recursive: true });
  },
);

test('matrix shapes that are not two whole sizes and gene ids that miss genes are named', async () => {
  const h5 = (await import('h5wasm/node')).default;
  await h5.ready;
  const tmp = tempDir();
  const inputs = path.join(tmp, 'in');
  fs.mkdirSync(inputs);
  const sparseX = (name: string, shape: BigInt64Array | Float64Array): string => {
    const file = path.join(inputs, name);
    const f = new h5.File(file, 'w');
    const X = f.create_group('X');
    X.create_attribute('encoding-type', 'csr_matrix');
    X.create_attribute('shape', shape);
    X.create_dataset({ name: 'data', data: new Float32Array([1, 2]) });
    X.create_dataset({ name: 'indices', data: new Int32Array([0, 2]) });
    X.create_dataset({ name: 'indptr', data: new Int32Array([0, 1, 2]) });
    f.close();
    return file;
  };
  await refuses(
    tmp,
    { input: sparseX('one-d.h5ad', new BigInt64Array([2n])) },
    /one-d\.h5ad: X's shape attribute is \[2\], not a 2-d matrix shape/,
  );
  await refuses(
    tmp,
    { input: sparseX('fraction.h5ad', new Float64Array([2, 2.5])) },
    /fraction\.h5ad: X's shape attribute is \[2, 2\.5\]: sizes must be whole numbers ≥ 0/,
  );
  const tenx = path.join(inputs, 'one-d.h5');
  const f = new h5.File(tenx, 'w');
  f.create_group('matrix').create_dataset({ name: 'shape', data: new Int32Array([3]) });
  f.close();
  await refuses(tmp, { input: tenx }, /one-d\.h5: matrix\/shape is \[3\], not a 2-d matrix shape/);
  // a 10x file of 3 genes × 2 cells whose features/id lists 2 ids
  const shortIds = path.join(inputs, 'short-ids.h5');
  const g = new h5.File(shortIds, 'w');
  const m = g.create_group('matrix');
  m.create_dataset({ name: 'shape', data: new Int32Array([3, 2]) });
  m.create_dataset({ name: 'data', data: new Int32Array([1, 2]) });
  m.create_dataset({ name: 'indices', data: new Int32Array([0, 2]) });
  m.create_dataset({ name: 'indptr', data: new Int32Array([0, 1, 2]) });
  m.create_dataset({ name: 'barcodes', data: ['c1', 'c2'] });
  const feats = m.create_group('features');
  feats.create_dataset({ name: 'name', data: ['g1', 'g2', 'g3'] });
  feats.create_dataset({ name: 'id', data: ['i1', 'i2'] });
  g.close();
  await refuses(tmp, { input: shortIds }, /short-ids\.h5: the matrix has 3 genes but 2 gene ids/);
  fs.rmSync(tmp, { recursive: true });
});
