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
//
// This module holds the training pass; storage and layers are in device-layers.ts, the
// evaluation-mode calls in device-evaluation.ts.
import '@tensorflow/tfjs'; // registers the gradient functions in the (deduplicated) tfjs-core
import type * as tfNs from '@tensorflow/tfjs-core';
import type { CellBatch, ModelConfig } from '@atlasvae/shared';
import { hiddenPrefix, initBuffers, initParams, type MicrobatchNoise } from '@atlasvae/shared/model';
import { DeviceEvaluation } from './device-evaluation.js';
import type { Params, Tensor } from './device-layers.js';
import { packCall, unpackOnDevice, type PackItem } from './packing.js';

export type { DeviceCounters } from './counters.js';

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

export class DeviceModel extends DeviceEvaluation {
  static create(tf: typeof tfNs, cfg: ModelConfig): DeviceModel {
    const m = new DeviceModel(tf, cfg);
    m.setParams(initParams(cfg, 0));
    m.setBuffers(initBuffers(cfg));
    return m;
  }

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
}
