// The results commands on small simulated datasets (seconds): chunking does not change results,
// outputs are atomic, and bad input gets a clear error naming the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { defaultModelConfig, defaultTrainConfig, saveCheckpoint } from '@atlasvae/shared';
import { initParams, initBuffers } from '@atlasvae/shared/model';
import { initAdam } from '@atlasvae/shared/train';
import { readManifest } from '@atlasvae/coordinator/data';
import { tempDir } from '../helpers/paths.js';
import { cli, runCli } from './results-harness.js';

test(
  'results commands on simulated data: chunking, atomic outputs, clear errors',
  { timeout: 180_000 },
  async (t) => {
    const dir = tempDir('atlasvae-results-cli-');
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    await cli([
      'simulate',
      '--cells',
      '700',
      '--genes',
      '120',
      '--batches',
      '2',
      '--cell-types',
      '3',
      '--out',
      a,
      '--seed',
      '1',
    ]);
    await cli(['simulate', '--cells', '300', '--genes', '90', '--batches', '2', '--out', b, '--seed', '2']);
    // an untrained model (initial parameters) is enough to exercise the plumbing
    const m = readManifest(a);
    const cfg = defaultModelConfig(m.nGenes, m.batchCategories.length);
    const ckpt = path.join(dir, 'init.ckpt');
    const params = initParams(cfg, 3);
    saveCheckpoint(ckpt, {
      format: 'atlasvae-checkpoint',
      version: 1,
      modelConfig: cfg,
      trainConfig: defaultTrainConfig(m.nCells),
      params,
      buffers: initBuffers(cfg),
      adam: { ...initAdam(params.length) },
      position: { epoch: 1, stepInEpoch: 0, globalStep: 5 },
      genes: m.genes,
      batchCategories: m.batchCategories,
      labelCategories: m.labelCategories,
      manifestHash: null,
      history: [],
      createdAt: new Date().toISOString(),
    });

    await t.test('embed gives identical values whatever the chunk size; CSV and Arrow agree', async () => {
      const big = path.join(dir, 'e1.arrow'),
        small = path.join(dir, 'e2.arrow'),
        csv = path.join(dir, 'e3.csv');
      await cli(['embed', '--checkpoint', ckpt, '--data', a, '--out', big, '--backend', 'cpu']);
      await cli([
        'embed',
        '--checkpoint',
        ckpt,
        '--data',
        a,
        '--out',
        small,
        '--chunk-cells',
        '64',
        '--backend',
        'cpu',
      ]);
      await cli(['embed', '--checkpoint', ckpt, '--data', a, '--out', csv, '--backend', 'cpu']);
      const t1 = tableFromIPC(fs.readFileSync(big)),
        t2 = tableFromIPC(fs.readFileSync(small));
      assert.equal(t1.numRows, 700);
      assert.equal(t2.batches.length, 11, 'one record batch per chunk');
      // the same cells, in the same order; values equal up to float32 rounding of differently shaped products
      assert.deepEqual(t2.getChild('cell')!.toArray(), t1.getChild('cell')!.toArray());
      for (let d = 0; d < 10; d++) {
        const x = t1.getChild(`z_${d}`)!.toArray() as Float32Array,
          y = t2.getChild(`z_${d}`)!.toArray() as Float32Array;
        for (let i = 0; i < 700; i++)
          assert.ok(
            Math.abs(x[i]! - y[i]!) <= 1e-5 * Math.max(1, Math.abs(x[i]!)),
            `z_${d}[${i}]: ${x[i]} vs ${y[i]}`,
          );
      }
      const rows = fs.readFileSync(csv, 'utf8').trim().split('\n');
      assert.equal(rows.length, 701);
      const z0 = t1.getChild('z_0')!.toArray() as Float32Array;
      for (const i of [0, 350, 699]) assert.equal(Math.fround(Number(rows[i + 1]!.split(',')[4])), z0[i]);
    });

    await t.test('evaluate: the per-cell table sums to the report; chunking changes neither', async () => {
      const per = path.join(dir, 'per.csv');
      const r1 = JSON.parse(
        await cli([
          'evaluate',
          '--checkpoint',
          ckpt,
          '--data',
          a,
          '--samples',
          '3',
          '--per-cell',
          per,
          '--backend',
          'cpu',
        ]),
      );
      const r2 = JSON.parse(
        await cli([
          'evaluate',
          '--checkpoint',
          ckpt,
          '--data',
          a,
          '--samples',
          '3',
          '--backend',
          'cpu',
          '--chunk-cells',
          '1024',
        ]),
      );
      assert.equal(r1.elbo, r2.elbo);
      assert.equal(r1.noiseEpoch, 0);
      const lines = fs.readFileSync(per, 'utf8').trim().split('\n');
      const head = lines[0]!.split(',');
      assert.deepEqual(head, ['cell_index', 'batch', 'label', 'reconstruction', 'kl', 'elbo', 'marginal_ll']);
      const mean = lines.slice(1).reduce((s, l) => s + Number(l.split(',')[5]), 0) / 700;
      assert.ok(Math.abs(mean - r1.elbo) < 1e-3 * Math.abs(r1.elbo));
      assert.equal(r1.knnAccuracy.perLabel.length, 3);
      assert.equal(r1.batchMixing.nBatch, 2);
    });

    await t.test('bad input: clear errors naming the file, no output left behind', async () => {
      const out = path.join(dir, 'bad.arrow');
      const wrongGenes = await runCli(['embed', '--checkpoint', ckpt, '--data', b, '--out', out]);
      assert.equal(wrongGenes.code, 1);
      assert.match(
        wrongGenes.stderr,
        new RegExp(
          `${b.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the dataset's genes do not match the model's: it has 90 genes`,
        ),
      );
      assert.doesNotMatch(wrongGenes.stderr, /\n\s+at /, 'no stack trace');
      const missing = await runCli(['evaluate', '--checkpoint', path.join(dir, 'nope.ckpt'), '--data', a]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /nope\.ckpt: checkpoint file does not exist/);
      const notCkpt = path.join(dir, 'garbage.ckpt');
      fs.writeFileSync(notCkpt, 'hello');
      assert.match(
        (await runCli(['embed', '--checkpoint', notCkpt, '--data', a, '--out', out])).stderr,
        /garbage\.ckpt: not an atlasvae checkpoint/,
      );
      assert.match(
        (await runCli(['embed', '--checkpoint', ckpt, '--data', a, '--out', path.join(dir, 'x.xlsx')]))
          .stderr,
        /x\.xlsx: unknown output format/,
      );
      assert.match(
        (
          await runCli([
            'normalize',
            '--checkpoint',
            ckpt,
            '--data',
            a,
            '--out',
            out,
            '--genes',
            'NOPE1,Gene000',
          ])
        ).stderr,
        /--genes: 1 gene\(s\) are not in the model's gene list: NOPE1/,
      );
      assert.match(
        (
          await runCli([
            'normalize',
            '--checkpoint',
            ckpt,
            '--data',
            a,
            '--out',
            out,
            '--transform-batch',
            'zz',
          ])
        ).stderr,
        /--transform-batch zz: the model's batches are/,
      );
      assert.match(
        (await runCli(['embed', '--checkpoint', ckpt, '--data', a, '--out', path.join(dir, 'y.h5ad')]))
          .stderr,
        /not an \.h5ad: name the \.h5ad to copy with --source-h5ad/,
      );
      assert.match(
        (
          await runCli([
            'umap',
            '--embedding',
            path.join(dir, 'none.arrow'),
            '--out',
            path.join(dir, 'u.png'),
          ])
        ).stderr,
        /none\.arrow: embedding file does not exist/,
      );
      assert.ok(!fs.existsSync(out));
      assert.deepEqual(
        fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
        [],
      );
    });
    if (!process.env.ATLASVAE_KEEP_TEST_FILES) fs.rmSync(dir, { recursive: true, force: true });
  },
);
