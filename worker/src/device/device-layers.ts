// The device model's state and building blocks: parameters and buffers uploaded once per version
// and sliced on the device, the device-work counters, and the layers as tfjs ops (Linear, BatchNorm
// in training and evaluation mode, posterior, KL, decoder, reconstruction likelihood). The training
// pass is in device-model.ts, the evaluation-mode calls in device-evaluation.ts.
import '@tensorflow/tfjs'; // registers the gradient functions in the (deduplicated) tfjs-core
import type * as tfNs from '@tensorflow/tfjs-core';
import type { ModelConfig } from '@atlasvae/shared';
import { bufferLayout, hiddenPrefix, paramLayout, type ParamLayout } from '@atlasvae/shared/model';
import { addDelta, engineCounters, zeroCounters, type DeviceCounters } from './counters.js';
import { logLikelihood } from './likelihood.js';
import { DeviceOps } from './ops.js';
import type { DeviceInputs } from './packing.js';

export type Tensor = tfNs.Tensor;

export type Params = Map<string, Tensor>;

export interface BnTrainOut {
  y: Tensor;
  /** [k, H] batch mean and biased variance per microbatch */
  mean: Tensor;
  varBiased: Tensor;
}

/** Storage, counters and layers of DeviceModel (its base class). */
export class DeviceLayers {
  readonly layout: ParamLayout;
  readonly bufferLayout: ParamLayout;
  /** this model's device work: kernels run, tensors uploaded, values read back (with bytes) */
  readonly counters: DeviceCounters = zeroCounters();
  protected readonly ops: DeviceOps;
  private readonly engineTotals: DeviceCounters;
  protected params: Params = new Map();
  protected paramList: Tensor[] = [];
  protected buffers: Params = new Map();
  private disposed = false;

  protected constructor(
    protected readonly tf: typeof tfNs,
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

  /** Runs `f` and adds the device work it started to `counters`. */
  protected counted<T>(f: () => T): T {
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

  protected checkLive(): void {
    if (this.disposed) throw new Error('DeviceModel used after dispose()');
  }

  // ---- layers ----

  protected linear(p: Params, x: Tensor, prefix: string): Tensor {
    const tf = this.tf;
    return tf.add(tf.matMul(x, p.get(`${prefix}.weight`)!, false, true), p.get(`${prefix}.bias`)!);
  }

  /**
   * Training-mode BatchNorm with statistics per microbatch: rows viewed as [k, m, H], weights w =
   * mask/n (0 on padded rows). Its backward is written out (fewer kernels and saved tensors than
   * autograd): with g = γ·dy, da = s·(g − w·(Σg + x̂·Σ g x̂)), sums per microbatch (the JS model's
   * formula with w = 1/n). The batch statistics come back kept; the caller disposes them.
   */
  protected bnTrain(p: Params, a: Tensor, prefix: string, inp: DeviceInputs, w3: Tensor): BnTrainOut {
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
  protected bnEval(p: Params, a: Tensor, prefix: string): Tensor {
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

  protected reconstructionLl(p: Params, inp: DeviceInputs, h: Tensor): Tensor {
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
  protected kl(qm: Tensor, qv: Tensor): Tensor {
    const tf = this.tf;
    const perDim = tf.sub(tf.add(qv, tf.mul(qm, qm)), tf.add(tf.log(qv), this.ops.c(1)));
    return tf.mul(this.ops.sum(perDim, 1, true), this.ops.c(0.5));
  }

  protected posterior(p: Params, h: Tensor): { qm: Tensor; qv: Tensor } {
    const tf = this.tf;
    return {
      qm: this.linear(p, h, 'mean'),
      qv: tf.add(tf.exp(this.linear(p, h, 'var')), this.ops.c(this.config.varEps)),
    };
  }

  protected decoderHidden(
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
}
