// `npm run bench -- workers`: what a user gets from `atlasvae train --local-workers N` with every
// batch-size default left alone, for N = 1, 2 (and more where the machine has the cores), rounds
// interleaved. Per N: training cells/s after the first epoch (what a run of hundreds of epochs
// sees; medians and every round) and the ratio to one worker; the same from the run's final
// progress line (its last 30 s, the workers' start-up included, as in a short run); the median
// step broken into the coordinator's phases (compute of the slowest worker, waiting beyond it,
// summing, Adam, broadcast) from its per-step debug reports, in one more, untimed run per N (those
// reports slow the runs they describe). The machine's core count and load are printed with them: N workers and a
// coordinator on fewer than N + 1 cores contend for them.
// ATLASVAE_BENCH_WORKERS_DATA: a prepared dataset (default: a simulated 10,000 × 1,000 atlas, the
// shape of mouse_brain_10k, cached in .bench/workers-10000); ATLASVAE_BENCH_WORKERS (default
// "1 2"); ATLASVAE_BENCH_REPEATS (default 3); ATLASVAE_BENCH_WORKERS_EPOCHS (default 6, at least 2);
// ATLASVAE_BENCH_WORKERS_BACKEND (default wasm).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { cliPath, repoRoot } from '../helpers/paths.js';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d;

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function dataset(): Promise<string> {
  const given = process.env.ATLASVAE_BENCH_WORKERS_DATA;
  if (given) return given;
  const dir = path.join(repoRoot, '.bench', 'workers-10000');
  if (fs.existsSync(path.join(dir, 'manifest.json'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  const r = await runCli(['simulate', '--cells', '10000', '--genes', '1000', '--seed', '1', '--out', dir]);
  if (r.code !== 0) throw new Error(`atlasvae simulate failed: ${r.stderr.slice(-500)}`);
  return dir;
}

interface RunResult {
  /** the run's own final progress line: the last 30 s, the workers' start-up (first epoch) included */
  cellsPerSecond: number;
  /** after the first epoch: the cells of every later epoch over the wall time from the end of the
   * first epoch to the end of the last (epoch ends and slow steps included; no start-up) */
  steadyCellsPerSecond: number;
  /** medians of the coordinator's per-step reports after the first epoch (debug runs only) */
  steps: Record<string, number>;
}

const PHASES = [
  'totalMs',
  'computeMs',
  'communicationMs',
  'aggregationMs',
  'applyMs',
  'broadcastMs',
  'dataWaitMs',
] as const;

/**
 * One `train` run with every batch default. Timed runs log at info level, as users run it: the
 * per-step debug lines are written to a pipe while both workers compute, which on 2 cores slows
 * the run they measure; `debug` runs give the step phases and are not timed.
 */
async function trainOnce(
  data: string,
  workers: number,
  epochs: number,
  backend: string,
  debug = false,
): Promise<RunResult> {
  const ckpt = path.join(repoRoot, '.bench', `workers-${workers}.ckpt`);
  const r = await runCli([
    'train',
    '--data',
    data,
    '--local-workers',
    String(workers),
    '--backend',
    backend,
    '--epochs',
    String(epochs),
    '--validation-cells',
    '0',
    '--checkpoint',
    ckpt,
    '--force',
    '--log-level',
    debug ? 'debug' : 'info',
    '--log-format',
    'json',
  ]);
  fs.rmSync(ckpt, { force: true });
  if (r.code !== 0)
    throw new Error(`train --local-workers ${workers} exited ${r.code}: ${r.stderr.slice(-800)}`);
  let cellsPerSecond = NaN;
  let firstEpochEnd = NaN;
  let lastEpochEnd = NaN;
  let steadyCells = 0;
  const byPhase = new Map<string, number[]>(PHASES.map((p) => [p, []]));
  for (const line of (r.stderr + '\n' + r.stdout).split('\n')) {
    if (!line.startsWith('{')) continue;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (rec.msg === 'progress done' && typeof rec.cellsPerSecond === 'number')
      cellsPerSecond = rec.cellsPerSecond;
    // "epoch k/N done": the first epoch includes the workers' start (compilation, first allocations)
    const done = typeof rec.msg === 'string' ? /^epoch (\d+)\/\d+ done$/.exec(rec.msg) : null;
    if (done) {
      const t = Date.parse(String(rec.time));
      if (done[1] === '1') firstEpochEnd = t;
      else {
        steadyCells += typeof rec.cells === 'number' ? rec.cells : 0;
        lastEpochEnd = t;
      }
    }
    if (rec.msg === 'step' && typeof rec.epoch === 'number' && rec.epoch > 0)
      for (const p of PHASES) if (typeof rec[p] === 'number') byPhase.get(p)!.push(rec[p]);
  }
  if (!Number.isFinite(cellsPerSecond)) throw new Error('no final progress line in the train log');
  if (!(lastEpochEnd > firstEpochEnd)) throw new Error('the run needs at least 2 epochs');
  const steadyCellsPerSecond = (steadyCells * 1000) / (lastEpochEnd - firstEpochEnd);
  const steps: Record<string, number> = {};
  for (const [p, xs] of byPhase) steps[p] = round(median(xs));
  return { cellsPerSecond, steadyCellsPerSecond, steps };
}

export async function run(): Promise<Record<string, unknown>> {
  const data = await dataset();
  const counts = (process.env.ATLASVAE_BENCH_WORKERS ?? '1 2').split(/[ ,]+/).filter(Boolean).map(Number);
  const repeats = Number(process.env.ATLASVAE_BENCH_REPEATS ?? 3);
  const epochs = Number(process.env.ATLASVAE_BENCH_WORKERS_EPOCHS ?? 6);
  const backend = process.env.ATLASVAE_BENCH_WORKERS_BACKEND ?? 'wasm';
  const loadBefore = os.loadavg()[0];
  const runs = new Map<number, RunResult[]>(counts.map((n) => [n, []]));
  for (let i = 0; i < repeats; i++)
    for (const n of counts) runs.get(n)!.push(await trainOnce(data, n, epochs, backend));
  const phases = new Map<number, Record<string, number>>();
  for (const n of counts) phases.set(n, (await trainOnce(data, n, epochs, backend, true)).steps);
  const base = median(runs.get(counts[0]!)!.map((r) => r.steadyCellsPerSecond));
  const baseWhole = median(runs.get(counts[0]!)!.map((r) => r.cellsPerSecond));
  const out: Record<string, unknown> = {
    data,
    backend,
    epochs,
    cpus: os.cpus().length,
    loadAverageBefore: round(loadBefore ?? 0),
    loadAverageAfter: round(os.loadavg()[0] ?? 0),
  };
  for (const [n, rs] of runs) {
    const cps = median(rs.map((r) => r.steadyCellsPerSecond));
    const whole = median(rs.map((r) => r.cellsPerSecond));
    out[`workers${n}`] = {
      cellsPerSecondMedian: Math.round(cps),
      cellsPerSecondRounds: rs.map((r) => Math.round(r.steadyCellsPerSecond)),
      ratioToFirst: round(cps / base, 3),
      // each round against the first N's run of the same round: drifts of the machine's speed
      // slower than a round cancel
      ratioPerRound: rs.map((r, i) =>
        round(r.steadyCellsPerSecond / runs.get(counts[0]!)![i]!.steadyCellsPerSecond, 3),
      ),
      withStartUp: {
        cellsPerSecondMedian: Math.round(whole),
        cellsPerSecondRounds: rs.map((r) => Math.round(r.cellsPerSecond)),
        ratioToFirst: round(whole / baseWhole, 3),
      },
      medianStepMs: phases.get(n),
    };
  }
  return out;
}
