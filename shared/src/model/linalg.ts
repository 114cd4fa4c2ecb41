// Dense row-major matrix helpers for the hand-written forward/backward passes. Large products go
// to the TensorFlow.js backend (XNNPACK on wasm) and always in the plain, non-transposed form
// (the transposed-flag forms are ~12x slower on wasm); small ones stay in JS where a backend
// call would cost more than the arithmetic.
import * as tf from '@tensorflow/tfjs-core';

/** products below this many multiply-adds run in JS */
let BACKEND_MIN_MACS = 1 << 17;

/** Route products of at least `macs` multiply-adds to the backend (tests use 0 to force it). */
export function setBackendMatmulThreshold(macs: number): void {
  BACKEND_MIN_MACS = macs;
}

/** C[m×n] = A[m×k] · B[k×n] */
export function matmul(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Float32Array {
  if (m * k * n >= BACKEND_MIN_MACS) {
    const ta = tf.tensor2d(a, [m, k]);
    const tb = tf.tensor2d(b, [k, n]);
    const tc = tf.matMul(ta, tb);
    const c = tc.dataSync() as Float32Array;
    ta.dispose();
    tb.dispose();
    tc.dispose();
    return c;
  }
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p]!;
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] += av * b[bp + j]!;
    }
  }
  return c;
}

/** Bᵀ of a row-major [rows×cols] matrix, as [cols×rows]. */
export function transpose(a: Float32Array, rows: number, cols: number, out = new Float32Array(rows * cols)): Float32Array {
  // blocked for cache locality
  const BS = 32;
  for (let i0 = 0; i0 < rows; i0 += BS) {
    const i1 = Math.min(i0 + BS, rows);
    for (let j0 = 0; j0 < cols; j0 += BS) {
      const j1 = Math.min(j0 + BS, cols);
      for (let i = i0; i < i1; i++) {
        const ai = i * cols;
        for (let j = j0; j < j1; j++) out[j * rows + i] = a[ai + j]!;
      }
    }
  }
  return out;
}

/** out[j] += Σ_i a[i, j]: column sums of [rows×cols] added into out. */
export function addColumnSums(a: Float32Array, rows: number, cols: number, out: Float32Array, outOffset = 0): void {
  for (let i = 0; i < rows; i++) {
    const ai = i * cols;
    for (let j = 0; j < cols; j++) out[outOffset + j] += a[ai + j]!;
  }
}

/** rows of a += bias */
export function addBias(a: Float32Array, rows: number, cols: number, bias: Float32Array): void {
  for (let i = 0; i < rows; i++) {
    const ai = i * cols;
    for (let j = 0; j < cols; j++) a[ai + j] += bias[j]!;
  }
}
