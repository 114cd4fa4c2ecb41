import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '@atlasvae/shared';
import {
  exactKnn,
  majorityLabel,
  knnCrossValidatedAccuracy,
  batchMixingEntropy,
  subsampleIndices,
} from '@atlasvae/coordinator/results';

function gaussianClusters(
  nPer: number,
  centres: number[][],
  sd: number,
  seed: number,
): { pts: Float32Array; labels: Int32Array; dim: number } {
  const dim = centres[0]!.length;
  const rng = new Rng(seed);
  const n = nPer * centres.length;
  const pts = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % centres.length;
    labels[i] = c;
    for (let d = 0; d < dim; d++) pts[i * dim + d] = centres[c]![d]! + sd * rng.normal();
  }
  return { pts, labels, dim };
}

test('exactKnn matches a naive sort of all distances', () => {
  const { pts, dim } = gaussianClusters(
    60,
    [
      [0, 0, 0],
      [3, 1, 0],
    ],
    1,
    1,
  );
  const n = pts.length / dim;
  const g = exactKnn(pts, n, dim, 7);
  for (let i = 0; i < n; i++) {
    const d: { j: number; d: number }[] = [];
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      let s = 0;
      for (let c = 0; c < dim; c++) s += (pts[i * dim + c]! - pts[j * dim + c]!) ** 2;
      d.push({ j, d: Math.sqrt(s) });
    }
    d.sort((a, b) => a.d - b.d);
    for (let t = 0; t < 7; t++) {
      assert.ok(Math.abs(g.distances[i * 7 + t]! - d[t]!.d) < 1e-5, `cell ${i} rank ${t}`);
    }
    assert.ok(!Array.from(g.indices.subarray(i * 7, i * 7 + 7)).includes(i));
  }
});

test('exactKnn with groups never returns a neighbour from the same group', () => {
  const { pts, dim } = gaussianClusters(
    50,
    [
      [0, 0],
      [1, 1],
    ],
    1,
    2,
  );
  const n = pts.length / dim;
  const group = new Int32Array(n).map((_, i) => i % 3);
  const g = exactKnn(pts, n, dim, 5, { excludeSameGroup: group });
  for (let i = 0; i < n; i++)
    for (let t = 0; t < 5; t++) assert.notEqual(group[g.indices[i * 5 + t]!], group[i]);
});

test('majority vote breaks ties by the nearest neighbour', () => {
  const graph = {
    n: 1,
    k: 4,
    indices: new Int32Array([1, 2, 3, 4]),
    distances: new Float32Array([1, 2, 3, 4]),
  };
  const labels = new Int32Array([0, 5, 7, 7, 5]);
  assert.equal(majorityLabel(graph, 0, labels), 5);
  labels[4] = 7;
  assert.equal(majorityLabel(graph, 0, labels), 7);
});

test('cross-validated kNN accuracy: ~1 for separated clusters, chance for random labels', () => {
  const sep = gaussianClusters(
    80,
    [
      [0, 0, 0, 0],
      [8, 0, 0, 0],
      [0, 8, 0, 0],
      [0, 0, 8, 0],
    ],
    1,
    3,
  );
  const a = knnCrossValidatedAccuracy(sep.pts, sep.dim, sep.labels, { k: 15, folds: 5, seed: 1 });
  assert.equal(a.nCells, 320);
  assert.ok(a.accuracy > 0.99, `separated clusters: ${a.accuracy}`);
  assert.equal(a.perLabel.length, 4);
  // labels unrelated to position: accuracy near 1/4
  const rng = new Rng(9);
  const random = sep.labels.map(() => rng.int(4));
  const r = knnCrossValidatedAccuracy(sep.pts, sep.dim, random, { k: 15, folds: 5, seed: 1 });
  assert.ok(r.accuracy > 0.1 && r.accuracy < 0.4, `random labels: ${r.accuracy}`);
  // overlapping clusters land in between
  const mid = gaussianClusters(
    100,
    [
      [0, 0],
      [1.5, 0],
    ],
    1,
    4,
  );
  const m = knnCrossValidatedAccuracy(mid.pts, mid.dim, mid.labels, { k: 15 });
  assert.ok(m.accuracy > 0.65 && m.accuracy < 0.95, `overlapping: ${m.accuracy}`);
});

test('unknown labels (-1) are left out of the kNN accuracy', () => {
  const sep = gaussianClusters(
    40,
    [
      [0, 0],
      [9, 9],
    ],
    1,
    5,
  );
  const labels = sep.labels.slice();
  for (let i = 0; i < labels.length; i += 4) labels[i] = -1;
  const a = knnCrossValidatedAccuracy(sep.pts, sep.dim, labels);
  assert.equal(a.nCells, 60);
  assert.equal(a.accuracy, 1);
});

test('batch mixing entropy: 0 when batches are separate, ~expected when mixed', () => {
  // batches as separate clusters
  const sep = gaussianClusters(
    100,
    [
      [0, 0],
      [20, 0],
      [0, 20],
    ],
    1,
    6,
  );
  const s = batchMixingEntropy(sep.pts, sep.dim, sep.labels, 3, { k: 30 });
  assert.equal(s.normalizedEntropy, 0);
  assert.ok(Math.abs(s.expectedIfMixed - 1) < 1e-12);
  // batch independent of position
  const rng = new Rng(7);
  const mixed = sep.labels.map(() => rng.int(3));
  const m = batchMixingEntropy(sep.pts, sep.dim, mixed, 3, { k: 30 });
  assert.ok(m.normalizedEntropy > 0.85 && m.normalizedEntropy <= 1, `mixed: ${m.normalizedEntropy}`);
  assert.equal(m.perBatch.length, 3);
});

test('subsampleIndices is seeded, sorted, without repeats', () => {
  const a = subsampleIndices(1000, 100, 3);
  assert.equal(a.length, 100);
  assert.deepEqual(a, subsampleIndices(1000, 100, 3));
  assert.notDeepEqual(a, subsampleIndices(1000, 100, 4));
  for (let i = 1; i < a.length; i++) assert.ok(a[i]! > a[i - 1]!);
  assert.equal(subsampleIndices(50, 100, 3).length, 50);
});

test('k-d tree kNN finds exactly the brute-force neighbour distances (clusters, duplicates)', async () => {
  const { kdTreeKnn } = await import('@atlasvae/coordinator/results');
  const { pts, dim } = gaussianClusters(
    400,
    [
      [0, 0, 0, 0, 0],
      [5, 0, 1, 0, 0],
      [0, 6, 0, 0, 2],
    ],
    1,
    21,
  );
  // a few exact duplicates
  pts.copyWithin(10 * dim, 3 * dim, 4 * dim);
  pts.copyWithin(11 * dim, 3 * dim, 4 * dim);
  const n = pts.length / dim;
  const a = exactKnn(pts, n, dim, 14);
  const b = kdTreeKnn(pts, n, dim, 14);
  for (let i = 0; i < n * 14; i++)
    assert.ok(
      Math.abs(a.distances[i]! - b.distances[i]!) < 1e-6,
      `entry ${i}: ${a.distances[i]} vs ${b.distances[i]}`,
    );
  for (let i = 0; i < n; i++) assert.ok(!Array.from(b.indices.subarray(i * 14, i * 14 + 14)).includes(i));
  // with cross-validation folds excluded
  const group = new Int32Array(n).map((_, i) => (i * 7) % 5);
  const ga = exactKnn(pts, n, dim, 9, { excludeSameGroup: group });
  const gb = kdTreeKnn(pts, n, dim, 9, { excludeSameGroup: group });
  for (let i = 0; i < n * 9; i++)
    assert.ok(Math.abs(ga.distances[i]! - gb.distances[i]!) < 1e-6, `grouped entry ${i}`);
  for (let i = 0; i < n; i++)
    for (let t = 0; t < 9; t++) assert.notEqual(group[gb.indices[i * 9 + t]!], group[i]);
});
