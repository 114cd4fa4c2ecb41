// Results on real data: mixology (909 cells × 16,074 genes, 5 cell lines, 3 CEL-seq2 plates), raw
// counts from layers/counts with 2,000 seurat_v3 genes, a short training, then: obsm written into a
// copy of the 16,074-gene .h5ad, the ELBO/marginal-likelihood bound, a UMAP by plate, and the same
// cells prepared as a query dataset from the MatrixMarket copy with the model's gene list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { openSource } from '@atlasvae/coordinator/data';
import { readH5adObsm, categoryColours, type EvaluationReport } from '@atlasvae/coordinator/results';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';
import { cli, trainAndSave, pngColours, relDiff } from './results-harness.js';

const parts = ['data', 'mixology_5cl_celseq2_3plates', 'mixology_5cl_celseq2_3plates.h5ad'];
const skip = skipUnlessShared(...parts);

test(
  "results on mixology: h5ad obsm, ELBO bound, UMAP by plate, query dataset with the model's genes",
  { skip, timeout: 600_000 },
  async (t) => {
    const h5ad = sharedPath(...parts)!;
    const mtx = path.dirname(h5ad);
    const dir = tempDir('atlasvae-results-mix-');
    const ds = path.join(dir, 'mix');
    const ckpt = path.join(dir, 'mix.ckpt');
    let t0 = performance.now();
    await cli([
      'prepare',
      h5ad,
      '--out',
      ds,
      '--layer',
      'counts',
      '--n-top-genes',
      '2000',
      '--batch-key',
      'batch',
      '--label-key',
      'cell_type',
    ]);
    const trained = await trainAndSave(ds, ckpt, { epochs: 40, nEpochsKlWarmup: 10 });
    const m = trained.dataset.manifest;
    assert.equal(m.nGenes, 2000);
    assert.equal(m.batchCategories.length, 3);
    t.diagnostic(`prepare + 40 epochs: ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    try {
      await t.test('embed into a copy of the 16,074-gene .h5ad: shape and values', async () => {
        const out = path.join(dir, 'mix_latent.h5ad');
        await cli([
          'embed',
          '--checkpoint',
          ckpt,
          '--data',
          ds,
          '--out',
          out,
          '--variance',
          '--backend',
          'wasm',
        ]);
        const src = await openSource(out, { layer: 'counts' });
        try {
          assert.equal(src.nCells, 909);
          assert.equal(src.nGenes, 16074);
        } finally {
          await src.close();
        }
        const mean = await readH5adObsm(out, 'X_atlasvae');
        const variance = await readH5adObsm(out, 'X_atlasvae_var');
        assert.deepEqual([mean.nObs, mean.dim, variance.nObs, variance.dim], [909, 10, 909, 10]);
        const all = Uint32Array.from({ length: m.nCells }, (_, i) => i);
        const { qm, qv } = trained.model.encode(await trained.dataset.source.getCells(all));
        const { sourceRow } = await trained.dataset.source.getSourceRows(all);
        let dm = 0,
          dv = 0;
        for (let i = 0; i < m.nCells; i++) {
          for (let d = 0; d < 10; d++) {
            dm = Math.max(dm, Math.abs(mean.values[sourceRow[i]! * 10 + d]! - qm[i * 10 + d]!));
            dv = Math.max(dv, Math.abs(variance.values[sourceRow[i]! * 10 + d]! - qv[i * 10 + d]!));
          }
        }
        assert.ok(dm < 1e-5 && dv < 1e-5, `max |diff| means ${dm}, variances ${dv}`);
        assert.ok(variance.values.every((v) => Number.isNaN(v) || v > 0));
      });

      await t.test(
        "evaluate: ELBO equals the trainer's validation ELBO, the marginal log-likelihood is above it",
        async () => {
          t0 = performance.now();
          const r = JSON.parse(
            await cli([
              'evaluate',
              '--checkpoint',
              ckpt,
              '--data',
              ds,
              '--split',
              'validation',
              '--samples',
              '50',
              '--backend',
              'wasm',
            ]),
          ) as EvaluationReport;
          const last = trained.history.at(-1)!;
          assert.ok(
            relDiff(r.elbo, last.validationElbo) < 1e-9,
            `evaluate ${r.elbo} vs trainer ${last.validationElbo}`,
          );
          assert.ok(
            r.marginalLogLikelihood!.logLikelihood > -r.elbo,
            `log p(x) ${r.marginalLogLikelihood!.logLikelihood} vs ELBO ${-r.elbo}`,
          );
          assert.equal(r.batchMixing!.nBatch, 3);
          t.diagnostic(
            `validation ELBO ${r.elbo.toFixed(2)}, −log p(x) ${r.marginalLogLikelihood!.negative.toFixed(2)}; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
          );
        },
      );

      await t.test('umap coloured by plate', async () => {
        const png = path.join(dir, 'mix_umap_plate.png');
        await cli([
          'umap',
          '--checkpoint',
          ckpt,
          '--data',
          ds,
          '--color-by',
          'batch',
          '--out',
          png,
          '--width',
          '800',
          '--height',
          '600',
          '--backend',
          'wasm',
        ]);
        const img = pngColours(png);
        assert.deepEqual([img.width, img.height], [800, 600]);
        for (const c of categoryColours(3))
          assert.ok(img.count(c) > 100, `plate colour ${c.join()}: ${img.count(c)} pixels`);
      });

      await t.test(
        "a query dataset prepared from the MTX copy with the model's genes evaluates like the original",
        async () => {
          t0 = performance.now();
          const genes = path.join(dir, 'model_genes.txt');
          fs.writeFileSync(genes, await cli(['embed', '--checkpoint', ckpt, '--list-genes']));
          assert.equal(fs.readFileSync(genes, 'utf8').trim().split('\n').length, 2000);
          const q = path.join(dir, 'query');
          await cli([
            'prepare',
            mtx,
            '--out',
            q,
            '--genes',
            genes,
            '--obs',
            path.join(mtx, 'labels.tsv'),
            '--batch-key',
            'batch',
            '--label-key',
            'cell_type',
          ]);
          const args = ['--checkpoint', ckpt, '--samples', '0', '--backend', 'wasm'];
          const [orig, query] = await Promise.all([
            cli(['evaluate', ...args, '--data', ds]).then((s) => JSON.parse(s) as EvaluationReport),
            cli(['evaluate', ...args, '--data', q]).then((s) => JSON.parse(s) as EvaluationReport),
          ]);
          assert.equal(query.nCells, orig.nCells);
          assert.ok(relDiff(query.elbo, orig.elbo) < 1e-6, `query ELBO ${query.elbo} vs ${orig.elbo}`);
          assert.equal(query.knnAccuracy!.accuracy, orig.knnAccuracy!.accuracy);
          t.diagnostic(
            `query prepare + 2 evaluations: ${((performance.now() - t0) / 1000).toFixed(1)} s; kNN accuracy ${orig.knnAccuracy!.accuracy.toFixed(3)}`,
          );
        },
      );
    } finally {
      await trained.dataset.close();
      // ATLASVAE_KEEP_TEST_FILES=1 keeps the outputs (pictures, reports) for inspection
      if (!process.env.ATLASVAE_KEEP_TEST_FILES) fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);
