// Results benchmarks: inference throughput of embed / normalize / ELBO / marginal likelihood on a
// simulated dataset (G = 2,000, default model; untrained weights cost the same as trained ones),
// exact kNN metrics at the default 20k-cell cap, and UMAP wall time.
// Env: ATLASVAE_BENCH_RESULTS_CELLS (default 20,000), ATLASVAE_BENCH_UMAP_CELLS (default 20,000).
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { initBackend } from '@atlasvae/shared/backend';
import { defaultModelConfig, Rng } from '@atlasvae/shared';
import { createModel } from '@atlasvae/shared/model';
import { simulateToDataset, defaultSimulationOptions, openDataset } from '@atlasvae/coordinator/data';
import {
  LocalEngine,
  writeEmbeddingTable,
  writeNormalizedExpression,
  evaluateModel,
  knnCrossValidatedAccuracy,
  batchMixingEntropy,
  computeUmap,
} from '@atlasvae/coordinator/results';

function seconds(t0: number): number {
  return (performance.now() - t0) / 1000;
}

function clusters(
  n: number,
  dim: number,
  k: number,
  seed: number,
): { pts: Float32Array; labels: Int32Array } {
  const rng = new Rng(seed);
  const pts = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % k;
    for (let d = 0; d < dim; d++) pts[i * dim + d] = (d === labels[i]! % dim ? 4 : 0) + rng.normal();
  }
  return { pts, labels };
}

export async function run(): Promise<Record<string, unknown>> {
  const backend = await initBackend('auto', () => undefined);
  const nCells = Number(process.env.ATLASVAE_BENCH_RESULTS_CELLS ?? 20000);
  const umapCells = Number(process.env.ATLASVAE_BENCH_UMAP_CELLS ?? 20000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'atlasvae-bench-results-'));
  try {
    const data = path.join(dir, 'sim');
    await simulateToDataset({
      ...defaultSimulationOptions,
      cells: nCells,
      genes: 2000,
      batches: 2,
      cellTypes: 6,
      seed: 1,
      out: data,
      shardCells: 65536,
    });
    const ds = await openDataset(data);
    const model = createModel(defaultModelConfig(2000, ds.manifest.batchCategories.length));
    const engine = new LocalEngine(model);
    const cells = Uint32Array.from({ length: nCells }, (_, i) => i);
    const plan = { source: ds.source, cells, chunkSize: 1024 };
    const naming = {
      batchNames: ds.manifest.batchCategories,
      labelNames: ds.manifest.labelCategories,
      lookup: (c: Uint32Array) => ds.source.getSourceRows(c),
    };
    const out: Record<string, unknown> = { backend, genes: 2000, cells: nCells };

    let t0 = performance.now();
    await writeEmbeddingTable(engine, plan, path.join(dir, 'emb.arrow'), { variance: false, naming });
    out.embedCellsPerSecond = Math.round(nCells / seconds(t0));

    t0 = performance.now();
    await writeNormalizedExpression(engine, plan, path.join(dir, 'norm.arrow'), {
      librarySize: 1e4,
      genes: Int32Array.from({ length: 100 }, (_, i) => i * 20),
      geneNames: Array.from({ length: 100 }, (_, i) => `g${i}`),
      samples: 0,
      seed: 0,
      naming,
    });
    out.normalize100GenesCellsPerSecond = Math.round(nCells / seconds(t0));

    t0 = performance.now();
    const rep = await evaluateModel(engine, plan, {
      samples: 0,
      seed: 0,
      elboNoise: null,
      knnK: 15,
      knnFolds: 5,
      mixingK: 50,
      maxMetricCells: 20000,
      naming,
    });
    out.evaluateSeconds = +seconds(t0).toFixed(2);
    out.evaluateMetricCells = Math.min(nCells, 20000);
    out.evaluateKnnAccuracyUntrained = rep.knnAccuracy?.accuracy ?? null;

    const small = { ...plan, cells: cells.subarray(0, 1024) };
    t0 = performance.now();
    await evaluateModel(engine, small, {
      samples: 20,
      seed: 0,
      elboNoise: null,
      knnK: 15,
      knnFolds: 5,
      mixingK: 50,
      maxMetricCells: 1,
      naming,
    });
    out.marginalCellSamplesPerSecond = Math.round((1024 * 20) / seconds(t0));
    await ds.close();

    const c = clusters(20000, 10, 8, 2);
    t0 = performance.now();
    knnCrossValidatedAccuracy(c.pts, 10, c.labels, { k: 15, folds: 5 });
    out.knnCv20kSeconds = +seconds(t0).toFixed(2);
    t0 = performance.now();
    batchMixingEntropy(
      c.pts,
      10,
      c.labels.map((l) => l % 2),
      2,
      { k: 50 },
    );
    out.mixing20kSeconds = +seconds(t0).toFixed(2);

    const u = clusters(umapCells, 10, 8, 3);
    t0 = performance.now();
    computeUmap(u.pts, umapCells, 10, { seed: 0 });
    out.umapCells = umapCells;
    out.umapSeconds = +seconds(t0).toFixed(1);
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
