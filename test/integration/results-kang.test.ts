// Results on real data: kang_example (1,556 PBMCs × 1,267 genes, 5 cell types, 4 samples) prepared
// from its .h5ad with the CLI, trained 100 epochs (20-epoch KL warm-up) by the single-process
// trainer, then embed / normalize / evaluate / umap through the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { openSource } from '@atlasvae/coordinator/data';
import { readH5adObsm, categoryColours, type EvaluationReport } from '@atlasvae/coordinator/results';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';
import { cli, trainAndSave, pngColours, readJson, relDiff, type TrainedModel } from './results-harness.js';

const parts = ['data', 'kang_example_sce_1556', 'kang_example_sce_1556.h5ad'];
const skip = skipUnlessShared(...parts);

test(
  'results on kang_example: evaluate, embed (.h5ad/.arrow), normalize, umap',
  { skip, timeout: 600_000 },
  async (t) => {
    const h5ad = sharedPath(...parts)!;
    const dir = tempDir('atlasvae-results-kang-');
    const ds = path.join(dir, 'kang');
    const ckpt = path.join(dir, 'kang.ckpt');
    let t0 = performance.now();
    await cli(['prepare', h5ad, '--out', ds, '--batch-key', 'batch', '--label-key', 'cell_type']);
    const trained: TrainedModel = await trainAndSave(ds, ckpt, { epochs: 100, nEpochsKlWarmup: 20 });
    const m = trained.dataset.manifest;
    assert.equal(m.nCells, 1556);
    t.diagnostic(
      `prepare + 100 epochs: ${((performance.now() - t0) / 1000).toFixed(1)} s; validation ELBO ${trained.history.at(-1)!.validationElbo.toFixed(2)}`,
    );

    try {
      await t.test(
        "evaluate on the validation split: the ELBO is the trainer's; the marginal log-likelihood is above it",
        async () => {
          t0 = performance.now();
          const out = path.join(dir, 'val.json');
          await cli([
            'evaluate',
            '--checkpoint',
            ckpt,
            '--data',
            ds,
            '--split',
            'validation',
            '--samples',
            '40',
            '--out',
            out,
            '--backend',
            'wasm',
          ]);
          const r = readJson<EvaluationReport & { noiseEpoch: number }>(out);
          const last = trained.history.at(-1)!;
          assert.equal(r.nCells, trained.dataset.validation.length);
          assert.equal(r.noiseEpoch, 99);
          assert.ok(
            relDiff(r.elbo, last.validationElbo) < 1e-9,
            `evaluate ELBO ${r.elbo} vs trainer ${last.validationElbo}`,
          );
          assert.ok(relDiff(r.reconstruction, last.validationReconstruction) < 1e-9);
          assert.ok(relDiff(r.kl, last.validationKl) < 1e-9);
          const ml = r.marginalLogLikelihood!;
          // log p(x) ≥ ELBO: in scvi's sign convention the negative marginal LL is below the (negative) ELBO
          assert.ok(
            ml.logLikelihood > -r.elbo,
            `log p(x) ${ml.logLikelihood} should exceed the ELBO ${-r.elbo}`,
          );
          assert.ok(ml.gapToElbo > 0 && ml.gapToElbo < 0.05 * r.elbo, `gap ${ml.gapToElbo}`);
          t.diagnostic(
            `validation: ELBO ${r.elbo.toFixed(3)} (trainer ${last.validationElbo.toFixed(3)}), −log p(x) ${ml.negative.toFixed(3)} with 40 samples; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
          );
        },
      );

      await t.test(
        'evaluate on all cells: 15-NN cell-type accuracy ≥ 0.90, batch mixing reported',
        async () => {
          t0 = performance.now();
          const r = JSON.parse(
            await cli([
              'evaluate',
              '--checkpoint',
              ckpt,
              '--data',
              ds,
              '--samples',
              '0',
              '--backend',
              'wasm',
            ]),
          ) as EvaluationReport;
          assert.equal(r.nCells, 1556);
          assert.equal(r.marginalLogLikelihood, null);
          const acc = r.knnAccuracy!;
          assert.equal(acc.k, 15);
          assert.equal(acc.nCells, 1556);
          assert.equal(acc.perLabel.length, 5);
          assert.ok(acc.accuracy >= 0.9, `kNN accuracy ${acc.accuracy}`);
          const mix = r.batchMixing!;
          assert.equal(mix.nBatch, 4);
          assert.ok(mix.normalizedEntropy > 0 && mix.normalizedEntropy <= 1);
          t.diagnostic(
            `kNN accuracy ${acc.accuracy.toFixed(4)} (balanced ${acc.balancedAccuracy.toFixed(4)}), batch mixing ${mix.normalizedEntropy.toFixed(3)} of ${mix.expectedIfMixed.toFixed(3)}; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
          );
        },
      );

      await t.test(
        'embed into a copy of the .h5ad: the project reader opens it, obsm holds the latent means',
        async () => {
          t0 = performance.now();
          const out = path.join(dir, 'kang_latent.h5ad');
          const arrow = path.join(dir, 'kang_latent.arrow');
          await cli(['embed', '--checkpoint', ckpt, '--data', ds, '--out', out, '--backend', 'wasm']);
          await cli([
            'embed',
            '--checkpoint',
            ckpt,
            '--data',
            ds,
            '--out',
            arrow,
            '--variance',
            '--backend',
            'wasm',
          ]);
          // the copy reads like the original
          const [orig, copy] = await Promise.all([openSource(h5ad), openSource(out)]);
          try {
            assert.equal(copy.nCells, 1556);
            assert.equal(copy.nGenes, 1267);
            assert.deepEqual(copy.genes, orig.genes);
            assert.deepEqual(copy.obsColumn('cell_type'), orig.obsColumn('cell_type'));
            const a = (await orig.rows()[Symbol.asyncIterator]().next()).value!;
            const b = (await copy.rows()[Symbol.asyncIterator]().next()).value!;
            assert.deepEqual(b.indptr, a.indptr);
            assert.deepEqual(Array.from(b.values), Array.from(a.values));
          } finally {
            await orig.close();
            await copy.close();
          }
          // obsm rows follow the source rows and hold exactly the model's latent means
          const obsm = await readH5adObsm(out, 'X_atlasvae');
          assert.equal(obsm.nObs, 1556);
          assert.equal(obsm.dim, 10);
          const all = Uint32Array.from({ length: 1556 }, (_, i) => i);
          const cells = await trained.dataset.source.getCells(all);
          const { qm } = trained.model.encode(cells);
          const { sourceRow } = await trained.dataset.source.getSourceRows(all);
          let maxDiff = 0;
          for (let i = 0; i < 1556; i++) {
            for (let d = 0; d < 10; d++)
              maxDiff = Math.max(maxDiff, Math.abs(obsm.values[sourceRow[i]! * 10 + d]! - qm[i * 10 + d]!));
          }
          assert.ok(maxDiff < 1e-5, `obsm vs in-process latent means: max |diff| ${maxDiff}`);
          // the Arrow table agrees, with labels and barcodes
          const tab = tableFromIPC(fs.readFileSync(arrow));
          assert.equal(tab.numRows, 1556);
          assert.deepEqual(tab.schema.fields.map((f) => f.name).slice(0, 6), [
            'cell',
            'cell_index',
            'batch',
            'label',
            'z_0',
            'z_1',
          ]);
          assert.ok(tab.schema.fields.some((f) => f.name === 'z_var_9'));
          const z3 = tab.getChild('z_3')!.toArray() as Float32Array;
          for (let i = 0; i < 1556; i += 97) assert.equal(z3[i], obsm.values[sourceRow[i]! * 10 + 3]);
          const labels = new Set(tab.getChild('label')!.toArray() as string[]);
          assert.deepEqual([...labels].sort(), [...m.labelCategories].sort());
          t.diagnostic(`embed (.h5ad + .arrow): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        },
      );

      await t.test(
        'normalize: frequencies × 1e4 sum to 1e4 over all genes; a gene subset matches',
        async () => {
          const allOut = path.join(dir, 'norm_all.arrow');
          const subOut = path.join(dir, 'norm_sub.csv');
          const genesFile = path.join(dir, 'genes.txt');
          const pick = [m.genes[5]!, m.genes[700]!, m.genes[0]!];
          fs.writeFileSync(genesFile, pick.join('\n') + '\n');
          await cli(['normalize', '--checkpoint', ckpt, '--data', ds, '--out', allOut, '--backend', 'wasm']);
          await cli([
            'normalize',
            '--checkpoint',
            ckpt,
            '--data',
            ds,
            '--out',
            subOut,
            '--genes',
            genesFile,
            '--transform-batch',
            m.batchCategories[0]!,
            '--backend',
            'wasm',
          ]);
          const tab = tableFromIPC(fs.readFileSync(allOut));
          assert.equal(tab.numRows, 1556);
          const geneCols = m.genes.map((g) => tab.getChild(g)!.toArray() as Float32Array);
          for (const i of [0, 400, 1555]) {
            const s = geneCols.reduce((acc, c) => acc + c[i]!, 0);
            assert.ok(Math.abs(s - 1e4) < 1, `row ${i} sums to ${s}`);
          }
          const lines = fs.readFileSync(subOut, 'utf8').trim().split('\n');
          assert.equal(lines.length, 1557);
          assert.deepEqual(lines[0]!.split(',').slice(4), pick);
          // cells already in batch 0 decode the same with transform-batch = batch 0
          const batchCol = tab.getChild('batch')!.toArray() as string[];
          const i = batchCol.findIndex((b) => b === m.batchCategories[0]);
          const row = lines[i + 1]!.split(',');
          pick.forEach((g, k) => {
            const v = Number(row[4 + k]);
            const ref = (tab.getChild(g)!.toArray() as Float32Array)[i]!;
            assert.ok(Math.abs(v - ref) <= 1e-4 * Math.max(1, ref), `${g}: ${v} vs ${ref}`);
          });
        },
      );

      await t.test(
        'umap: the PNG decodes at the requested size, one distinct colour per cell type',
        async () => {
          t0 = performance.now();
          const png = path.join(dir, 'kang_umap.png');
          await cli([
            'umap',
            '--embedding',
            path.join(dir, 'kang_latent.arrow'),
            '--out',
            png,
            '--width',
            '900',
            '--height',
            '700',
            '--epochs',
            '200',
          ]);
          const img = pngColours(png);
          assert.equal(img.width, 900);
          assert.equal(img.height, 700);
          const colours = categoryColours(5);
          assert.equal(new Set(colours.map((c) => c.join())).size, 5);
          for (const c of colours)
            assert.ok(img.count(c) > 100, `colour ${c.join()} covers ${img.count(c)} pixels`);
          // batch colouring straight from the model, subsampled
          const png2 = path.join(dir, 'kang_umap_batch.png');
          await cli([
            'umap',
            '--checkpoint',
            ckpt,
            '--data',
            ds,
            '--color-by',
            'batch',
            '--max-cells',
            '800',
            '--epochs',
            '200',
            '--out',
            png2,
            '--backend',
            'wasm',
          ]);
          const img2 = pngColours(png2);
          assert.equal(img2.width, 1000);
          for (const c of categoryColours(4)) assert.ok(img2.count(c) > 50, `batch colour ${c.join()}`);
          assert.equal(
            img2.count(categoryColours(5)[4]!),
            0,
            'no fifth category colour when colouring by 4 batches',
          );
          t.diagnostic(
            `umap ×2: ${((performance.now() - t0) / 1000).toFixed(1)} s; pictures in ${dir} (kept with ATLASVAE_KEEP_TEST_FILES=1)`,
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
