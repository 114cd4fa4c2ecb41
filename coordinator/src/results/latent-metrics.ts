// Quality metrics of a latent space: cross-validated kNN cell-type accuracy and batch mixing.

import { Rng } from '@atlasvae/shared';
import { majorityLabel, type KnnGraph } from './knn.js';
import { kdTreeKnn } from './kdtree.js';

const FOLD_STREAM = 0x464f4c44; // "FOLD"
const SUBSAMPLE_STREAM = 0x53554253; // "SUBS"

export interface KnnAccuracy {
  k: number;
  folds: number;
  /** cells with a known label that took part */
  nCells: number;
  /** fraction of cells whose label equals the majority label of their k nearest out-of-fold cells */
  accuracy: number;
  /** accuracy per label code (cells of that label) */
  perLabel: { label: number; nCells: number; accuracy: number }[];
  /** accuracy averaged over labels (robust to imbalance) */
  balancedAccuracy: number;
}

/**
 * k-fold cross-validated k-NN classification of cell type on the latent means: each cell is
 * classified by its k nearest neighbours among the cells of the other folds (folds stratified
 * by label, seeded). Cells with label < 0 (unknown) are left out.
 */
export function knnCrossValidatedAccuracy(
  latent: Float32Array,
  dim: number,
  labels: Int32Array,
  opts: {
    k?: number;
    folds?: number;
    seed?: number;
    onProgress?: (done: number, total: number) => void;
  } = {},
): KnnAccuracy {
  const k = opts.k ?? 15;
  const folds = opts.folds ?? 5;
  const n = labels.length;
  const known: number[] = [];
  for (let i = 0; i < n; i++) if (labels[i]! >= 0) known.push(i);
  const m = known.length;
  if (m < folds * 2) throw new Error(`kNN accuracy needs at least ${folds * 2} labelled cells, found ${m}`);
  const pts = new Float32Array(m * dim);
  const lab = new Int32Array(m);
  known.forEach((c, r) => {
    pts.set(latent.subarray(c * dim, (c + 1) * dim), r * dim);
    lab[r] = labels[c]!;
  });
  // stratified folds: within each label, a seeded shuffle dealt round-robin (continuing across labels)
  const rng = new Rng(FOLD_STREAM, opts.seed ?? 0);
  const byLabel = new Map<number, number[]>();
  for (let r = 0; r < m; r++) {
    const l = lab[r]!;
    if (!byLabel.has(l)) byLabel.set(l, []);
    byLabel.get(l)!.push(r);
  }
  const fold = new Int32Array(m);
  let deal = 0;
  for (const l of [...byLabel.keys()].sort((a, b) => a - b)) {
    const rows = rng.shuffle(byLabel.get(l)!);
    for (const r of rows) fold[r] = deal++ % folds;
  }
  const graph = kdTreeKnn(pts, m, dim, Math.min(k, m - 1), {
    excludeSameGroup: fold,
    onProgress: opts.onProgress ? (d) => opts.onProgress!(d, m) : undefined,
  });
  let correct = 0;
  const per = new Map<number, { n: number; ok: number }>();
  for (let r = 0; r < m; r++) {
    const ok = majorityLabel(graph, r, lab) === lab[r] ? 1 : 0;
    correct += ok;
    const e = per.get(lab[r]!) ?? { n: 0, ok: 0 };
    e.n++;
    e.ok += ok;
    per.set(lab[r]!, e);
  }
  const perLabel = [...per.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([label, e]) => ({ label, nCells: e.n, accuracy: e.ok / e.n }));
  const balancedAccuracy = perLabel.reduce((s, p) => s + p.accuracy, 0) / perLabel.length;
  return { k: graph.k, folds, nCells: m, accuracy: correct / m, perLabel, balancedAccuracy };
}

export interface BatchMixing {
  k: number;
  nCells: number;
  nBatch: number;
  /** mean over cells of H(batches among the k neighbours) / log(nBatch): 0 = no mixing, 1 = uniform */
  normalizedEntropy: number;
  /** the same quantity for a perfectly mixed space: the entropy of the global batch frequencies / log(nBatch) */
  expectedIfMixed: number;
  perBatch: { batch: number; nCells: number; normalizedEntropy: number }[];
}

/** Normalized entropy of batch labels among each cell's k nearest neighbours (self excluded). */
export function batchMixingEntropy(
  latent: Float32Array,
  dim: number,
  batch: Int32Array,
  nBatch: number,
  opts: { k?: number; graph?: KnnGraph; onProgress?: (done: number, total: number) => void } = {},
): BatchMixing {
  const n = batch.length;
  if (nBatch < 2) throw new Error('batch mixing needs at least two batches');
  const graph =
    opts.graph ??
    kdTreeKnn(latent, n, dim, Math.min(opts.k ?? 50, n - 1), {
      onProgress: opts.onProgress ? (d) => opts.onProgress!(d, n) : undefined,
    });
  const logB = Math.log(nBatch);
  const counts = new Float64Array(nBatch);
  const per = new Float64Array(nBatch);
  const perN = new Float64Array(nBatch);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    counts.fill(0);
    let tot = 0;
    for (let t = 0; t < graph.k; t++) {
      const j = graph.indices[i * graph.k + t]!;
      if (j < 0) break;
      counts[batch[j]!]!++;
      tot++;
    }
    let h = 0;
    for (let b = 0; b < nBatch; b++) {
      const p = counts[b]! / tot;
      if (p > 0) h -= p * Math.log(p);
    }
    h /= logB;
    sum += h;
    per[batch[i]!]! += h;
    perN[batch[i]!]!++;
  }
  const global = new Float64Array(nBatch);
  for (let i = 0; i < n; i++) global[batch[i]!]!++;
  let hGlobal = 0;
  for (let b = 0; b < nBatch; b++) {
    const p = global[b]! / n;
    if (p > 0) hGlobal -= p * Math.log(p);
  }
  return {
    k: graph.k,
    nCells: n,
    nBatch,
    normalizedEntropy: sum / n,
    expectedIfMixed: hGlobal / logB,
    perBatch: [...per].map((s, b) => {
      const cells = perN[b]!;
      return { batch: b, nCells: cells, normalizedEntropy: cells ? s / cells : NaN };
    }),
  };
}

/** A seeded, sorted subsample of `count` of the first `n` integers (all of them when n ≤ count). */
export function subsampleIndices(n: number, count: number, seed: number): Uint32Array {
  const all = new Uint32Array(n);
  for (let i = 0; i < n; i++) all[i] = i;
  if (n <= count) return all;
  const rng = new Rng(SUBSAMPLE_STREAM, seed);
  // partial Fisher–Yates: the first `count` slots become a uniform sample
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(n - i);
    const t = all[i]!;
    all[i] = all[j]!;
    all[j] = t;
  }
  return all.slice(0, count).sort();
}
