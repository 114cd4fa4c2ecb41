// Options shared by the results commands (embed, normalize, evaluate, umap).

import fs from 'node:fs';
import type { Argv } from 'yargs';
import { BACKEND_CHOICES, type BackendChoice } from '@atlasvae/shared/backend';
import { CliError } from '@atlasvae/shared/errors';
import { Progress } from '../progress.js';
import type { ChunkPlan } from './cell-stream.js';

export function withModelAndData<T>(y: Argv<T>) {
  return y
    .option('checkpoint', { type: 'string', describe: 'trained model checkpoint' })
    .option('data', { type: 'string', describe: 'prepared dataset folder (`atlasvae prepare`)' })
    .option('backend', { choices: BACKEND_CHOICES, default: 'auto' as BackendChoice, describe: 'compute backend' })
    .option('as-batch', { type: 'string', describe: "decode every cell as this model batch (query data from batches the model never saw)" })
    .option('chunk-cells', { type: 'number', default: 1024, describe: 'cells per inference chunk' });
}

export function requirePositiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new CliError(`--${name} must be a positive integer (got ${v})`);
  return v;
}

export function requireNonNegativeInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0) throw new CliError(`--${name} must be a non-negative integer (got ${v})`);
  return v;
}

export function requireOption<V>(name: string, v: V | undefined): V {
  if (v === undefined || v === null || v === '') throw new CliError(`--${name} is required`);
  return v;
}

/** Progress over a chunk plan: one step per chunk. */
export function chunkProgress(label: string, plan: ChunkPlan): { tick: (cells: number) => void; finish: () => void } {
  const p = new Progress({ label, totalSteps: Math.ceil(plan.cells.length / plan.chunkSize) });
  return { tick: (cells) => p.update({ cells }), finish: () => p.finish() };
}

/** `--genes g1,g2` or `--genes FILE` (one gene per line, first column). */
export function parseGeneList(v: string | undefined): { genes: string[]; source: string } | null {
  if (v === undefined) return null;
  if (fs.existsSync(v) && fs.statSync(v).isFile()) {
    const genes = fs
      .readFileSync(v, 'utf8')
      .split(/\r?\n/)
      .map((l) => l.split(/[\t,]/)[0]!.trim())
      .filter((g) => g.length > 0);
    if (!genes.length) throw new CliError(`${v}: the gene list is empty`);
    return { genes, source: v };
  }
  const genes = v.split(',').map((g) => g.trim()).filter((g) => g.length > 0);
  if (!genes.length) throw new CliError('--genes is empty');
  return { genes, source: '--genes' };
}
