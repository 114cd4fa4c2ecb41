// Prometheus metrics of a worker (served on its own `--metrics-port`); the families it shares with
// the coordinator are in @atlasvae/shared's metrics.

import { Counter, Gauge, type Registry } from 'prom-client';
import {
  createMetricsRegistry,
  isNum,
  TrainingMetricFamilies,
  nowSeconds,
  ThroughputMeter,
  MetricsServer,
} from '@atlasvae/shared/metrics';

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
