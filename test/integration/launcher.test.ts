// The node launcher (`atlasvae worker --devices`) and `train --local-workers` under the child
// supervisor, with real processes on loopback: one worker per (stand-in) GPU bound by
// CUDA_VISIBLE_DEVICES and labelled so in its metrics, the Prometheus file_sd targets file kept
// current, a killed worker replaced, signals forwarded, tokens from owner-only files.
import test, { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { loadCheckpoint } from '@atlasvae/shared';
import { tempDir } from '../helpers/paths.js';
import { parseExposition } from '../helpers/prom-text.js';
import {
  run,
  listeningPort,
  simulatedDataset,
  readAudit,
  file,
  killChildren,
  type Proc,
} from './dist-harness.js';
import { isAlive } from '../helpers/children.js';

let dir = '';
let data = '';
let tokenFile = '';
// long enough to watch it (stopped by the test); tiny model, several microbatches per step
const LONG = [
  '--epochs',
  '200',
  '--global-batch',
  '256',
  '--microbatch',
  '64',
  '--n-hidden',
  '32',
  '--seed',
  '3',
  '--validation-cells',
  '0',
  '--log-level',
  'info',
];

interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

function readTargets(f: string): TargetGroup[] {
  return JSON.parse(fs.readFileSync(f, 'utf8')) as TargetGroup[];
}

async function until<T>(
  what: string,
  f: () => T | undefined | false,
  procs: Proc[],
  timeoutMs = 90_000,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs)
      throw new Error(
        `timed out waiting for ${what}:\n${procs.map((p) => p.output().slice(-2500)).join('\n-----\n')}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function scrape(target: string): Promise<ReturnType<typeof parseExposition>> {
  const res = await fetch(`http://${target}/metrics`);
  return parseExposition(await res.text());
}

before(async () => {
  dir = tempDir('atlasvae-launcher-');
  data = await simulatedDataset(file(dir, 'data'), 2000, 400, 7);
  tokenFile = file(dir, 'token');
  fs.writeFileSync(tokenFile, 'launcher-test-token\n', { mode: 0o600 });
});

after(async () => {
  await killChildren();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test(
  'worker --devices all on a node with GPUs 0,1: one worker per GPU, bound, labelled, listed for Prometheus; a killed one is replaced; SIGTERM stops them',
  { timeout: 240_000 },
  async () => {
    const targetsFile = file(dir, 'targets.json');
    const coord = run([
      'coordinator',
      '--data',
      data,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--token-file',
      tokenFile,
      '--min-workers',
      '2',
      '--metrics-port',
      '0',
      '--metrics-host',
      '127.0.0.1',
      '--prometheus-targets',
      targetsFile,
      ...LONG,
    ]);
    const port = await listeningPort(coord);
    const launcher = run(
      [
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--token-file',
        tokenFile,
        '--devices',
        'all',
        '--backend',
        'wasm',
        '--name',
        'node1',
        '--metrics-port',
        '0',
        '--metrics-host',
        '127.0.0.1',
        '--give-up-after',
        '60',
        '--log-level',
        'info',
      ],
      { CUDA_VISIBLE_DEVICES: '0,1' },
    );
    const procs = [coord, launcher];
    const pid0 = Number((await coord.waitFor(/worker \d+ joined \(node1-gpu0:(\d+)/, 90_000))[1]);
    await coord.waitFor(/worker \d+ joined \(node1-gpu1:\d+/, 90_000);
    assert.match(launcher.output(), /CUDA_VISIBLE_DEVICES=0\b/);
    assert.match(launcher.output(), /CUDA_VISIBLE_DEVICES=1\b/);

    // file_sd: the coordinator itself and both workers, each worker's endpoint serving its device label
    const groups = await until(
      '3 targets',
      () => {
        const g = readTargets(targetsFile);
        return g.length === 3 && g;
      },
      procs,
    );
    const coordPort = Number(
      /metrics server listening url=http:\/\/127\.0\.0\.1:(\d+)/.exec(coord.output())![1],
    );
    assert.deepEqual(groups[0], {
      targets: [`127.0.0.1:${coordPort}`],
      labels: { atlasvae_process: 'coordinator' },
    });
    const devices: string[] = [];
    for (const g of groups.slice(1)) {
      assert.equal(g.labels.atlasvae_process, 'worker');
      assert.match(g.labels.atlasvae_worker!, /^node1-gpu[01]:\d+$/);
      const samples = await scrape(g.targets[0]!);
      const info = samples.find((s) => s.name === 'atlasvae_worker_device_info');
      assert.ok(info, `${g.targets[0]} exports atlasvae_worker_device_info`);
      assert.equal(
        info.labels.cuda_visible_devices,
        g.labels.atlasvae_worker!.slice(9, 10),
        'its label is the GPU the launcher gave it',
      );
      devices.push(info.labels.cuda_visible_devices);
    }
    assert.deepEqual(devices.sort(), ['0', '1']);
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file left beside it',
    );

    // a worker killed with SIGKILL: the launcher restarts it (same GPU), the targets follow
    process.kill(pid0, 'SIGKILL');
    await launcher.waitFor(
      /WARN .*worker node1-gpu0 exited \(killed by SIGKILL\); restarting it in 1\.0 s/,
      30_000,
    );
    const pidNew = await until(
      'the replacement to join',
      () => {
        const joins = [...coord.output().matchAll(/joined \(node1-gpu0:(\d+)/g)]
          .map((j) => Number(j[1]))
          .filter((p) => p !== pid0);
        return joins.length > 0 && joins[0]!;
      },
      procs,
      60_000,
    );
    assert.notEqual(pidNew, pid0);
    await until(
      'the new gpu0 worker in the targets',
      () => readTargets(targetsFile).some((g) => g.labels.atlasvae_worker === `node1-gpu0:${pidNew}`),
      procs,
    );
    assert.equal(
      readTargets(targetsFile).filter((g) => g.labels.atlasvae_worker === `node1-gpu0:${pid0}`).length,
      0,
      'the dead one left the targets',
    );
    assert.equal(readTargets(targetsFile).length, 3);

    // stop the coordinator (it writes no `done`: workers wait for a restart), then SIGTERM the launcher
    coord.child.kill('SIGTERM');
    await coord.exited;
    const childPids = [...coord.output().matchAll(/joined \(node1-gpu\d:(\d+)/g)].map((m) => Number(m[1]));
    const t0 = Date.now();
    launcher.child.kill('SIGTERM');
    const { code } = await launcher.exited;
    assert.ok(Date.now() - t0 < 15_000, 'the launcher stopped within 15 s');
    assert.equal(code, 0, launcher.output().slice(-3000));
    assert.match(launcher.output(), /SIGTERM: stopping 2 worker process\(es\)/);
    assert.ok(
      [pidNew, ...childPids].every((p) => !isAlive(p)),
      'no worker outlives the launcher',
    );
  },
);

test(
  'worker --devices 2 on a node without GPUs: two CPU workers, and the launcher exits 0 when training is over',
  { timeout: 240_000 },
  async () => {
    const ckpt = file(dir, 'cpu.ckpt');
    const coord = run(
      [
        'coordinator',
        '--data',
        data,
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--min-workers',
        '2',
        '--checkpoint',
        ckpt,
        '--epochs',
        '1',
        '--global-batch',
        '256',
        '--microbatch',
        '64',
        '--n-hidden',
        '32',
        '--validation-cells',
        '0',
      ],
      { ATLASVAE_TOKEN_FILE: tokenFile },
    );
    const port = await listeningPort(coord);
    const launcher = run(
      [
        'worker',
        '--connect',
        `ws://127.0.0.1:${port}`,
        '--devices',
        '2',
        '--backend',
        'wasm',
        '--name',
        'cpunode',
        '--log-level',
        'info',
      ],
      { CUDA_VISIBLE_DEVICES: '', ATLASVAE_TOKEN_FILE: tokenFile },
    );
    assert.equal((await coord.exited).code, 0, coord.output().slice(-3000));
    const { code } = await launcher.exited;
    assert.equal(code, 0, launcher.output().slice(-3000));
    assert.match(coord.output(), /joined \(cpunode-cpu0:/);
    assert.match(coord.output(), /joined \(cpunode-cpu1:/);
    assert.match(launcher.output(), /node launcher finished: 2 of 2 workers done/);
    assert.equal(loadCheckpoint(ckpt).position.epoch, 1);
  },
);

test(
  'bad --devices and token files are refused within seconds, naming the problem',
  { timeout: 240_000 },
  async () => {
    const open = file(dir, 'open-token');
    fs.writeFileSync(open, 'x\n', { mode: 0o644 });
    fs.chmodSync(open, 0o644);
    const cases: [string[], Record<string, string>, RegExp][] = [
      [
        ['worker', '--connect', 'ws://127.0.0.1:1', '--devices', 'all'],
        { CUDA_VISIBLE_DEVICES: '' },
        /--devices all: no GPU visible.*--devices N/,
      ],
      [
        ['worker', '--connect', 'ws://127.0.0.1:1', '--devices', '0,2'],
        { CUDA_VISIBLE_DEVICES: '0,1' },
        /GPU 2 not on this node: GPUs 0,1/,
      ],
      [
        ['worker', '--connect', 'ws://127.0.0.1:1', '--token-file', open],
        {},
        /permissions 0644 are too open/,
      ],
      [
        ['worker', '--connect', 'ws://127.0.0.1:1', '--devices', '2', '--metrics-port', '65535'],
        { CUDA_VISIBLE_DEVICES: '' },
        /--metrics-port 65535: .*65535…65536/,
      ],
      [['coordinator', '--data', data, '--token-file', open], {}, /permissions 0644 are too open/],
      [
        ['train', '--data', data, '--token-file', file(dir, 'nope')],
        {},
        /--token-file .*nope: cannot read it \(ENOENT\)/,
      ],
    ];
    for (const [args, env, re] of cases) {
      const t0 = Date.now();
      const p = run(args, env);
      const { code } = await p.exited;
      assert.equal(code, 1, `${args.join(' ')}: ${p.output()}`);
      assert.match(p.output(), re);
      assert.ok(Date.now() - t0 < 20_000);
    }
  },
);

test(
  'train --local-workers 2: a local worker killed with SIGKILL is restarted (WARN, a metric), and the new one computes',
  { timeout: 240_000 },
  async () => {
    const audit = file(dir, 'train.audit');
    const trainProc = run([
      'train',
      '--data',
      data,
      '--checkpoint',
      file(dir, 'restart.ckpt'),
      '--local-workers',
      '2',
      '--backend',
      'wasm',
      '--metrics-port',
      '0',
      '--metrics-host',
      '127.0.0.1',
      '--audit',
      audit,
      ...LONG,
    ]);
    const procs = [trainProc];
    const m = await trainProc.waitFor(/worker (\d+) joined \(local-1:(\d+)/, 90_000);
    const [oldId, oldPid] = [Number(m[1]), Number(m[2])];
    await trainProc.waitFor(/joined \(local-2:/, 90_000);
    const metricsPort = Number(
      /metrics server listening url=http:\/\/127\.0\.0\.1:(\d+)/.exec(trainProc.output())![1],
    );
    await until(
      'a step computed by the first local-1',
      () => readAudit(audit).some((a) => a.worker === oldId),
      procs,
    );
    process.kill(oldPid, 'SIGKILL');
    await trainProc.waitFor(
      /WARN .*local worker 1 exited \(killed by SIGKILL\); restarting it in 1\.0 s \(restart 1 of at most 5 in a row\)/,
      30_000,
    );
    const n = await until(
      'the replacement to join',
      () => {
        const joins = [...trainProc.output().matchAll(/worker (\d+) joined \(local-1:(\d+)/g)].filter(
          (j) => Number(j[2]) !== oldPid,
        );
        return joins.length > 0 && Number(joins[0]![1]);
      },
      procs,
      60_000,
    );
    assert.notEqual(n, oldId);
    await until(
      'a microbatch computed by the replacement',
      () => readAudit(audit).some((a) => a.worker === n),
      procs,
    );
    const samples = await scrape(`127.0.0.1:${metricsPort}`);
    assert.equal(samples.find((s) => s.name === 'atlasvae_local_worker_restarts_total')?.value, 1);
    trainProc.child.kill('SIGTERM');
    await until(
      'train to exit',
      () => trainProc.child.exitCode !== null || trainProc.child.signalCode !== null,
      procs,
      60_000,
    );
  },
);
