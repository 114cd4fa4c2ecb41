// Hook points of the coordinator for metrics, progress and logs: register an observer with
// `coordinator.observe({...})`; every callback is optional and called synchronously.

export interface StepReport {
  globalStep: number;
  epoch: number;
  stepInEpoch: number;
  stepsInEpoch: number;
  nCells: number;
  microbatches: number;
  /** mean over the step's cells */
  loss: number;
  reconstruction: number;
  kl: number;
  klWeight: number;
  /** wall time of the whole step, from dispatch to parameters broadcast */
  totalMs: number;
  /** longest per-worker sum of gradient compute time reported by workers (the critical path's compute) */
  computeMs: number;
  /** waiting for results beyond the workers' compute: transfer, (de)serialization, queuing, idle */
  communicationMs: number;
  /** the optimizer step after the last result arrived (Adam + BatchNorm merge): the coordinator's
   * compute on the step's critical path */
  applyMs: number;
  /** summing microbatch gradients in microbatch order, each as soon as it and all earlier ones
   * arrived (mostly overlapped with waiting for the slowest microbatch) */
  aggregationMs: number;
  optimizerMs: number;
  /** L2 norm of the step's mean gradient */
  gradNorm: number;
  /** fetching and encoding Arrow microbatches that were not prefetched in time */
  dataWaitMs: number;
  /** encoding and sending the new parameters to every worker */
  broadcastMs: number;
  workers: number;
  redone: number;
}

export interface WorkerInfo {
  id: number;
  backend: string;
  name: string;
  remote: string;
  /** its Prometheus endpoint as its hello gave it, "HOST:PORT" (empty HOST: at `remote`'s address) */
  metrics?: string;
  /** engine kind and compute device the worker announced (absent from older workers) */
  engine?: string;
  device?: string;
  /** microbatches it takes per request */
  group?: number;
}

export type RejectReason =
  | 'bad-token'
  | 'bad-protocol-version'
  | 'text-frame'
  | 'malformed-frame'
  | 'invalid-message'
  | 'oversize'
  | 'unexpected-message'
  | 'hello-timeout'
  | 'heartbeat-timeout';

export interface CoordinatorObserver {
  listening(url: string): void;
  workerConnected(w: WorkerInfo, connected: number): void;
  workerDisconnected(w: WorkerInfo, reason: string, connected: number): void;
  /** a connection refused or closed for a protocol violation */
  connectionRejected(reason: RejectReason, detail: string, remote: string): void;
  /** a valid message that was ignored: stale version, duplicate, not assigned */
  resultDropped(reason: 'stale' | 'duplicate' | 'unassigned', workerId: number): void;
  /** a microbatch handed out again: its worker left, failed, or exceeded --step-timeout */
  microbatchRedone(info: {
    globalStep: number;
    microbatch: number;
    reason: 'disconnect' | 'timeout' | 'failure';
    workerId: number;
  }): void;
  microbatchAccepted(info: {
    globalStep: number;
    epoch: number;
    microbatch: number;
    workerId: number;
    cells: Uint32Array;
    computeMs: number;
  }): void;
  stepCompleted(s: StepReport): void;
  epochCompleted(e: {
    epoch: number;
    nCells: number;
    loss: number;
    reconstruction: number;
    kl: number;
    elbo: number;
    validationElbo?: number;
    validationReconstruction?: number;
    validationKl?: number;
    ms: number;
  }): void;
  bytes(direction: 'sent' | 'received', n: number): void;
  checkpointWritten(info: { path: string; globalStep: number; bytes: number; ms: number }): void;
  waitingForWorkers(connected: number, needed: number): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}

export type ObserverList = Partial<CoordinatorObserver>[];

export function notify<K extends keyof CoordinatorObserver>(
  list: ObserverList,
  name: K,
  ...args: Parameters<CoordinatorObserver[K]>
): void {
  for (const o of list) {
    const f = o[name] as ((...a: Parameters<CoordinatorObserver[K]>) => void) | undefined;
    if (f) f.apply(o, args);
  }
}
