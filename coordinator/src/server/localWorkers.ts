// Worker child processes on this machine (`atlasvae train --local-workers N`): each runs
// `atlasvae worker` against the in-process coordinator and exits with its parent (IPC channel).

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { getLogger, log as rootLog } from '@atlasvae/shared/log';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');

export class LocalWorkers {
  private readonly children: ChildProcess[] = [];
  private stopping = false;

  constructor(
    private readonly n: number,
    private readonly backend: string,
    private readonly logLevel = 'warn',
    /** `--metrics-port` of `train`: local worker i (from 0) serves metrics on base + 1 + i (any free port when base is 0) */
    private readonly metrics: { port?: number; host?: string } = {},
  ) {}

  private metricsArgs(i: number): string[] {
    const base = this.metrics.port;
    if (base === undefined || base === null || Number.isNaN(base)) return [];
    const args = ['--metrics-port', String(base === 0 ? 0 : base + 1 + i)];
    if (this.metrics.host) args.push('--metrics-host', this.metrics.host);
    return args;
  }

  start(url: string, token: string): void {
    const log = getLogger('local-workers');
    for (let i = 0; i < this.n; i++) {
      const child = fork(cli, ['worker', '--connect', url, '--backend', this.backend, '--name', `local-${i + 1}`, '--give-up-after', '30', '--log-level', this.logLevel, '--log-format', rootLog.format, ...this.metricsArgs(i)], {
        env: { ...process.env, ATLASVAE_TOKEN: token },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      child.on('exit', (code, signal) => {
        if (!this.stopping && code !== 0) log.warn(`local worker ${i + 1} exited (${signal ?? `code ${code}`}); the others carry on`);
      });
      this.children.push(child);
    }
  }

  /** Ask the workers to end (they also end by themselves on the coordinator's `done`). */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.children.map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      c.once('exit', () => { clearTimeout(t); resolve(); });
      if (c.connected) c.disconnect();
    })));
  }
}
