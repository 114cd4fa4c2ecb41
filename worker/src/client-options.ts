// What a WorkerClient is given (its options and observer hooks) and what its run ends with.

import type { GradientEngine } from './engine.js';

export interface WorkerOptions {
  url: string;
  token?: string;
  engine: GradientEngine;
  name?: string;
  /** give up after this long without a connection (0 = never) */
  giveUpAfterMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** TLS: accept a self-signed coordinator certificate (ws `rejectUnauthorized: false`) */
  insecure?: boolean;
  /** extra CA certificate (PEM) for wss */
  ca?: string | Buffer;
  log?: (msg: string) => void;
  /** this worker's Prometheus endpoint, "HOST:PORT" (empty HOST: the address it connects from), told to the coordinator */
  metricsAddress?: string;
  /** observer hooks for metrics */
  events?: WorkerEvents;
}

export interface WorkerEvents {
  connected?(url: string, workerId: number): void;
  disconnected?(code: number, reason: string): void;
  microbatchComputed?(info: {
    step: number;
    microbatch: number;
    nCells: number;
    computeMs: number;
    epoch: number;
    klWeight: number;
    lossSum: number;
    reconstructionSum: number;
    klSum: number;
  }): void;
  bytes?(direction: 'sent' | 'received', n: number): void;
  /** a message from the coordinator refused (a fixed word, safe as a metric label) */
  rejected?(reason: 'text-frame' | 'malformed-frame' | 'invalid-message' | 'bad-protocol-version'): void;
}

export interface WorkerOutcome {
  reason: 'done' | 'rejected' | 'gave-up' | 'stopped';
  message: string;
  microbatches: number;
}
