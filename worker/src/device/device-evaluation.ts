// The device model's evaluation-mode calls (BatchNorm with running statistics, no dropout), each
// one packed upload and one readback: evaluate, encode, logLikelihood, decodeScale.
import type { CellBatch } from '@atlasvae/shared';
import { hiddenPrefix, type CellTerms } from '@atlasvae/shared/model';
import { DeviceLayers, type Tensor } from './device-layers.js';
import { packCall, unpackOnDevice, type DeviceInputs } from './packing.js';

/** DeviceLayers plus the evaluation-mode calls (DeviceModel adds the training pass). */
export class DeviceEvaluation extends DeviceLayers {
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
