// The distributed tests' common ground on kang_example: the data set prepared by the CLI into a fresh
// temporary directory, and the single-process trainer's state after K steps of the same plan
// (global batch 512 in microbatches of ≤ 128, seed 7, a 2-epoch KL warm-up) to compare against.
import path from 'node:path';
import { defaultModelConfig, defaultTrainConfig } from '@atlasvae/shared';
import { initBackend } from '@atlasvae/shared/backend';
import { trainInProcess as train } from '@atlasvae/shared/train';
import { openDataset } from '@atlasvae/coordinator/data';
import { sharedPath, skipUnlessShared, tempDir } from '../helpers/paths.js';
import { runOk } from './dist-harness.js';
export { cleanUp } from './dist-harness.js';

export const KANG = 'data/kang_example_sce_1556';
/** `skip` value for node:test when ../shared lacks kang_example. */
export const skipKang = skipUnlessShared(KANG, 'labels.tsv');
/** The plan as CLI flags; the trainer below runs the same one. */
export const KANG_PLAN = ['--global-batch', '512', '--microbatch', '128', '--seed', '7', '--kl-warmup', '2'];

export interface TrainerReference {
  params: Float32Array;
  buffers: Float32Array;
  m: Float32Array;
  v: Float32Array;
  globalStep: number;
  validationElbo: number;
}

export interface KangSetup {
  /** the temporary directory (remove it with `cleanUp`) */
  dir: string;
  /** the prepared data set inside it */
  data: string;
  trainCells: Uint32Array;
  /** the single-process trainer (wasm backend) after `steps` steps */
  ref: TrainerReference;
}

/** kang_example prepared by the CLI into `dir/kang` (batch and cell-type labels); returns its path. */
export async function prepareKang(dir: string): Promise<string> {
  const data = path.join(dir, 'kang');
  const src = sharedPath(KANG)!;
  await runOk([
    'prepare',
    src,
    '--obs',
    path.join(src, 'labels.tsv'),
    '--batch-key',
    'batch',
    '--label-key',
    'cell_type',
    '--out',
    data,
    '--log-level',
    'warn',
  ]);
  return data;
}

export async function prepareKangWithReference(prefix: string, steps: number): Promise<KangSetup> {
  const dir = tempDir(prefix);
  const data = await prepareKang(dir);
  const ds = await openDataset(data);
  await initBackend('wasm', () => undefined);
  const modelConfig = defaultModelConfig(ds.manifest.nGenes, ds.manifest.batchCategories.length);
  const trainConfig = defaultTrainConfig(ds.manifest.nCells, {
    globalBatch: 512,
    microbatch: 128,
    seed: 7,
    nEpochsKlWarmup: 2,
  });
  const r = await train({
    source: ds.source,
    modelConfig,
    trainConfig,
    trainCells: ds.train,
    validationCells: ds.validation,
    maxSteps: steps,
  });
  const ref = {
    params: r.state.params,
    buffers: r.state.buffers,
    m: r.state.adam.m,
    v: r.state.adam.v,
    globalStep: r.state.globalStep,
    validationElbo: r.history[0]!.validationElbo!,
  };
  r.model.dispose();
  const trainCells = ds.train;
  await ds.close();
  return { dir, data, trainCells, ref };
}
