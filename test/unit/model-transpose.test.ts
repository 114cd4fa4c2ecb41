// The model's transpose (eight rows at a time over column blocks) against the definition, over
// shapes that hit every remainder: fewer than eight rows, rows not a multiple of eight, columns
// below, at and beyond one block, single rows and columns, empty matrices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { transpose } from '@atlasvae/shared/model';
import { Rng } from '@atlasvae/shared';

function naive(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

test('transpose equals the definition for every remainder of rows and column blocks', () => {
  const rng = new Rng(3);
  const sizes = [0, 1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 130, 257];
  for (const rows of sizes) {
    for (const cols of sizes) {
      const a = Float32Array.from({ length: rows * cols }, () => rng.uniform() * 2 - 1);
      const got = transpose(a, rows, cols);
      assert.deepEqual(got, naive(a, rows, cols), `${rows}×${cols}`);
      assert.deepEqual(transpose(got, cols, rows), a, `${rows}×${cols} transposed twice`);
    }
  }
});

test('transpose writes into the given output, the model shapes included, and refuses short arrays', () => {
  const rng = new Rng(4);
  for (const [rows, cols] of [
    [128, 2000],
    [2000, 128],
    [100, 1000],
    [3, 2000],
  ] as const) {
    const a = Float32Array.from({ length: rows * cols }, () => rng.uniform());
    const out = new Float32Array(rows * cols).fill(NaN);
    assert.equal(transpose(a, rows, cols, out), out);
    assert.deepEqual(out, naive(a, rows, cols), `${rows}×${cols}`);
  }
  assert.throws(() => transpose(new Float32Array(5), 2, 3), /2×3 needs 6 floats \(in 5, out 6\)/);
  assert.throws(() => transpose(new Float32Array(6), 2, 3, new Float32Array(4)), /in 6, out 4/);
});
