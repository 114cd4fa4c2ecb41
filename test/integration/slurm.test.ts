// The shipped Slurm script (deploy/slurm/atlasvae.sbatch) on a real one-node Slurm cluster with
// two stand-in GPUs (test/helpers/slurm.ts): `sbatch` trains kang_example to completion with two
// workers, each bound by Slurm to its own GPU (CUDA_VISIBLE_DEVICES 0 and 1, in its log and as a
// metric label), writing the checkpoint and the Prometheus file_sd targets; a job cancelled
// mid-run with `scancel` and submitted again continues from its checkpoint to the very same
// parameters as the uninterrupted job. Skips, saying why, only where Slurm cannot start.
import test, { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { loadCheckpoint, type Checkpoint } from '@atlasvae/shared';
import { cliPath, repoRoot, sharedPath, tempDir } from '../helpers/paths.js';
import { freePort } from '../helpers/net.js';
import { parseExposition } from '../helpers/prom-text.js';
import { startSlurm, type SlurmCluster } from '../helpers/slurm.js';

const h5ad = sharedPath('data', 'kang_example_sce_1556', 'kang_example_sce_1556.h5ad');
const script = path.join(repoRoot, 'deploy', 'slurm', 'atlasvae.sbatch');
// kang_example: ~1,400 training cells, 11 steps per epoch; 30 epochs is ~330 steps, long enough to
// watch the job and cancel it midway, short enough for a test (seconds of training)
const TRAIN_ARGS =
  '--epochs 30 --global-batch 128 --microbatch 64 --n-hidden 64 --seed 4 --checkpoint-every 20 --validation-cells 0 --log-level info';

let cluster: SlurmCluster | null = null;
let skip: string | false = false;
let dir = '';
let data = '';

before(async () => {
  if (!h5ad) {
    skip = '../shared/data/kang_example_sce_1556 is absent: skipped';
    return;
  }
  const c = await startSlurm();
  if (typeof c === 'string') {
    skip = `Slurm cannot start here: ${c}`;
    console.log(`# ${skip}`);
    return;
  }
  cluster = c;
  dir = tempDir('atlasvae-slurm-run-');
  fs.chmodSync(dir, 0o755);
  data = path.join(dir, 'kang');
  execFileSync(
    process.execPath,
    [
      cliPath,
      'prepare',
      h5ad,
      '--out',
      data,
      '--batch-key',
      'batch',
      '--label-key',
      'cell_type',
      '--n-top-genes',
      '500',
      '--log-level',
      'warn',
    ],
    { stdio: 'inherit' },
  );
});

after(async () => {
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

interface Job {
  id: string;
  runDir: string;
}

async function submit(runDir: string): Promise<Job> {
  const c = cluster!;
  fs.mkdirSync(runDir, { recursive: true });
  const out = execFileSync(
    'sbatch',
    [
      '--parsable',
      '--nodes=1',
      '--ntasks-per-node=2',
      '--cpus-per-task=1',
      '--gpus-per-task=1',
      `--output=${path.join(runDir, 'slurm-%j.out')}`,
      script,
    ],
    {
      env: {
        ...c.env,
        ATLASVAE: `${process.execPath} ${cliPath}`,
        ATLASVAE_DATA: data,
        ATLASVAE_RUN_DIR: runDir,
        ATLASVAE_BACKEND: 'wasm',
        ATLASVAE_PORT: String(await freePort()),
        ATLASVAE_METRICS_PORT: '0',
        ATLASVAE_TRAIN_ARGS: TRAIN_ARGS,
      },
      encoding: 'utf8',
    },
  );
  return { id: out.trim().split(';')[0]!, runDir };
}

function running(job: Job): boolean {
  return cluster!.cmd('squeue', ['-h', '-j', job.id, '-o', '%T']).trim() !== '';
}

function jobLogs(job: Job): string {
  const files = fs.readdirSync(job.runDir).map((f) => path.join(job.runDir, f));
  const logDir = path.join(job.runDir, 'logs');
  if (fs.existsSync(logDir)) files.push(...fs.readdirSync(logDir).map((f) => path.join(logDir, f)));
  return (
    files
      .filter((f) => /\.(out|log)$/.test(f))
      .map((f) => `--- ${path.basename(f)} ---\n${fs.readFileSync(f, 'utf8').slice(-2500)}`)
      .join('\n') +
    `\n--- slurmctld.log ---\n${fs.readFileSync(path.join(cluster!.dir, 'log', 'slurmctld.log'), 'utf8').slice(-1500)}`
  );
}

async function until<T>(
  what: string,
  job: Job,
  f: () => T | undefined | false,
  timeoutMs = 150_000,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}:\n${jobLogs(job)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readJson<T>(f: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(f, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function checkpointStep(f: string): number {
  try {
    return loadCheckpoint(f).position.globalStep;
  } catch {
    return -1; // not there yet
  }
}

let reference: Checkpoint | null = null;

test(
  'sbatch of deploy/slurm/atlasvae.sbatch: two workers, one stand-in GPU each, trained to completion',
  { timeout: 300_000 },
  async (t) => {
    if (skip) return t.skip(skip);
    const job = await submit(path.join(dir, 'run-a'));
    const targetsFile = path.join(job.runDir, 'prometheus-targets.json');
    type Group = { targets: string[]; labels: Record<string, string> };
    const groups = await until('the coordinator and 2 workers in the file_sd targets', job, () => {
      const g = readJson<Group[]>(targetsFile);
      return g !== undefined && g.length === 3 && g;
    });
    assert.equal(groups[0]!.labels.atlasvae_process, 'coordinator');
    assert.match(groups[0]!.targets[0]!, new RegExp(`^${os.hostname()}:\\d+$`));
    // while it trains: each worker's metrics endpoint carries the GPU Slurm gave it
    const devices: string[] = [];
    for (const g of groups.slice(1)) {
      assert.match(g.labels.atlasvae_worker!, /-task[01]:\d+$/);
      const text = await (await fetch(`http://${g.targets[0]}/metrics`)).text();
      const info = parseExposition(text).find((s) => s.name === 'atlasvae_worker_device_info');
      assert.ok(info, `${g.targets[0]}: atlasvae_worker_device_info`);
      devices.push(info.labels.cuda_visible_devices!);
    }
    assert.deepEqual(devices.sort(), ['0', '1'], 'CUDA_VISIBLE_DEVICES label of each worker');
    await until('the job to end', job, () => !running(job));

    const logs = path.join(job.runDir, 'logs');
    for (const task of [0, 1]) {
      const log = fs.readFileSync(path.join(logs, `worker-${job.id}-${task}.log`), 'utf8');
      assert.match(log, new RegExp(`CUDA_VISIBLE_DEVICES=${task}\\n`), `task ${task}'s log names its GPU`);
      assert.match(log, /worker finished: training finished/);
    }
    const coordLog = fs.readFileSync(path.join(logs, `coordinator-${job.id}.log`), 'utf8');
    assert.match(coordLog, /training finished: \d+ steps, 30 epochs complete/, coordLog.slice(-2000));
    assert.match(coordLog, /--resume: .* does not exist yet; starting from scratch/);
    reference = loadCheckpoint(path.join(job.runDir, 'model.ckpt'));
    assert.equal(reference.position.epoch, 30);
    assert.equal(
      (fs.statSync(path.join(job.runDir, 'token')).mode & 0o777).toString(8),
      '600',
      'the token file is owner-only',
    );
    assert.deepEqual(
      fs.readdirSync(job.runDir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary files left',
    );
  },
);

test(
  'scancel mid-run, then sbatch again with the same run folder: the same final parameters',
  { timeout: 300_000 },
  async (t) => {
    if (skip) return t.skip(skip);
    assert.ok(reference, 'the uninterrupted job ran');
    const runDir = path.join(dir, 'run-b');
    const ckpt = path.join(runDir, 'model.ckpt');
    const first = await submit(runDir);
    const total = reference.position.globalStep;
    await until('a checkpoint at step 40 or later', first, () => checkpointStep(ckpt) >= 40);
    cluster!.cmd('scancel', [first.id]);
    await until('the cancelled job to end', first, () => !running(first));
    const cancelledAt = checkpointStep(ckpt);
    assert.ok(
      cancelledAt >= 40 && cancelledAt < total,
      `cancelled mid-run: checkpoint at step ${cancelledAt} of ${total}`,
    );
    console.log(`  scancel left a checkpoint at step ${cancelledAt} of ${total}`);

    const second = await submit(runDir);
    await until('the resubmitted job to end', second, () => !running(second));
    const coordLog = fs.readFileSync(path.join(runDir, 'logs', `coordinator-${second.id}.log`), 'utf8');
    assert.match(coordLog, new RegExp(`resuming from .*${cancelledAt} steps done`), coordLog.slice(-2000));
    assert.match(coordLog, /training finished/);
    const c = loadCheckpoint(ckpt);
    assert.deepEqual(c.position, reference.position, 'plan position');
    assert.deepEqual(c.params, reference.params, 'parameters differ from the uninterrupted job');
    assert.deepEqual(c.buffers, reference.buffers, 'BatchNorm statistics differ');
    assert.deepEqual(c.adam, reference.adam, 'optimizer state differs');
  },
);
