// `npm run bench -- scale`: the coordinator's peak memory against the atlas size. For each size a
// simulated atlas (2,000 genes) is trained for one epoch by a real `atlasvae coordinator` process
// with two simulated workers (they return zero gradients at once, so the epoch costs the
// coordinator's own work: reading, encoding and serving every cell), followed by its held-out
// evaluation of 10,000 cells. Its resident memory is sampled from /proc every 50 ms: peak over
// the epoch, and peak during the evaluation.
// ATLASVAE_BENCH_SCALE_CELLS (default "100000,1000000") picks the sizes; datasets are cached in
// .bench/scale-N (delete to rebuild).
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { simulateToDataset, defaultSimulationOptions } from '@atlasvae/coordinator/data';
import { cliPath, repoRoot } from '../helpers/paths.js';

function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

async function dataset(cells: number): Promise<string> {
  const dir = path.join(repoRoot, '.bench', `scale-${cells}`);
  if (fs.existsSync(path.join(dir, 'manifest.json'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  await simulateToDataset({
    ...defaultSimulationOptions,
    cells,
    genes: 2000,
    out: dir,
    seed: 1,
    shardCells: 65536,
  });
  return dir;
}

async function measure(cells: number): Promise<Record<string, number>> {
  const data = await dataset(cells);
  const ckpt = path.join(repoRoot, '.bench', `scale-${cells}.ckpt`);
  const token = 'bench-scale';
  const env = { ...process.env, ATLASVAE_TOKEN: token };
  const coord = spawn(
    process.execPath,
    [
      cliPath,
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--epochs',
      '1',
      '--global-batch',
      '256',
      '--microbatch',
      '128',
      '--min-workers',
      '2',
      '--validation-cells',
      '10000',
      '--checkpoint',
      ckpt,
      '--force',
      '--checkpoint-every',
      '0',
      '--log-level',
      'debug',
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let port = 0;
  let evaluating = false;
  let peakEpoch = 0,
    peakEval = 0,
    baseline = 0;
  const workers: ReturnType<typeof spawn>[] = [];
  const onData = (d: Buffer): void => {
    out += d.toString();
    if (!port) {
      const m = /listening url=ws:\/\/\S*:(\d+)/.exec(out);
      if (m) {
        port = Number(m[1]);
        baseline = rssMiB(coord.pid!) ?? 0;
        for (let i = 0; i < 2; i++) {
          workers.push(
            spawn(
              process.execPath,
              [
                cliPath,
                'worker',
                '--connect',
                `ws://127.0.0.1:${port}`,
                '--simulate',
                '--give-up-after',
                '10',
                '--log-level',
                'warn',
              ],
              { env, stdio: 'ignore' },
            ),
          );
        }
      }
    }
  };
  coord.stdout.on('data', onData);
  coord.stderr.on('data', onData);
  // from the coordinator's "evaluating" line on, samples count as evaluation
  const t0 = performance.now();
  let tEval = 0;
  const timer = setInterval(() => {
    const r = rssMiB(coord.pid!);
    if (r === null) return;
    if (!evaluating && /evaluating the held-out ELBO/.test(out)) {
      evaluating = true;
      tEval = performance.now();
    }
    if (evaluating) peakEval = Math.max(peakEval, r);
    else peakEpoch = Math.max(peakEpoch, r);
  }, 50);
  const code = await new Promise<number | null>((resolve) => coord.on('exit', (c) => resolve(c)));
  clearInterval(timer);
  for (const w of workers) w.kill('SIGKILL');
  if (code !== 0) throw new Error(`coordinator exited with ${code}:\n${out.slice(-2000)}`);
  fs.rmSync(ckpt, { force: true });
  return {
    cells,
    rssAtListenMiB: Math.round(baseline),
    peakRssEpochMiB: Math.round(peakEpoch),
    peakRssEvaluationMiB: Math.round(peakEval),
    epochSeconds: Math.round((tEval - t0) / 100) / 10,
    evaluationSeconds: Math.round((performance.now() - tEval) / 100) / 10,
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const sizes = (process.env.ATLASVAE_BENCH_SCALE_CELLS ?? '100000,1000000').split(',').map(Number);
  const rows: Record<string, number>[] = [];
  for (const n of sizes) rows.push(await measure(n));
  return { genes: 2000, validationCells: 10000, workers: '2 simulated', rows };
}
