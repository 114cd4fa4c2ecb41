// The scVI model's evaluation-mode passes (BatchNorm with running statistics, no dropout):
// encode, evaluate, logLikelihood, decodeScale.
import type { CellBatch } from '../batch.js';
import { bnEval } from './batchnorm.js';
import { hasDispersion, hiddenPrefix } from './layout.js';
import { likelihood, scaleFromLogits } from './likelihood.js';
import type { CellTerms } from './types.js';
import { concatOneHot, klPerCell, log1pDense } from './vae-math.js';
import { VaeLayers } from './vae-layers.js';

/** VaeLayers plus the evaluation-mode passes (VaeModel adds the training pass). */
export class VaeEvaluation extends VaeLayers {
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
