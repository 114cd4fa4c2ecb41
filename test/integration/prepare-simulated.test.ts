// The CLI end to end: simulate writes a dataset plus .h5ad and MatrixMarket copies of the same
// cells; preparing either copy gives back byte-identical shards.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { DatasetManifest } from '@atlasvae/shared';
import { cliPath, tempDir } from '../helpers/paths.js';

function cli(...args: string[]): string {
  return execFileSync(process.execPath, [cliPath, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

const manifest = (dir: string): DatasetManifest =>
  JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as DatasetManifest;

test('simulate --write-h5ad --write-mtx, then prepare each copy: identical shards', () => {
  const tmp = tempDir();
  const sim = path.join(tmp, 'sim');
  const out = cli(
    'simulate',
    '--cells',
    '3000',
    '--genes',
    '200',
    '--batches',
    '3',
    '--cell-types',
    '4',
    '--seed',
    '5',
    '--shard-cells',
    '2048',
    '--out',
    sim,
    '--write-h5ad',
    path.join(tmp, 'sim.h5ad'),
    '--write-mtx',
    path.join(tmp, 'mtx'),
  );
  assert.match(out, /3000 cells × 200 genes/);
  const keys = ['--batch-key', 'batch', '--label-key', 'cell_type', '--seed', '5', '--shard-cells', '2048'];
  cli('prepare', path.join(tmp, 'sim.h5ad'), '--out', path.join(tmp, 'from-h5ad'), ...keys);
  cli(
    'prepare',
    path.join(tmp, 'mtx'),
    '--obs',
    path.join(tmp, 'mtx', 'labels.tsv'),
    '--out',
    path.join(tmp, 'from-mtx'),
    ...keys,
  );
  const a = manifest(sim),
    b = manifest(path.join(tmp, 'from-h5ad')),
    c = manifest(path.join(tmp, 'from-mtx'));
  for (const m of [b, c]) {
    assert.deepEqual(
      m.shards.map((s) => [s.cells, s.nnz, s.sha256]),
      a.shards.map((s) => [s.cells, s.nnz, s.sha256]),
    );
    assert.deepEqual(m.genes, a.genes);
    assert.deepEqual(m.batchCategories, a.batchCategories);
    assert.deepEqual(m.labelCategories, a.labelCategories);
    assert.deepEqual(m.split, a.split);
  }
  assert.equal(a.shards.length, 2);
  // the dataset's gene list imposes the same genes on another input
  const sub = path.join(tmp, 'genes-sub.tsv');
  fs.writeFileSync(
    sub,
    fs.readFileSync(path.join(sim, 'genes.tsv'), 'utf8').split('\n').slice(0, 20).join('\n') + '\n',
  );
  cli('prepare', path.join(tmp, 'sim.h5ad'), '--out', path.join(tmp, 'query'), '--genes', sub);
  assert.deepEqual(manifest(path.join(tmp, 'query')).genes, a.genes.slice(0, 20));
  cli(
    'prepare',
    path.join(tmp, 'mtx'),
    '--out',
    path.join(tmp, 'query'),
    '--genes',
    path.join(tmp, 'from-h5ad'),
    '--force',
  );
  assert.deepEqual(manifest(path.join(tmp, 'query')).genes, a.genes);
  fs.rmSync(path.join(tmp, 'query'), { recursive: true });
  fs.rmSync(sub);
  // an existing dataset is only replaced with --force
  assert.throws(
    () => cli('prepare', path.join(tmp, 'sim.h5ad'), '--out', sim),
    /already exists there; pass --force/,
  );
  cli(
    'prepare',
    path.join(tmp, 'sim.h5ad'),
    '--out',
    sim,
    '--force',
    '--n-top-genes',
    '50',
    '--batch-key',
    'batch',
  );
  assert.equal(manifest(sim).nGenes, 50);
  assert.deepEqual(fs.readdirSync(tmp).sort(), ['from-h5ad', 'from-mtx', 'mtx', 'sim', 'sim.h5ad']);
  fs.rmSync(tmp, { recursive: true });
});
