// Supervises a fixed set of child processes (the workers of one node, or `train`'s local
// workers): starts each with its own environment, restarts one that crashes after a bounded
// exponential backoff, forwards SIGTERM/SIGINT, and never lets a child outlive this process.
//
// Exit codes are the protocol between a child and its supervisor:
//   0                  the child is done (the coordinator said training is over, or it was asked
//                      to stop): it is not restarted, and neither is any other child that fails
//                      afterwards (there is no training left to join)
//   anything else      a crash (or a signal): restarted after 1 s, 2 s, 4 s … up to `backoffMaxMs`,
//                      at most `maxRestarts` times in a row; a child that ran `stableAfterMs` counts
//                      as healthy again and its backoff starts over
// Children are forked with an IPC channel: a child that sees the channel close (this process died,
// even by SIGKILL) must exit (the `worker` command does).

import { fork, type ChildProcess } from 'node:child_process';

export interface ChildSpec {
  /** shown in logs, e.g. "worker 1 (GPU 0)" */
  name: string;
  /** the Node.js module to run (forked with an IPC channel) */
  modulePath: string;
  args: string[];
  /** the child's whole environment */
  env: NodeJS.ProcessEnv;
}

export interface SupervisorLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface SupervisorOptions {
  /** restarts of one child in a row before giving up on it (default 5) */
  maxRestarts?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** a child that ran this long before crashing starts its backoff over (default 60 s) */
  stableAfterMs?: number;
  /** after SIGTERM, wait this long before SIGKILL (default 10 s) */
  stopGraceMs?: number;
  /** child stdout/stderr: inherited (default) or piped (read them from `onSpawn`) */
  stdio?: 'inherit' | 'pipe';
  log?: SupervisorLog;
  /** a child restarted (after its backoff): count it in a metric */
  onRestart?: (name: string, restarts: number) => void;
  /** every process started, first and restarted */
  onSpawn?: (name: string, child: ChildProcess) => void;
}

export interface ChildOutcome {
  name: string;
  /** last exit code (null when ended by a signal) */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** times it was restarted */
  restarts: number;
  /** true when it ended with 0 (done); false when it was given up on or stopped by force */
  done: boolean;
}

interface Slot {
  spec: ChildSpec;
  child: ChildProcess | null;
  timer: NodeJS.Timeout | null;
  restarts: number;
  /** failures in a row (backoff exponent) */
  failures: number;
  startedAt: number;
  outcome: ChildOutcome | null;
}

const quietLog: SupervisorLog = { info: () => undefined, warn: () => undefined, error: () => undefined };

export class Supervisor {
  private readonly slots: Slot[] = [];
  private readonly opts: Required<Omit<SupervisorOptions, 'onRestart' | 'onSpawn'>> &
    Pick<SupervisorOptions, 'onRestart' | 'onSpawn'>;
  private stopping = false;
  /** a child ended with 0: training is over, nothing is restarted any more */
  private finished = false;
  private waiters: ((o: ChildOutcome[]) => void)[] = [];
  private readonly killAll = (): void => {
    for (const s of this.slots) if (isRunning(s.child)) s.child!.kill('SIGKILL');
  };

  constructor(opts: SupervisorOptions = {}) {
    this.opts = {
      maxRestarts: opts.maxRestarts ?? 5,
      backoffInitialMs: opts.backoffInitialMs ?? 1000,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      stableAfterMs: opts.stableAfterMs ?? 60_000,
      stopGraceMs: opts.stopGraceMs ?? 10_000,
      stdio: opts.stdio ?? 'inherit',
      log: opts.log ?? quietLog,
      onRestart: opts.onRestart,
      onSpawn: opts.onSpawn,
    };
  }

  /** Start one process per spec. */
  start(specs: ChildSpec[]): void {
    if (this.slots.length === 0) process.on('exit', this.killAll);
    for (const spec of specs) {
      const slot: Slot = {
        spec,
        child: null,
        timer: null,
        restarts: 0,
        failures: 0,
        startedAt: 0,
        outcome: null,
      };
      this.slots.push(slot);
      this.spawn(slot);
    }
  }

  /** The processes running now (a child waiting for its restart has none). */
  get children(): ChildProcess[] {
    return this.slots.flatMap((s) => (isRunning(s.child) ? [s.child!] : []));
  }

  /** Resolves when every child has ended for good (done, given up on, or stopped). */
  wait(): Promise<ChildOutcome[]> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.settle();
    });
  }

  /** Ask every child to stop with `signal`, SIGKILL after the grace period; no more restarts. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<ChildOutcome[]> {
    this.stopping = true;
    for (const s of this.slots) {
      if (s.timer) {
        clearTimeout(s.timer);
        s.timer = null;
        s.outcome ??= { name: s.spec.name, code: null, signal: null, restarts: s.restarts, done: false };
      }
    }
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            const c = s.child;
            if (!isRunning(c)) return resolve();
            const force = setTimeout(() => c!.kill('SIGKILL'), this.opts.stopGraceMs);
            c!.once('exit', () => {
              clearTimeout(force);
              resolve();
            });
            c!.kill(signal);
          }),
      ),
    );
    this.settle();
    return this.wait();
  }

  /**
   * Forward SIGINT/SIGTERM to the children (the first one: stop politely; a second: SIGKILL them
   * and exit 130). Returns a function that removes the handlers.
   */
  forwardSignals(onFirst?: (signal: NodeJS.Signals) => void): () => void {
    let count = 0;
    const handler = (signal: NodeJS.Signals): void => {
      count++;
      if (count > 1) {
        this.killAll();
        process.exit(130);
      }
      this.opts.log.warn(
        `${signal}: stopping ${this.children.length} worker process(es) (again to kill them at once)`,
      );
      onFirst?.(signal);
      void this.stop(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    return () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    };
  }

  private spawn(slot: Slot): void {
    slot.timer = null;
    const { spec } = slot;
    const child = fork(spec.modulePath, spec.args, {
      env: spec.env,
      stdio:
        this.opts.stdio === 'pipe'
          ? ['ignore', 'pipe', 'pipe', 'ipc']
          : ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    slot.child = child;
    slot.startedAt = Date.now();
    // a child that cannot be started at all (e.g. EAGAIN) reports here, then exits
    child.on('error', (e) => this.opts.log.warn(`${spec.name}: ${e.message}`));
    child.once('exit', (code, signal) => this.onExit(slot, child, code, signal));
    this.opts.onSpawn?.(spec.name, child);
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child === child) slot.child = null;
    const name = slot.spec.name;
    const end = (done: boolean): void => {
      slot.outcome = { name, code, signal, restarts: slot.restarts, done };
      this.settle();
    };
    if (code === 0) {
      this.finished = true;
      // training is over: a child waiting for its restart has nothing left to join
      for (const s of this.slots) {
        if (s.timer) {
          clearTimeout(s.timer);
          s.timer = null;
          s.outcome = { name: s.spec.name, code: null, signal: null, restarts: s.restarts, done: false };
        }
      }
      return end(true);
    }
    const why = signal ? `killed by ${signal}` : `exit code ${code}`;
    if (this.stopping) return end(false);
    if (this.finished) {
      this.opts.log.info(`${name} exited (${why}) after training ended; not restarted`);
      return end(false);
    }
    if (Date.now() - slot.startedAt >= this.opts.stableAfterMs) slot.failures = 0;
    if (slot.failures >= this.opts.maxRestarts) {
      this.opts.log.error(
        `${name} exited (${why}) after ${slot.failures} restarts in a row; giving up on it`,
      );
      return end(false);
    }
    const delay = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** slot.failures);
    slot.failures++;
    this.opts.log.warn(
      `${name} exited (${why}); restarting it in ${(delay / 1000).toFixed(1)} s (restart ${slot.failures} of at most ${this.opts.maxRestarts} in a row)`,
    );
    slot.timer = setTimeout(() => {
      if (this.stopping || this.finished) return;
      slot.restarts++;
      this.spawn(slot);
      this.opts.onRestart?.(name, slot.restarts);
    }, delay);
  }

  private settle(): void {
    if (this.slots.some((s) => s.outcome === null)) return;
    process.off('exit', this.killAll);
    const outcomes = this.slots.map((s) => s.outcome!);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(outcomes);
  }
}

function isRunning(c: ChildProcess | null): boolean {
  return c !== null && c.exitCode === null && c.signalCode === null;
}
