// Prometheus metrics of a worker, and the pieces the coordinator's metrics share with it
// (registry setup, step phases, histogram buckets, a throughput meter).
//
// Naming: every metric starts with `atlasvae_`, units are in the name (`_seconds`, `_bytes`),
// counters end in `_total`. Coordinator and workers export the same names for the same ideas
// and are told apart by the constant label `role` ("coordinator" | "worker"), so a dashboard
// never depends on how the Prometheus jobs happen to be named.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { MetricsServer } from './metrics-server.js';

export type MetricsRole = 'coordinator' | 'worker';

/** Where the time of one training step goes. */
export type StepPhase = 'compute' | 'communication' | 'aggregation' | 'optimizer';
export const STEP_PHASES: readonly StepPhase[] = ['compute', 'communication', 'aggregation', 'optimizer'];

/** Seconds; a step takes from ~10 ms (tiny models) to minutes (huge global batches on slow workers). */
export const STEP_DURATION_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
];

/** A registry labelled with the process role, with Node's default process metrics (CPU, memory, GC, event loop). */
export function createMetricsRegistry(
  role: MetricsRole,
  opts: { defaultMetrics?: boolean; labels?: Record<string, string> } = {},
): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role, ...(opts.labels ?? {}) });
  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // prom-client exports these sums as gauges named `_total`, which `promtool check metrics`
    // rejects (only counters end in _total); the same numbers are sum(nodejs_active_handles) etc.
    for (const name of LINT_FAILING_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }
  return registry;
}

const LINT_FAILING_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** Monotonic seconds. */
export function nowSeconds(): number {
  return performance.now() / 1000;
}

/**
 * Cells per second over a sliding window of recent work. A window, not the whole run, so the
 * number follows slow-downs (a lost worker) within seconds, and not a single step, so it does not
 * jitter with every step.
 */
export class ThroughputMeter {
  /** samples[head] is the window's start; cells of samples after it are summed in windowCells */
  private samples: { t: number; cells: number }[] = [];
  private head = 0;
  private windowCells = 0;
  private total = 0;

  constructor(
    private readonly windowSeconds = 10,
    private readonly now: () => number = nowSeconds,
  ) {}

  /** Start timing: the first step's cells are counted from here. */
  start(at = this.now()): void {
    if (this.samples.length === 0) this.samples.push({ t: at, cells: 0 });
  }

  /** `cells` finished at time `at`. */
  add(cells: number, at = this.now()): void {
    if (this.samples.length === 0) this.samples.push({ t: at, cells: 0 });
    this.samples.push({ t: at, cells });
    this.windowCells += cells;
    this.total += cells;
    // keep one sample older than the window as the window's start
    while (this.samples.length - this.head > 2 && at - this.samples[this.head + 1]!.t > this.windowSeconds) {
      this.head++;
      this.windowCells -= this.samples[this.head]!.cells;
    }
    if (this.head > 1024 && this.head * 2 > this.samples.length) {
      this.samples = this.samples.slice(this.head);
      this.head = 0;
    }
  }

  /** cells finished since the first sample */
  get totalCells(): number {
    return this.total;
  }

  /** Cells per second over the window ending at the last sample; 0 before any work. */
  rate(): number {
    if (this.samples.length - this.head < 2) return 0;
    const dt = this.samples[this.samples.length - 1]!.t - this.samples[this.head]!.t;
    return dt > 0 ? this.windowCells / dt : 0;
  }
}

/** Metrics both roles export; created on the given registry. */
export class TrainingMetricFamilies {
  readonly cells: Counter;
  readonly cellsPerSecond: Gauge;
  readonly steps: Counter;
  readonly epoch: Gauge;
  readonly elbo: Gauge<'split'>;
  readonly loss: Gauge;
  readonly reconstruction: Gauge<'split'>;
  readonly kl: Gauge<'split'>;
  readonly klWeight: Gauge;
  readonly stepDuration: Histogram<'phase'>;
  readonly sentBytes: Counter;
  readonly receivedBytes: Counter;
  readonly rejectedMessages: Counter<'reason'>;
  readonly backendInfo: Gauge<'backend'>;
  readonly trainingActive: Gauge;

  constructor(registry: Registry, role: MetricsRole) {
    const registers = [registry];
    const whose =
      role === 'coordinator' ? 'in completed optimizer steps' : 'whose gradients this worker computed';
    this.cells = new Counter({ name: 'atlasvae_cells_total', help: `Cells ${whose}.`, registers });
    this.cellsPerSecond = new Gauge({
      name: 'atlasvae_cells_per_second',
      help: `Cells per second ${whose}, over the last 10 s.`,
      registers,
    });
    this.steps = new Counter({
      name: 'atlasvae_steps_total',
      help:
        role === 'coordinator' ? 'Optimizer steps completed.' : 'Training steps this worker took part in.',
      registers,
    });
    this.epoch = new Gauge({ name: 'atlasvae_epoch', help: 'Current epoch (0-based).', registers });
    this.elbo = new Gauge({
      name: 'atlasvae_elbo',
      help: 'Negative ELBO per cell (the training loss, as scvi-tools reports elbo_train / elbo_validation).',
      labelNames: ['split'],
      registers,
    });
    this.loss = new Gauge({
      name: 'atlasvae_loss',
      help: 'Training loss per cell: reconstruction + KL weight · KL (what the optimizer minimizes; equals the ELBO once warm-up ends).',
      registers,
    });
    this.reconstruction = new Gauge({
      name: 'atlasvae_reconstruction_loss',
      help: 'Reconstruction loss per cell: -log p(x|z).',
      labelNames: ['split'],
      registers,
    });
    this.kl = new Gauge({
      name: 'atlasvae_kl_divergence',
      help: 'KL(q(z|x) || N(0, I)) per cell.',
      labelNames: ['split'],
      registers,
    });
    this.klWeight = new Gauge({
      name: 'atlasvae_kl_weight',
      help: 'Weight of the KL term (linear warm-up).',
      registers,
    });
    this.stepDuration = new Histogram({
      name: 'atlasvae_step_duration_seconds',
      help: 'Time of a training step by phase: compute (gradients), communication (waiting for and moving data), aggregation (summing gradients), optimizer (Adam update).',
      labelNames: ['phase'],
      buckets: STEP_DURATION_BUCKETS,
      registers,
    });
    this.sentBytes = new Counter({
      name: 'atlasvae_sent_bytes_total',
      help: 'Bytes sent over training connections.',
      registers,
    });
    this.receivedBytes = new Counter({
      name: 'atlasvae_received_bytes_total',
      help: 'Bytes received over training connections.',
      registers,
    });
    this.rejectedMessages = new Counter({
      name: 'atlasvae_rejected_messages_total',
      help: 'Messages rejected by validation, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.backendInfo = new Gauge({
      name: 'atlasvae_backend_info',
      help: 'The TensorFlow.js backend in use (value 1, backend in the label).',
      labelNames: ['backend'],
      registers,
    });
    this.trainingActive = new Gauge({
      name: 'atlasvae_training_active',
      help: '1 while training is live, 0 otherwise.',
      registers,
    });
    this.trainingActive.set(0);
    this.steps.inc(0);
    this.cells.inc(0);
    this.sentBytes.inc(0);
    this.receivedBytes.inc(0);
  }

  setBackend(backend: string): void {
    this.backendInfo.reset();
    this.backendInfo.set({ backend }, 1);
  }

  observePhases(phaseSeconds: Partial<Record<StepPhase, number>>): void {
    for (const phase of STEP_PHASES) {
      const s = phaseSeconds[phase];
      if (s !== undefined && Number.isFinite(s) && s >= 0) this.stepDuration.observe({ phase }, s);
    }
  }

  setLosses(
    split: 'train' | 'validation',
    losses: { elbo?: number; reconstruction?: number; kl?: number },
  ): void {
    if (isNum(losses.elbo)) this.elbo.set({ split }, losses.elbo);
    if (isNum(losses.reconstruction)) this.reconstruction.set({ split }, losses.reconstruction);
    if (isNum(losses.kl)) this.kl.set({ split }, losses.kl);
  }
}

export function isNum(v: number | undefined | null): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** One microbatch as the worker computed it. Loss terms are sums over the microbatch's cells. */
export interface MicrobatchObservation {
  cells: number;
  /** seconds spent computing the gradient */
  computeSeconds: number;
  /** seconds between sending the previous result and receiving this work (idle, waiting on the
   * coordinator); default: measured from the previous microbatch's end */
  waitSeconds?: number;
  /** seconds (de)serializing and sending */
  communicationSeconds?: number;
  step?: number;
  epoch?: number;
  klWeight?: number;
  lossSum?: number;
  reconstructionSum?: number;
  klSum?: number;
}

/**
 * A worker's metrics, served on its own `--metrics-port`. The worker is "live" (healthz 200)
 * while it is connected to a coordinator.
 */
export class WorkerMetrics {
  readonly registry: Registry;
  readonly families: TrainingMetricFamilies;
  private readonly throughput: ThroughputMeter;
  private readonly now: () => number;
  private readonly connectedGauge: Gauge;
  private readonly reconnects: Counter;
  private readonly microbatches: Counter;
  private readonly engineInfo: Gauge<'engine' | 'backend' | 'device' | 'group'>;
  private lastStep: number | undefined;
  /** when the previous microbatch was finished: the gap to the next one is waiting (communication) */
  private lastEnd: number | undefined;
  private isLive = false;

  constructor(opts: { defaultMetrics?: boolean; labels?: Record<string, string>; now?: () => number } = {}) {
    this.registry = createMetricsRegistry('worker', opts);
    this.families = new TrainingMetricFamilies(this.registry, 'worker');
    this.now = opts.now ?? nowSeconds;
    this.throughput = new ThroughputMeter(10, this.now);
    const registers = [this.registry];
    this.connectedGauge = new Gauge({
      name: 'atlasvae_coordinator_connected',
      help: '1 while connected to a coordinator.',
      registers,
    });
    this.connectedGauge.set(0);
    this.reconnects = new Counter({
      name: 'atlasvae_connections_total',
      help: 'Connections made to a coordinator.',
      registers,
    });
    this.microbatches = new Counter({
      name: 'atlasvae_microbatches_total',
      help: 'Microbatch gradients computed.',
      registers,
    });
    this.microbatches.inc(0);
    this.engineInfo = new Gauge({
      name: 'atlasvae_engine_info',
      help: 'The gradient engine in use (value 1): engine (js, device), TensorFlow.js backend, compute device, microbatches per request.',
      labelNames: ['engine', 'backend', 'device', 'group'],
      registers,
    });
  }

  get live(): boolean {
    return this.isLive;
  }

  setBackend(backend: string): void {
    this.families.setBackend(backend);
  }

  /** The engine, its backend and device (labels of atlasvae_engine_info, and the backend's own gauge). */
  setEngine(e: { kind: string; backend: string; device: string; group: number }): void {
    this.families.setBackend(e.backend);
    this.engineInfo.reset();
    this.engineInfo.set(
      { engine: e.kind, backend: e.backend, device: e.device.slice(0, 200), group: String(e.group) },
      1,
    );
  }

  /** Connected (and authenticated) to a coordinator: training is live for this worker. */
  connected(): void {
    this.reconnects.inc();
    this.connectedGauge.set(1);
    this.families.trainingActive.set(1);
    this.isLive = true;
  }

  disconnected(): void {
    this.lastEnd = undefined;
    this.connectedGauge.set(0);
    this.families.trainingActive.set(0);
    this.isLive = false;
  }

  observeMicrobatch(o: MicrobatchObservation): void {
    const f = this.families;
    f.cells.inc(o.cells);
    this.microbatches.inc();
    // the rate starts with the first microbatch's computation, not with the connection
    const t = this.now();
    this.throughput.start(t - (isNum(o.computeSeconds) ? o.computeSeconds : 0));
    this.throughput.add(o.cells, t);
    f.cellsPerSecond.set(this.throughput.rate());
    if (o.step !== undefined && o.step !== this.lastStep) {
      f.steps.inc();
      this.lastStep = o.step;
    }
    if (isNum(o.epoch)) f.epoch.set(o.epoch);
    if (isNum(o.klWeight)) f.klWeight.set(o.klWeight);
    const wait =
      o.waitSeconds ??
      (this.lastEnd === undefined ? undefined : Math.max(0, t - o.computeSeconds - this.lastEnd));
    this.lastEnd = t;
    f.observePhases({ compute: o.computeSeconds, communication: sumDefined(wait, o.communicationSeconds) });
    if (o.cells > 0) {
      f.setLosses('train', {
        // the ELBO proper (no warm-up weight), as the coordinator reports it
        elbo:
          isNum(o.reconstructionSum) && isNum(o.klSum)
            ? (o.reconstructionSum + o.klSum) / o.cells
            : undefined,
        reconstruction: isNum(o.reconstructionSum) ? o.reconstructionSum / o.cells : undefined,
        kl: isNum(o.klSum) ? o.klSum / o.cells : undefined,
      });
      if (isNum(o.lossSum)) f.loss.set(o.lossSum / o.cells);
    }
  }

  bytesSent(n: number): void {
    if (n > 0) this.families.sentBytes.inc(n);
  }

  bytesReceived(n: number): void {
    if (n > 0) this.families.receivedBytes.inc(n);
  }

  /** A `/metrics` + `/healthz` server for this registry (not started). */
  server(port: number, host?: string): MetricsServer {
    return new MetricsServer(this.registry, {
      port,
      host,
      isLive: () => this.isLive,
      state: () => 'disconnected',
    });
  }

  /** The GPU a scheduler or the node launcher bound this process to (CUDA_VISIBLE_DEVICES), as a label. */
  setDevice(cudaVisibleDevices: string | undefined): void {
    if (cudaVisibleDevices === undefined) return;
    const value = /^[A-Za-z0-9,_-]{0,64}$/.test(cudaVisibleDevices) ? cudaVisibleDevices : 'other';
    new Gauge({
      name: 'atlasvae_worker_device_info',
      help: 'Always 1; the label cuda_visible_devices is the GPU this worker was bound to ("" : none).',
      labelNames: ['cuda_visible_devices'],
      registers: [this.registry],
    }).set({ cuda_visible_devices: value }, 1);
  }

  /** A message from the coordinator failed validation. */
  rejected(reason: string): void {
    this.families.rejectedMessages.inc({ reason });
  }
}

function sumDefined(...xs: (number | undefined)[]): number | undefined {
  const d = xs.filter(isNum);
  return d.length === 0 ? undefined : d.reduce((a, b) => a + b, 0);
}
