// Gradient engines per call: for each engine × backend available here and 128 … 8,192 cells per call
// (groups of 1 … 64 microbatches of 128 cells), cells/s, kernels launched per call, host↔device
// transfers per call (tensors uploaded, values read back, bytes) and milliseconds per call (wall and
// this process's CPU). G = 2,000 genes, the default model (nb), 7% nonzero counts, parameters set
// once per call as a worker does per step. Counts come from TensorFlow.js's engine
// (worker/src/device/counters.ts), so they are the same on any machine; the times are this machine's.
// webgpu runs on the adapter Dawn finds with ATLASVAE_WEBGPU_FLAGS (unset: the llvmpipe test bed,
// whose speed says nothing about a GPU; set it to '' on a GPU machine for Vulkan).
// ATLASVAE_BENCH_ENGINES='device:webgpu js:wasm' measures only those engine:backend pairs;
// ATLASVAE_BENCH_ENGINE_CELLS=512 stops at that many cells per call.
import * as tf from '@tensorflow/tfjs-core';
import os from 'node:os';
import { initBackend, activeDevice, type BackendChoice } from '@atlasvae/shared/backend';
import { defaultModelConfig } from '@atlasvae/shared';
import { encodeCellBatch } from '@atlasvae/shared/arrow';
import { initParams, bufferLayout } from '@atlasvae/shared/model';
import { ModelEngine, type GradientEngine, type WorkItem } from '@atlasvae/worker';
import { DeviceEngine, engineCounters } from '@atlasvae/worker/device';
import { benchBatch } from './step.js';

const GENES = 2000;
const MICROBATCH = 128;
const GROUPS = [1, 4, 16, 64];
/** stop growing the group once one call takes longer than this (slow backends) */
const MAX_CALL_MS = 20_000;
const TEST_BED = 'backend=opengl featureLevel=compatibility';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface CallMeasurement {
  cells: number;
  cellsPerSecond: number;
  msPerCall: number;
  cpuMsPerCall: number;
  cpuMsPerCell: number;
  kernelsPerCall: number;
  viewKernelsPerCall: number;
  uploadsPerCall: number;
  uploadMBPerCall: number;
  readbacksPerCall: number;
  readbackMBPerCall: number;
  firstCallMs: number;
  repeats: number;
}

async function measure(
  engine: GradientEngine,
  items: WorkItem[],
  params: Float32Array[],
): Promise<CallMeasurement> {
  const counters = engineCounters(tf);
  const call = async (r: number): Promise<void> => {
    engine.setParams(params[r % params.length]!);
    await engine.gradientGroup!(items);
  };
  const t0 = performance.now();
  await call(0); // warm-up (shader compilation on webgpu)
  const warmMs = performance.now() - t0;
  const repeats = warmMs > 5000 ? 2 : warmMs > 1000 ? 3 : 5;
  const wall: number[] = [];
  const cpu: number[] = [];
  const before = { ...counters };
  for (let r = 1; r <= repeats; r++) {
    const c0 = process.cpuUsage();
    const t = performance.now();
    await call(r);
    wall.push(performance.now() - t);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  const per = (k: keyof typeof counters): number =>
    Math.round(((counters[k] ?? 0) - (before[k] ?? 0)) / repeats);
  const cells = items.reduce((a, it) => a + it.nCells, 0);
  const ms = median(wall);
  return {
    cells,
    cellsPerSecond: Math.round(cells / (ms / 1000)),
    msPerCall: Number(ms.toFixed(1)),
    cpuMsPerCall: Number(median(cpu).toFixed(1)),
    cpuMsPerCell: Number((median(cpu) / cells).toFixed(3)),
    kernelsPerCall: per('kernels'),
    viewKernelsPerCall: per('viewKernels'),
    uploadsPerCall: per('uploads'),
    uploadMBPerCall: Number(((counters.uploadBytes - before.uploadBytes) / repeats / 1e6).toFixed(2)),
    readbacksPerCall: per('readbacks'),
    readbackMBPerCall: Number(((counters.readbackBytes - before.readbackBytes) / repeats / 1e6).toFixed(2)),
    firstCallMs: Math.round(warmMs),
    repeats,
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const cfg = defaultModelConfig(GENES, 4);
  const batches = Array.from({ length: Math.max(...GROUPS) }, (_, k) =>
    benchBatch(MICROBATCH, GENES, 0.07, k + 1),
  );
  const items: WorkItem[] = batches.map((b, k) => ({
    step: 1,
    epoch: 0,
    microbatch: k,
    nCells: b.nCells,
    klWeight: 0.5,
    arrow: encodeCellBatch(b),
  }));
  const params = [initParams(cfg, 1), initParams(cfg, 2)];
  const bnLength = bufferLayout(cfg).size;
  process.env.ATLASVAE_WEBGPU_FLAGS ??= TEST_BED;
  const all: [string, BackendChoice][] = [
    ['js', 'wasm'],
    ['js', 'cpu'],
    ['device', 'cpu'],
    ['device', 'wasm'],
    ['device', 'tensorflow'],
    ['device', 'webgpu'],
  ];
  // e.g. ATLASVAE_BENCH_ENGINES='device:webgpu js:wasm' on a GPU machine
  const only = process.env.ATLASVAE_BENCH_ENGINES?.split(/\s+/).filter(Boolean);
  const runs = only ? all.filter(([k, b]) => only.includes(`${k}:${b}`)) : all;
  const out: Record<string, unknown> = {
    genes: GENES,
    microbatch: MICROBATCH,
    model: 'nb, 128 hidden, 10 latent, 1 layer, dropout 0.1; 7% nonzero counts',
    machine: `${os.cpus().length} × ${os.cpus()[0]?.model.trim()}`,
    webgpuFlags: process.env.ATLASVAE_WEBGPU_FLAGS,
  };
  const results: Record<string, unknown> = {};
  for (const [kind, backend] of runs) {
    const key = `${kind} × ${backend}`;
    try {
      await initBackend(backend, () => undefined);
    } catch (e) {
      results[key] = `not available: ${(e as Error).message}`;
      continue;
    }
    const engine: GradientEngine =
      kind === 'js'
        ? await ModelEngine.create(backend, () => undefined)
        : new DeviceEngine(backend, activeDevice() ?? backend, 64);
    await engine.configure(cfg, 3, params[0]!.length, bnLength);
    const sizes: Record<string, unknown> = { device: activeDevice() };
    const maxCells = Number(process.env.ATLASVAE_BENCH_ENGINE_CELLS ?? Infinity);
    for (const k of GROUPS.filter((g) => g * MICROBATCH <= maxCells)) {
      try {
        const m = await measure(engine, items.slice(0, k), params);
        sizes[String(k * MICROBATCH)] = m;
        if (m.msPerCall > MAX_CALL_MS) break;
      } catch (e) {
        sizes[String(k * MICROBATCH)] = `failed: ${(e as Error).message.slice(0, 200)}`;
        break;
      }
    }
    engine.dispose?.();
    results[key] = sizes;
  }
  out.cellsPerCall = results;
  out.loadAverage = os.loadavg()[0];
  return out;
}

// `node test/dist/bench/engine.js` runs this benchmark alone
if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await run(), null, 2));
}
