// Hook points of the coordinator for metrics, progress and logs: register an observer with
// `coordinator.observe({...})`; every callback is optional and called synchronously. The training
// loop's own events (steps, epochs, checkpoints, logs) are part of it.

import type { LoopObserver } from '@atlasvae/shared/train';

export type { StepReport } from '@atlasvae/shared/train';

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

export interface CoordinatorObserver extends LoopObserver {
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
  bytes(direction: 'sent' | 'received', n: number): void;
  waitingForWorkers(connected: number, needed: number): void;
}

export type ObserverList = Partial<CoordinatorObserver>[];
