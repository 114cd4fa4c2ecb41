// Everything a device call needs from the host, packed into ONE Float32Array (one upload), and its
// unpacking on the device. k microbatches of up to m cells become k·m rows (microbatch j at rows
// j·m …): a short microbatch is padded with masked rows (x = 0, library 1, noise 0) that BatchNorm
// statistics and the loss leave out.
//
// Layout: a row block [rows, C] of per-cell columns
//   library | mask | klWeight | maskOverN | llConst | onehot(batch) [nBatch] | noise [nLatent] | dropout [nLayers·nHidden]
// then the counts: dense [rows, nGenes], or (when smaller) sparse as nnz values then nnz (row, gene)
// pairs, scattered into a dense matrix on the device. Indices travel as floats: exact below 2^24.
import type * as tfNs from '@tensorflow/tfjs-core';
import type { CellBatch, ModelConfig } from '@atlasvae/shared';
import { logFactorial } from '@atlasvae/shared/model';

type Tensor = tfNs.Tensor;

const LOG_2PI = Math.log(2 * Math.PI);

/** One microbatch (or inference chunk) as the packer takes it. */
export interface PackItem {
  batch: CellBatch;
  /** [nCells, nLatent]: ε (training, evaluate) or z (logLikelihood, decodeScale); null: zeros */
  noise: Float32Array | null;
  /** one mask per encoder layer, [nCells, nHidden]; null: no dropout (mask 1) */
  dropout: Float32Array[] | null;
  klWeight: number;
  /** every cell decoded as this batch (decodeScale's transformBatch) */
  batchOverride?: number;
}

export interface PackedCall {
  data: Float32Array;
  k: number;
  m: number;
  rows: number;
  rowCols: number;
  withDropout: boolean;
  nnz: number;
  sparse: boolean;
  sizes: number[];
}

/** Sparse upload when 3·nnz floats are fewer than the dense matrix (override for tests). */
let SPARSE_UPLOAD = true;
export function setSparseUpload(on: boolean): void {
  SPARSE_UPLOAD = on;
}

/** log p(x|z) terms that depend on the counts alone, per cell, in float64 (as the JS model forms them). */
function llConstant(cfg: ModelConfig, b: CellBatch, i: number): number {
  let lf = 0;
  let xSum = 0;
  for (let p = b.indptr[i]!; p < b.indptr[i + 1]!; p++) {
    const x = b.counts[p]!;
    if (x > 0) {
      lf += logFactorial(x);
      xSum += x;
    }
  }
  switch (cfg.likelihood) {
    case 'nb':
    case 'zinb':
      return -lf;
    case 'poisson': {
      // Σ x log(lib·s) − Σ μ − Σ log x!  with Σ μ = lib; the device adds Σ x log s
      const lib = b.library[i]!;
      return (xSum > 0 ? xSum * Math.log(lib) : 0) - lib - lf;
    }
    case 'gaussian':
      return -0.5 * cfg.nGenes * LOG_2PI;
  }
}

export function packCall(cfg: ModelConfig, items: PackItem[], withDropout: boolean): PackedCall {
  const G = cfg.nGenes;
  const K = cfg.nBatch;
  const L = cfg.nLatent;
  const D = withDropout ? cfg.nLayers * cfg.nHidden : 0;
  const k = items.length;
  let m = 0;
  let nnz = 0;
  items.forEach((it, j) => {
    const b = it.batch;
    if (b.nGenes !== G) throw new RangeError(`microbatch ${j} has ${b.nGenes} genes, the model ${G}`);
    if (b.nCells < 1) throw new RangeError(`microbatch ${j} has no cells`);
    if (it.noise && it.noise.length !== b.nCells * L)
      throw new RangeError(`microbatch ${j}: noise has ${it.noise.length} values, expected ${b.nCells * L}`);
    if (withDropout && it.dropout) {
      if (it.dropout.length !== cfg.nLayers)
        throw new RangeError(
          `microbatch ${j}: ${it.dropout.length} dropout masks, expected ${cfg.nLayers} (one per encoder layer)`,
        );
      it.dropout.forEach((d, l) => {
        if (d.length !== b.nCells * cfg.nHidden)
          throw new RangeError(
            `microbatch ${j}: dropout mask ${l} has ${d.length} values, expected ${b.nCells * cfg.nHidden}`,
          );
      });
    }
    m = Math.max(m, b.nCells);
    nnz += b.indptr[b.nCells]! - b.indptr[0]!;
  });
  const rows = k * m;
  if (rows >= 1 << 24 || G >= 1 << 24)
    throw new RangeError(`${rows} rows × ${G} genes: too many for float-coded indices`);
  const sparse = SPARSE_UPLOAD && nnz > 0 && 3 * nnz < rows * G;
  const sizes = [1, 1, 1, 1, 1, K, L];
  if (D > 0) sizes.push(D);
  const C = sizes.reduce((a, b) => a + b, 0);
  const data = new Float32Array(rows * C + (sparse ? 3 * nnz : rows * G));
  const countsAt = rows * C;
  let q = 0;
  items.forEach((it, j) => {
    const b = it.batch;
    const n = b.nCells;
    for (let r = 0; r < m; r++) {
      const o = (j * m + r) * C;
      if (r >= n) {
        data[o] = 1; // library of a padded row: keeps its logs finite
        continue;
      }
      data[o] = b.library[r]!;
      data[o + 1] = 1;
      data[o + 2] = it.klWeight;
      data[o + 3] = 1 / n;
      data[o + 4] = llConstant(cfg, b, r);
      const code = it.batchOverride ?? b.batch[r]!;
      if (!(code >= 0 && code < K))
        throw new RangeError(`batch code ${code} of cell ${r} is outside 0..${K - 1}`);
      data[o + 5 + code] = 1;
      if (it.noise) data.set(it.noise.subarray(r * L, (r + 1) * L), o + 5 + K);
      if (D > 0) {
        const H = cfg.nHidden;
        // a microbatch without masks keeps every unit (mask 1), as the JS model does
        if (it.dropout)
          it.dropout.forEach((d, l) => data.set(d.subarray(r * H, (r + 1) * H), o + 5 + K + L + l * H));
        else data.fill(1, o + 5 + K + L, o + 5 + K + L + D);
      }
      const row = j * m + r;
      for (let p = b.indptr[r]!; p < b.indptr[r + 1]!; p++) {
        if (sparse) {
          data[countsAt + q] = b.counts[p]!;
          data[countsAt + nnz + 2 * q] = row;
          data[countsAt + nnz + 2 * q + 1] = b.indices[p]!;
          q++;
        } else data[countsAt + row * G + b.indices[p]!] = b.counts[p]!;
      }
    }
  });
  return { data, k, m, rows, rowCols: C, withDropout: D > 0, nnz, sparse, sizes };
}

/** The call's inputs on the device. Column tensors are [rows, 1]. */
export interface DeviceInputs {
  k: number;
  m: number;
  rows: number;
  library: Tensor;
  mask: Tensor;
  klWeight: Tensor;
  maskOverN: Tensor;
  llConst: Tensor;
  onehot: Tensor;
  noise: Tensor;
  dropout: Tensor[] | null;
  /** counts [rows, nGenes] */
  x: Tensor;
  /** log1p(counts) */
  logX: Tensor;
}

/** Upload the packed call (the one host→device transfer) and slice it into its parts on the device. */
export function unpackOnDevice(tf: typeof tfNs, cfg: ModelConfig, p: PackedCall): DeviceInputs {
  const G = cfg.nGenes;
  const flat = tf.tensor1d(p.data, 'float32');
  const block = tf.reshape(tf.slice(flat, 0, p.rows * p.rowCols), [p.rows, p.rowCols]);
  const parts = tf.split(block, p.sizes, 1);
  let x: Tensor;
  const at = p.rows * p.rowCols;
  if (p.sparse) {
    const values = tf.slice(flat, at, p.nnz);
    const idx = tf.cast(tf.reshape(tf.slice(flat, at + p.nnz, 2 * p.nnz), [p.nnz, 2]), 'int32');
    x = tf.scatterND(idx, values, [p.rows, G]);
  } else x = tf.reshape(tf.slice(flat, at, p.rows * G), [p.rows, G]);
  let dropout: Tensor[] | null = null;
  if (p.withDropout) {
    const all = parts[7]!;
    dropout = cfg.nLayers === 1 ? [all] : tf.split(all, cfg.nLayers, 1);
  }
  return {
    k: p.k,
    m: p.m,
    rows: p.rows,
    library: parts[0]!,
    mask: parts[1]!,
    klWeight: parts[2]!,
    maskOverN: parts[3]!,
    llConst: parts[4]!,
    onehot: parts[5]!,
    noise: parts[6]!,
    dropout,
    x,
    logX: tf.log1p(x),
  };
}
