// Prometheus metric pieces both roles share: the registry (with the constant `role` label), step
// phases and their histogram buckets, the metric families both export.
//
// Naming: every metric starts with `atlasvae_`, units are in the name (`_seconds`, `_bytes`),
// counters end in `_total`. Coordinator and workers export the same names for the same ideas
// and are told apart by the constant label `role` ("coordinator" | "worker"), so a dashboard
// never depends on how the Prometheus jobs happen to be named.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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
