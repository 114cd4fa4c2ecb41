// Helpers of the distributed-training integration tests: real coordinator and worker processes
// of the built CLI on loopback, their logs, audit files and checkpoints. No side effects on import.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliPath } from '../helpers/paths.js';
import { track, killChildren } from '../helpers/children.js';
export { killChildren };
export { freePort } from '../helpers/net.js';
import { simulateToDataset, defaultSimulationOptions } from '@atlasvae/coordinator/data';

export interface Proc {
  child: ChildProcess;
  /** stdout + stderr so far */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** resolves with the first match of `re` in the output */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

export function run(args: string[], env: Record<string, string> = {}): Proc {
  const child = track(
    spawn(process.execPath, [cliPath, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let out = '';
  const listeners: (() => void)[] = [];
  const onData = (d: Buffer): void => {
    out += d.toString('utf8');
    for (const l of [...listeners]) l();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      for (const l of [...listeners]) l();
      resolve({ code, signal });
    }),
  );
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    child,
    output: () => out,
    exited,
    waitFor(re, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = out.match(re);
          if (m) {
            cleanup();
            resolve(m);
          } else if (done || child.exitCode !== null) {
            cleanup();
            reject(new Error(`process exited before ${re}:\n${out.slice(-3000)}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${re}:\n${out.slice(-3000)}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          const i = listeners.indexOf(check);
          if (i >= 0) listeners.splice(i, 1);
        };
        listeners.push(check);
        check();
      });
    },
  };
}

/** Run to completion; throws with the output when the exit code is not 0. */
export async function runOk(args: string[], env: Record<string, string> = {}): Promise<string> {
  const p = run(args, env);
  const { code, signal } = await p.exited;
  if (code !== 0)
    throw new Error(`atlasvae ${args.join(' ')} exited with ${signal ?? code}:\n${p.output().slice(-4000)}`);
  return p.output();
}

export async function simulatedDataset(dir: string, cells: number, genes: number, seed = 1): Promise<string> {
  await simulateToDataset({ ...defaultSimulationOptions, cells, genes, out: dir, shardCells: 1024, seed });
  return dir;
}

/** The port a coordinator started with `--port 0` chose, from its log. Tests let the coordinator
 * choose: a port picked free beforehand can meanwhile become another connection's ephemeral port. */
export async function listeningPort(p: Proc): Promise<number> {
  const m = await p.waitFor(/coordinator listening url=wss?:\/\/\S*:(\d+)/);
  return Number(m[1]);
}

export interface AuditLine {
  epoch: number;
  step: number;
  microbatch: number;
  worker: number;
  cells: number[];
}

export function readAudit(file: string): AuditLine[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as AuditLine];
      } catch {
        return []; // a line cut by kill -9
      }
    });
}

/** Wait until the audit log shows a result of global step >= `step`; errors carry every process's log. */
export async function waitForStep(
  file: string,
  step: number,
  proc: Proc,
  workers: Proc[] = [],
  timeoutMs = 60_000,
): Promise<void> {
  const t0 = Date.now();
  const logs = (): string =>
    [proc, ...workers]
      .map(
        (p, i) =>
          `--- ${i === 0 ? 'coordinator' : `worker ${i}`} (pid ${p.child.pid}, exit ${p.child.exitCode ?? p.child.signalCode ?? 'none'}) ---\n${p.output().slice(-3000)}`,
      )
      .join('\n');
  for (;;) {
    if (readAudit(file).some((a) => a.step >= step)) return;
    if (proc.child.exitCode !== null) throw new Error(`coordinator exited before step ${step}:\n${logs()}`);
    if (workers.length && workers.every((w) => w.child.exitCode !== null || w.child.signalCode !== null))
      throw new Error(`every worker exited before step ${step}:\n${logs()}`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`no step ${step} within ${timeoutMs} ms:\n${logs()}`);
    await new Promise((r) => setTimeout(r, 15));
  }
}

/** max over elements of |a − b| / max(|b|, floor): a relative difference that tolerates zeros */
export function maxRelDiff(a: Float32Array, b: Float32Array, floor = 1e-3): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor);
    if (d > m || Number.isNaN(d)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function kill9(p: Proc): Promise<unknown> {
  p.child.kill('SIGKILL');
  return p.exited;
}

export function file(dir: string, name: string): string {
  return path.join(dir, name);
}

/** Ends the processes the tests started and removes their temporary directory (if one was made). */
export async function cleanUp(dir: string): Promise<void> {
  await killChildren();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
