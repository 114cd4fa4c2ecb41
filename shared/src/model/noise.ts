// Training and validation randomness drawn in JS from explicit keys, so a microbatch's noise is the
// same whichever process computes it.
import type { ModelConfig } from '../config.js';
import { Rng } from '../rng.js';
import type { MicrobatchNoise } from './types.js';

const NOISE_STREAM = 0x4e4f4953; // "NOIS"
const VALID_STREAM = 0x56414c49; // "VALI"

/** ε ~ N(0, I) [nCells, nLatent], then one inverted-dropout mask per encoder layer [nCells, nHidden]. */
export function microbatchNoise(
  cfg: ModelConfig,
  seed: number,
  globalStep: number,
  microbatch: number,
  nCells: number,
): MicrobatchNoise {
  const rng = new Rng(NOISE_STREAM, seed, globalStep, microbatch);
  const eps = rng.fillNormal(new Float32Array(nCells * cfg.nLatent));
  let dropout: Float32Array[] | null = null;
  if (cfg.dropoutRate > 0) {
    const keep = 1 - cfg.dropoutRate;
    const scale = 1 / keep;
    dropout = [];
    for (let k = 0; k < cfg.nLayers; k++) {
      const mask = new Float32Array(nCells * cfg.nHidden);
      for (let i = 0; i < mask.length; i++) mask[i] = rng.uniform() < keep ? scale : 0;
      dropout.push(mask);
    }
  }
  return { eps, dropout };
}

/** ε for evaluating the validation ELBO: keyed by (seed, epoch, chunk of validation cells). */
export function validationNoise(
  cfg: ModelConfig,
  seed: number,
  epoch: number,
  chunk: number,
  nCells: number,
): Float32Array {
  return new Rng(VALID_STREAM, seed, epoch, chunk).fillNormal(new Float32Array(nCells * cfg.nLatent));
}
