// An obs column beyond the batch and label keys (kang's `condition`) survives prepare → embed →
// umap colouring, with real files and the built CLI; outputs are replaced only with --force.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PNG } from 'pngjs';
import { readObsFile, readObsTsv } from '@atlasvae/coordinator/data';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';
import { run, runOk, file, killChildren } from './dist-harness.js';

const KANG = ['data', 'kang_example_sce_1556'] as const;
const skip = skipUnlessShared(...KANG);
let dir = '';
let data = '';
let ckpt = '';

before(async () => {
  if (skip) return;
  dir = tempDir('atlasvae-obs-');
  data = file(dir, 'kang');
  await runOk([
    'prepare',
    sharedPath(...KANG, 'kang_example_sce_1556.h5ad')!,
    '--out',
    data,
    '--batch-key',
    'batch',
    '--label-key',
    'cell_type',
  ]);
  ckpt = file(dir, 'model.ckpt');
  await runOk([
    'train',
    '--data',
    data,
    '--local-workers',
    '1',
    '--epochs',
    '1',
    '--n-hidden',
    '32',
    '--backend',
    'wasm',
    '--checkpoint',
    ckpt,
  ]);
});

after(async () => {
  await killChildren();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test(
  'prepare keeps every obs column; embed writes them per cell; umap colours by one',
  { skip },
  async () => {
    // kept by source row, with the values of the metadata table
    const obs = readObsFile(data)!;
    assert.ok(obs, 'obs.arrow written');
    for (const name of ['batch', 'cell_type', 'condition']) assert.equal(obs.kind(name), 'category', name);
    const table = await readObsTsv(sharedPath(...KANG, 'labels.tsv')!);
    const rows = Uint32Array.from(table.barcodes, (_, i) => i);
    assert.deepEqual(obs.strings('condition', rows).sort(), [...table.columns.get('condition')!].sort());

    // embed copies them: each cell's condition is its barcode's in labels.tsv
    const csv = file(dir, 'latent.csv');
    await runOk(['embed', '--checkpoint', ckpt, '--data', data, '--out', csv, '--backend', 'wasm']);
    const lines = fs.readFileSync(csv, 'utf8').trim().split('\n');
    const header = lines[0]!.split(',');
    const ci = header.indexOf('condition');
    const bi = header.indexOf('cell');
    assert.ok(ci >= 0 && header.includes('cell_type'), header.join(','));
    const want = new Map(table.barcodes.map((b, i) => [b, table.columns.get('condition')![i]!]));
    assert.equal(lines.length - 1, 1556);
    for (const l of lines.slice(1)) {
      const f = l.split(',');
      assert.equal(f[ci], want.get(f[bi]!), f[bi]);
    }

    // umap by condition, from the embedding file and straight from the model: two colours, ctrl and stim
    const counts = { ctrl: table.columns.get('condition')!.filter((c) => c === 'ctrl').length, stim: 0 };
    counts.stim = 1556 - counts.ctrl;
    for (const args of [
      ['--embedding', csv],
      ['--checkpoint', ckpt, '--data', data, '--backend', 'wasm'],
    ]) {
      const png = file(dir, `umap-${args[0]!.slice(2)}.png`);
      const out = await runOk(['umap', ...args, '--color-by', 'condition', '--out', png, '--epochs', '30']);
      assert.match(out, /1,556 cells, 2 condition values/);
      const img = PNG.sync.read(fs.readFileSync(png));
      assert.equal(img.width, 1000);
    }

    // an unknown column names the kept ones
    const bad = run([
      'umap',
      '--checkpoint',
      ckpt,
      '--data',
      data,
      '--color-by',
      'nope',
      '--out',
      file(dir, 'nope.png'),
    ]);
    assert.equal((await bad.exited).code, 1);
    assert.match(
      bad.output(),
      /no obs column "nope" to colour by \(kept columns: label, batch, cell_type, condition\)/,
    );
  },
);

test(
  'every output-writing command refuses to replace an existing output without --force',
  { skip },
  async () => {
    const csv = file(dir, 'again.csv');
    fs.writeFileSync(csv, 'precious');
    for (const args of [
      ['embed', '--checkpoint', ckpt, '--data', data, '--out', csv],
      ['normalize', '--checkpoint', ckpt, '--data', data, '--out', csv, '--genes', 'ISG15'],
      ['evaluate', '--checkpoint', ckpt, '--data', data, '--out', csv],
      ['train', '--data', data, '--local-workers', '0', '--checkpoint', csv],
      ['train-local', '--mtx', sharedPath(...KANG)!, '--out', csv],
    ]) {
      const p = run(args);
      assert.equal((await p.exited).code, 1, `${args[0]}: ${p.output()}`);
      assert.match(
        p.output(),
        /again\.csv.*(already exists; pass --force|exists \(an earlier run's model\))/,
        args[0],
      );
      assert.equal(fs.readFileSync(csv, 'utf8'), 'precious', `${args[0]} left the file alone`);
    }
    const png = file(dir, 'again.png');
    fs.writeFileSync(png, 'precious');
    const u = run(['umap', '--embedding', file(dir, 'latent.csv'), '--out', png]);
    assert.equal((await u.exited).code, 1);
    await runOk(['umap', '--embedding', file(dir, 'latent.csv'), '--out', png, '--force', '--epochs', '10']);
    assert.notEqual(fs.readFileSync(png, 'utf8'), 'precious');
  },
);
