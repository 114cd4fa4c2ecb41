// `atlasvae train-local` as a user runs it: a real MatrixMarket folder on disk, the built CLI in a child
// process, a checkpoint that loads and resumes bit-identically, and clear errors for bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { loadCheckpoint, Rng } from '@atlasvae/shared';
import { cliPath, tempDir } from '../helpers/paths.js';

const run = promisify(execFile);

/** A small 10x folder: genes × cells MTX (gzipped), genes.tsv, barcodes.tsv, labels.tsv with 2 batches. */
function writeMtxFolder(dir: string, nCells: number, nGenes: number): void {
  const rng = new Rng(21);
  const lines: string[] = [];
  for (let c = 0; c < nCells; c++) {
    const type = c % 3;
    for (let g = 0; g < nGenes; g++) {
      const rate = g % 3 === type ? 4 : 0.4;
      let k = 0;
      while (rng.uniform() < rate / (rate + 1) && k < 60) k++;
      if (k > 0) lines.push(`${g + 1} ${c + 1} ${k}`);
    }
  }
  const mtx = `%%MatrixMarket matrix coordinate integer general\n%\n${nGenes} ${nCells} ${lines.length}\n${lines.join('\n')}\n`;
  fs.writeFileSync(path.join(dir, 'matrix.mtx.gz'), zlib.gzipSync(mtx));
  fs.writeFileSync(
    path.join(dir, 'genes.tsv'),
    Array.from({ length: nGenes }, (_, g) => `ENSG${g}\tGENE${g}\n`).join(''),
  );
  fs.writeFileSync(
    path.join(dir, 'barcodes.tsv'),
    Array.from({ length: nCells }, (_, c) => `CELL${c}-1\n`).join(''),
  );
  fs.writeFileSync(
    path.join(dir, 'labels.tsv'),
    'barcode\tcell_type\tbatch\n' +
      Array.from({ length: nCells }, (_, c) => `CELL${c}-1\ttype${c % 3}\t${c % 2 ? 'b' : 'a'}\n`).join(''),
  );
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [cliPath, ...args], { maxBuffer: 1 << 24 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

test(
  'train-local trains on an MTX folder, writes a checkpoint, and reports ELBOs',
  { timeout: 120_000 },
  async () => {
    const dir = tempDir();
    writeMtxFolder(dir, 200, 30);
    const out = path.join(dir, 'model.ckpt');
    const r = await cli([
      'train-local',
      '--mtx',
      dir,
      '--batch-key',
      'batch',
      '--epochs',
      '3',
      '--kl-warmup',
      '2',
      '--n-hidden',
      '16',
      '--likelihood',
      'zinb',
      '--dispersion',
      'gene-batch',
      '--backend',
      'wasm',
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout.trim());
    assert.equal(summary.cells, 200);
    assert.equal(summary.genes, 30);
    assert.equal(summary.epochs, 3);
    assert.equal(summary.backend, 'wasm');
    assert.ok(Number.isFinite(summary.validationElbo) && summary.validationElbo > 0);
    assert.match(r.stderr, /compute backend wasm/);
    assert.match(r.stderr, /epoch 3\/3: train ELBO/);
    const ckpt = loadCheckpoint(out);
    assert.deepEqual(ckpt.batchCategories, ['a', 'b']);
    assert.deepEqual(ckpt.labelCategories, ['type0', 'type1', 'type2']);
    assert.equal(ckpt.genes.length, 30);
    assert.equal(ckpt.modelConfig.likelihood, 'zinb');
    assert.equal(ckpt.modelConfig.dispersion, 'gene-batch');
    assert.equal(ckpt.position.epoch, 3);
    assert.equal(ckpt.position.globalStep, summary.steps);
    assert.equal(ckpt.history.length, 3);
    // same seed, same command: bit-identical parameters
    const out2 = path.join(dir, 'again.ckpt');
    const r2 = await cli([
      'train-local',
      '--mtx',
      dir,
      '--batch-key',
      'batch',
      '--epochs',
      '3',
      '--kl-warmup',
      '2',
      '--n-hidden',
      '16',
      '--likelihood',
      'zinb',
      '--dispersion',
      'gene-batch',
      '--backend',
      'wasm',
      '--out',
      out2,
    ]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(loadCheckpoint(out2).params, ckpt.params);
    fs.rmSync(dir, { recursive: true, force: true });
  },
);

test(
  'train-local --resume continues exactly: 2 epochs + 2 resumed equal 4 straight',
  { timeout: 120_000 },
  async () => {
    const dir = tempDir();
    writeMtxFolder(dir, 150, 20);
    const common = [
      'train-local',
      '--mtx',
      dir,
      '--batch-key',
      'batch',
      '--kl-warmup',
      '3',
      '--n-hidden',
      '16',
      '--batch-size',
      '40',
      '--backend',
      'wasm',
    ];
    const straight = path.join(dir, 'straight.ckpt');
    const half = path.join(dir, 'half.ckpt');
    const resumed = path.join(dir, 'resumed.ckpt');
    assert.equal((await cli([...common, '--epochs', '4', '--out', straight])).code, 0);
    assert.equal((await cli([...common, '--epochs', '2', '--out', half])).code, 0);
    const r = await cli([...common, '--resume', half, '--epochs', '4', '--out', resumed]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming .*half\.ckpt at epoch 3/);
    const a = loadCheckpoint(straight);
    const b = loadCheckpoint(resumed);
    assert.deepEqual(b.params, a.params);
    assert.deepEqual(b.buffers, a.buffers);
    assert.deepEqual(b.adam.v, a.adam.v);
    assert.deepEqual(b.position, a.position);
    assert.equal(b.history.length, 4);
    // a checkpoint from other data is refused with the file named
    const other = tempDir();
    writeMtxFolder(other, 30, 12);
    const bad = await cli(['train-local', '--mtx', other, '--batch-key', 'batch', '--resume', half]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /half\.ckpt: was trained on 20 genes that differ from the 12 genes/);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(other, { recursive: true, force: true });
  },
);

test(
  'train-local --checkpoint FILE --resume (the flags of train and coordinator) continues exactly',
  { timeout: 120_000 },
  async () => {
    const dir = tempDir();
    writeMtxFolder(dir, 150, 20);
    const common = [
      'train-local',
      '--mtx',
      dir,
      '--batch-key',
      'batch',
      '--kl-warmup',
      '3',
      '--n-hidden',
      '16',
      '--global-batch',
      '40',
      '--microbatch',
      '16',
      '--backend',
      'wasm',
    ];
    const straight = path.join(dir, 'straight.ckpt');
    const run = path.join(dir, 'run.ckpt');
    assert.equal((await cli([...common, '--epochs', '4', '--checkpoint', straight])).code, 0);
    assert.equal((await cli([...common, '--epochs', '2', '--checkpoint', run])).code, 0);
    // a fresh run refuses to replace it; --resume continues it in place
    const refused = await cli([...common, '--epochs', '4', '--checkpoint', run]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /run\.ckpt exists \(an earlier run's model\): pass --resume/);
    const r = await cli([...common, '--checkpoint', run, '--resume', '--epochs', '4']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /deprecated/);
    assert.match(r.stderr, /resuming .*run\.ckpt at epoch 3/);
    const a = loadCheckpoint(straight);
    const b = loadCheckpoint(run);
    assert.equal(a.trainConfig.microbatch, 16);
    assert.deepEqual(b.params, a.params);
    assert.deepEqual(b.buffers, a.buffers);
    assert.deepEqual(b.adam.v, a.adam.v);
    assert.deepEqual(b.position, a.position);
    assert.deepEqual(
      b.history.map((h) => h.epoch),
      [0, 1, 2, 3],
    );
    fs.rmSync(dir, { recursive: true, force: true });
  },
);

test('train-local names the file and the problem for bad input', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  writeMtxFolder(dir, 20, 5);
  const missing = await cli(['train-local', '--mtx', path.join(dir, 'nope')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope: not a folder/);
  const badKey = await cli(['train-local', '--mtx', dir, '--batch-key', 'donor']);
  assert.equal(badKey.code, 1);
  assert.match(badKey.stderr, /labels\.tsv: no column "donor"; columns are: cell_type, batch/);
  const badDropout = await cli(['train-local', '--mtx', dir, '--dropout', '1.5']);
  assert.equal(badDropout.code, 1);
  assert.match(badDropout.stderr, /--dropout must be in \[0, 1\)/);
  for (const r of [missing, badKey, badDropout]) assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  fs.rmSync(dir, { recursive: true, force: true });
});
