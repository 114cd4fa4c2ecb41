// The scVI model resident on a TensorFlow.js device: the same function as shared/src/model/vae.ts
// (layers, batch one-hot in every decoder layer, BatchNorm, dropout masks and ε given by the caller,
// KL, every likelihood and dispersion mode, nLayers ≥ 1), forward and backward as tfjs ops (autograd;
// the backward of BatchNorm, log Γ and the NB and ZINB likelihoods written out), so a call costs one upload and one readback whatever
// the backend (cpu, wasm, webgpu, tensorflow), and a number of kernels that does not grow with k.
//
// API (the contract with the worker's engine; results within 1e-4 relative of the JS model's, not
// bitwise; bit-identical from call to call on one backend):
//   DeviceModel.create(tf, cfg)       tf: the tfjs-core namespace, backend already set
//   layout, bufferLayout              as shared/src/model/layout.ts's for cfg
//   setParams(flat), setBuffers(flat) one upload each per version
//   gradientGroup(mbs)                k microbatches (any sizes) in one pass, BatchNorm statistics per
//                                     microbatch (k·m rows, m the largest microbatch, padded rows
//                                     masked); returns the gradient summed over the group and
//                                     per-microbatch terms (lossSum = reconstructionSum + klWeight ·
//                                     klSum, on the host), read back as one packed tensor, one
//                                     `await data()`
//   evaluate/encode/logLikelihood/decodeScale   VaeModelApi's evaluation-mode semantics, async
//   counters                          kernels (+ viewKernels), uploads and readbacks (with bytes) of
//                                     this model's calls, counted at the tfjs engine
//   dispose()
// `nonFinite` of a microbatch: its loss terms or BatchNorm statistics, or the group's gradient, hold a
// NaN or infinity. Device memory at the peak of a call: about 18 (poisson), 22 (gaussian), 56 (nb) and
// 88 (zinb) float32 tensors of [cells, genes]. Importing this module loads @tensorflow/tfjs (~0.4 s): import it only for a device engine.
import '@tensorflow/tfjs'; // registers the gradient functions in the (deduplicated) tfjs-core
import type * as tfNs from '@tensorflow/tfjs-core';
import type { CellBatch, ModelConfig } from '@atlasvae/shared';
import {
  bufferLayout,
  hiddenPrefix,
  initBuffers,
  initParams,
  paramLayout,
  type CellTerms,
  type MicrobatchNoise,
  type ParamLayout,
} from '@atlasvae/shared/model';
import { addDelta, engineCounters, zeroCounters, type DeviceCounters } from './counters.js';
import { logLikelihood } from './likelihood.js';
import { DeviceOps } from './ops.js';
import { packCall, unpackOnDevice, type DeviceInputs, type PackItem } from './packing.js';

export type { DeviceCounters } from './counters.js';

type Tensor = tfNs.Tensor;

export interface DeviceMicrobatch {
  batch: CellBatch;
  noise: MicrobatchNoise;
  klWeight: number;
}

export interface DeviceMicrobatchTerms {
  nCells: number;
  reconstructionSum: number;
  klSum: number;
  lossSum: number;
  /** buffer-layout order: per BN layer its batch mean then unbiased batch variance */
  bnStats: Float32Array;
  nonFinite: boolean;
}

export interface DeviceGroupResult {
  /** d(Σ over the group's cells of loss)/dθ, summed over its microbatches */
  grad: Float32Array;
  microbatches: DeviceMicrobatchTerms[];
}

type Params = Map<string, Tensor>;

interface BnTrainOut {
  y: Tensor;
  /** [k, H] batch mean and biased variance per microbatch */
  mean: Tensor;
  varBiased: Tensor;
}

export class DeviceModel {
  readonly layout: ParamLayout;
  readonly bufferLayout: ParamLayout;
  /** this model's device work: kernels run, tensors uploaded, values read back (with bytes) */
  readonly counters: DeviceCounters = zeroCounters();
  private readonly ops: DeviceOps;
  private readonly engineTotals: DeviceCounters;
  private params: Params = new Map();
  private paramList: Tensor[] = [];
  private buffers: Params = new Map();
  private disposed = false;

  private constructor(
    private readonly tf: typeof tfNs,
    readonly config: ModelConfig,
  ) {
    if (config.nBatch < 1) throw new RangeError('nBatch must be at least 1');
    if (!tf.getGradient('Add'))
      throw new Error(
        'no gradient functions are registered in this @tensorflow/tfjs-core: @tensorflow/tfjs must resolve to the same tfjs-core',
      );
    this.layout = paramLayout(config);
    this.bufferLayout = bufferLayout(config);
    this.ops = new DeviceOps(tf);
    this.engineTotals = engineCounters(tf);
  }

  static create(tf: typeof tfNs, cfg: ModelConfig): DeviceModel {
    const m = new DeviceModel(tf, cfg);
    m.setParams(initParams(cfg, 0));
    m.setBuffers(initBuffers(cfg));
    return m;
  }

  /** Runs `f` and adds the device work it started to `counters`. */
  private counted<T>(f: () => T): T {
    const before = { ...this.engineTotals };
    try {
      return f();
    } finally {
      addDelta(this.counters, this.engineTotals, before);
    }
  }

  /** One upload of `flat`, sliced on the device into a tensor per entry (kept until replaced). */
  private uploadSliced(layout: ParamLayout, flat: Float32Array, what: string): Params {
    if (flat.length !== layout.size)
      throw new RangeError(`${what} vector has ${flat.length} floats, the layout needs ${layout.size}`);
    this.checkLive();
    return this.counted(() => {
      const tf = this.tf;
      const out: Params = new Map();
      tf.tidy(() => {
        const all = tf.tensor1d(flat, 'float32');
        for (const e of layout.entries)
          out.set(e.name, tf.keep(tf.reshape(tf.slice(all, e.offset, e.size), e.shape)));
      });
      return out;
    });
  }

  setParams(flat: Float32Array): void {
    const next = this.uploadSliced(this.layout, flat, 'parameter');
    for (const t of this.params.values()) t.dispose();
    this.params = next;
    this.paramList = this.layout.entries.map((e) => next.get(e.name)!);
  }

  setBuffers(flat: Float32Array): void {
    const next = this.uploadSliced(this.bufferLayout, flat, 'buffer');
    for (const t of this.buffers.values()) t.dispose();
    this.buffers = next;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of this.params.values()) t.dispose();
    for (const t of this.buffers.values()) t.dispose();
    this.params.clear();
    this.buffers.clear();
    this.paramList = [];
    this.ops.dispose();
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('DeviceModel used after dispose()');
  }

  // ---- layers ----

  private linear(p: Params, x: Tensor, prefix: string): Tensor {
    const tf = this.tf;
    return tf.add(tf.matMul(x, p.get(`${prefix}.weight`)!, false, true), p.get(`${prefix}.bias`)!);
  }

  /**
   * Training-mode BatchNorm with statistics per microbatch: rows viewed as [k, m, H], weights w =
   * mask/n (0 on padded rows). Its backward is written out (fewer kernels and saved tensors than
   * autograd): with g = γ·dy, da = s·(g − w·(Σg + x̂·Σ g x̂)), sums per microbatch (the JS model's
   * formula with w = 1/n). The batch statistics come back kept; the caller disposes them.
   */
  private bnTrain(p: Params, a: Tensor, prefix: string, inp: DeviceInputs, w3: Tensor): BnTrainOut {
    const tf = this.tf;
    const ops = this.ops;
    const H = this.config.nHidden;
    const shape3 = [inp.k, inp.m, H];
    const eps = ops.c(this.config.bnEps);
    let mean: Tensor | null = null;
    let varBiased: Tensor | null = null;
    const bn = tf.customGrad(((x: Tensor, gamma: Tensor, beta: Tensor, save: (t: Tensor[]) => void) => {
      const a3 = tf.reshape(x, shape3);
      const mu = tf.sum(tf.mul(a3, w3), 1, true);
      const centred = tf.sub(a3, mu);
      const v = tf.sum(tf.mul(tf.mul(centred, centred), w3), 1, true);
      const invStd = tf.rsqrt(tf.add(v, eps));
      const xhat = tf.mul(centred, invStd);
      mean = tf.keep(tf.reshape(mu, [inp.k, H]));
      varBiased = tf.keep(tf.reshape(v, [inp.k, H]));
      save([xhat, invStd, gamma]);
      return {
        value: tf.reshape(tf.add(tf.mul(xhat, gamma), beta), [inp.rows, H]),
        gradFunc: (dy: Tensor, saved: Tensor[]) => {
          const [xh, s, gm] = saved as [Tensor, Tensor, Tensor];
          const dy3 = tf.reshape(dy, shape3);
          const g = tf.mul(dy3, gm);
          const sumG = tf.sum(g, 1, true);
          const sumGx = tf.sum(tf.mul(g, xh), 1, true);
          const da = tf.mul(s, tf.sub(g, tf.mul(w3, tf.add(sumG, tf.mul(xh, sumGx)))));
          return [
            tf.reshape(da, [inp.rows, H]),
            tf.sum(tf.reshape(tf.mul(dy3, xh), [inp.rows, H]), 0),
            tf.sum(dy, 0),
          ];
        },
      };
    }) as unknown as Parameters<typeof tfNs.customGrad>[0]);
    const y = bn(a, p.get(`${prefix}.bn.weight`)!, p.get(`${prefix}.bn.bias`)!);
    return { y, mean: mean!, varBiased: varBiased! };
  }

  /** Evaluation-mode BatchNorm: running statistics. */
  private bnEval(p: Params, a: Tensor, prefix: string): Tensor {
    const tf = this.tf;
    const scale = tf.mul(
      p.get(`${prefix}.bn.weight`)!,
      tf.rsqrt(tf.add(this.buffers.get(`${prefix}.bn.running_var`)!, this.ops.c(this.config.bnEps))),
    );
    const shift = tf.sub(
      p.get(`${prefix}.bn.bias`)!,
      tf.mul(this.buffers.get(`${prefix}.bn.running_mean`)!, scale),
    );
    return tf.add(tf.mul(a, scale), shift);
  }

  /** px_r as the likelihood wants it: [1, G] per gene, [rows, G] per gene and batch */
  private pxr(p: Params, onehot: Tensor): Tensor | null {
    const cfg = this.config;
    const raw = p.get('px_r');
    if (!raw) return null;
    const tf = this.tf;
    return cfg.dispersion === 'gene-batch'
      ? tf.matMul(onehot, raw, false, true)
      : tf.reshape(raw, [1, cfg.nGenes]);
  }

  private reconstructionLl(p: Params, inp: DeviceInputs, h: Tensor): Tensor {
    const cfg = this.config;
    const tf = this.tf;
    return logLikelihood(this.ops, cfg, {
      x: inp.x,
      logX: inp.logX,
      nonzero: cfg.likelihood === 'zinb' ? tf.greater(inp.x, this.ops.c(0)) : null,
      library: inp.library,
      llConst: inp.llConst,
      logits: this.linear(p, h, 'scale'),
      dropLogits: cfg.likelihood === 'zinb' ? this.linear(p, h, 'drop_logit') : null,
      pxr: this.pxr(p, inp.onehot),
    });
  }

  /** 0.5 Σ (qv + qm² − 1 − log qv) per cell, [rows, 1] */
  private kl(qm: Tensor, qv: Tensor): Tensor {
    const tf = this.tf;
    const perDim = tf.sub(tf.add(qv, tf.mul(qm, qm)), tf.add(tf.log(qv), this.ops.c(1)));
    return tf.mul(this.ops.sum(perDim, 1, true), this.ops.c(0.5));
  }

  private posterior(p: Params, h: Tensor): { qm: Tensor; qv: Tensor } {
    const tf = this.tf;
    return {
      qm: this.linear(p, h, 'mean'),
      qv: tf.add(tf.exp(this.linear(p, h, 'var')), this.ops.c(this.config.varEps)),
    };
  }

  private decoderHidden(
    p: Params,
    z: Tensor,
    onehot: Tensor,
    bn: (a: Tensor, prefix: string) => Tensor,
  ): Tensor {
    const tf = this.tf;
    let h = z;
    for (let l = 0; l < this.config.nLayers; l++) {
      const pre = hiddenPrefix('dec', l, this.config.nLayers);
      h = tf.relu(bn(this.linear(p, tf.concat([h, onehot], 1), `${pre}.lin`), pre));
    }
    return h;
  }

  // ---- training ----

  async gradientGroup(mbs: DeviceMicrobatch[]): Promise<DeviceGroupResult> {
    this.checkLive();
    const cfg = this.config;
    if (mbs.length === 0) throw new RangeError('gradientGroup needs at least one microbatch');
    const withDropout = mbs.some((mb) => mb.noise.dropout !== null);
    const items: PackItem[] = mbs.map((mb) => ({
      batch: mb.batch,
      noise: mb.noise.eps,
      dropout: mb.noise.dropout,
      klWeight: mb.klWeight,
    }));
    mbs.forEach((mb, j) => {
      if (mb.noise.eps.length !== mb.batch.nCells * cfg.nLatent)
        throw new RangeError(
          `microbatch ${j}: noise eps has ${mb.noise.eps.length} values, expected ${mb.batch.nCells * cfg.nLatent}`,
        );
    });
    const packed = packCall(cfg, items, withDropout);
    const k = packed.k;
    const H = cfg.nHidden;
    const nBn = 2 * cfg.nLayers;
    const out = this.counted(() => {
      const tf = this.tf;
      return tf.tidy(() => {
        const inp = unpackOnDevice(tf, cfg, packed);
        const w3 = tf.reshape(inp.maskOverN, [k, packed.m, 1]);
        const mask = tf.reshape(inp.mask, [inp.rows]);
        const aux: Tensor[] = [];
        const lossOf = (...ps: Tensor[]): Tensor => {
          const p: Params = new Map(this.layout.entries.map((e, i) => [e.name, ps[i]!]));
          const stats: Tensor[] = [];
          const bn = (a: Tensor, pre: string): Tensor => {
            const r = this.bnTrain(p, a, pre, inp, w3);
            stats.push(r.mean, r.varBiased);
            return r.y;
          };
          let h = inp.logX;
          for (let l = 0; l < cfg.nLayers; l++) {
            const pre = hiddenPrefix('enc', l, cfg.nLayers);
            h = tf.relu(bn(this.linear(p, h, `${pre}.lin`), pre));
            if (inp.dropout) h = tf.mul(h, inp.dropout[l]!);
          }
          const { qm, qv } = this.posterior(p, h);
          const z = tf.add(qm, tf.mul(this.ops.sqrt(qv), inp.noise));
          const kl = this.kl(qm, qv);
          const hd = this.decoderHidden(p, z, inp.onehot, bn);
          const rec = tf.neg(this.reconstructionLl(p, inp, hd));
          const loss = tf.mul(tf.reshape(tf.add(rec, tf.mul(inp.klWeight, kl)), [inp.rows]), mask);
          // per-microbatch sums and statistics: read back, not differentiated
          const perMb = (v: Tensor): Tensor =>
            tf.sum(tf.reshape(tf.mul(tf.reshape(v, [inp.rows]), mask), [k, packed.m]), 1);
          aux.push(tf.keep(tf.concat([...stats.map((s) => tf.reshape(s, [-1])), perMb(rec), perMb(kl)])));
          for (const s of stats) s.dispose();
          return this.ops.sum(loss, null);
        };
        const grads = tf.grads(lossOf)(this.paramList, this.ops.c(1));
        const all = tf.concat([...grads.map((g) => tf.reshape(g, [-1])), aux[0]!]);
        aux[0]!.dispose();
        return all;
      });
    });
    let values: Float32Array;
    try {
      values = (await this.counted(() => out.data())) as Float32Array;
    } finally {
      out.dispose();
    }
    // unpack: gradient | per BN layer mean [k, H] then biased var [k, H] | rec [k] | kl [k]
    const P = this.layout.size;
    const grad = values.slice(0, P);
    let gradFinite = true;
    for (let i = 0; i < P; i++)
      if (!Number.isFinite(grad[i]!)) {
        gradFinite = false;
        break;
      }
    const statsAt = P;
    const recAt = statsAt + nBn * 2 * k * H;
    const klAt = recAt + k;
    const microbatches = mbs.map((mb, j): DeviceMicrobatchTerms => {
      const n = mb.batch.nCells;
      const bnStats = new Float32Array(this.bufferLayout.size);
      let finite = gradFinite;
      for (let l = 0; l < nBn; l++) {
        const meanAt = statsAt + 2 * l * k * H + j * H;
        const varAt = statsAt + (2 * l + 1) * k * H + j * H;
        for (let h = 0; h < H; h++) {
          const mean = values[meanAt + h]!;
          const v = n > 1 ? (values[varAt + h]! * n) / (n - 1) : 0;
          bnStats[2 * l * H + h] = mean;
          bnStats[(2 * l + 1) * H + h] = v;
          if (!Number.isFinite(mean) || !Number.isFinite(v)) finite = false;
        }
      }
      const reconstructionSum = values[recAt + j]!;
      const klSum = values[klAt + j]!;
      const lossSum = reconstructionSum + mb.klWeight * klSum;
      if (!Number.isFinite(lossSum) || !Number.isFinite(reconstructionSum) || !Number.isFinite(klSum))
        finite = false;
      return { nCells: n, reconstructionSum, klSum, lossSum, bnStats, nonFinite: !finite };
    });
    return { grad, microbatches };
  }

  // ---- evaluation mode ----

  /** Packs one chunk, runs `f` on the device, reads back its one result tensor. */
  private async evalCall(
    batch: CellBatch,
    noise: Float32Array | null,
    f: (inp: DeviceInputs) => Tensor,
    batchOverride?: number,
  ): Promise<Float32Array> {
    this.checkLive();
    const packed = packCall(
      this.config,
      [{ batch, noise, dropout: null, klWeight: 0, batchOverride }],
      false,
    );
    const out = this.counted(() => this.tf.tidy(() => f(unpackOnDevice(this.tf, this.config, packed))));
    try {
      return (await this.counted(() => out.data())) as Float32Array;
    } finally {
      out.dispose();
    }
  }

  private encoderEval(inp: DeviceInputs): { qm: Tensor; qv: Tensor } {
    const tf = this.tf;
    const cfg = this.config;
    let h = inp.logX;
    for (let l = 0; l < cfg.nLayers; l++) {
      const pre = hiddenPrefix('enc', l, cfg.nLayers);
      h = tf.relu(this.bnEval(this.params, this.linear(this.params, h, `${pre}.lin`), pre));
    }
    return this.posterior(this.params, h);
  }

  private decoderEval(inp: DeviceInputs, z: Tensor): Tensor {
    return this.decoderHidden(this.params, z, inp.onehot, (a, pre) => this.bnEval(this.params, a, pre));
  }

  private checkZ(batch: CellBatch, z: Float32Array): void {
    if (z.length !== batch.nCells * this.config.nLatent)
      throw new RangeError(`z has ${z.length} values, expected ${batch.nCells * this.config.nLatent}`);
  }

  /** Evaluation mode: z = q_m + sqrt(q_v)·eps (q_m when eps is null); per-cell −log p(x|z) and KL. */
  async evaluate(batch: CellBatch, eps: Float32Array | null): Promise<CellTerms> {
    const n = batch.nCells;
    if (n === 0) return { reconstruction: new Float32Array(0), kl: new Float32Array(0) };
    if (eps) this.checkZ(batch, eps);
    const tf = this.tf;
    const v = await this.evalCall(batch, eps, (inp) => {
      const { qm, qv } = this.encoderEval(inp);
      const z = tf.add(qm, tf.mul(this.ops.sqrt(qv), inp.noise));
      const rec = tf.neg(this.reconstructionLl(this.params, inp, this.decoderEval(inp, z)));
      return tf.concat([tf.reshape(rec, [-1]), tf.reshape(this.kl(qm, qv), [-1])]);
    });
    return { reconstruction: v.slice(0, n), kl: v.slice(n, 2 * n) };
  }

  /** Evaluation-mode posterior means and variances, [nCells, nLatent] each. */
  async encode(batch: CellBatch): Promise<{ qm: Float32Array; qv: Float32Array }> {
    const size = batch.nCells * this.config.nLatent;
    if (size === 0) return { qm: new Float32Array(0), qv: new Float32Array(0) };
    const v = await this.evalCall(batch, null, (inp) => {
      const { qm, qv } = this.encoderEval(inp);
      return this.tf.concat([this.tf.reshape(qm, [-1]), this.tf.reshape(qv, [-1])]);
    });
    return { qm: v.slice(0, size), qv: v.slice(size) };
  }

  /** log p(x|z) per cell for latent samples z [nCells, nLatent]. */
  async logLikelihood(batch: CellBatch, z: Float32Array): Promise<Float32Array> {
    this.checkZ(batch, z);
    if (batch.nCells === 0) return new Float32Array(0);
    return this.evalCall(batch, z, (inp) =>
      this.tf.reshape(this.reconstructionLl(this.params, inp, this.decoderEval(inp, inp.noise)), [-1]),
    );
  }

  /** Decoder `scale` (rows sum to 1) for z, every cell decoded as `transformBatch` when given: [nCells, nGenes]. */
  async decodeScale(batch: CellBatch, z: Float32Array, transformBatch?: number): Promise<Float32Array> {
    this.checkZ(batch, z);
    if (batch.nCells === 0) return new Float32Array(0);
    const tf = this.tf;
    const cfg = this.config;
    return this.evalCall(
      batch,
      z,
      (inp) => {
        const logits = this.linear(this.params, this.decoderEval(inp, inp.noise), 'scale');
        if (cfg.likelihood !== 'gaussian') return tf.reshape(tf.softmax(logits), [-1]);
        // the head predicts log1p expression: normalise expm1 of it
        const v = tf.expm1(tf.relu(logits));
        const s = tf.sum(v, 1, true);
        return tf.reshape(
          tf.where(
            tf.greater(s, this.ops.c(0)),
            tf.div(v, s),
            tf.mul(tf.onesLike(v), this.ops.c(1 / cfg.nGenes)),
          ),
          [-1],
        );
      },
      transformBatch,
    );
  }
}
