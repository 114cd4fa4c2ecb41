// Which GPUs this node offers the node launcher (`atlasvae worker --devices`), and which of them
// a `--devices` value selects. One worker process per GPU, bound by CUDA_VISIBLE_DEVICES (tfjs
// has no per-op device placement: a process uses the first GPU it sees).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export interface DiscoveredGpus {
  /** device IDs as CUDA_VISIBLE_DEVICES takes them (indexes, or UUIDs where the scheduler gave UUIDs) */
  ids: string[];
  /** where they were found */
  source: 'CUDA_VISIBLE_DEVICES' | 'nvidia-smi' | '/dev' | 'none';
}

export interface DiscoveryInputs {
  env?: NodeJS.ProcessEnv;
  /** output of `nvidia-smi -L`, or null when it is absent or fails */
  nvidiaSmi?: () => string | null;
  /** names in /dev */
  devEntries?: () => string[];
}

/**
 * GPUs visible to this process: CUDA_VISIBLE_DEVICES when set (a scheduler such as Slurm or the
 * NVIDIA container runtime chose them), else `nvidia-smi -L`, else /dev/nvidia0, /dev/nvidia1, …
 */
export function discoverGpus(inputs: DiscoveryInputs = {}): DiscoveredGpus {
  const env = inputs.env ?? process.env;
  const cvd = env.CUDA_VISIBLE_DEVICES;
  if (cvd !== undefined) {
    // "" or -1 hide every GPU; "NoDevFiles" is what Slurm sets when the job has none
    const ids = cvd
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (ids.length === 0 || ids[0] === '-1' || ids[0] === 'NoDevFiles')
      return { ids: [], source: 'CUDA_VISIBLE_DEVICES' };
    return { ids, source: 'CUDA_VISIBLE_DEVICES' };
  }
  const smi = (inputs.nvidiaSmi ?? runNvidiaSmi)();
  if (smi !== null) {
    const ids = [...smi.matchAll(/^GPU (\d+):/gm)].map((m) => m[1]!);
    if (ids.length > 0) return { ids, source: 'nvidia-smi' };
  }
  const dev = (inputs.devEntries ?? listDev)()
    .map((n) => /^nvidia(\d+)$/.exec(n)?.[1])
    .filter((x): x is string => x !== undefined)
    .sort((a, b) => Number(a) - Number(b));
  if (dev.length > 0) return { ids: dev, source: '/dev' };
  return { ids: [], source: 'none' };
}

function runNvidiaSmi(): string | null {
  try {
    return execFileSync('nvidia-smi', ['-L'], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return null;
  }
}

function listDev(): string[] {
  try {
    return fs.readdirSync('/dev');
  } catch {
    return [];
  }
}

/** One worker process to start: its CUDA_VISIBLE_DEVICES (null: a CPU worker, GPUs hidden). */
export interface DeviceSlot {
  index: number;
  gpu: string | null;
}

/**
 * Resolve `--devices`: `all` (every discovered GPU), `N` (the first N GPUs, or N CPU workers on a
 * node without GPUs), or a list of discovered device IDs `0,2`. Throws an Error naming the problem.
 */
export function selectDevices(spec: string, found: DiscoveredGpus): DeviceSlot[] {
  const s = spec.trim();
  const where =
    found.source === 'none'
      ? 'no GPU found (CUDA_VISIBLE_DEVICES unset, no nvidia-smi, no /dev/nvidia[0-9]*)'
      : found.ids.length === 0
        ? `no GPU visible (CUDA_VISIBLE_DEVICES=${JSON.stringify(process.env.CUDA_VISIBLE_DEVICES ?? '')})`
        : `GPUs ${found.ids.join(',')} (from ${found.source})`;
  if (s === 'all') {
    if (found.ids.length === 0)
      throw new Error(`--devices all: ${where}; give --devices N to start N CPU workers`);
    return found.ids.map((gpu, index) => ({ index, gpu }));
  }
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n < 1 || n > 1024) throw new Error(`--devices ${s}: give 1 or more workers`);
    if (found.ids.length === 0) return Array.from({ length: n }, (_, index) => ({ index, gpu: null }));
    if (n > found.ids.length)
      throw new Error(`--devices ${s}: only ${found.ids.length} on this node: ${where}`);
    return found.ids.slice(0, n).map((gpu, index) => ({ index, gpu }));
  }
  const ids = s.split(',').map((x) => x.trim());
  if (ids.length === 0 || ids.some((x) => x === '' || !/^[A-Za-z0-9_-]+$/.test(x))) {
    throw new Error(
      `--devices '${spec}': expected all, a number of workers, or a comma-separated list of GPU IDs such as 0,2`,
    );
  }
  if (new Set(ids).size !== ids.length) throw new Error(`--devices '${spec}': a GPU is listed twice`);
  const missing = ids.filter((x) => !found.ids.includes(x));
  if (missing.length > 0)
    throw new Error(`--devices '${spec}': GPU ${missing.join(',')} not on this node: ${where}`);
  return ids.map((gpu, index) => ({ index, gpu }));
}
