// Shared steps of the results integration tests: prepare a real dataset with the CLI, train a small
// model with the single-process trainer, save it as a checkpoint, run results commands.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { PNG } from 'pngjs';
import { initBackend } from '@atlasvae/shared/backend';
import {
  defaultModelConfig,
  defaultTrainConfig,
  type TrainConfig,
  saveCheckpoint,
  type Checkpoint,
} from '@atlasvae/shared';
import { trainInProcess as train, type EpochRecord } from '@atlasvae/shared/train';
import type { VaeModel } from '@atlasvae/shared/model';
import { openDataset, type Dataset } from '@atlasvae/coordinator/data';
import { cliPath } from '../helpers/paths.js';
import { track } from '../helpers/children.js';

/** Run the CLI; resolves with stdout, rejects with stderr on a non-zero exit. */
export function runCli(
  args: string[],
  cwd?: string,
): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    const p = track(spawn(process.execPath, [cliPath, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '',
      stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ stdout, stderr, code: code ?? -1 }));
  });
}

export async function cli(args: string[]): Promise<string> {
  const r = await runCli(args);
  if (r.code !== 0) throw new Error(`atlasvae ${args.join(' ')} failed (${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** An epoch record of a run with validation cells: its held-out terms are there. */
export type EvaluatedEpoch = EpochRecord &
  Required<Pick<EpochRecord, 'validationElbo' | 'validationReconstruction' | 'validationKl'>>;

export interface TrainedModel {
  dataset: Dataset;
  model: VaeModel;
  /** every epoch, each with its held-out evaluation */
  history: EvaluatedEpoch[];
  checkpoint: string;
  trainConfig: TrainConfig;
}

/** Train on a prepared dataset's own train/validation split and save a checkpoint beside it. */
export async function trainAndSave(
  dataDir: string,
  out: string,
  over: Partial<TrainConfig>,
): Promise<TrainedModel> {
  await initBackend('wasm', () => undefined);
  const dataset = await openDataset(dataDir);
  const m = dataset.manifest;
  const modelConfig = defaultModelConfig(m.nGenes, m.batchCategories.length);
  const trainConfig = defaultTrainConfig(m.nCells, { seed: 0, ...over });
  const {
    state,
    history: records,
    model,
  } = await train({
    source: dataset.source,
    modelConfig,
    trainConfig,
    trainCells: dataset.train,
    validationCells: dataset.validation,
  });
  const history = records.map((h) => {
    if (h.validationElbo === undefined) throw new Error(`epoch ${h.epoch} was not evaluated`);
    return h as EvaluatedEpoch;
  });
  const ckpt: Checkpoint = {
    format: 'atlasvae-checkpoint',
    version: 1,
    modelConfig,
    trainConfig,
    params: state.params,
    buffers: state.buffers,
    adam: { m: state.adam.m, v: state.adam.v, t: state.adam.t },
    position: { epoch: state.epoch, stepInEpoch: state.stepInEpoch, globalStep: state.globalStep },
    genes: m.genes,
    batchCategories: m.batchCategories,
    labelCategories: m.labelCategories,
    manifestHash: null,
    history,
    createdAt: new Date().toISOString(),
  };
  saveCheckpoint(out, ckpt);
  return { dataset, model, history, checkpoint: out, trainConfig };
}

/** Pixel counts per RGB colour of a PNG file, and its size. */
export function pngColours(file: string): {
  width: number;
  height: number;
  count: (rgb: readonly number[]) => number;
} {
  const png = PNG.sync.read(fs.readFileSync(file));
  const counts = new Map<number, number>();
  for (let p = 0; p < png.width * png.height; p++) {
    const key = (png.data[p * 4]! << 16) | (png.data[p * 4 + 1]! << 8) | png.data[p * 4 + 2]!;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return {
    width: png.width,
    height: png.height,
    count: (c) => counts.get((c[0]! << 16) | (c[1]! << 8) | c[2]!) ?? 0,
  };
}

export function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

export function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(1e-12, Math.abs(b));
}

export const tmp = (dir: string, name: string): string => path.join(dir, name);
