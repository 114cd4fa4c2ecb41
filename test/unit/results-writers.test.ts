import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import h5wasm from 'h5wasm/node';
import {
  createTableWriter,
  formatFloat32,
  writeH5adWithObsm,
  readH5adObsm,
  h5adObsCount,
} from '@atlasvae/coordinator/results';
import { tempDir, sharedPath, skipUnlessShared } from '../helpers/paths.js';

test('Arrow table writer streams chunks into one readable IPC file', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'emb.arrow');
  const w = createTableWriter(file);
  await w.write({ cell: ['a', 'b'], z_0: new Float32Array([1.5, -2]), n: new Uint32Array([0, 1]) });
  assert.ok(!fs.existsSync(file), 'nothing at the target until close');
  await w.write({ cell: ['c'], z_0: new Float32Array([3.25]), n: new Uint32Array([2]) });
  await w.close();
  const t = tableFromIPC(fs.readFileSync(file));
  assert.equal(t.numRows, 3);
  assert.deepEqual(
    t.schema.fields.map((f) => f.name),
    ['cell', 'z_0', 'n'],
  );
  assert.deepEqual(t.getChild('cell')!.toArray(), ['a', 'b', 'c']);
  assert.deepEqual(Array.from(t.getChild('z_0')!.toArray() as Float32Array), [1.5, -2, 3.25]);
  assert.deepEqual(fs.readdirSync(dir), ['emb.arrow'], 'no temporary file left');
});

test('CSV writer quotes fields, keeps float32 exactly, and abort leaves nothing', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'x.csv');
  const w = createTableWriter(file);
  const v = new Float32Array([0.1, 1 / 3, -1e-8, 12345.678]);
  await w.write({ cell: ['a,b', 'q"x', 'c', 'd'], v });
  await w.close();
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  assert.equal(lines[0], 'cell,v');
  assert.equal(lines[1], '"a,b",0.1');
  assert.equal(lines[2]!.split(',')[0], '"q""x"');
  const back = lines.slice(1).map((l) => Math.fround(Number(l.split(',').at(-1))));
  assert.deepEqual(back, Array.from(v));
  for (const x of v) assert.equal(Math.fround(Number(formatFloat32(x))), x);
  const w2 = createTableWriter(path.join(dir, 'y.csv'));
  await w2.write({ a: new Int32Array([1]) });
  w2.abort();
  assert.deepEqual(fs.readdirSync(dir), ['x.csv']);
});

test('unknown output extension is a clear error', () => {
  assert.throws(() => createTableWriter('/tmp/out.xlsx'), /out\.xlsx: unknown table format/);
});

const kang = ['data', 'kang_example_sce_1556', 'kang_example_sce_1556.h5ad'];
test(
  'obsm writer adds X_atlasvae to a copy of a real .h5ad with anndata encoding attributes',
  { skip: skipUnlessShared(...kang) },
  async () => {
    const src = sharedPath(...kang)!;
    const dir = tempDir();
    const out = path.join(dir, 'with_latent.h5ad');
    const n = await h5adObsCount(src);
    assert.equal(n, 1556);
    const values = new Float32Array(n * 10).map((_, i) => i * 0.5 - 7);
    const srcBytes = fs.readFileSync(src);
    await writeH5adWithObsm(src, out, [{ key: 'X_atlasvae', values, dim: 10 }]);
    assert.ok(fs.readFileSync(src).equals(srcBytes), 'source untouched');
    assert.deepEqual(fs.readdirSync(dir), ['with_latent.h5ad']);
    const back = await readH5adObsm(out, 'X_atlasvae');
    assert.equal(back.nObs, 1556);
    assert.equal(back.dim, 10);
    assert.deepEqual(back.values, values);
    await h5wasm.ready;
    const f = new h5wasm.File(out, 'r');
    try {
      const ds = f.get('obsm/X_atlasvae') as InstanceType<typeof h5wasm.Dataset>;
      assert.equal(ds.attrs['encoding-type']!.value, 'array');
      assert.equal(ds.attrs['encoding-version']!.value, '0.2.0');
      assert.equal(ds.dtype, '<f');
      const obsm = f.get('obsm') as InstanceType<typeof h5wasm.Group>;
      assert.equal(obsm.attrs['encoding-type']!.value, 'dict');
      // the rest of the AnnData is intact
      assert.deepEqual((f.get('X') as InstanceType<typeof h5wasm.Group>).keys().sort(), [
        'data',
        'indices',
        'indptr',
      ]);
    } finally {
      f.close();
    }
    // a second write of the same key is refused, naming the file
    await assert.rejects(
      writeH5adWithObsm(out, path.join(dir, 'again.h5ad'), [{ key: 'X_atlasvae', values, dim: 10 }]),
      /already has obsm\/X_atlasvae/,
    );
    await assert.rejects(
      writeH5adWithObsm(src, path.join(dir, 'bad.h5ad'), [
        { key: 'X', values: new Float32Array(10), dim: 10 },
      ]),
      /has 1556 cells/,
    );
    assert.deepEqual(fs.readdirSync(dir), ['with_latent.h5ad']);
  },
);
