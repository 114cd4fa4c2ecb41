// The scVI model with explicit, hand-derived forward and backward passes (checked against PyTorch by
// test/unit/model-fixture.test.ts). Dense products run on the TensorFlow.js backend in their plain
// non-transposed form (transposed weight copies are cached per parameter update); BatchNorm, the
// latent layer and the likelihood are fused JS loops.
// This module holds the training pass (gradient); the layer primitives and storage are in
// vae-layers.ts, the evaluation-mode passes in vae-evaluation.ts.
import type { CellBatch } from '../batch.js';
import type { ModelConfig } from '../config.js';
import { bnBackward, bnTrain, type BnTrainResult } from './batchnorm.js';
import { decoderInputSize, encoderInputSize, hasDispersion, hiddenPrefix } from './layout.js';
import { GradViews } from './grad-views.js';
import { likelihood } from './likelihood.js';
import { transpose } from './linalg.js';
import type { GradientOutput, MicrobatchGradient, MicrobatchNoise, VaeModelApi } from './types.js';
import { concatOneHot, klPerCell, log1pDense } from './vae-math.js';
import { VaeEvaluation } from './vae-evaluation.js';

export { log1pDense } from './vae-math.js';
export { setSparseInputDensity } from './vae-layers.js';

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

export class VaeModel extends VaeEvaluation implements VaeModelApi {
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
}

export function createModel(cfg: ModelConfig): VaeModel {
  return new VaeModel(cfg);
}
