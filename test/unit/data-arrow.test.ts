import test from 'node:test';
import assert from 'node:assert/strict';
import { encodeCellBatch, decodeCellBatch, CellBatchFormatError } from '@atlasvae/shared/arrowBatch';
import { selectRows, type CellBatch } from '@atlasvae/shared/batch';
import { Rng } from '@atlasvae/shared/rng';

function randomBatch(n: number, G: number, seed: number): CellBatch {
  const rng = new Rng(seed);
  const indptr = new Int32Array(n + 1);
  const idx: number[] = [], val: number[] = [];
  const library = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let g = 0; g < G; g++) if (rng.uniform() < 0.2) { const v = 1 + rng.int(50); idx.push(g); val.push(v); library[i]! += v; }
    indptr[i + 1] = idx.length;
  }
  return {
    nCells: n, nGenes: G, indptr, indices: Int32Array.from(idx), counts: Float32Array.from(val), library,
    batch: Int32Array.from({ length: n }, () => rng.int(3)), label: Int32Array.from({ length: n }, () => rng.int(4) - 1),
    cellIndex: Uint32Array.from({ length: n }, (_, i) => 1000 + i * 7),
  };
}

function assertSameBatch(a: CellBatch, b: CellBatch): void {
  assert.equal(a.nCells, b.nCells);
  assert.equal(a.nGenes, b.nGenes);
  for (const k of ['indptr', 'indices', 'counts', 'library', 'batch', 'label', 'cellIndex'] as const) assert.deepEqual([...a[k]], [...b[k]], k);
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
