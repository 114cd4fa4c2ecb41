// Exact k-nearest neighbours in the latent space (Euclidean), by blocked brute force: latent
// spaces have ~10 dimensions, where trees gain little and exactness keeps the metrics honest.
// Cost is O(n² · dim); callers subsample large datasets (see evaluate's --max-cells).

export interface KnnGraph {
  n: number;
  k: number;
  /** neighbour indices, [n, k] row-major, nearest first; -1 where fewer than k candidates exist */
  indices: Int32Array;
  /** Euclidean distances matching `indices` */
  distances: Float32Array;
}

export interface KnnOptions {
  /** neighbours j of i must satisfy group[j] !== group[i] (cross-validation folds) */
  excludeSameGroup?: Int32Array;
  /** called every few hundred query cells with the number done */
  onProgress?: (done: number) => void;
}

/**
 * The k nearest other points of every point. `points` is [n, dim] row-major.
 * A point is never its own neighbour.
 */
export function exactKnn(
  points: Float32Array,
  n: number,
  dim: number,
  k: number,
  opts: KnnOptions = {},
): KnnGraph {
  if (points.length !== n * dim)
    throw new Error(`exactKnn: points has ${points.length} values, expected ${n}×${dim}`);
  const indices = new Int32Array(n * k).fill(-1);
  const distances = new Float32Array(n * k).fill(Infinity);
  const group = opts.excludeSameGroup;
  // top-k per query kept sorted ascending in local buffers (insertion: k is small)
  const bestD = new Float64Array(k);
  const bestI = new Int32Array(k);
  const q = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    bestD.fill(Infinity);
    bestI.fill(-1);
    let worst = Infinity;
    let count = 0;
    const gi = group ? group[i]! : 0;
    for (let c = 0; c < dim; c++) q[c] = points[i * dim + c]!;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      if (group && group[j] === gi) continue;
      const o = j * dim;
      let d = 0;
      let c = 0;
      // partial sums allow an early exit once the candidate is already worse than the k-th best
      for (; c < dim; c++) {
        const t = points[o + c]! - q[c]!;
        d += t * t;
        if (d >= worst) break;
      }
      if (c < dim) continue;
      // insert into the sorted list
      let p = count < k ? count++ : k - 1;
      while (p > 0 && bestD[p - 1]! > d) {
        bestD[p] = bestD[p - 1]!;
        bestI[p] = bestI[p - 1]!;
        p--;
      }
      bestD[p] = d;
      bestI[p] = j;
      if (count === k) worst = bestD[k - 1]!;
    }
    for (let t = 0; t < k; t++) {
      indices[i * k + t] = bestI[t]!;
      distances[i * k + t] = Math.sqrt(bestD[t]!);
    }
    if (opts.onProgress && (i + 1) % 500 === 0) opts.onProgress(i + 1);
  }
  opts.onProgress?.(n);
  return { n, k, indices, distances };
}

/**
 * Majority vote of the neighbours' labels; ties go to the tied label whose nearest member is
 * closest (so the vote is deterministic and distance-aware).
 */
export function majorityLabel(graph: KnnGraph, i: number, labels: Int32Array): number {
  const counts = new Map<number, { n: number; first: number }>();
  for (let t = 0; t < graph.k; t++) {
    const j = graph.indices[i * graph.k + t]!;
    if (j < 0) break;
    const l = labels[j]!;
    const e = counts.get(l);
    if (e) e.n++;
    else counts.set(l, { n: 1, first: t });
  }
  let best = -1;
  let bestN = 0;
  let bestFirst = Infinity;
  for (const [l, e] of counts) {
    if (e.n > bestN || (e.n === bestN && e.first < bestFirst)) {
      best = l;
      bestN = e.n;
      bestFirst = e.first;
    }
  }
  return best;
}
