// The flat parameter layout (the wire format) and BatchNorm buffer layout, with PyTorch names and
// shapes ([out, in] for Linear weights), plus PyTorch-default initialisation.
//
// Names: one hidden layer (the default) uses the fixture's names `enc.lin.*`, `enc.bn.*`, `dec.lin.*`,
// `dec.bn.*`; with nLayers > 1 layer k is `enc.<k>.lin.*`, `enc.<k>.bn.*`, `dec.<k>.lin.*`, `dec.<k>.bn.*`.
// Decoder layer 0 reads concat(z, onehot(batch)); later decoder layers read concat(h, onehot(batch))
// (scvi injects the batch into every decoder layer). Heads: `mean.*`, `var.*` (encoder), `scale.*`,
// `drop_logit.*` (zinb only), `px_r` ([G] per gene, [G, nBatch] per gene-batch; absent for poisson;
// for gaussian it is the log variance).
import type { ModelConfig } from '../config.js';
import { Rng } from '../rng.js';
import type { ParamEntry, ParamLayout } from './types.js';

export interface LinearShape {
  /** prefix such as `enc.lin` (weight `${prefix}.weight`, bias `${prefix}.bias`) */
  prefix: string;
  out: number;
  in: number;
}

/** Name prefix of hidden layer k of `part` ('enc' or 'dec'). */
export function hiddenPrefix(part: 'enc' | 'dec', k: number, nLayers: number): string {
  return nLayers === 1 ? part : `${part}.${k}`;
}

export function encoderInputSize(cfg: ModelConfig, k: number): number {
  return k === 0 ? cfg.nGenes : cfg.nHidden;
}

export function decoderInputSize(cfg: ModelConfig, k: number): number {
  return (k === 0 ? cfg.nLatent : cfg.nHidden) + cfg.nBatch;
}

export function hasDispersion(cfg: ModelConfig): boolean {
  return cfg.likelihood !== 'poisson';
}

export function dispersionShape(cfg: ModelConfig): number[] {
  return cfg.dispersion === 'gene-batch' ? [cfg.nGenes, cfg.nBatch] : [cfg.nGenes];
}

class LayoutBuilder {
  entries: ParamEntry[] = [];
  size = 0;
  add(name: string, shape: number[]): void {
    const size = shape.reduce((a, b) => a * b, 1);
    this.entries.push({ name, shape, offset: this.size, size });
    this.size += size;
  }
  linear(l: LinearShape): void {
    this.add(`${l.prefix}.weight`, [l.out, l.in]);
    this.add(`${l.prefix}.bias`, [l.out]);
  }
  build(): ParamLayout {
    return { entries: this.entries, size: this.size };
  }
}

export function paramLayout(cfg: ModelConfig): ParamLayout {
  const b = new LayoutBuilder();
  const H = cfg.nHidden;
  for (let k = 0; k < cfg.nLayers; k++) {
    const p = hiddenPrefix('enc', k, cfg.nLayers);
    b.linear({ prefix: `${p}.lin`, out: H, in: encoderInputSize(cfg, k) });
    b.add(`${p}.bn.weight`, [H]);
    b.add(`${p}.bn.bias`, [H]);
  }
  b.linear({ prefix: 'mean', out: cfg.nLatent, in: H });
  b.linear({ prefix: 'var', out: cfg.nLatent, in: H });
  for (let k = 0; k < cfg.nLayers; k++) {
    const p = hiddenPrefix('dec', k, cfg.nLayers);
    b.linear({ prefix: `${p}.lin`, out: H, in: decoderInputSize(cfg, k) });
    b.add(`${p}.bn.weight`, [H]);
    b.add(`${p}.bn.bias`, [H]);
  }
  b.linear({ prefix: 'scale', out: cfg.nGenes, in: H });
  if (cfg.likelihood === 'zinb') b.linear({ prefix: 'drop_logit', out: cfg.nGenes, in: H });
  if (hasDispersion(cfg)) b.add('px_r', dispersionShape(cfg));
  return b.build();
}

/** BatchNorm running statistics: per BN layer (encoder layers, then decoder layers) running_mean then running_var. */
export function bufferLayout(cfg: ModelConfig): ParamLayout {
  const b = new LayoutBuilder();
  for (const part of ['enc', 'dec'] as const) {
    for (let k = 0; k < cfg.nLayers; k++) {
      const p = hiddenPrefix(part, k, cfg.nLayers);
      b.add(`${p}.bn.running_mean`, [cfg.nHidden]);
      b.add(`${p}.bn.running_var`, [cfg.nHidden]);
    }
  }
  return b.build();
}

export function entry(layout: ParamLayout, name: string): ParamEntry {
  const e = layout.entries.find((x) => x.name === name);
  if (!e) throw new Error(`no parameter '${name}' in this layout`);
  return e;
}

/** The slice of `flat` holding parameter `name` (a view, not a copy). */
export function slice(layout: ParamLayout, flat: Float32Array, name: string): Float32Array {
  const e = entry(layout, name);
  return flat.subarray(e.offset, e.offset + e.size);
}

const INIT_STREAM = 0x494e4954; // "INIT"

/** PyTorch defaults: Linear weight and bias ~ U(±1/sqrt(fan_in)); BN weight 1, bias 0; px_r ~ N(0, 1). */
export function initParams(cfg: ModelConfig, seed: number): Float32Array {
  const layout = paramLayout(cfg);
  const flat = new Float32Array(layout.size);
  layout.entries.forEach((e, i) => {
    const rng = new Rng(INIT_STREAM, seed, i);
    const view = flat.subarray(e.offset, e.offset + e.size);
    if (e.name.endsWith('.bn.weight')) view.fill(1);
    else if (e.name.endsWith('.bn.bias')) view.fill(0);
    else if (e.name === 'px_r') rng.fillNormal(view);
    else {
      const fanIn = e.name.endsWith('.weight')
        ? e.shape[1]!
        : entry(layout, e.name.replace(/\.bias$/, '.weight')).shape[1]!;
      const bound = 1 / Math.sqrt(fanIn);
      for (let j = 0; j < view.length; j++) view[j] = (2 * rng.uniform() - 1) * bound;
    }
  });
  return flat;
}

/** Running mean 0, running variance 1. */
export function initBuffers(cfg: ModelConfig): Float32Array {
  const layout = bufferLayout(cfg);
  const flat = new Float32Array(layout.size);
  for (const e of layout.entries)
    if (e.name.endsWith('running_var')) flat.fill(1, e.offset, e.offset + e.size);
  return flat;
}
