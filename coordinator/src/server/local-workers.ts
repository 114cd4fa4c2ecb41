// Worker child processes on this machine (`atlasvae train --local-workers N`): each runs
// `atlasvae worker` against the in-process coordinator under a Supervisor, which restarts one
// that dies (bounded backoff, a WARN each time) and ends them with their parent (IPC channel).

import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { getLogger, log as rootLog } from '@atlasvae/shared';
import { Supervisor } from '@atlasvae/worker/launcher';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');

export class LocalWorkers {
  private supervisor: Supervisor | null = null;

  constructor(
    private readonly n: number,
    private readonly backend: string,
    private readonly logLevel = 'warn',
    /** `--metrics-port` of `train`: local worker i (from 0) serves metrics on base + 1 + i (any free port when base is 0) */
    private readonly metrics: { port?: number; host?: string } = {},
    /** `--engine` and `--group` of the workers (their own defaults when absent) */
    private readonly engine: { engine?: string; group?: number } = {},
  ) {}

  private metricsArgs(i: number): string[] {
    const base = this.metrics.port;
    if (base === undefined || base === null || Number.isNaN(base)) return [];
    const args = ['--metrics-port', String(base === 0 ? 0 : base + 1 + i)];
    if (this.metrics.host) args.push('--metrics-host', this.metrics.host);
    return args;
  }

  private engineArgs(): string[] {
    const args: string[] = [];
    if (this.engine.engine !== undefined) args.push('--engine', this.engine.engine);
    if (this.engine.group !== undefined) args.push('--group', String(this.engine.group));
    return args;
  }

  /** `onRestart`: a worker was restarted after it died (count it in a metric). */
  start(url: string, token: string, onRestart?: () => void): void {
    const log = getLogger('local-workers');
    this.supervisor = new Supervisor({ log, stopGraceMs: 5000, onRestart: () => onRestart?.() });
    this.supervisor.start(
      Array.from({ length: this.n }, (_, i) => ({
        name: `local worker ${i + 1}`,
        modulePath: cli,
        args: [
          'worker',
          '--connect',
          url,
          '--backend',
          this.backend,
          '--name',
          `local-${i + 1}`,
          '--give-up-after',
          '30',
          '--log-level',
          this.logLevel,
          '--log-format',
          rootLog.format,
          ...this.metricsArgs(i),
          ...this.engineArgs(),
        ],
        env: { ...process.env, ATLASVAE_TOKEN: token },
      })),
    );
  }

  /** Ask the workers to end (they also end by themselves on the coordinator's `done`). */
  async stop(): Promise<void> {
    await this.supervisor?.stop();
  }
}
