// Training-step throughput: cells/s of one optimizer step (microbatch gradient + Adam + BatchNorm
// folding) for G = 2,000 genes, 128 cells, the default model (nb, 128 hidden, 10 latent, dropout 0.1),
// on one core, for each backend available here. Median over repeats.
import { initBackend, type BackendChoice } from '@atlasvae/shared/backend';
import { defaultModelConfig, defaultTrainConfig, type CellBatch, Rng } from '@atlasvae/shared';
import { createModel, microbatchNoise } from '@atlasvae/shared/model';
import { applyStep, initTrainingState } from '@atlasvae/shared/train';

const GENES = 2000;
const CELLS = 128;

/** Sparse counts at `density` nonzeros (geometric counts ≥ 1), 4 batches. */
export function benchBatch(nCells: number, nGenes: number, density: number, seed = 1): CellBatch {
  const rng = new Rng(seed);
  const indptr = new Int32Array(nCells + 1);
  const idx: number[] = [];
  const vals: number[] = [];
  const library = new Float32Array(nCells);
  for (let i = 0; i < nCells; i++) {
    for (let g = 0; g < nGenes; g++) {
      if (rng.uniform() >= density) continue;
      let v = 1;
      while (rng.uniform() < 0.6 && v < 500) v++;
      idx.push(g);
      vals.push(v);
      library[i]! += v;
    }
    indptr[i + 1] = idx.length;
  }
  return {
    nCells,
    nGenes,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(vals),
    library,
    batch: Int32Array.from({ length: nCells }, (_, i) => i % 4),
    label: new Int32Array(nCells).fill(-1),
    cellIndex: Uint32Array.from({ length: nCells }, (_, i) => i),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Measurement {
  /** wall clock: cells per second */
  cellsPerSecond: number;
  /** cells per second of this process's CPU time (user + system): robust when other work shares the machine */
  cellsPerCpuSecond: number;
  msPerStep: number;
  /** of which the microbatch gradient (forward + backward) */
  gradientMs: number;
  samples: number[];
}

async function measure(
  backend: BackendChoice,
  likelihood: 'nb' | 'zinb',
  density: number,
  repeats: number,
  stepsPerRepeat: number,
): Promise<Measurement> {
  await initBackend(backend, () => undefined);
  const mc = defaultModelConfig(GENES, 4, { likelihood });
  const tc = defaultTrainConfig(CELLS);
  const model = createModel(mc);
  const state = initTrainingState(mc, 0);
  const batch = benchBatch(CELLS, GENES, density);
  let gradMs = 0;
  const step = (): void => {
    model.setParams(state.params);
    const t = performance.now();
    const g = model.gradient(batch, microbatchNoise(mc, 0, state.globalStep, 0, CELLS), 0.5);
    gradMs += performance.now() - t;
    applyStep(state, [g], tc, mc);
  };
  for (let i = 0; i < 3; i++) step();
  gradMs = 0;
  const samples: number[] = [];
  const cpuSamples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    for (let s = 0; s < stepsPerRepeat; s++) step();
    const c = process.cpuUsage(c0);
    samples.push((CELLS * stepsPerRepeat) / ((performance.now() - t0) / 1000));
    cpuSamples.push((CELLS * stepsPerRepeat) / ((c.user + c.system) / 1e6));
  }
  const cps = median(samples);
  return {
    cellsPerSecond: Math.round(cps),
    cellsPerCpuSecond: Math.round(median(cpuSamples)),
    msPerStep: Number(((CELLS / cps) * 1000).toFixed(2)),
    gradientMs: Number((gradMs / (repeats * stepsPerRepeat)).toFixed(2)),
    samples: samples.map(Math.round),
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {
    genes: GENES,
    cells: CELLS,
    model:
      '128 hidden, 10 latent, 1 layer, dropout 0.1; counts with 20% nonzero (like Kang, dense first layer) or 7% (like 10x atlases over HVGs, sparse first layer)',
  };
  const backends: Record<string, unknown> = {};
  for (const b of ['tensorflow', 'wasm', 'cpu'] as const) {
    try {
      await initBackend(b, () => undefined);
    } catch {
      backends[b] = 'not installed';
      continue;
    }
    const slow = b === 'cpu';
    backends[b] = slow
      ? { 'nb, 20% nonzero': await measure(b, 'nb', 0.2, 3, 2) }
      : {
          'nb, 20% nonzero': await measure(b, 'nb', 0.2, 7, 10),
          'nb, 7% nonzero': await measure(b, 'nb', 0.07, 7, 10),
          'zinb, 20% nonzero': await measure(b, 'zinb', 0.2, 5, 10),
        };
  }
  out.stepCellsPerSecond = backends;
  out.loadAverage = (await import('node:os')).loadavg()[0];
  out.pytorchReference = 'PyTorch 1.13 CPU, one core: 3,600–4,500 cells/s (brief)';
  return out;
}

// `node test/dist/bench/step.js` runs this benchmark alone
if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await run(), null, 2));
}
