// The scVI model with explicit, hand-derived forward and backward passes (checked against PyTorch by
// test/unit/model-fixture.test.ts). Dense products run on the TensorFlow.js backend in their plain
// non-transposed form (transposed weight copies are cached per parameter update); BatchNorm, the
// latent layer and the likelihood are fused JS loops.
import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';
import { bnBackward, bnEval, bnTrain, type BnTrainResult } from './batchnorm.js';
import {
  bufferLayout,
  decoderInputSize,
  encoderInputSize,
  hasDispersion,
  hiddenPrefix,
  paramLayout,
  initBuffers,
  initParams,
} from './layout.js';
import { likelihood, scaleFromLogits } from './likelihood.js';
import { addBias, addColumnSums, Mat, matmul, ROUTE_CELLS, transpose } from './linalg.js';
import type {
  CellTerms,
  GradientOutput,
  MicrobatchGradient,
  MicrobatchNoise,
  ParamLayout,
  VaeModelApi,
} from './types.js';

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

interface EncoderLayerCache {
  input: Float32Array;
  inDim: number;
  bn: BnTrainResult;
  mask: Float32Array | null;
}

interface DecoderLayerCache {
  input: Float32Array;
  inDim: number;
  bn: BnTrainResult;
}

/** log1p of the counts as a dense [nCells, nGenes] matrix */
export function log1pDense(
  b: CellBatch,
  out: Float32Array = new Float32Array(b.nCells * b.nGenes),
): Float32Array {
  for (let i = 0; i < b.nCells; i++) {
    const row = i * b.nGenes;
    for (let k = b.indptr[i]!; k < b.indptr[i + 1]!; k++) out[row + b.indices[k]!] = Math.log1p(b.counts[k]!);
  }
  return out;
}

/** [n × d] rows followed by the one-hot batch code: [n × (d + nBatch)] */
function concatOneHot(
  x: Float32Array,
  n: number,
  d: number,
  batch: Int32Array,
  nBatch: number,
): Float32Array {
  const w = d + nBatch;
  const out = new Float32Array(n * w);
  for (let i = 0; i < n; i++) {
    out.set(x.subarray(i * d, (i + 1) * d), i * w);
    const b = batch[i]!;
    if (b < 0 || b >= nBatch)
      throw new RangeError(`batch code ${b} of cell ${i} is outside 0..${nBatch - 1}`);
    out[i * w + d + b] = 1;
  }
  return out;
}

function klPerCell(qm: Float32Array, qv: Float32Array, n: number, L: number): Float64Array {
  const kl = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let l = 0; l < L; l++) {
      const k = i * L + l;
      s += qv[k]! + qm[k]! * qm[k]! - 1 - Math.log(qv[k]!);
    }
    kl[i] = 0.5 * s;
  }
  return kl;
}

export class VaeModel implements VaeModelApi {
  readonly layout: ParamLayout;
  readonly bufferLayout: ParamLayout;
  private readonly params: Float32Array;
  private readonly buffers: Float32Array;
  private readonly views = new Map<string, Float32Array>();
  private readonly bufferViews = new Map<string, Float32Array>();
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
  private scratch(key: string, size: number, zero = false): Float32Array {
    let b = this.pool.get(key);
    if (!b || b.length !== size) {
      b = new Float32Array(size);
      this.pool.set(key, b);
    } else if (zero) b.fill(0);
    return b;
  }

  private p(name: string): Float32Array {
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
  private linear(x: Float32Array, n: number, prefix: string): Float32Array {
    const s = this.shapes.get(prefix)!;
    const y = matmul(x, n, s.in, this.weight(prefix, true), s.out, ROUTE_CELLS * s.in * s.out);
    addBias(y, n, s.out, this.p(`${prefix}.bias`));
    return y;
  }

  /** Is the first encoder layer cheaper as a sparse product for this batch? (fraction of nonzero counts) */
  private sparseInput(batch: CellBatch): boolean {
    return batch.indptr[batch.nCells]! < SPARSE_INPUT_DENSITY * batch.nCells * batch.nGenes;
  }

  /** First encoder layer from the CSR counts: a[i] = b + Σ_nonzero log1p(x) · Wᵀ[g] (nnz × hidden work). */
  private sparseFirstLayer(batch: CellBatch, prefix: string): Float32Array {
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
  private sparseFirstLayerBackward(
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
  private head(x: Float32Array, n: number, prefix: string): Float32Array {
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
  private linearBackward(
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
  private headBackward(
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

  gradient(
    batch: CellBatch,
    noise: MicrobatchNoise,
    klWeight: number,
    out?: GradientOutput,
  ): MicrobatchGradient {
    const cfg = this.config;
    this.checkBatch(batch);
    if (out && (out.grad.length !== this.layout.size || out.bnStats.length !== this.bufferLayout.size)) {
      throw new RangeError(
        `gradient output of ${out.grad.length} + ${out.bnStats.length} floats, the model needs ${this.layout.size} + ${this.bufferLayout.size}`,
      );
    }
    const B = batch.nCells;
    const H = cfg.nHidden;
    const L = cfg.nLatent;
    const K = cfg.nBatch;
    if (noise.eps.length !== B * L)
      throw new RangeError(`noise eps has ${noise.eps.length} values, expected ${B * L}`);
    const bnStats = out ? out.bnStats.fill(0) : new Float32Array(this.bufferLayout.size);
    let statPos = 0;
    const pushStats = (r: BnTrainResult): void => {
      bnStats.set(r.mean, statPos);
      bnStats.set(r.varUnbiased, statPos + H);
      statPos += 2 * H;
    };

    // encoder
    const enc: EncoderLayerCache[] = [];
    const sparse = this.sparseInput(batch);
    let x = sparse
      ? new Float32Array(0)
      : log1pDense(batch, this.scratch('x0', batch.nCells * batch.nGenes, true));
    for (let k = 0; k < cfg.nLayers; k++) {
      const pre = hiddenPrefix('enc', k, cfg.nLayers);
      const inDim = encoderInputSize(cfg, k);
      const a =
        k === 0 && sparse ? this.sparseFirstLayer(batch, `${pre}.lin`) : this.linear(x, B, `${pre}.lin`);
      const bn = bnTrain(a, B, H, this.p(`${pre}.bn.weight`), this.p(`${pre}.bn.bias`), cfg.bnEps);
      pushStats(bn);
      const mask = noise.dropout ? noise.dropout[k]! : null;
      if (mask && mask.length !== B * H)
        throw new RangeError(`dropout mask ${k} has ${mask.length} values, expected ${B * H}`);
      const out = new Float32Array(B * H);
      for (let j = 0; j < out.length; j++) {
        const v = bn.y[j]!;
        out[j] = v > 0 ? (mask ? v * mask[j]! : v) : 0;
      }
      enc.push({ input: x, inDim, bn, mask });
      x = out;
    }
    const encOut = x;
    const qm = this.linear(encOut, B, 'mean');
    const lv = this.linear(encOut, B, 'var');
    const expLv = new Float32Array(B * L);
    const qv = new Float32Array(B * L);
    const sd = new Float32Array(B * L);
    const z = new Float32Array(B * L);
    for (let j = 0; j < B * L; j++) {
      expLv[j] = Math.exp(lv[j]!);
      qv[j] = expLv[j]! + cfg.varEps;
      sd[j] = Math.sqrt(qv[j]!);
      z[j] = qm[j]! + sd[j]! * noise.eps[j]!;
    }
    const kl = klPerCell(qm, qv, B, L);

    // decoder
    const dec: DecoderLayerCache[] = [];
    let h = z;
    let hDim = L;
    for (let k = 0; k < cfg.nLayers; k++) {
      const pre = hiddenPrefix('dec', k, cfg.nLayers);
      const u = concatOneHot(h, B, hDim, batch.batch, K);
      const a = this.linear(u, B, `${pre}.lin`);
      const bn = bnTrain(a, B, H, this.p(`${pre}.bn.weight`), this.p(`${pre}.bn.bias`), cfg.bnEps);
      pushStats(bn);
      const out = new Float32Array(B * H);
      for (let j = 0; j < out.length; j++) out[j] = bn.y[j]! > 0 ? bn.y[j]! : 0;
      dec.push({ input: u, inDim: decoderInputSize(cfg, k), bn });
      h = out;
      hDim = H;
    }
    const logits = this.head(h, B, 'scale');
    const dropLogits = cfg.likelihood === 'zinb' ? this.head(h, B, 'drop_logit') : null;
    const lik = likelihood({
      cfg,
      batch,
      logits,
      dropLogits,
      pxr: hasDispersion(cfg) ? this.p('px_r') : null,
      needGrad: true,
    });

    let reconstructionSum = 0;
    let klSum = 0;
    for (let i = 0; i < B; i++) {
      reconstructionSum += lik.rec[i]!;
      klSum += kl[i]!;
    }

    // backward
    const grad = new GradViews(this.layout, out?.grad);
    if (lik.dPxr) {
      const g = grad.get('px_r');
      for (let k = 0; k < g.length; k++) g[k]! += lik.dPxr[k]!;
    }
    let dh = this.headBackward(lik.dLogits!, h, B, 'scale', grad);
    if (dropLogits) {
      const dh2 = this.headBackward(lik.dDrop!, h, B, 'drop_logit', grad);
      for (let j = 0; j < dh.length; j++) dh[j]! += dh2[j]!;
    }
    for (let k = cfg.nLayers - 1; k >= 0; k--) {
      const pre = hiddenPrefix('dec', k, cfg.nLayers);
      const c = dec[k]!;
      const dy = new Float32Array(B * H);
      for (let j = 0; j < dy.length; j++) dy[j] = c.bn.y[j]! > 0 ? dh[j]! : 0;
      const da = bnBackward(
        dy,
        B,
        H,
        c.bn,
        this.p(`${pre}.bn.weight`),
        grad.get(`${pre}.bn.weight`),
        grad.get(`${pre}.bn.bias`),
      );
      const du = this.linearBackward(da, c.input, B, `${pre}.lin`, grad, true)!;
      const d = c.inDim - K;
      dh = new Float32Array(B * d);
      for (let i = 0; i < B; i++) dh.set(du.subarray(i * c.inDim, i * c.inDim + d), i * d);
    }
    const dz = dh;
    const dqm = new Float32Array(B * L);
    const dlv = new Float32Array(B * L);
    for (let j = 0; j < B * L; j++) {
      dqm[j] = dz[j]! + klWeight * qm[j]!;
      const dqv = (dz[j]! * noise.eps[j]!) / (2 * sd[j]!) + klWeight * 0.5 * (1 - 1 / qv[j]!);
      dlv[j] = dqv * expLv[j]!;
    }
    const dx = this.linearBackward(dqm, encOut, B, 'mean', grad, true)!;
    const dx2 = this.linearBackward(dlv, encOut, B, 'var', grad, true)!;
    for (let j = 0; j < dx.length; j++) dx[j]! += dx2[j]!;
    let dOut = dx;
    for (let k = cfg.nLayers - 1; k >= 0; k--) {
      const pre = hiddenPrefix('enc', k, cfg.nLayers);
      const c = enc[k]!;
      const dy = new Float32Array(B * H);
      for (let j = 0; j < dy.length; j++)
        dy[j] = c.bn.y[j]! > 0 ? (c.mask ? dOut[j]! * c.mask[j]! : dOut[j]!) : 0;
      const da = bnBackward(
        dy,
        B,
        H,
        c.bn,
        this.p(`${pre}.bn.weight`),
        grad.get(`${pre}.bn.weight`),
        grad.get(`${pre}.bn.bias`),
      );
      if (k === 0 && sparse) this.sparseFirstLayerBackward(batch, da, `${pre}.lin`, grad);
      else
        dOut =
          this.linearBackward(
            da,
            c.input,
            B,
            `${pre}.lin`,
            grad,
            k > 0,
            k === 0 ? transpose(c.input, B, c.inDim, this.scratch('x0T', c.input.length)) : undefined,
          ) ?? dOut;
    }

    return {
      grad: grad.flat,
      nCells: B,
      reconstructionSum,
      klSum,
      lossSum: reconstructionSum + klWeight * klSum,
      bnStats,
    };
  }

  private checkBatch(batch: CellBatch): void {
    if (batch.nGenes !== this.config.nGenes)
      throw new RangeError(`batch has ${batch.nGenes} genes, the model ${this.config.nGenes}`);
  }

  private encodeEval(batch: CellBatch): { qm: Float32Array; qv: Float32Array } {
    const cfg = this.config;
    this.checkBatch(batch);
    const B = batch.nCells;
    const H = cfg.nHidden;
    // always the dense route here: each cell's result then depends on that cell alone, never on
    // which other cells share its chunk (the density switch would), so embeddings do not change with
    // the chunk size
    let x = log1pDense(batch, this.scratch('x0', batch.nCells * batch.nGenes, true));
    for (let k = 0; k < cfg.nLayers; k++) {
      const pre = hiddenPrefix('enc', k, cfg.nLayers);
      const a = this.linear(x, B, `${pre}.lin`);
      const y = bnEval(
        a,
        B,
        H,
        this.p(`${pre}.bn.weight`),
        this.p(`${pre}.bn.bias`),
        this.bufferViews.get(`${pre}.bn.running_mean`)!,
        this.bufferViews.get(`${pre}.bn.running_var`)!,
        cfg.bnEps,
      );
      for (let j = 0; j < y.length; j++) if (!(y[j]! > 0)) y[j] = 0;
      x = y;
    }
    const qm = this.linear(x, B, 'mean');
    const qv = this.linear(x, B, 'var');
    for (let j = 0; j < qv.length; j++) qv[j] = Math.exp(qv[j]!) + cfg.varEps;
    return { qm, qv };
  }

  private decodeEval(
    batchCodes: Int32Array,
    z: Float32Array,
    B: number,
  ): { logits: Float32Array; dropLogits: Float32Array | null } {
    const cfg = this.config;
    const H = cfg.nHidden;
    let h = z;
    let hDim = cfg.nLatent;
    for (let k = 0; k < cfg.nLayers; k++) {
      const pre = hiddenPrefix('dec', k, cfg.nLayers);
      const u = concatOneHot(h, B, hDim, batchCodes, cfg.nBatch);
      const a = this.linear(u, B, `${pre}.lin`);
      const y = bnEval(
        a,
        B,
        H,
        this.p(`${pre}.bn.weight`),
        this.p(`${pre}.bn.bias`),
        this.bufferViews.get(`${pre}.bn.running_mean`)!,
        this.bufferViews.get(`${pre}.bn.running_var`)!,
        cfg.bnEps,
      );
      for (let j = 0; j < y.length; j++) if (!(y[j]! > 0)) y[j] = 0;
      h = y;
      hDim = H;
    }
    return {
      logits: this.head(h, B, 'scale'),
      dropLogits: cfg.likelihood === 'zinb' ? this.head(h, B, 'drop_logit') : null,
    };
  }

  encode(batch: CellBatch): { qm: Float32Array; qv: Float32Array } {
    return this.encodeEval(batch);
  }

  evaluate(batch: CellBatch, eps: Float32Array | null): CellTerms {
    const B = batch.nCells;
    const L = this.config.nLatent;
    const { qm, qv } = this.encodeEval(batch);
    const z = new Float32Array(B * L);
    for (let j = 0; j < z.length; j++) z[j] = eps ? qm[j]! + Math.sqrt(qv[j]!) * eps[j]! : qm[j]!;
    const rec = this.reconstruction(batch, z);
    return { reconstruction: Float32Array.from(rec), kl: Float32Array.from(klPerCell(qm, qv, B, L)) };
  }

  private reconstruction(batch: CellBatch, z: Float32Array): Float64Array {
    const cfg = this.config;
    this.checkBatch(batch);
    if (z.length !== batch.nCells * cfg.nLatent)
      throw new RangeError(`z has ${z.length} values, expected ${batch.nCells * cfg.nLatent}`);
    const { logits, dropLogits } = this.decodeEval(batch.batch, z, batch.nCells);
    return likelihood({
      cfg,
      batch,
      logits,
      dropLogits,
      pxr: hasDispersion(cfg) ? this.p('px_r') : null,
      needGrad: false,
    }).rec;
  }

  logLikelihood(batch: CellBatch, z: Float32Array): Float32Array {
    const rec = this.reconstruction(batch, z);
    return Float32Array.from(rec, (v) => -v);
  }

  decodeScale(batch: CellBatch, z: Float32Array, transformBatch?: number): Float32Array {
    const B = batch.nCells;
    if (z.length !== B * this.config.nLatent)
      throw new RangeError(`z has ${z.length} values, expected ${B * this.config.nLatent}`);
    const codes = transformBatch === undefined ? batch.batch : new Int32Array(B).fill(transformBatch);
    const { logits } = this.decodeEval(codes, z, B);
    return scaleFromLogits(this.config, logits, B);
  }
}

/** A zeroed flat gradient with named views (in `into`, zeroed first, when given). */
class GradViews {
  readonly flat: Float32Array;
  private readonly views = new Map<string, Float32Array>();
  constructor(layout: ParamLayout, into?: Float32Array) {
    this.flat = into ? into.fill(0) : new Float32Array(layout.size);
    for (const e of layout.entries) this.views.set(e.name, this.flat.subarray(e.offset, e.offset + e.size));
  }
  get(name: string): Float32Array {
    const v = this.views.get(name);
    if (!v) throw new Error(`no parameter ${name}`);
    return v;
  }
}

export function createModel(cfg: ModelConfig): VaeModel {
  return new VaeModel(cfg);
}
