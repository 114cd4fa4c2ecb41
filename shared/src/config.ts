// Model and training configuration, with scvi-tools' SCVI defaults.
import type { EarlyStoppingConfig } from './train/early-stopping.js';

export type Likelihood = 'nb' | 'zinb' | 'poisson' | 'gaussian';
export type DispersionMode = 'gene' | 'gene-batch';

export interface ModelConfig {
  nGenes: number;
  nBatch: number;
  nHidden: number;
  nLatent: number;
  /** hidden layers in encoder and decoder (scvi n_layers) */
  nLayers: number;
  dropoutRate: number;
  likelihood: Likelihood;
  dispersion: DispersionMode;
  /** BatchNorm epsilon (PyTorch eps) */
  bnEps: number;
  /** BatchNorm momentum in PyTorch terms: running = (1 - m) * running + m * batch */
  bnMomentum: number;
  /** added to exp(q_v logits) */
  varEps: number;
}

export interface TrainConfig {
  seed: number;
  epochs: number;
  nEpochsKlWarmup: number;
  maxKlWeight: number;
  lr: number;
  adamEps: number;
  /** coupled L2 weight decay (torch.optim.Adam weight_decay) */
  weightDecay: number;
  /** cells per optimizer step */
  globalBatch: number;
  /** cells per gradient computation; a step is a list of microbatches */
  microbatch: number;
  /** fraction of cells in the training split */
  trainFraction: number;
  /** a trailing global batch with fewer cells is dropped (BatchNorm needs a few) */
  minLastBatch: number;
  /** global-index span of a shuffle block of the epoch plan (the shards' record-batch size) */
  planBlock: number;
  /** blocks mixed together by the epoch plan */
  planWindow: number;
  /** stop when the validation ELBO stops improving (train/early-stopping.ts); absent: off */
  earlyStopping?: EarlyStoppingConfig;
}

export function defaultModelConfig(
  nGenes: number,
  nBatch: number,
  over: Partial<ModelConfig> = {},
): ModelConfig {
  return {
    nGenes,
    nBatch,
    nHidden: 128,
    nLatent: 10,
    nLayers: 1,
    dropoutRate: 0.1,
    likelihood: 'nb',
    dispersion: 'gene',
    bnEps: 1e-3,
    bnMomentum: 0.01,
    varEps: 1e-4,
    ...over,
  };
}

/** scvi's default: min(round(20000 / n_cells * 400), 400) */
export function defaultEpochs(nCells: number): number {
  return Math.max(1, Math.min(Math.round((20000 / nCells) * 400), 400));
}

export function defaultTrainConfig(nCells: number, over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    seed: 0,
    epochs: defaultEpochs(nCells),
    nEpochsKlWarmup: 400,
    maxKlWeight: 1,
    lr: 1e-3,
    adamEps: 0.01,
    weightDecay: 1e-6,
    globalBatch: 128,
    microbatch: 128,
    trainFraction: 0.9,
    minLastBatch: 3,
    planBlock: 1024,
    planWindow: 8,
    ...over,
  };
}

/** scvi's epoch-based linear warm-up: weight = max * epoch / warmup until warmup epochs have passed. */
export function klWeightForEpoch(
  epoch: number,
  cfg: Pick<TrainConfig, 'nEpochsKlWarmup' | 'maxKlWeight'>,
): number {
  if (cfg.nEpochsKlWarmup <= 0 || epoch >= cfg.nEpochsKlWarmup) return cfg.maxKlWeight;
  return (cfg.maxKlWeight * epoch) / cfg.nEpochsKlWarmup;
}
