// `atlasvae demo` (what `npm start` runs): simulate an atlas with labelled cell types and two
// batches, train it with local workers, write the checkpoint and the latent embedding.
// Needs nothing outside the repository.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { Argv } from 'yargs';
import { CliError, getLogger, loadCheckpoint } from '@atlasvae/shared';
import { JS_MODEL_BACKEND_CHOICES, initBackend } from '@atlasvae/shared/backend';
import { createModel } from '@atlasvae/shared/model';
import { simulateToDataset, defaultSimulationOptions } from '../data/simulate.js';
import { openDataset } from '../data/dataset.js';
import { createTableWriter } from '../results/table-writer.js';
import { runCoordinator } from '../server/run.js';
import { LocalWorkers } from '../server/local-workers.js';
import { reportOutcome } from '../server/report.js';
import type { TrainingFlags } from '../server/setup.js';

export const demoCommand = (y: Argv): Argv =>
  y.command(
    'demo',
    'Simulate a demo atlas (cell types, 2 batches), train it with local workers, write a checkpoint and the latent embedding',
    (b) =>
      b
        .option('out', { type: 'string', default: 'out/demo', describe: 'output folder' })
        .option('cells', { type: 'number', default: 20000, describe: 'cells to simulate' })
        .option('genes', { type: 'number', default: 1000, describe: 'genes to simulate' })
        .option('epochs', { type: 'number', default: 10, describe: 'training epochs' })
        .option('local-workers', { type: 'number', default: 2, describe: 'worker processes' })
        .option('backend', {
          choices: JS_MODEL_BACKEND_CHOICES,
          default: 'auto' as const,
          describe: 'compute backend of the workers',
        })
        .option('seed', { type: 'number', default: 0, describe: 'seed of simulation and training' })
        .example('$0 demo', "the README's quick start (a few minutes on 2 cores)")
        .example('$0 demo --cells 5000 --epochs 5 --out /tmp/demo', 'a quicker run'),
    async (a) => {
      const log = getLogger('demo');
      for (const k of ['cells', 'genes', 'epochs', 'local-workers'] as const) {
        if (!Number.isInteger(a[k]) || a[k] < 1) throw new CliError(`--${k} must be a positive integer`);
      }
      const out = path.resolve(a.out);
      const dataDir = path.join(out, 'data');
      const sim = {
        ...defaultSimulationOptions,
        cells: a.cells,
        genes: a.genes,
        batches: 2,
        cellTypes: 6,
        seed: a.seed,
      };
      // reuse a dataset simulated earlier with the same options
      const stamp = path.join(out, 'data.options.json');
      const want = JSON.stringify(sim);
      if (!(
        fs.existsSync(stamp) &&
        fs.readFileSync(stamp, 'utf8') === want &&
        fs.existsSync(path.join(dataDir, 'manifest.json'))
      )) {
        fs.rmSync(dataDir, { recursive: true, force: true });
        fs.mkdirSync(out, { recursive: true });
        log.info(`simulating ${a.cells} cells × ${a.genes} genes (6 cell types, 2 batches) into ${dataDir}`);
        const m = await simulateToDataset({ ...sim, out: dataDir, shardCells: 8192 });
        fs.writeFileSync(stamp, want);
        log.info(`simulated ${m.nCells} cells, ${m.nnz} nonzero counts`);
      }
      const ckpt = path.join(out, 'model.ckpt');
      fs.rmSync(ckpt, { force: true });
      const flags: TrainingFlags = {
        data: dataDir,
        epochs: a.epochs,
        seed: a.seed,
        'global-batch': 256,
        microbatch: 128,
        'kl-warmup': Math.max(1, Math.round(a.epochs * 0.75)),
        'n-hidden': 128,
        'n-latent': 10,
        'n-layers': 1,
        dropout: 0.1,
        likelihood: 'nb',
        dispersion: 'gene',
        checkpoint: ckpt,
        'checkpoint-every': 200,
        resume: false,
        'step-timeout': 120,
      };
      const token = crypto.randomBytes(18).toString('base64url');
      const workers = new LocalWorkers(a['local-workers'], a.backend);
      try {
        const r = await runCoordinator(flags, {
          host: '127.0.0.1',
          port: 0,
          token,
          minWorkers: a['local-workers'],
          onListening: (url) => workers.start(url, token),
        });
        reportOutcome(r);
      } finally {
        await workers.stop();
      }

      // the latent embedding of every cell: posterior means in evaluation mode
      const c = loadCheckpoint(ckpt);
      await initBackend('auto', (m) => log.debug(m));
      const model = createModel(c.modelConfig);
      model.setParams(c.params);
      model.setBuffers(c.buffers);
      const ds = await openDataset(dataDir);
      const embFile = path.join(out, 'latent.csv');
      const writer = createTableWriter(embFile);
      try {
        const L = c.modelConfig.nLatent;
        const n = ds.manifest.nCells;
        const isValidation = new Uint8Array(n);
        for (const v of ds.validation) isValidation[v] = 1;
        for (let start = 0; start < n; start += 2048) {
          const idx = new Uint32Array(Math.min(2048, n - start)).map((_, i) => start + i);
          const batch = await ds.source.getCells(idx);
          const { qm } = model.encode(batch);
          const { barcodes } = await ds.source.getSourceRows(idx);
          const cols: Record<string, Float32Array | string[] | Int32Array | Uint32Array> = {
            cell: idx,
            barcode: barcodes,
            batch: Array.from(batch.batch, (b) => c.batchCategories[b] ?? String(b)),
            cell_type: Array.from(batch.label, (l) => (l >= 0 ? (c.labelCategories[l] ?? String(l)) : '')),
            split: Array.from(idx, (i) => (isValidation[i] ? 'validation' : 'train')),
          };
          for (let l = 0; l < L; l++)
            cols[`z${l + 1}`] = Float32Array.from({ length: idx.length }, (_, i) => qm[i * L + l]!);
          await writer.write(cols);
        }
        await writer.close();
      } catch (e) {
        writer.abort();
        throw e;
      } finally {
        model.dispose();
        await ds.close();
      }
      process.stdout.write(
        `latent embedding (${c.modelConfig.nLatent} dimensions, every cell): ${embFile}\n`,
      );
    },
  );
