import test from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeCellBatch,
  encodeCellRows,
  encodeCellBatchWithArrowWriter,
  decodeCellBatch,
  CellBatchFormatError,
} from '@atlasvae/shared/arrow';
import { selectRows, type CellBatch, Rng } from '@atlasvae/shared';

function randomBatch(n: number, G: number, seed: number): CellBatch {
  const rng = new Rng(seed);
  const indptr = new Int32Array(n + 1);
  const idx: number[] = [],
    val: number[] = [];
  const library = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let g = 0; g < G; g++)
      if (rng.uniform() < 0.2) {
        const v = 1 + rng.int(50);
        idx.push(g);
        val.push(v);
        library[i]! += v;
      }
    indptr[i + 1] = idx.length;
  }
  return {
    nCells: n,
    nGenes: G,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(val),
    library,
    batch: Int32Array.from({ length: n }, () => rng.int(3)),
    label: Int32Array.from({ length: n }, () => rng.int(4) - 1),
    cellIndex: Uint32Array.from({ length: n }, (_, i) => 1000 + i * 7),
  };
}

function assertSameBatch(a: CellBatch, b: CellBatch): void {
  assert.equal(a.nCells, b.nCells);
  assert.equal(a.nGenes, b.nGenes);
  for (const k of ['indptr', 'indices', 'counts', 'library', 'batch', 'label', 'cellIndex'] as const)
    assert.deepEqual([...a[k]], [...b[k]], k);
}

test('encodeCellBatch/decodeCellBatch round-trip exactly, also re-encoding a decoded batch', () => {
  const b = randomBatch(130, 300, 1);
  const bytes = encodeCellBatch(b);
  const d = decodeCellBatch(bytes, 300);
  assertSameBatch(d, b);
  // decoded arrays view the message bytes (zero-copy)
  assert.equal(d.indices.buffer, bytes.buffer);
  // a decoded batch shares one buffer for everything: encoding it again must still be exact
  const again = decodeCellBatch(encodeCellBatch(d), 300);
  assertSameBatch(again, b);
  // a batch whose rows start inside its arrays (selectRows of a view)
  const sub = selectRows(b, [5, 3, 100]);
  assertSameBatch(decodeCellBatch(encodeCellBatch(sub), 300), sub);
  const empty = selectRows(b, []);
  assert.equal(decodeCellBatch(encodeCellBatch(empty), 300).nCells, 0);
});

test('decodeCellBatch rejects garbage, truncation and out-of-range genes', () => {
  const b = randomBatch(20, 50, 2);
  const bytes = encodeCellBatch(b);
  assert.throws(() => decodeCellBatch(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), 50), CellBatchFormatError);
  assert.throws(() => decodeCellBatch(bytes.subarray(0, bytes.length - 200), 50), CellBatchFormatError);
  assert.throws(() => decodeCellBatch(bytes, 10), /gene index \d+ outside 0\.\.9/);
});

test("encodeCellBatch writes the bytes of Arrow's own stream writer (odd sizes, empty rows, offset rows, no cells)", () => {
  const b = randomBatch(37, 50, 3);
  const cases: CellBatch[] = [b, randomBatch(1, 7, 4), selectRows(b, [9, 4, 36]), randomBatch(0, 10, 5)];
  // a view whose rows start inside its arrays
  cases.push({
    ...b,
    nCells: 10,
    indptr: b.indptr.subarray(5, 16),
    library: b.library.subarray(5, 15),
    batch: b.batch.subarray(5, 15),
    label: b.label.subarray(5, 15),
    cellIndex: b.cellIndex.subarray(5, 15),
  });
  const empty: CellBatch = { ...randomBatch(3, 5, 6) };
  empty.indptr = new Int32Array(4); // three cells without entries
  empty.indices = new Int32Array(0);
  empty.counts = new Float32Array(0);
  cases.push(empty);
  for (const [i, c] of cases.entries()) {
    const ours = encodeCellBatch(c);
    const arrows = encodeCellBatchWithArrowWriter(c);
    assert.deepEqual(
      Buffer.from(ours.buffer, ours.byteOffset, ours.byteLength),
      Buffer.from(arrows.buffer, arrows.byteOffset, arrows.byteLength),
      `case ${i}`,
    );
    assert.equal(Object.getPrototypeOf(ours), Uint8Array.prototype);
    const d = decodeCellBatch(ours, c.nGenes);
    assert.equal(d.nCells, c.nCells);
    if (c.nCells > 0) assertSameBatch(d, decodeCellBatch(arrows, c.nGenes));
  }
});

test('encodeCellRows gathers rows of several batches into one message, equal to encoding the gathered batch', () => {
  const a = randomBatch(40, 60, 7),
    b = randomBatch(25, 60, 8);
  b.indptr[3] = b.indptr[2]!; // row 2 of b: no entries
  for (let i = 4; i <= 25; i++) b.indptr[i] = Math.max(b.indptr[i]!, b.indptr[3]);
  const picks: [CellBatch, number][] = [
    [a, 39],
    [b, 2],
    [a, 0],
    [b, 24],
    [a, 17],
    [b, 17],
    [a, 17],
  ];
  const from = picks.map((p) => p[0]);
  const rows = Int32Array.from(picks, (p) => p[1]);
  const bytes = encodeCellRows(from, rows);
  // the same cells gathered by hand
  const expected: CellBatch = {
    nCells: picks.length,
    nGenes: 60,
    indptr: new Int32Array(picks.length + 1),
    indices: new Int32Array(0),
    counts: new Float32Array(0),
    library: Float32Array.from(picks, ([c, r]) => c.library[r]!),
    batch: Int32Array.from(picks, ([c, r]) => c.batch[r]!),
    label: Int32Array.from(picks, ([c, r]) => c.label[r]!),
    cellIndex: Uint32Array.from(picks, ([c, r]) => c.cellIndex[r]!),
  };
  const gi: number[] = [],
    cv: number[] = [];
  picks.forEach(([c, r], i) => {
    for (let k = c.indptr[r]!; k < c.indptr[r + 1]!; k++) {
      gi.push(c.indices[k]!);
      cv.push(c.counts[k]!);
    }
    expected.indptr[i + 1] = gi.length;
  });
  expected.indices = Int32Array.from(gi);
  expected.counts = Float32Array.from(cv);
  assertSameBatch(decodeCellBatch(bytes, 60), expected);
  assert.deepEqual(Buffer.from(bytes), Buffer.from(encodeCellBatchWithArrowWriter(expected)));
  assert.throws(() => encodeCellRows([a], [40]), RangeError);
  assert.throws(() => encodeCellRows([a, b], [0]), /one source batch per row/);
});
