// The evaluation report: per-cell ELBO terms, importance-sampled marginal log-likelihood, and the
// latent-space metrics (cross-validated kNN cell-type accuracy, batch mixing) on the latent means.

import { forEachChunk, type ChunkPlan } from './cell-stream.js';
import { encodeCells, evaluateCells, marginalCells, type InferenceEngine } from './engine.js';
import {
  knnCrossValidatedAccuracy,
  batchMixingEntropy,
  subsampleIndices,
  type BatchMixing,
  type KnnAccuracy,
} from './latent-metrics.js';
import { createTableWriter, type TableWriter } from './table-writer.js';
import { nameOf, type CellNaming } from './cell-names.js';

export interface EvaluateOptions {
  /** importance samples per cell for the marginal log-likelihood; 0 skips it */
  samples: number;
  seed: number;
  /** keys of the ELBO's ε: the trainer's validation noise of (seed, epoch, chunk), so the numbers agree; null: z = q_m */
  elboNoise: { seed: number; epoch: number } | null;
  knnK: number;
  knnFolds: number;
  mixingK: number;
  /** latent metrics use at most this many cells (seeded subsample): kNN is exact, O(n²) */
  maxMetricCells: number;
  naming: CellNaming;
  /** optional per-cell table (cell_index, reconstruction, kl, elbo = reconstruction + kl, marginal_ll = log p(x)) */
  perCellOut?: string;
  onChunk?: (cells: number) => void;
  onPhase?: (phase: string) => void;
}

export interface EvaluationReport {
  nCells: number;
  /** per-cell means. `elbo` follows scvi's get_elbo and the trainer's validation ELBO: reconstruction
   * (−log p(x|z)) + KL (unweighted), i.e. the negative evidence lower bound; lower is better */
  elbo: number;
  reconstruction: number;
  kl: number;
  /** logLikelihood: mean log p(x) (importance-sampled); negative: −logLikelihood as scvi's
   * get_marginal_ll reports it, comparable to `elbo` and never above it in expectation;
   * gapToElbo = elbo − negative (≥ 0: how loose the bound is) */
  marginalLogLikelihood: {
    samples: number;
    logLikelihood: number;
    negative: number;
    gapToElbo: number;
  } | null;
  knnAccuracy:
    | (Omit<KnnAccuracy, 'perLabel'> & { perLabel: { label: string; nCells: number; accuracy: number }[] })
    | null;
  batchMixing:
    | (Omit<BatchMixing, 'perBatch'> & {
        perBatch: { batch: string; nCells: number; normalizedEntropy: number }[];
      })
    | null;
  notes: string[];
}

interface ChunkResult {
  reconstruction: Float32Array;
  kl: Float32Array;
  marginal: Float64Array | null;
  qm: Float32Array | null;
}

export async function evaluateModel(
  engine: InferenceEngine,
  plan: ChunkPlan,
  opts: EvaluateOptions,
): Promise<EvaluationReport> {
  const L = engine.config.nLatent;
  const n = plan.cells.length;
  if (n === 0) throw new Error('no cells to evaluate');
  // positions (in plan order) whose latent means feed the kNN metrics
  const metricPos = subsampleIndices(n, opts.maxMetricCells, opts.seed);
  const inMetric = new Int32Array(n).fill(-1);
  metricPos.forEach((p, r) => (inMetric[p] = r));
  const m = metricPos.length;
  const latent = new Float32Array(m * L);
  const labels = new Int32Array(m);
  const batches = new Int32Array(m);
  let sumRec = 0,
    sumKl = 0,
    sumMarg = 0;
  let perCell: TableWriter | null = opts.perCellOut ? createTableWriter(opts.perCellOut) : null;
  try {
    await forEachChunk<ChunkResult>(
      plan,
      engine.parallelism,
      async (c) => {
        const needLatent = metricPos.length > 0 && inMetricRange(inMetric, c.offset, c.batch.nCells);
        const [terms, marginal, enc] = await Promise.all([
          evaluateCells(engine, c.batch, opts.elboNoise, c.index),
          opts.samples > 0
            ? marginalCells(engine, c.batch, opts.samples, opts.seed, c.index)
            : Promise.resolve(null),
          needLatent ? encodeCells(engine, c.batch) : Promise.resolve(null),
        ]);
        return { reconstruction: terms.reconstruction, kl: terms.kl, marginal, qm: enc ? enc.qm : null };
      },
      async (c, r) => {
        const k = c.batch.nCells;
        const elbo = new Float32Array(k);
        for (let i = 0; i < k; i++) {
          sumRec += r.reconstruction[i]!;
          sumKl += r.kl[i]!;
          elbo[i] = r.reconstruction[i]! + r.kl[i]!;
          if (r.marginal) sumMarg += r.marginal[i]!;
          const row = inMetric[c.offset + i]!;
          if (row >= 0) {
            latent.set(r.qm!.subarray(i * L, (i + 1) * L), row * L);
            labels[row] = c.batch.label[i]!;
            batches[row] = c.datasetBatch[i]!;
          }
        }
        if (perCell) {
          await perCell.write({
            cell_index: c.batch.cellIndex,
            batch: Array.from(c.datasetBatch, (b) => nameOf(opts.naming.batchNames, b)),
            label: Array.from(c.batch.label, (l) => nameOf(opts.naming.labelNames, l)),
            reconstruction: r.reconstruction,
            kl: r.kl,
            elbo,
            ...(r.marginal ? { marginal_ll: Float32Array.from(r.marginal) } : {}),
          });
        }
        opts.onChunk?.(k);
      },
    );
    await perCell?.close();
    perCell = null;
  } finally {
    perCell?.abort();
  }

  const notes: string[] = [];
  if (m < n)
    notes.push(`latent metrics computed on a seeded subsample of ${m} of ${n} cells (--max-metric-cells)`);
  const rec = sumRec / n,
    kl = sumKl / n;
  const report: EvaluationReport = {
    nCells: n,
    elbo: rec + kl,
    reconstruction: rec,
    kl,
    marginalLogLikelihood:
      opts.samples > 0
        ? {
            samples: opts.samples,
            logLikelihood: sumMarg / n,
            negative: -sumMarg / n,
            gapToElbo: rec + kl + sumMarg / n,
          }
        : null,
    knnAccuracy: null,
    batchMixing: null,
    notes,
  };

  const nLabelled = labels.reduce((s, l) => s + (l >= 0 ? 1 : 0), 0);
  const distinctLabels = new Set(Array.from(labels).filter((l) => l >= 0)).size;
  if (opts.naming.labelNames.length && nLabelled >= 2 * opts.knnFolds && distinctLabels >= 2) {
    opts.onPhase?.('kNN cell-type accuracy');
    const acc = knnCrossValidatedAccuracy(latent, L, labels, {
      k: opts.knnK,
      folds: opts.knnFolds,
      seed: opts.seed,
    });
    report.knnAccuracy = {
      ...acc,
      perLabel: acc.perLabel.map((p) => ({ ...p, label: nameOf(opts.naming.labelNames, p.label) })),
    };
  } else notes.push('kNN accuracy skipped: the dataset has no cell-type labels (or fewer than two)');

  // batch mixing over the batches present among these cells
  const present = [...new Set(batches)].sort((a, b) => a - b);
  if (present.length >= 2) {
    opts.onPhase?.('batch mixing');
    const code = new Map(present.map((b, i) => [b, i]));
    const local = Int32Array.from(batches, (b) => code.get(b)!);
    const mix = batchMixingEntropy(latent, L, local, present.length, { k: Math.min(opts.mixingK, m - 1) });
    report.batchMixing = {
      ...mix,
      perBatch: mix.perBatch.map((p) => ({ ...p, batch: nameOf(opts.naming.batchNames, present[p.batch]!) })),
    };
  } else notes.push('batch mixing skipped: the cells come from a single batch');
  return report;
}

function inMetricRange(inMetric: Int32Array, offset: number, count: number): boolean {
  for (let i = offset; i < offset + count; i++) if (inMetric[i]! >= 0) return true;
  return false;
}
