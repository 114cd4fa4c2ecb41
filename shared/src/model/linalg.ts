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

/**
 * A row-major matrix whose backend tensor is created once and kept until dispose(): weights used by
 * several products between parameter updates are uploaded once, and the backend's packed copy of a
 * right-hand operand (XNNPACK packs it per tensor) is reused.
 */
export class Mat {
  private t: tf.Tensor2D | null = null;
  constructor(
    readonly data: Float32Array,
    readonly rows: number,
    readonly cols: number,
  ) {}
  tensor(): tf.Tensor2D {
    if (!this.t) this.t = tf.tensor2d(this.data, [this.rows, this.cols]);
    return this.t;
  }
  dispose(): void {
    this.t?.dispose();
    this.t = null;
  }
}

export type Operand = Float32Array | Mat;

function dataOf(x: Operand): Float32Array {
  return x instanceof Mat ? x.data : x;
}

/** per-cell products are routed as if they had this many cells (see `matmul`'s routeMacs) */
export const ROUTE_CELLS = 128;

/**
 * C[m×n] = A[m×k] · B[k×n]. On the backend the right operand B is the one packed per call, so
 * callers arrange products to have a small B, or a cached Mat. `routeMacs` (default m·k·n) decides
 * JS vs backend; evaluation-mode products pass a value independent of the number of cells, so a
 * cell's result never depends on how many cells share its batch.
 */
export function matmul(
  a: Operand,
  m: number,
  k: number,
  b: Operand,
  n: number,
  routeMacs = m * k * n,
): Float32Array {
  if (routeMacs >= BACKEND_MIN_MACS) {
    const ta = a instanceof Mat ? a.tensor() : tf.tensor2d(a, [m, k]);
    const tb = b instanceof Mat ? b.tensor() : tf.tensor2d(b, [k, n]);
    const tc = tf.matMul(ta, tb);
    const c = tc.dataSync() as Float32Array;
    if (!(a instanceof Mat)) ta.dispose();
    if (!(b instanceof Mat)) tb.dispose();
    tc.dispose();
    return c;
  }
  return matmulJs(dataOf(a), m, k, dataOf(b), n);
}

function matmulJs(a: Float32Array, m: number, k: number, b: Float32Array, n: number): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p]!;
      if (av === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j]! += av * b[bp + j]!;
    }
  }
  return c;
}

/**
 * Bᵀ of a row-major [rows×cols] matrix, as [cols×rows]. Eight rows at a time: each step reads one
 * element of eight rows (eight sequential streams) and writes eight contiguous floats of the
 * output, over column blocks that keep those streams in L1. 2–3× faster in V8 than a 32×32 tiled
 * loop (about 1 ns per element for [128 × 2000]); the transposes were ~7% of a worker's step.
 */
export function transpose(
  a: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  if (a.length < rows * cols || out.length < rows * cols)
    throw new RangeError(
      `transpose: ${rows}×${cols} needs ${rows * cols} floats (in ${a.length}, out ${out.length})`,
    );
  const BS = 128;
  let i = 0;
  for (; i + 7 < rows; i += 8) {
    const r0 = i * cols;
    for (let j0 = 0; j0 < cols; j0 += BS) {
      const j1 = Math.min(j0 + BS, cols);
      let o = j0 * rows + i;
      for (let j = j0; j < j1; j++, o += rows) {
        let r = r0 + j;
        out[o] = a[r]!;
        r += cols;
        out[o + 1] = a[r]!;
        r += cols;
        out[o + 2] = a[r]!;
        r += cols;
        out[o + 3] = a[r]!;
        r += cols;
        out[o + 4] = a[r]!;
        r += cols;
        out[o + 5] = a[r]!;
        r += cols;
        out[o + 6] = a[r]!;
        r += cols;
        out[o + 7] = a[r]!;
      }
    }
  }
  for (; i < rows; i++) {
    const r = i * cols;
    for (let j = 0, o = i; j < cols; j++, o += rows) out[o] = a[r + j]!;
  }
  return out;
}

/** out[j] += Σ_i a[i, j]: column sums of [rows×cols] added into out. */
export function addColumnSums(
  a: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array,
  outOffset = 0,
): void {
  for (let i = 0; i < rows; i++) {
    const ai = i * cols;
    for (let j = 0; j < cols; j++) out[outOffset + j]! += a[ai + j]!;
  }
}

/** rows of a += bias */
export function addBias(a: Float32Array, rows: number, cols: number, bias: Float32Array): void {
  for (let i = 0; i < rows; i++) {
    const ai = i * cols;
    for (let j = 0; j < cols; j++) a[ai + j]! += bias[j]!;
  }
}
