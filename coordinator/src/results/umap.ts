// UMAP of latent means to 2-D with umap-js, seeded: umap-js draws every random number (NN-descent,
// initial layout, negative sampling) from the `random` function we give it.

import { UMAP } from 'umap-js';
import { Rng } from '@atlasvae/shared/rng';

const UMAP_STREAM = 0x554d4150; // "UMAP"

export interface UmapOptions {
  seed?: number;
  nNeighbors?: number;
  minDist?: number;
  /** optimisation epochs (umap-js default: 500 below 10k cells, 200 above) */
  nEpochs?: number;
  onPhase?: (phase: 'neighbours' | 'layout') => void;
  onEpoch?: (epoch: number, total: number) => void;
}

/** 2-D coordinates [n, 2] of the rows of `points` ([n, dim]). */
export function computeUmap(points: Float32Array, n: number, dim: number, opts: UmapOptions = {}): Float32Array {
  if (n < 3) throw new Error(`UMAP needs at least 3 cells, got ${n}`);
  const rng = new Rng(UMAP_STREAM, opts.seed ?? 0);
  const umap = new UMAP({
    nComponents: 2,
    nNeighbors: Math.min(opts.nNeighbors ?? 15, n - 1),
    minDist: opts.minDist ?? 0.3,
    nEpochs: opts.nEpochs,
    random: () => rng.uniform(),
  });
  const rows: number[][] = new Array(n);
  for (let i = 0; i < n; i++) rows[i] = Array.from(points.subarray(i * dim, (i + 1) * dim));
  opts.onPhase?.('neighbours');
  const epochs = umap.initializeFit(rows);
  opts.onPhase?.('layout');
  for (let e = 0; e < epochs; e++) {
    umap.step();
    if (opts.onEpoch && (e % 10 === 9 || e === epochs - 1)) opts.onEpoch(e + 1, epochs);
  }
  const emb = umap.getEmbedding();
  const out = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    out[2 * i] = emb[i]![0]!;
    out[2 * i + 1] = emb[i]![1]!;
  }
  return out;
}
