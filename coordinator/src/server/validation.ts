// The held-out ELBO at the end of each epoch, computed by the coordinator itself (evaluation mode,
// noise keyed by (seed, epoch, chunk)): the same numbers as the single-process trainer's when every
// validation cell is evaluated. Large atlases evaluate an evenly spread subset.

import type { CellSource, ModelConfig } from '@atlasvae/shared';
import { initBackend, type BackendChoice } from '@atlasvae/shared/backend';
import { createModel } from '@atlasvae/shared/model';
import { validationElbo } from '@atlasvae/shared/train';
import type { Validator } from './coordinator.js';

/** cells per forward pass of the held-out evaluation */
export const EVAL_BATCH = 128;

/** At most `max` of `cells`, evenly spread over them (all when there are fewer). */
export function spreadSubset(cells: Uint32Array, max: number): Uint32Array {
  if (cells.length <= max) return cells;
  const out = new Uint32Array(max);
  for (let i = 0; i < max; i++) out[i] = cells[Math.floor((i * cells.length) / max)]!;
  return out;
}

export async function heldOutValidator(
  modelConfig: ModelConfig,
  seed: number,
  source: CellSource,
  validation: Uint32Array,
  maxCells: number,
  backend: BackendChoice = 'auto',
  log?: (m: string) => void,
): Promise<Validator | null> {
  const cells = spreadSubset(validation, maxCells);
  if (cells.length === 0) return null;
  await initBackend(backend, log);
  const model = createModel(modelConfig);
  return async (params, buffers, epoch) => {
    model.setParams(params);
    model.setBuffers(buffers);
    // the same numbers as whole 1024-cell chunks, in passes of at most a microbatch's size: the
    // coordinator's memory at the end of an epoch stays that of a step, not of 1024 dense cells
    return validationElbo(model, source, cells, seed, epoch, 1024, EVAL_BATCH);
  };
}
