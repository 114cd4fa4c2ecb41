// UMAP of latent means to 2-D, seeded. The algorithm is UMAP's (McInnes et al.; as umap-learn and
// umap-js): exact kNN graph (k-d tree), smooth-kNN σ/ρ per cell, fuzzy union W + Wᵀ − W∘Wᵀ,
// epochs-per-sample SGD with negative sampling and the a/b curve fitted by umap-js. It is
// written over typed arrays because umap-js's own graph (string-keyed maps, arrays of arrays)
// took ~57 min and 2.3 GB for 100k cells here; this takes ~2.5 CPU-minutes.
// Every random draw comes from Rng(UMAP_STREAM, seed): the same input gives the same picture.

import { createRequire } from 'node:module';
import { Rng } from '@atlasvae/shared';
import { kdTreeKnn } from './kdtree.js';

const UMAP_STREAM = 0x554d4150; // "UMAP"

// umap-js's curve fit of (a, b) for min_dist/spread; not re-exported by its package index
const { findABParams } = createRequire(import.meta.url)('umap-js/dist/umap.js') as {
  findABParams: (spread: number, minDist: number) => { a: number; b: number };
};

export interface UmapOptions {
  seed?: number;
  nNeighbors?: number;
  minDist?: number;
  /** optimisation epochs (default as umap-learn: 500 below 10k cells, 200 above) */
  nEpochs?: number;
  onPhase?: (phase: 'neighbours' | 'layout') => void;
  onEpoch?: (epoch: number, total: number) => void;
}

/** σ_i (binary search so that Σ_j exp(−(d_ij − ρ_i)/σ_i) = log2 k) and ρ_i (nearest distance). */
function smoothKnn(dist: Float32Array, n: number, k: number): { sigma: Float64Array; rho: Float64Array } {
  const target = Math.log2(k + 1); // k others + the cell itself, as umap counts it
  const sigma = new Float64Array(n);
  const rho = new Float64Array(n);
  let meanAll = 0;
  for (let t = 0; t < dist.length; t++) meanAll += dist[t]!;
  meanAll /= dist.length;
  for (let i = 0; i < n; i++) {
    const row = dist.subarray(i * k, (i + 1) * k);
    let r = 0;
    for (let j = 0; j < k; j++)
      if (row[j]! > 0) {
        r = row[j]!;
        break;
      }
    rho[i] = r;
    let lo = 0,
      hi = Infinity,
      mid = 1;
    for (let it = 0; it < 64; it++) {
      let s = 1; // the cell itself contributes exp(0)
      for (let j = 0; j < k; j++) {
        const dd = row[j]! - r;
        s += dd > 0 ? Math.exp(-dd / mid) : 1;
      }
      if (Math.abs(s - target) < 1e-5) break;
      if (s > target) {
        hi = mid;
        mid = (lo + hi) / 2;
      } else {
        lo = mid;
        mid = hi === Infinity ? mid * 2 : (lo + hi) / 2;
      }
    }
    let meanI = 0;
    for (let j = 0; j < k; j++) meanI += row[j]!;
    meanI /= k;
    sigma[i] = Math.max(mid, 1e-3 * (r > 0 ? meanI : meanAll));
  }
  return { sigma, rho };
}

/** Symmetric fuzzy graph as an edge list (each undirected edge once, weight w). */
function fuzzyGraph(
  idx: Int32Array,
  dist: Float32Array,
  n: number,
  k: number,
): { head: Int32Array; tail: Int32Array; w: Float64Array } {
  const { sigma, rho } = smoothKnn(dist, n, k);
  const m = n * k;
  const key = new Float64Array(m);
  const val = new Float64Array(m);
  let e = 0;
  for (let i = 0; i < n; i++) {
    for (let s = 0; s < k; s++) {
      const j = idx[i * k + s]!;
      if (j < 0) continue;
      const dd = dist[i * k + s]! - rho[i]!;
      const w = dd <= 0 ? 1 : Math.exp(-dd / sigma[i]!);
      const a = Math.min(i, j),
        b = Math.max(i, j);
      key[e] = a * n + b;
      val[e] = w;
      e++;
    }
  }
  const order = Uint32Array.from({ length: e }, (_, t) => t);
  order.sort((x, y) => key[x]! - key[y]!);
  const head: number[] = [],
    tail: number[] = [],
    ws: number[] = [];
  for (let t = 0; t < e;) {
    const kk = key[order[t]!]!;
    let w = val[order[t]!]!;
    // the same pair from both ends: fuzzy union
    if (t + 1 < e && key[order[t + 1]!] === kk) {
      const w2 = val[order[t + 1]!]!;
      w = w + w2 - w * w2;
      t += 2;
    } else t += 1;
    head.push(Math.floor(kk / n));
    tail.push(kk % n);
    ws.push(w);
  }
  return { head: Int32Array.from(head), tail: Int32Array.from(tail), w: Float64Array.from(ws) };
}

function clip(v: number): number {
  return v > 4 ? 4 : v < -4 ? -4 : v;
}

/** 2-D coordinates [n, 2] of the rows of `points` ([n, dim]). */
export function computeUmap(
  points: Float32Array,
  n: number,
  dim: number,
  opts: UmapOptions = {},
): Float32Array {
  if (n < 3) throw new Error(`UMAP needs at least 3 cells, got ${n}`);
  const rng = new Rng(UMAP_STREAM, opts.seed ?? 0);
  const k = Math.max(1, Math.min((opts.nNeighbors ?? 15) - 1, n - 1));
  opts.onPhase?.('neighbours');
  const knn = kdTreeKnn(points, n, dim, k);
  const g = fuzzyGraph(knn.indices, knn.distances, n, k);
  opts.onPhase?.('layout');
  const nEpochs = opts.nEpochs ?? (n <= 10000 ? 500 : 200);
  const { a, b } = findABParams(1, opts.minDist ?? 0.3);
  let wMax = 0;
  for (let t = 0; t < g.w.length; t++) if (g.w[t]! > wMax) wMax = g.w[t]!;
  // edges sampled less than once over the run are dropped (umap-learn does the same)
  const keep: number[] = [];
  for (let t = 0; t < g.w.length; t++) if (g.w[t]! >= wMax / nEpochs) keep.push(t);
  const E = keep.length;
  const head = Int32Array.from(keep, (t) => g.head[t]!);
  const tail = Int32Array.from(keep, (t) => g.tail[t]!);
  const eps = Float64Array.from(keep, (t) => wMax / g.w[t]!);
  const negRate = 5;
  const epsNeg = Float64Array.from(eps, (v) => v / negRate);
  const nextSample = Float64Array.from(eps);
  const nextNeg = Float64Array.from(epsNeg);
  const y = new Float32Array(n * 2);
  for (let t = 0; t < n * 2; t++) y[t] = rng.uniform() * 20 - 10;
  for (let epoch = 0; epoch < nEpochs; epoch++) {
    const alpha = 1 - epoch / nEpochs;
    for (let e = 0; e < E; e++) {
      if (nextSample[e]! > epoch) continue;
      const i = head[e]!,
        j = tail[e]!;
      // attraction along the edge, moving both ends (the graph is symmetric, each edge listed once)
      let dx = y[2 * i]! - y[2 * j]!,
        dy = y[2 * i + 1]! - y[2 * j + 1]!;
      let d2 = dx * dx + dy * dy;
      if (d2 > 0) {
        const pb = Math.pow(d2, b);
        const c = (-2 * a * b * pb) / (d2 * (a * pb + 1));
        const gx = alpha * clip(c * dx),
          gy = alpha * clip(c * dy);
        y[2 * i]! += gx;
        y[2 * i + 1]! += gy;
        y[2 * j]! -= gx;
        y[2 * j + 1]! -= gy;
      }
      nextSample[e]! += eps[e]!;
      // repulsion from random cells, for both ends (each undirected edge is listed once)
      const nNeg = Math.floor((epoch - nextNeg[e]!) / epsNeg[e]!) + 1;
      for (let end = 0; end < 2; end++) {
        const src = end === 0 ? i : j;
        const sx = 2 * src;
        for (let s = 0; s < nNeg; s++) {
          const o = 2 * Math.floor(rng.uniform() * n);
          if (o === sx) continue;
          dx = y[sx]! - y[o]!;
          dy = y[sx + 1]! - y[o + 1]!;
          d2 = dx * dx + dy * dy;
          if (d2 > 0) {
            const c = (2 * b) / ((0.001 + d2) * (a * Math.pow(d2, b) + 1));
            y[sx]! += alpha * clip(c * dx);
            y[sx + 1]! += alpha * clip(c * dy);
          }
        }
      }
      nextNeg[e]! += nNeg * epsNeg[e]!;
    }
    if (opts.onEpoch && (epoch % 10 === 9 || epoch === nEpochs - 1)) opts.onEpoch(epoch + 1, nEpochs);
  }
  return y;
}
