// The child-process supervisor (worker/src/launcher/supervisor.ts) with real child processes:
// per-child environment, bounded exponential backoff, no restarts once one child is done,
// signals forwarded, and children that never outlive their parent (even one killed by SIGKILL).
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Supervisor, type SupervisorLog } from '@atlasvae/worker/launcher';
import { tempDir } from '../helpers/paths.js';
import { track, killChildren, isAlive } from '../helpers/children.js';

const helpers = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers');
const childScript = path.join(helpers, 'supervised-child.js');
const parentScript = path.join(helpers, 'supervisor-parent.js');
const dir = tempDir('atlasvae-supervisor-');

after(async () => {
  await killChildren();
  fs.rmSync(dir, { recursive: true, force: true });
});

function recorder(): SupervisorLog & { lines: string[] } {
  const lines: string[] = [];
  const rec =
    (level: string) =>
    (m: string): void =>
      void lines.push(`${level} ${m}`);
  return { lines, info: rec('INFO'), warn: rec('WARN'), error: rec('ERROR') };
}

function lines(file: string): string[] {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('each child gets its own environment; a crashing child is restarted with doubling backoff, then given up on', async () => {
  const file = path.join(dir, 'crash.log');
  const log = recorder();
  let restarts = 0;
  const sup = new Supervisor({
    log,
    maxRestarts: 3,
    backoffInitialMs: 100,
    backoffMaxMs: 250,
    onRestart: () => void restarts++,
  });
  const t0 = Date.now();
  sup.start([
    {
      name: 'crasher',
      modulePath: childScript,
      args: [],
      env: { ...process.env, SC_FILE: file, SC_MODE: 'crash', CUDA_VISIBLE_DEVICES: '1' },
    },
  ]);
  const [o] = await sup.wait();
  const ms = Date.now() - t0;
  assert.deepEqual(
    { restarts: o!.restarts, done: o!.done, code: o!.code },
    { restarts: 3, done: false, code: 1 },
  );
  assert.equal(restarts, 3, 'onRestart once per restart');
  const starts = lines(file).filter((l) => l.startsWith('start'));
  assert.equal(starts.length, 4, 'first start and 3 restarts');
  assert.ok(
    starts.every((l) => l.endsWith(' 1')),
    `CUDA_VISIBLE_DEVICES=1 in every start: ${starts.join(', ')}`,
  );
  const warns = log.lines.filter((l) => l.startsWith('WARN'));
  assert.deepEqual(
    warns.map((l) => /in (\d+\.\d) s/.exec(l)?.[1]),
    ['0.1', '0.2', '0.3'],
    'backoff doubles up to its bound (0.25 s, printed 0.3)',
  );
  assert.match(warns[0]!, /crasher exited \(exit code 1\); restarting it/);
  assert.match(
    log.lines.at(-1)!,
    /^ERROR crasher exited \(exit code 1\) after 3 restarts in a row; giving up/,
  );
  assert.ok(ms >= 100 + 200 + 250, `the backoff was waited (${ms} ms)`);
});

test('once a child ends with 0 (training over), a crashed child waiting for its restart is not restarted', async () => {
  const file = path.join(dir, 'done.log');
  const log = recorder();
  const sup = new Supervisor({ log, backoffInitialMs: 2000 });
  sup.start([
    {
      name: 'crasher',
      modulePath: childScript,
      args: [],
      env: { ...process.env, SC_FILE: file, SC_MODE: 'crash', CUDA_VISIBLE_DEVICES: '0' },
    },
    {
      name: 'finisher',
      modulePath: childScript,
      args: [],
      env: { ...process.env, SC_FILE: file, SC_MODE: 'done', SC_DELAY: '800', CUDA_VISIBLE_DEVICES: '1' },
    },
  ]);
  const t0 = Date.now();
  const out = await sup.wait();
  assert.ok(Date.now() - t0 < 1900, 'ended without waiting for the pending restart');
  assert.deepEqual(
    out.map((o) => [o.name, o.done, o.restarts]),
    [
      ['crasher', false, 0],
      ['finisher', true, 0],
    ],
  );
  assert.equal(lines(file).filter((l) => l.startsWith('start')).length, 2);
});

test('stop() sends SIGTERM to every child and cancels restarts', async () => {
  const file = path.join(dir, 'stop.log');
  const sup = new Supervisor({ log: recorder() });
  sup.start(
    [0, 1].map((i) => ({
      name: `c${i}`,
      modulePath: childScript,
      args: [],
      env: { ...process.env, SC_FILE: file, SC_MODE: 'hang' },
    })),
  );
  await until('both children started', () => lines(file).filter((l) => l.startsWith('start')).length === 2);
  const out = await sup.stop();
  assert.equal(lines(file).filter((l) => l.startsWith('SIGTERM')).length, 2, 'each child saw SIGTERM');
  assert.deepEqual(
    out.map((o) => o.code),
    [0, 0],
  );
});

for (const signal of ['SIGTERM', 'SIGINT', 'SIGKILL'] as const) {
  test(`a supervising process that gets ${signal}: its children end too`, async () => {
    const file = path.join(dir, `parent-${signal}.log`);
    const parent = track(
      spawn(process.execPath, [parentScript], {
        env: { ...process.env, SC_FILE: file },
        stdio: ['ignore', 'pipe', 'inherit'],
      }),
    );
    let out = '';
    parent.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    await until(
      'both children started',
      () => /children \d+ \d+/.test(out) && lines(file).filter((l) => l.startsWith('start')).length === 2,
    );
    const pids = /children (\d+) (\d+)/.exec(out)!.slice(1).map(Number);
    assert.deepEqual(
      lines(file)
        .map((l) => l.split(' ')[2])
        .sort(),
      ['0', '1'],
      'CUDA_VISIBLE_DEVICES 0 and 1',
    );
    const exited = new Promise<number | null>((r) => parent.once('exit', (code) => r(code)));
    parent.kill(signal);
    const code = await exited;
    await until('the children to exit', () => pids.every((p) => !isAlive(p)), 10_000);
    if (signal !== 'SIGKILL') {
      assert.equal(code, 0, 'the parent waited for its children and exited');
      assert.equal(lines(file).filter((l) => l.startsWith(signal)).length, 2, `each child got ${signal}`);
    }
  });
}
