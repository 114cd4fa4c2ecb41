// The scVI model's parameter and buffer storage and its Linear-layer primitives (forward and
// backward, dense on the TensorFlow.js backend or, for a sparse first encoder layer, as fused JS
// loops). The passes built from them are in vae-evaluation.ts and vae.ts.
import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';
import type { GradViews } from './grad-views.js';
import { bufferLayout, paramLayout, initBuffers, initParams } from './layout.js';
import { addBias, addColumnSums, Mat, matmul, ROUTE_CELLS, transpose } from './linalg.js';
import type { ParamLayout } from './types.js';

/**
 * Below this fraction of nonzero counts the first encoder layer runs as a sparse JS product (nnz ×
 * hidden multiply-adds each way) instead of two dense backend products over all genes. The choice
 * depends only on the microbatch, so every process makes the same one.
 */
let SPARSE_INPUT_DENSITY = 0.1;

/** Override the sparse-input threshold (tests force either path with 0 or 1). */
export function setSparseInputDensity(d: number): void {
  SPARSE_INPUT_DENSITY = d;
}

/** Storage and layer primitives of VaeModel (its base class). */
export class VaeLayers {
  readonly layout: ParamLayout;
  readonly bufferLayout: ParamLayout;
  private readonly params: Float32Array;
  private readonly buffers: Float32Array;
  private readonly views = new Map<string, Float32Array>();
  protected readonly bufferViews = new Map<string, Float32Array>();
  /** W and Wᵀ ([in × out], key `prefix^T`) per Linear prefix with backend tensors, valid until the next setParams */
  private readonly mats = new Map<string, Mat>();
  private readonly shapes = new Map<string, { out: number; in: number }>();
  /** reusable work buffers by purpose (each used once per pass; saves large allocations per step) */
  private readonly pool = new Map<string, Float32Array>();

  constructor(readonly config: ModelConfig) {
    if (config.nBatch < 1) throw new RangeError('nBatch must be at least 1');
    this.layout = paramLayout(config);
    this.bufferLayout = bufferLayout(config);
    this.params = initParams(config, 0);
    this.buffers = initBuffers(config);
    for (const e of this.layout.entries) {
      this.views.set(e.name, this.params.subarray(e.offset, e.offset + e.size));
      if (e.name.endsWith('.weight') && e.shape.length === 2)
        this.shapes.set(e.name.slice(0, -'.weight'.length), { out: e.shape[0]!, in: e.shape[1]! });
    }
    for (const e of this.bufferLayout.entries)
      this.bufferViews.set(e.name, this.buffers.subarray(e.offset, e.offset + e.size));
  }

  setParams(flat: Float32Array): void {
    if (flat.length !== this.layout.size)
      throw new RangeError(
        `parameter vector has ${flat.length} floats, the layout needs ${this.layout.size}`,
      );
    this.params.set(flat);
    this.clearMats();
  }

  getParams(): Float32Array {
    return this.params.slice();
  }

  setBuffers(flat: Float32Array): void {
    if (flat.length !== this.bufferLayout.size)
      throw new RangeError(
        `buffer vector has ${flat.length} floats, the layout needs ${this.bufferLayout.size}`,
      );
    this.buffers.set(flat);
  }

  getBuffers(): Float32Array {
    return this.buffers.slice();
  }

  dispose(): void {
    this.clearMats();
  }

  private clearMats(): void {
    for (const m of this.mats.values()) m.dispose();
    this.mats.clear();
  }

  /** a work buffer for `key` of exactly `size` floats; contents undefined unless `zero` */
  protected scratch(key: string, size: number, zero = false): Float32Array {
    let b = this.pool.get(key);
    if (!b || b.length !== size) {
      b = new Float32Array(size);
      this.pool.set(key, b);
    } else if (zero) b.fill(0);
    return b;
  }

  protected p(name: string): Float32Array {
    const v = this.views.get(name);
    if (!v) throw new Error(`no parameter ${name}`);
    return v;
  }

  /** W [out × in] (transposed = false) or Wᵀ [in × out] of a Linear layer */
  private weight(prefix: string, transposed: boolean): Mat {
    const key = transposed ? `${prefix}^T` : prefix;
    let m = this.mats.get(key);
    if (!m) {
      const s = this.shapes.get(prefix)!;
      const w = this.p(`${prefix}.weight`);
      m = transposed
        ? new Mat(transpose(w, s.out, s.in, this.scratch(`WT:${prefix}`, w.length)), s.in, s.out)
        : new Mat(w, s.out, s.in);
      this.mats.set(key, m);
    }
    return m;
  }

  /** x [n × in] · Wᵀ + b (Wᵀ cached: the packed operand is reused across microbatches) */
  protected linear(x: Float32Array, n: number, prefix: string): Float32Array {
    const s = this.shapes.get(prefix)!;
    const y = matmul(x, n, s.in, this.weight(prefix, true), s.out, ROUTE_CELLS * s.in * s.out);
    addBias(y, n, s.out, this.p(`${prefix}.bias`));
    return y;
  }

  /** Is the first encoder layer cheaper as a sparse product for this batch? (fraction of nonzero counts) */
  protected sparseInput(batch: CellBatch): boolean {
    return batch.indptr[batch.nCells]! < SPARSE_INPUT_DENSITY * batch.nCells * batch.nGenes;
  }

  /** First encoder layer from the CSR counts: a[i] = b + Σ_nonzero log1p(x) · Wᵀ[g] (nnz × hidden work). */
  protected sparseFirstLayer(batch: CellBatch, prefix: string): Float32Array {
    const s = this.shapes.get(prefix)!;
    const H = s.out;
    const wT = this.weight(prefix, true).data;
    const b = this.p(`${prefix}.bias`);
    const a = new Float32Array(batch.nCells * H);
    const acc = new Float64Array(H);
    const H4 = H - (H % 4);
    for (let i = 0; i < batch.nCells; i++) {
      for (let h = 0; h < H; h++) acc[h] = b[h]!;
      for (let p = batch.indptr[i]!; p < batch.indptr[i + 1]!; p++) {
        const v = Math.log1p(batch.counts[p]!);
        const w = batch.indices[p]! * H;
        let h = 0;
        for (; h < H4; h += 4) {
          acc[h]! += v * wT[w + h]!;
          acc[h + 1]! += v * wT[w + h + 1]!;
          acc[h + 2]! += v * wT[w + h + 2]!;
          acc[h + 3]! += v * wT[w + h + 3]!;
        }
        for (; h < H; h++) acc[h]! += v * wT[w + h]!;
      }
      a.set(acc, i * H);
    }
    return a;
  }

  /** Its backward: dWᵀ[g] += log1p(x) · da[i] over the nonzero counts, then dW = (dWᵀ)ᵀ; db = Σ da. */
  protected sparseFirstLayerBackward(
    batch: CellBatch,
    da: Float32Array,
    prefix: string,
    grad: GradViews,
  ): void {
    const s = this.shapes.get(prefix)!;
    const H = s.out;
    const dWT = this.scratch(`dWT:${prefix}`, s.in * H, true);
    const d = new Float64Array(H);
    const H4 = H - (H % 4);
    for (let i = 0; i < batch.nCells; i++) {
      for (let h = 0; h < H; h++) d[h] = da[i * H + h]!;
      for (let p = batch.indptr[i]!; p < batch.indptr[i + 1]!; p++) {
        const v = Math.log1p(batch.counts[p]!);
        const w = batch.indices[p]! * H;
        let h = 0;
        for (; h < H4; h += 4) {
          dWT[w + h]! += v * d[h]!;
          dWT[w + h + 1]! += v * d[h + 1]!;
          dWT[w + h + 2]! += v * d[h + 2]!;
          dWT[w + h + 3]! += v * d[h + 3]!;
        }
        for (; h < H; h++) dWT[w + h]! += v * d[h]!;
      }
    }
    transpose(dWT, s.in, H, grad.get(`${prefix}.weight`));
    addColumnSums(da, batch.nCells, H, grad.get(`${prefix}.bias`));
  }

  /** A wide head (out = nGenes): computed as (W · xᵀ)ᵀ so the per-call packed operand is the small xᵀ. */
  protected head(x: Float32Array, n: number, prefix: string): Float32Array {
    const s = this.shapes.get(prefix)!;
    const yT = matmul(
      this.weight(prefix, false),
      s.out,
      s.in,
      transpose(x, n, s.in),
      n,
      ROUTE_CELLS * s.in * s.out,
    );
    const b = this.p(`${prefix}.bias`);
    for (let o = 0; o < s.out; o++) {
      const bo = b[o]!;
      const r = o * n;
      for (let i = 0; i < n; i++) yT[r + i]! += bo;
    }
    return transpose(yT, s.out, n, this.scratch(`logits:${prefix}`, yT.length));
  }

  /**
   * Sets dW = dyᵀ x and adds db = Σ dy into grad; returns dx = dy W when asked. With `xT` (the
   * input transposed, for the wide first encoder layer) dWᵀ = xᵀ · dy is formed instead, so the
   * per-call packed operand is the small dy.
   */
  protected linearBackward(
    dy: Float32Array,
    x: Float32Array,
    n: number,
    prefix: string,
    grad: GradViews,
    needDx: boolean,
    xT?: Float32Array,
  ): Float32Array | null {
    const s = this.shapes.get(prefix)!;
    const gw = grad.get(`${prefix}.weight`);
    if (xT) transpose(matmul(xT, s.in, n, dy, s.out), s.in, s.out, gw);
    else gw.set(matmul(transpose(dy, n, s.out, this.scratch(`dyT:${prefix}`, dy.length)), s.out, n, x, s.in)); // each weight is used once per pass
    addColumnSums(dy, n, s.out, grad.get(`${prefix}.bias`));
    return needDx ? matmul(dy, n, s.out, this.weight(prefix, false), s.in) : null;
  }

  /** Backward of a wide head: dW = (dyᵀ) · x with the small x packed, dx = dy · W with W cached. */
  protected headBackward(
    dy: Float32Array,
    x: Float32Array,
    n: number,
    prefix: string,
    grad: GradViews,
  ): Float32Array {
    const s = this.shapes.get(prefix)!;
    grad
      .get(`${prefix}.weight`)
      .set(matmul(transpose(dy, n, s.out, this.scratch(`dyT:${prefix}`, dy.length)), s.out, n, x, s.in));
    addColumnSums(dy, n, s.out, grad.get(`${prefix}.bias`));
    return matmul(dy, n, s.out, this.weight(prefix, false), s.in);
  }

  protected checkBatch(batch: CellBatch): void {
    if (batch.nGenes !== this.config.nGenes)
      throw new RangeError(`batch has ${batch.nGenes} genes, the model ${this.config.nGenes}`);
  }
}
