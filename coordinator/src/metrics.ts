// Prometheus metrics of the coordinator: training progress and losses, where step time goes,
// the worker fleet, traffic, and everything rejected or redone. Served by a MetricsServer on
// `--metrics-port` together with `/healthz` (200 while training is live).

import { Counter, Gauge, type Registry } from 'prom-client';
import {
  createMetricsRegistry,
  isNum,
  TrainingMetricFamilies,
  type StepPhase,
  nowSeconds,
  ThroughputMeter,
  MetricsServer,
} from '@atlasvae/shared/metrics';

export type { StepPhase } from '@atlasvae/shared/metrics';
export { STEP_PHASES } from '@atlasvae/shared/metrics';
export { MetricsServer, metricsCliOptions, startMetricsServer } from '@atlasvae/shared/metrics';

/** One completed optimizer step. Losses are per-cell means over the step's cells. */
export interface StepObservation {
  /** cells in this step (the global batch, or fewer for the last one) */
  cells: number;
  /** optimizer steps completed so far, this one included (resumed runs count from the checkpoint) */
  completedSteps?: number;
  /** steps planned for the whole run (all epochs) */
  totalSteps?: number;
  /** 0-based epoch of this step */
  epoch?: number;
  /** seconds spent in each phase of this step */
  phaseSeconds?: Partial<Record<StepPhase, number>>;
  /** mean negative ELBO per cell: reconstruction + KL (as scvi's elbo_train; no warm-up weight) */
  elbo?: number;
  /** mean training loss per cell: reconstruction + klWeight · KL */
  loss?: number;
  reconstruction?: number;
  kl?: number;
  klWeight?: number;
  learningRate?: number;
  /** L2 norm of the averaged gradient */
  gradientNorm?: number;
}

export interface RunStart {
  totalSteps?: number;
  /** steps already done (when resuming from a checkpoint) */
  completedSteps?: number;
  epoch?: number;
  /** the coordinator's own backend (it may run the optimizer in plain JS: "js") */
  backend?: string;
}

export type RejectKind = 'connection' | 'message';

type RunState = 'idle' | 'training' | 'finished' | 'failed';

export class CoordinatorMetrics {
  readonly registry: Registry;
  readonly families: TrainingMetricFamilies;
  private readonly throughput: ThroughputMeter;
  private readonly now: () => number;
  private readonly workersConnected: Gauge<'backend'>;
  private readonly workerDisconnects: Counter<'backend'>;
  private readonly microbatchesRedone: Counter;
  private readonly rejectedConnections: Counter<'reason'>;
  private readonly learningRate: Gauge;
  private readonly gradientNorm: Gauge;
  private readonly stepsPlanned: Gauge;
  private readonly progress: Gauge;
  private readonly checkpoints: Counter;
  private readonly checkpointTimestamp: Gauge;
  private readonly localWorkerRestarts: Counter;
  private readonly workerCounts = new Map<string, number>();
  private state: RunState = 'idle';
  private completed = 0;
  private total = 0;
  /** monotonic time of the last checkpoint, or of the start of training before the first one */
  private checkpointAt: number | null = null;

  constructor(opts: { defaultMetrics?: boolean; labels?: Record<string, string>; now?: () => number } = {}) {
    this.now = opts.now ?? nowSeconds;
    this.registry = createMetricsRegistry('coordinator', opts);
    this.families = new TrainingMetricFamilies(this.registry, 'coordinator');
    this.throughput = new ThroughputMeter(10, this.now);
    const registers = [this.registry];
    this.workersConnected = new Gauge({
      name: 'atlasvae_workers_connected',
      help: 'Workers connected and authenticated, by compute backend.',
      labelNames: ['backend'],
      registers,
    });
    this.workerDisconnects = new Counter({
      name: 'atlasvae_worker_disconnects_total',
      help: 'Workers that left (closed, crashed or were dropped), by compute backend.',
      labelNames: ['backend'],
      registers,
    });
    this.microbatchesRedone = new Counter({
      name: 'atlasvae_microbatches_redone_total',
      help: 'Microbatches recomputed on another worker after their worker failed.',
      registers,
    });
    this.rejectedConnections = new Counter({
      name: 'atlasvae_rejected_connections_total',
      help: 'Connections refused, by reason (bad token, version mismatch, handshake timeout...).',
      labelNames: ['reason'],
      registers,
    });
    this.learningRate = new Gauge({
      name: 'atlasvae_learning_rate',
      help: 'Optimizer learning rate.',
      registers,
    });
    this.gradientNorm = new Gauge({
      name: 'atlasvae_gradient_norm',
      help: 'L2 norm of the averaged gradient of the last step.',
      registers,
    });
    this.progress = new Gauge({
      name: 'atlasvae_progress_ratio',
      help: 'Fraction of the planned optimizer steps completed (0 to 1).',
      registers,
    });
    this.stepsPlanned = new Gauge({
      name: 'atlasvae_steps_planned',
      help: 'Optimizer steps planned for the whole run.',
      registers,
    });
    this.checkpoints = new Counter({
      name: 'atlasvae_checkpoints_total',
      help: 'Checkpoints written.',
      registers,
    });
    this.checkpointTimestamp = new Gauge({
      name: 'atlasvae_checkpoint_timestamp_seconds',
      help: 'Unix time of the last checkpoint written.',
      registers,
    });
    // collect() runs with `this` bound to the gauge, so the age is read through this closure
    const checkpointAge = (): number | null =>
      this.checkpointAt === null ? null : Math.max(0, this.now() - this.checkpointAt);
    new Gauge({
      name: 'atlasvae_checkpoint_age_seconds',
      help: 'Seconds since the last checkpoint (since training started, before the first): the work a crash now would lose.',
      registers,
      collect() {
        const age = checkpointAge();
        if (age !== null) this.set(age);
      },
    });
    this.localWorkerRestarts = new Counter({
      name: 'atlasvae_local_worker_restarts_total',
      help: 'Local worker processes (`train --local-workers`) restarted after they died.',
      registers,
    });
    this.microbatchesRedone.inc(0);
    this.checkpoints.inc(0);
    this.localWorkerRestarts.inc(0);
  }

  /** healthz: 200 only while training is live */
  get live(): boolean {
    return this.state === 'training';
  }

  get runState(): RunState {
    return this.state;
  }

  /** Cells per second over the last 10 seconds. */
  get cellsPerSecond(): number {
    return this.throughput.rate();
  }

  get completedSteps(): number {
    return this.completed;
  }

  get totalSteps(): number {
    return this.total;
  }

  trainingStarted(run: RunStart = {}): void {
    this.state = 'training';
    this.families.trainingActive.set(1);
    if (isNum(run.totalSteps)) {
      this.total = run.totalSteps;
      this.stepsPlanned.set(run.totalSteps);
    }
    if (isNum(run.completedSteps)) this.completed = run.completedSteps;
    if (isNum(run.epoch)) this.families.epoch.set(run.epoch);
    if (run.backend) this.families.setBackend(run.backend);
    this.updateProgress();
    if (this.checkpointAt === null) this.checkpointAt = this.now();
  }

  /** Training ended (`ok` false: it failed or was interrupted). healthz turns 503. */
  trainingFinished(ok = true): void {
    this.state = ok ? 'finished' : 'failed';
    this.families.trainingActive.set(0);
  }

  setBackend(backend: string): void {
    this.families.setBackend(backend);
  }

  observeStep(o: StepObservation): void {
    const f = this.families;
    f.cells.inc(o.cells);
    f.steps.inc();
    // the rate starts with the first step (not with trainingStarted: waiting for workers is not slowness)
    const t = this.now();
    const stepSeconds = Object.values(o.phaseSeconds ?? {}).reduce((a, b) => a + (isNum(b) ? b : 0), 0);
    this.throughput.start(t - stepSeconds);
    this.throughput.add(o.cells, t);
    f.cellsPerSecond.set(this.throughput.rate());
    this.completed = isNum(o.completedSteps) ? o.completedSteps : this.completed + 1;
    if (isNum(o.totalSteps)) {
      this.total = o.totalSteps;
      this.stepsPlanned.set(o.totalSteps);
    }
    this.updateProgress();
    if (isNum(o.epoch)) f.epoch.set(o.epoch);
    if (o.phaseSeconds) f.observePhases(o.phaseSeconds);
    f.setLosses('train', o);
    if (isNum(o.loss)) f.loss.set(o.loss);
    if (isNum(o.klWeight)) f.klWeight.set(o.klWeight);
    if (isNum(o.learningRate)) this.learningRate.set(o.learningRate);
    if (isNum(o.gradientNorm)) this.gradientNorm.set(o.gradientNorm);
  }

  /** Held-out losses (per-cell means over the validation split). */
  observeValidation(losses: { elbo?: number; reconstruction?: number; kl?: number }): void {
    this.families.setLosses('validation', losses);
  }

  workerConnected(reported: string): void {
    const backend = backendLabel(reported);
    this.workerCounts.set(backend, (this.workerCounts.get(backend) ?? 0) + 1);
    this.workersConnected.set({ backend }, this.workerCounts.get(backend)!);
  }

  workerDisconnected(reported: string): void {
    const backend = backendLabel(reported);
    const n = Math.max(0, (this.workerCounts.get(backend) ?? 0) - 1);
    this.workerCounts.set(backend, n);
    this.workersConnected.set({ backend }, n);
    this.workerDisconnects.inc({ backend });
  }

  /** Workers connected now, over all backends. */
  get workerCount(): number {
    let n = 0;
    for (const v of this.workerCounts.values()) n += v;
    return n;
  }

  localWorkerRestarted(): void {
    this.localWorkerRestarts.inc();
  }

  microbatchRedone(count = 1): void {
    if (count > 0) this.microbatchesRedone.inc(count);
  }

  rejected(kind: RejectKind, reason: string): void {
    if (kind === 'connection') this.rejectedConnections.inc({ reason });
    else this.families.rejectedMessages.inc({ reason });
  }

  bytesSent(n: number): void {
    if (n > 0) this.families.sentBytes.inc(n);
  }

  bytesReceived(n: number): void {
    if (n > 0) this.families.receivedBytes.inc(n);
  }

  checkpointWritten(unixSeconds = Date.now() / 1000): void {
    this.checkpoints.inc();
    this.checkpointTimestamp.set(unixSeconds);
    this.checkpointAt = this.now();
  }

  /** A `/metrics` + `/healthz` server for this registry (not started). */
  server(port: number, host?: string): MetricsServer {
    return new MetricsServer(this.registry, { port, host, isLive: () => this.live, state: () => this.state });
  }

  private updateProgress(): void {
    if (this.total > 0) this.progress.set(Math.min(1, this.completed / this.total));
  }
}

/** A worker reports its backend name itself: keep label values to short plain words so a
 * misbehaving worker cannot create unbounded series. */
export function backendLabel(name: string): string {
  return /^[A-Za-z0-9_.-]{1,32}$/.test(name) ? name : 'other';
}
