// The coordinator: walks the epoch plan step by step, hands each step's microbatches (Arrow IPC
// bytes) to whichever workers are connected, collects their summed gradients, applies one
// optimizer step with the results in microbatch order, and broadcasts the new parameters.
//
// Invariants:
// - the plan comes from (seed, epoch) only; a microbatch's noise from (seed, step, microbatch);
//   so the parameters never depend on how many workers there were or who computed what;
// - a result is accepted only for the current parameter version and only once per microbatch;
//   a step completes only when every microbatch has exactly one accepted result;
// - a worker that leaves, fails or exceeds the step timeout has its microbatches handed out again.

import fs from 'node:fs';
import type { WebSocket } from 'ws';
import { epochPlan, type PlannedStep } from '@atlasvae/shared/plan';
import { klWeightForEpoch, type ModelConfig, type TrainConfig } from '@atlasvae/shared/config';
import type { MicrobatchGradient } from '@atlasvae/shared/model/types';
import { saveCheckpoint, type Checkpoint, type CheckpointPosition } from '@atlasvae/shared/checkpoint';
import { encodeFrame, encodeFrameParts, decodeFrame, payloadAsFloat32, FrameError, ReusableFrame } from '@atlasvae/shared/protocol/frame';
import type { GradientAccumulator } from '@atlasvae/shared/train/step';
import { DivergenceError, checkGradNorm, checkStepLoss, nonFiniteTerm } from '@atlasvae/shared/train/divergence';
import { EarlyStopping } from '@atlasvae/shared/train/earlyStopping';
import {
  PROTOCOL_VERSION, CLOSE, ProtocolError, parseWorkerMessage,
  type ExpectedSizes, type WelcomeMsg, type WorkMsg, type ResultMsg, type FailureMsg, type HelloMsg,
} from '@atlasvae/shared/protocol/messages';
import { SharedMemoryFolder, type ResultFiles } from '@atlasvae/shared/protocol/sharedMemory';
import { Endpoint, isLoopbackPeer, maxWorkerPayload } from './connections.js';
import { StepRun, type StepItem, type AcceptOutcome } from './stepRun.js';
import { notify, type CoordinatorObserver, type ObserverList, type RejectReason, type StepReport, type WorkerInfo } from './events.js';
import type { TrainingData } from './data.js';
import type { Optimizer } from './optimizer.js';

/** Where parameters are streamed out of Adam range by range (`applyAndBroadcast`). */
export const STREAM_PARAMS = ['auto', 'always', 'never'] as const;
export type StreamParams = (typeof STREAM_PARAMS)[number];

/** A stop request that could not wait for the current step (it was abandoned, not applied). */
class StepAbandoned extends Error {}

/** the payload of a file result that will be dropped, so its file is never read */
const NOT_READ = new Float32Array(0);

export interface CoordinatorOptions {
  host: string;
  port: number;
  token: string | null;
  tls: { cert: string | Buffer; key: string | Buffer } | null;
  /** workers to wait for before the first step */
  minWorkers: number;
  /** a microbatch held longer than this is handed to another worker */
  stepTimeoutMs: number;
  /** write a checkpoint every this many steps (0: only at the end) */
  checkpointEvery: number;
  checkpointPath: string | null;
  /** stop after this many optimizer steps in total (null: run all epochs) */
  maxSteps: number | null;
  heartbeatMs?: number;
  helloTimeoutMs?: number;
  /** microbatches a worker may hold at once (>1 overlaps transfer with compute) */
  workerDepth?: number;
  /** a microbatch that failed on this many workers stops training */
  maxFailures?: number;
  /**
   * Send each range of new parameters as soon as Adam has it (fragments of one message) to workers
   * on other hosts ('auto', the default), to all workers, or to none. On the coordinator's own
   * host a worker reading the fragments competes with Adam for the cores (measured on 2 cores:
   * 1.5 ms slower per step), so there the whole message goes out after Adam.
   */
  streamParams?: StreamParams;
  /**
   * 'auto' (default): workers on this host that can open them read each new parameter vector from
   * two shared-memory files (protocol/sharedMemory.ts) instead of the socket; 'never': sockets only.
   */
  sharedMemory?: 'auto' | 'never';
}

/** Evaluates the held-out ELBO for the parameters and buffers at the end of an epoch. */
export type Validator = (params: Float32Array, buffers: Float32Array, epoch: number) => Promise<{ elbo: number; reconstruction: number; kl: number }>;

export interface TrainingSetup {
  modelConfig: ModelConfig;
  trainConfig: TrainConfig;
  data: TrainingData;
  optimizer: Optimizer;
  /** where to start: the next step to run */
  position: CheckpointPosition;
  history: unknown[];
}

export interface EpochRecord {
  epoch: number;
  nCells: number;
  /** per-cell means */
  loss: number;
  reconstruction: number;
  kl: number;
  /** negative ELBO per cell (reconstruction + KL), scvi's elbo_train */
  elbo: number;
  /** held-out negative ELBO per cell (scvi's elbo_validation), when evaluated */
  validationElbo?: number;
  validationReconstruction?: number;
  validationKl?: number;
  partial?: boolean;
}

export interface TrainOutcome {
  position: CheckpointPosition;
  history: EpochRecord[];
  stopped: 'finished' | 'max-steps' | 'interrupted' | 'early-stopping';
  lastCheckpoint: string | null;
  /** set when early stopping ended the run */
  earlyStopping?: EarlyStopping;
}

interface Conn {
  id: number;
  ws: WebSocket;
  info: WorkerInfo;
  /** the worker connected over loopback (runs on this machine) */
  local: boolean;
  /** it opened the shared-memory parameter files: `params` messages name a file instead of carrying the vector */
  paramsViaFile: boolean;
  /** shared-memory files it writes its results to (then `result` messages name a file) */
  resultFiles: ResultFiles | null;
  ready: boolean;
  /** microbatches it takes per work request (its hello's `group`) */
  group: number;
  /** exceeded --step-timeout: gets no new work until it answers again */
  stalled: boolean;
  helloTimer: NodeJS.Timeout | null;
}

interface Current {
  run: StepRun;
  /** gradients summed so far, in microbatch order */
  acc: GradientAccumulator;
  /** microbatches 0…summed−1 are in acc */
  summed: number;
  version: number;
  epoch: number;
  klWeight: number;
  /** called once, when the step's first result is accepted (starts the next step's prefetch) */
  onFirstResult: (() => void) | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface EpochAcc {
  epoch: number;
  nCells: number;
  loss: number;
  reconstruction: number;
  kl: number;
}

export class Coordinator {
  private readonly observers: ObserverList = [];
  private endpoint: Endpoint | null = null;
  private readonly conns = new Map<number, Conn>();
  private nextWorkerId = 1;
  private current: Current | null = null;
  private readonly sizes: ExpectedSizes;
  private paramsFrame: Buffer | null = null;
  /** the parameter frame's buffer, reused across steps once every socket has flushed it */
  private readonly paramsWriter = new ReusableFrame();
  /** a dropped connection may still hold the last parameter frame in its queue */
  private paramsFrameShared = false;
  private version: number;
  private stopRequested = false;
  private workerWaiters: (() => void)[] = [];
  private expiryTimer: NodeJS.Timeout | null = null;
  private readonly maxWorkBytes: number;
  private validator: Validator | null = null;
  /** worker count at the last idle-workers warning */
  private idleWarnedAt = 0;
  /** early stopping of this run (when configured and validated) */
  private earlyStopping: EarlyStopping | null = null;
  /** shared-memory files for workers on this host (created at listen, removed at close) */
  private sharedMemory: SharedMemoryFolder | null = null;
  /** results read from shared-memory files, one buffer per microbatch index (reused every step) */
  private readonly resultSlots: Float32Array[] = [];
  url = '';

  constructor(private readonly opts: CoordinatorOptions, private readonly setup: TrainingSetup) {
    this.sizes = { paramLength: setup.optimizer.params.length, bnLength: setup.optimizer.bnStatsLength };
    this.version = setup.position.globalStep;
    this.maxWorkBytes = setup.data.maxMicrobatchBytes(setup.trainConfig.microbatch);
  }

  /** Evaluate the held-out ELBO at the end of each epoch with `v`. */
  setValidator(v: Validator | null): this {
    this.validator = v;
    return this;
  }

  observe(o: Partial<CoordinatorObserver>): this {
    this.observers.push(o);
    return this;
  }

  private emit<K extends keyof CoordinatorObserver>(name: K, ...args: Parameters<CoordinatorObserver[K]>): void {
    notify(this.observers, name, ...args);
  }

  get connectedWorkers(): number {
    let n = 0;
    for (const c of this.conns.values()) if (c.ready) n++;
    return n;
  }

  async listen(): Promise<string> {
    if ((this.opts.sharedMemory ?? 'auto') === 'auto') {
      try {
        this.sharedMemory = new SharedMemoryFolder(this.sizes.paramLength);
      } catch (e) {
        this.emit('log', 'warn', `shared-memory parameter files unavailable (${(e as Error).message}); local workers use the socket`);
      }
    }
    this.endpoint = new Endpoint(
      {
        host: this.opts.host,
        port: this.opts.port,
        token: this.opts.token,
        tls: this.opts.tls,
        maxPayload: maxWorkerPayload(this.sizes.paramLength, this.sizes.bnLength),
        heartbeatMs: this.opts.heartbeatMs ?? 10_000,
      },
      {
        open: (ws, remote) => this.onOpen(ws, remote),
        rejected: (reason, detail, remote) => this.reject(reason, detail, remote),
      },
    );
    this.url = await this.endpoint.url;
    this.emit('listening', this.url);
    return this.url;
  }

  /**
   * Finish the current step, write a checkpoint, and stop. A step that has not completed within
   * `graceMs` (its workers gone or stalled) is abandoned instead: nothing of it is applied, so the
   * checkpoint holds the last completed step and a resume redoes this one. Waiting for workers
   * ends at once.
   */
  requestStop(graceMs = 3000): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    const waiters = this.workerWaiters;
    this.workerWaiters = [];
    for (const w of waiters) w();
    setTimeout(() => this.current?.reject(new StepAbandoned('stop requested')), graceMs).unref();
  }

  /** Stop serving. With `done`, workers are told training is over and exit; without, they see the
   * connection drop and keep trying to reconnect (a restart with --resume picks them up). */
  async close(done: string | null = 'training finished'): Promise<void> {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    if (done !== null) {
      const frame = encodeFrame({ type: 'done', reason: done });
      for (const c of this.conns.values()) if (c.ready) this.sendRaw(c, frame);
    }
    await this.endpoint?.close();
    this.endpoint = null;
    this.sharedMemory?.close();
    this.sharedMemory = null;
  }

  private reject(reason: RejectReason, detail: string, remote: string): void {
    this.emit('connectionRejected', reason, detail, remote);
    this.emit('log', 'warn', `rejected connection ${remote}: ${reason}${detail ? ` (${detail})` : ''}`);
  }

  // ---------------------------------------------------------------- connections and messages

  private onOpen(ws: WebSocket, remote: string): void {
    const id = this.nextWorkerId++;
    const c: Conn = { id, ws, info: { id, backend: '?', name: '?', remote }, local: isLoopbackPeer(remote), paramsViaFile: false, resultFiles: null, ready: false, group: 1, stalled: false, helloTimer: null };
    this.conns.set(id, c);
    c.helloTimer = setTimeout(() => this.drop(c, 'hello-timeout', 'no hello within the time limit', CLOSE.policyViolation), this.opts.helloTimeoutMs ?? 10_000);
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(c, data, isBinary));
    ws.on('close', (code, reason) => this.onClose(c, `${code}${reason.length ? ` ${reason.toString('utf8')}` : ''}`));
    ws.on('error', (err) => {
      // ws reports oversize frames and framing errors here, then closes
      const reasonCode: RejectReason = /max payload|too big/i.test(err.message) ? 'oversize' : 'malformed-frame';
      this.reject(reasonCode, err.message, remote);
    });
  }

  /** Close a connection for a protocol violation; nothing it sends afterwards is read. */
  private drop(c: Conn, reason: RejectReason, detail: string, code: number = CLOSE.protocolError): void {
    this.reject(reason, `worker ${c.id}: ${detail}`, c.info.remote);
    this.forget(c, `dropped: ${reason}`);
    c.ws.close(code, `${reason}: ${detail}`.slice(0, 120));
    // don't wait for the close handshake of a misbehaving peer
    setTimeout(() => c.ws.terminate(), 1000).unref();
  }

  private onClose(c: Conn, why: string): void {
    this.forget(c, why);
  }

  /** A connection is gone (closed or dropped): its unfinished microbatches go back to the queue. */
  private forget(c: Conn, why: string): void {
    if (c.helloTimer) clearTimeout(c.helloTimer);
    if (!this.conns.delete(c.id)) return;
    c.resultFiles?.close();
    c.resultFiles = null;
    if (c.ws.bufferedAmount > 0) this.paramsFrameShared = true;
    if (!c.ready) return;
    c.ready = false;
    this.emit('workerDisconnected', c.info, why, this.connectedWorkers);
    this.emit('log', 'info', `worker ${c.id} (${c.info.name}, ${c.info.backend}) left: ${why}; ${this.connectedWorkers} connected`);
    const cur = this.current;
    if (cur) {
      for (const i of cur.run.release(c.id)) {
        this.emit('microbatchRedone', { globalStep: cur.version, microbatch: i, reason: 'disconnect', workerId: c.id });
        if (this.failedTooOften(cur, i, `worker ${c.id} left while computing it: ${why}`)) return;
      }
      this.dispatch();
    }
  }

  private onMessage(c: Conn, data: Buffer, isBinary: boolean): void {
    this.emit('bytes', 'received', data.byteLength);
    if (!this.conns.has(c.id)) return;
    if (!isBinary) return this.drop(c, 'text-frame', 'text frames are not part of the protocol', CLOSE.unsupported);
    let header: unknown;
    let payload: Uint8Array;
    try {
      ({ header, payload } = decodeFrame(data));
    } catch (e) {
      return this.drop(c, 'malformed-frame', (e as FrameError).message);
    }
    let msg;
    try {
      msg = parseWorkerMessage(header, payload.byteLength, this.sizes);
    } catch (e) {
      if (e instanceof ProtocolError) return this.drop(c, 'invalid-message', e.reason);
      throw e;
    }
    if (!c.ready) {
      if (msg.type !== 'hello') return this.drop(c, 'unexpected-message', `${msg.type} before hello`);
      if (msg.protocol !== PROTOCOL_VERSION) {
        return this.drop(c, 'bad-protocol-version', `worker speaks protocol ${msg.protocol}, coordinator ${PROTOCOL_VERSION}`, CLOSE.badVersion);
      }
      return this.welcome(c, msg);
    }
    switch (msg.type) {
      case 'hello':
        return this.drop(c, 'unexpected-message', 'second hello');
      case 'result':
        return this.onResult(c, msg, payload);
      case 'failure':
        return this.onFailure(c, msg);
      case 'paramsFilesReady':
        if (!this.sharedMemory || !c.local || c.paramsViaFile) return this.drop(c, 'unexpected-message', 'paramsFilesReady without an offer');
        c.paramsViaFile = true;
        // and a ring of result files at least as long as the microbatches it may hold
        try {
          c.resultFiles = this.sharedMemory.resultFiles(c.id, (this.opts.workerDepth ?? 2) + 1, this.sizes.paramLength + this.sizes.bnLength);
          this.sendRaw(c, encodeFrame({ type: 'resultFiles', ...c.resultFiles.offer }));
        } catch (e) {
          this.emit('log', 'warn', `worker ${c.id}: no shared-memory result files (${(e as Error).message}); its results use the socket`);
        }
        return;
      default:
        // inference answers belong to an inference fleet (results/fleet.ts), not to training
        return this.drop(c, 'unexpected-message', `${msg.type} during training`);
    }
  }

  private welcome(c: Conn, hello: HelloMsg): void {
    if (c.helloTimer) clearTimeout(c.helloTimer);
    c.helloTimer = null;
    const backend = hello.backend;
    c.group = hello.group ?? 1;
    c.info = { ...c.info, backend, name: `${hello.name}:${hello.pid}`, metrics: hello.metrics, group: c.group };
    if (hello.engine !== undefined) c.info.engine = hello.engine;
    if (hello.device !== undefined) c.info.device = hello.device;
    const w: WelcomeMsg = {
      type: 'welcome', protocol: PROTOCOL_VERSION, workerId: c.id, modelConfig: this.setup.modelConfig,
      seed: this.setup.trainConfig.seed, paramLength: this.sizes.paramLength, bnLength: this.sizes.bnLength,
      maxWorkBytes: this.maxWorkBytes,
    };
    if (this.sharedMemory && c.local) w.paramsFiles = this.sharedMemory.offer;
    this.sendRaw(c, encodeFrame(w));
    this.sendRaw(c, this.currentParamsFrame());
    c.ready = true;
    this.emit('workerConnected', c.info, this.connectedWorkers);
    const engine = hello.engine ? `${hello.engine} engine on ${backend}${hello.device ? ` (${hello.device})` : ''}` : backend;
    this.emit('log', 'info', `worker ${c.id} joined (${c.info.name}, ${engine}${c.group > 1 ? `, groups of ${c.group}` : ''}, ${c.info.remote}); ${this.connectedWorkers} connected`);
    this.warnIfIdleWorkers();
    const waiters = this.workerWaiters;
    this.workerWaiters = [];
    for (const w of waiters) w();
    this.dispatch();
  }

  /** Warn (once per worker count) when a step has fewer microbatches than workers: some idle every step. */
  private warnIfIdleWorkers(): void {
    const { globalBatch, microbatch } = this.setup.trainConfig;
    const perStep = Math.max(1, Math.ceil(globalBatch / microbatch));
    const n = this.connectedWorkers;
    if (n <= perStep || n <= this.idleWarnedAt) return;
    this.idleWarnedAt = n;
    this.emit('log', 'warn', `${n} workers connected, but a step has ${perStep} microbatch${perStep === 1 ? '' : 'es'} (global batch ${globalBatch} / microbatch ${microbatch}): ${n - perStep} worker${n - perStep === 1 ? '' : 's'} idle every step. Start with --local-workers/--min-workers ${n} (the default microbatch then splits each step ${n} ways) or set --microbatch`);
  }

  private onResult(c: Conn, r: ResultMsg, payload: Uint8Array): void {
    c.stalled = false;
    const cur = this.current;
    if (!cur || r.version !== cur.version) return this.emit('resultDropped', 'stale', c.id);
    if (r.step !== r.version) return this.drop(c, 'invalid-message', `result.step ${r.step} != version ${r.version}`);
    const item = cur.run.items[r.microbatch];
    if (!item) return this.drop(c, 'invalid-message', `microbatch ${r.microbatch} does not exist in step ${cur.version}`);
    if (r.count !== undefined) return this.onGroupResult(c, cur, r, payload);
    if (r.nCells !== item.nCells) return this.drop(c, 'invalid-message', `result for ${r.nCells} cells, microbatch has ${item.nCells}`);
    let flat: Float32Array;
    if (r.file !== undefined) {
      if (!c.resultFiles || r.file >= c.resultFiles.paths.length) return this.drop(c, 'invalid-message', `result names file ${r.file}, which this worker was not given`);
      if (cur.run.wouldAccept(c.id, r.microbatch)) {
        const n = this.sizes.paramLength + this.sizes.bnLength;
        const slot = (this.resultSlots[r.microbatch] ??= new Float32Array(n));
        if (!c.resultFiles.readInto(r.file, r.seq!, slot)) {
          // rewritten before we read it (cannot happen while results are handled in order); the
          // microbatch goes back to the queue when the connection is gone, and is redone
          this.emit('log', 'warn', `worker ${c.id}: result ${r.seq} of microbatch ${r.microbatch} no longer in its file; reconnecting it`);
          this.forget(c, 'result file unreadable');
          c.ws.close(CLOSE.goingAway, 'result file unreadable');
          return;
        }
        flat = slot;
      } else {
        flat = NOT_READ; // dropped below (duplicate or unassigned): the file is not read
      }
    } else {
      flat = payloadAsFloat32(payload);
    }
    const g: MicrobatchGradient = {
      grad: flat.subarray(0, r.gradLength),
      bnStats: flat.subarray(r.gradLength),
      nCells: r.nCells,
      reconstructionSum: r.reconstructionSum,
      klSum: r.klSum,
      lossSum: r.lossSum,
    };
    if (r.nonFinite && cur.run.wouldAccept(c.id, r.microbatch)) {
      const bad = nonFiniteTerm({ loss: r.lossSum, reconstruction: r.reconstructionSum, kl: r.klSum }) ?? 'a loss term is not finite';
      cur.reject(new DivergenceError(cur.version, cur.epoch, `${bad} on microbatch ${r.microbatch} (worker ${c.id})`));
      return;
    }
    const outcome = cur.run.accept(c.id, r.microbatch, g, r.computeMs);
    if (outcome !== 'accepted') {
      this.emit('resultDropped', outcome, c.id);
    } else {
      this.emit('microbatchAccepted', { globalStep: cur.version, epoch: cur.epoch, microbatch: r.microbatch, workerId: c.id, cells: item.cells, computeMs: r.computeMs });
    }
    this.afterResult(cur, outcome);
  }

  /** Sum what now continues the in-order prefix (never out of microbatch order), then go on. */
  private afterResult(cur: Current, outcome: AcceptOutcome): void {
    if (outcome === 'accepted') {
      const { results, unitSize } = cur.run;
      while (cur.summed < results.length && results[cur.summed] !== undefined) {
        const k = unitSize[cur.summed]!;
        if (k <= 1) cur.acc.add(results[cur.summed]!);
        else cur.acc.addGroup(results[cur.summed]!.grad, results.slice(cur.summed, cur.summed + k) as MicrobatchGradient[]);
        cur.summed += Math.max(1, k);
      }
    }
    if (cur.run.complete) return cur.resolve();
    this.dispatch();
    if (outcome === 'accepted' && cur.onFirstResult) {
      const first = cur.onFirstResult;
      cur.onFirstResult = null;
      first();
    }
  }

  /** A group result: one summed gradient, then each microbatch's BatchNorm statistics (socket only). */
  private onGroupResult(c: Conn, cur: Current, r: ResultMsg, payload: Uint8Array): void {
    const count = r.count!;
    const terms = r.microbatches!;
    if (r.microbatch + count > cur.run.items.length) return this.drop(c, 'invalid-message', `group of ${count} from microbatch ${r.microbatch} runs past the step's ${cur.run.items.length}`);
    for (let k = 0; k < count; k++) {
      const want = cur.run.items[r.microbatch + k]!.nCells;
      if (terms[k]!.nCells !== want) return this.drop(c, 'invalid-message', `group result for ${terms[k]!.nCells} cells in microbatch ${r.microbatch + k}, which has ${want}`);
    }
    const flat = payloadAsFloat32(payload);
    const grad = flat.subarray(0, r.gradLength);
    const bn = this.sizes.bnLength;
    const rs: MicrobatchGradient[] = terms.map((t, k) => ({
      grad: k === 0 ? grad : NOT_READ,
      bnStats: flat.subarray(r.gradLength + k * bn, r.gradLength + (k + 1) * bn),
      nCells: t.nCells, reconstructionSum: t.reconstructionSum, klSum: t.klSum, lossSum: t.lossSum,
    }));
    if (r.nonFinite && cur.run.wouldAcceptGroup(c.id, r.microbatch, count)) {
      const k = terms.findIndex((t) => nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) !== null);
      const t = terms[Math.max(k, 0)]!;
      const bad = nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) ?? 'a loss term is not finite';
      cur.reject(new DivergenceError(cur.version, cur.epoch, `${bad} on microbatch ${r.microbatch + Math.max(k, 0)} (worker ${c.id})`));
      return;
    }
    const outcome = cur.run.acceptGroup(c.id, r.microbatch, rs, r.computeMs);
    if (outcome !== 'accepted') {
      this.emit('resultDropped', outcome, c.id);
    } else {
      for (let k = 0; k < count; k++) {
        const i = r.microbatch + k;
        this.emit('microbatchAccepted', { globalStep: cur.version, epoch: cur.epoch, microbatch: i, workerId: c.id, cells: cur.run.items[i]!.cells, computeMs: r.computeMs / count });
      }
    }
    this.afterResult(cur, outcome);
  }

  private onFailure(c: Conn, f: FailureMsg): void {
    const cur = this.current;
    const count = f.count ?? 1;
    if (!cur || f.version !== cur.version || !cur.run.items[f.microbatch + count - 1]) return;
    const what = count > 1 ? `microbatches ${f.microbatch}–${f.microbatch + count - 1}` : `microbatch ${f.microbatch}`;
    this.emit('log', 'warn', `worker ${c.id} failed ${what} of step ${f.step}: ${f.message}`);
    for (let i = f.microbatch; i < f.microbatch + count; i++) {
      cur.run.fail(c.id, i);
      this.emit('microbatchRedone', { globalStep: cur.version, microbatch: i, reason: 'failure', workerId: c.id });
    }
    for (let i = f.microbatch; i < f.microbatch + count; i++) if (this.failedTooOften(cur, i, `error from worker ${c.id}: ${f.message}`)) return;
    this.dispatch();
  }

  /** A microbatch that failed `maxFailures` times for any reason (failure message, its worker
   * leaving or dropped, a step timeout) ends the run: the step's promise rejects. */
  private failedTooOften(cur: Current, i: number, last: string): boolean {
    const n = cur.run.failuresOf(i);
    if (n < (this.opts.maxFailures ?? 3)) return false;
    cur.reject(new Error(`microbatch ${i} of step ${cur.version + 1} (epoch ${cur.epoch + 1}) failed ${n} times; last: ${last}`));
    return true;
  }

  private sendRaw(c: Conn, frame: Buffer): void {
    if (c.ws.readyState !== c.ws.OPEN) return;
    c.ws.send(frame, { binary: true });
    this.emit('bytes', 'sent', frame.byteLength);
  }

  /** One message as fragments, payload uncopied (for immutable payloads such as Arrow microbatches). */
  private sendParts(c: Conn, parts: Uint8Array[]): void {
    if (c.ws.readyState !== c.ws.OPEN) return;
    let n = 0;
    parts.forEach((p, i) => {
      c.ws.send(p, { binary: true, fin: i === parts.length - 1 });
      n += p.byteLength;
    });
    this.emit('bytes', 'sent', n);
  }

  /** Last step's parameter buffer may be reused only when no socket still has it queued (ws sends by reference). */
  private paramsBufferReusable(): boolean {
    let flushed = !this.paramsFrameShared;
    for (const c of this.conns.values()) if (c.ws.bufferedAmount > 0) flushed = false;
    this.paramsFrameShared = false;
    return flushed;
  }

  private currentParamsFrame(): Buffer {
    this.paramsFrame ??= this.paramsWriter.encode(this.paramsBufferReusable(), { type: 'params', version: this.version }, this.setup.optimizer.params);
    return this.paramsFrame;
  }

  /**
   * The optimizer step, with the new parameters going out while they are computed: the parameter
   * frame's header is written first, then Adam runs in ranges and each finished range is copied
   * into the frame and sent to each streamed worker as the next fragment of one message. Its
   * transfer and reading overlap Adam on the next range, instead of the whole update and then the
   * whole transfer on the step's critical path. The other workers (by default those on this host,
   * see `streamParams`) get the complete frame after Adam, which stays the current one for workers
   * that join later. Returns the optimizer timing and the ms spent sending.
   */
  private applyAndBroadcast(acc: GradientAccumulator, epoch: number): { timing: ReturnType<Optimizer['applyAccumulated']>; streamMs: number; sendMs: number } {
    const params = this.setup.optimizer.params;
    const targets = [...this.conns.values()].filter((c) => c.ready && c.ws.readyState === c.ws.OPEN);
    const viaFile = this.sharedMemory ? targets.filter((c) => c.paramsViaFile) : [];
    const mode = this.opts.streamParams ?? 'auto';
    const streamed = targets.filter((c) => !c.paramsViaFile && (mode === 'always' || (mode === 'auto' && !c.local)));
    const whole = targets.filter((c) => !c.paramsViaFile && !streamed.includes(c));
    if (streamed.length === 0 && whole.length === 0) return this.applyAndWriteFile(acc, epoch, viaFile);
    const { frame, payloadStart } = this.paramsWriter.begin(this.paramsBufferReusable(), { type: 'params', version: this.version + 1 }, 4 * params.length);
    const payload = new Float32Array(frame.buffer, frame.byteOffset + payloadStart, params.length);
    let sentUpTo = 0;
    let sendMs = 0;
    const timing = this.setup.optimizer.applyAccumulated(acc, epoch, (start, end) => {
      const t = performance.now();
      payload.set(params.subarray(start, end), start);
      const upTo = end === params.length ? frame.byteLength : payloadStart + 4 * end;
      const part = frame.subarray(sentUpTo, upTo);
      const fin = upTo === frame.byteLength;
      for (const c of streamed) c.ws.send(part, { binary: true, fin });
      sentUpTo = upTo;
      sendMs += performance.now() - t;
    });
    // time spent sending inside Adam's callbacks (part of timing) and in all (streamed + whole)
    const streamMs = sendMs;
    const t = performance.now();
    if (viaFile.length && !this.sendParamsViaFile(viaFile, this.version + 1, params)) whole.push(...viaFile);
    for (const c of whole) c.ws.send(frame, { binary: true });
    sendMs += performance.now() - t;
    this.version++;
    this.paramsFrame = frame;
    for (let i = 0; i < streamed.length + whole.length; i++) this.emit('bytes', 'sent', frame.byteLength);
    return { timing, streamMs, sendMs };
  }

  /**
   * The optimizer step when no worker takes the parameters over its socket (all read the
   * shared-memory file, or none is connected): Adam in one pass, one file write, and no socket frame
   * this step. `currentParamsFrame` encodes one on demand for a worker that joins, reconnects or
   * falls back to the socket, so the 2 MB copy per step stays off the critical path.
   */
  private applyAndWriteFile(acc: GradientAccumulator, epoch: number, viaFile: Conn[]): { timing: ReturnType<Optimizer['applyAccumulated']>; streamMs: number; sendMs: number } {
    const timing = this.setup.optimizer.applyAccumulated(acc, epoch);
    const t = performance.now();
    const written = viaFile.length === 0 || this.sendParamsViaFile(viaFile, this.version + 1, this.setup.optimizer.params);
    this.version++;
    this.paramsFrame = null;
    if (!written) for (const c of viaFile) this.sendRaw(c, this.currentParamsFrame());
    return { timing, streamMs: 0, sendMs: performance.now() - t };
  }

  /**
   * Write `params` as `version` into the shared-memory file once and name it to `conns`; the file
   * of version v+1 is the one v−1 used, whose step is done. False when the write failed (e.g.
   * /dev/shm full): shared memory is then off and those workers need the parameters over the socket.
   */
  private sendParamsViaFile(conns: Conn[], version: number, params: Float32Array): boolean {
    let file: number;
    try {
      file = this.sharedMemory!.write(version, params);
    } catch (e) {
      this.emit('log', 'warn', `shared-memory parameter file write failed (${(e as Error).message}); sending parameters over the sockets`);
      this.sharedMemory!.close();
      this.sharedMemory = null;
      for (const c of conns) c.paramsViaFile = false;
      return false;
    }
    const note = encodeFrame({ type: 'params', version, file });
    for (const c of conns) this.sendRaw(c, note);
    return true;
  }

  /** Hand pending microbatches to workers: first one request each (a microbatch, or a group for a
   * worker that takes groups), then up to `workerDepth` requests each. */
  private dispatch(): void {
    const cur = this.current;
    if (!cur || cur.run.pending === 0) return;
    const ready = [...this.conns.values()].filter((c) => c.ready && !c.stalled);
    if (ready.length === 0) return;
    const depth = this.opts.workerDepth ?? 2;
    const now = performance.now();
    for (let d = 1; d <= depth; d++) {
      const held = ready.map((c) => ({ c, n: c.group > 1 ? cur.run.requestsHeldBy(c.id) : cur.run.heldBy(c.id) })).sort((a, b) => a.n - b.n || a.c.id - b.c.id);
      for (const { c, n } of held) {
        if (n >= d) continue;
        if (c.group <= 1) {
          const item = cur.run.take(c.id, now);
          if (!item) return;
          const w: WorkMsg = { type: 'work', version: cur.version, step: cur.version, epoch: cur.epoch, microbatch: item.index, nCells: item.nCells, klWeight: cur.klWeight };
          this.sendParts(c, encodeFrameParts(w, item.arrow));
          continue;
        }
        const items = cur.run.takeGroup(c.id, now, c.group);
        if (items.length === 0) return;
        const w: WorkMsg = {
          type: 'work', version: cur.version, step: cur.version, epoch: cur.epoch, microbatch: items[0]!.index,
          nCells: items.reduce((a, it) => a + it.nCells, 0), klWeight: cur.klWeight,
          count: items.length, cellCounts: items.map((it) => it.nCells), arrowBytes: items.map((it) => it.arrow.byteLength),
        };
        this.sendParts(c, encodeFrameParts(w, ...items.map((it) => it.arrow)));
      }
    }
  }

  private checkExpiry(): void {
    const cur = this.current;
    if (!cur) return;
    const expired = cur.run.expire(performance.now(), this.opts.stepTimeoutMs);
    for (const e of expired) {
      const slow = this.conns.get(e.workerId);
      if (slow) slow.stalled = true;
      this.emit('microbatchRedone', { globalStep: cur.version, microbatch: e.index, reason: 'timeout', workerId: e.workerId });
      this.emit('log', 'warn', `worker ${e.workerId} exceeded the step timeout on microbatch ${e.index} of step ${cur.version}; handing it to another worker`);
      if (this.failedTooOften(cur, e.index, `worker ${e.workerId} exceeded the step timeout (${this.opts.stepTimeoutMs / 1000} s)`)) return;
    }
    if (expired.length) this.dispatch();
  }

  private waitForWorkers(n: number): Promise<void> {
    if (this.connectedWorkers >= n) return Promise.resolve();
    this.emit('waitingForWorkers', this.connectedWorkers, n);
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.connectedWorkers >= n || this.stopRequested) resolve();
        else this.workerWaiters.push(check);
      };
      this.workerWaiters.push(check);
    });
  }

  // ---------------------------------------------------------------- the training loop

  private async prepareStep(p: PlannedStep): Promise<StepItem[]> {
    const items: StepItem[] = [];
    for (let i = 0; i < p.microbatches.length; i++) {
      const cells = p.microbatches[i]!;
      items.push({ index: i, nCells: cells.length, cells, arrow: await this.setup.data.microbatchArrow(cells) });
    }
    return items;
  }

  async train(): Promise<TrainOutcome> {
    const { trainConfig: tc, data } = this.setup;
    const pos = { ...this.setup.position };
    const history = (this.setup.history as EpochRecord[]).filter((h) => !h.partial);
    const partial = (this.setup.history as EpochRecord[]).find((h) => h.partial && h.epoch === pos.epoch);
    let acc: EpochAcc = partial
      ? { epoch: pos.epoch, nCells: partial.nCells, loss: partial.loss * partial.nCells, reconstruction: partial.reconstruction * partial.nCells, kl: partial.kl * partial.nCells }
      : { epoch: pos.epoch, nCells: 0, loss: 0, reconstruction: 0, kl: 0 };
    let lastCheckpoint: string | null = null;
    let stopped: TrainOutcome['stopped'] = 'finished';
    const early = tc.earlyStopping && this.validator ? EarlyStopping.replay(tc.earlyStopping, history) : null;
    if (early && early.wait >= early.config.patience) stopped = 'early-stopping';
    this.earlyStopping = early;
    const timer = Math.max(50, Math.min(1000, this.opts.stepTimeoutMs / 4));
    this.expiryTimer = setInterval(() => this.checkExpiry(), timer);
    this.expiryTimer.unref();

    const nothingToDo = pos.epoch >= tc.epochs || (this.opts.maxSteps !== null && pos.globalStep >= this.opts.maxSteps);
    if (!nothingToDo) await this.waitForWorkers(Math.max(1, this.opts.minWorkers));
    const planFor = (epoch: number): PlannedStep[] => epochPlan(data.train, { ...tc, seed: tc.seed, epoch });
    let plan = pos.epoch < tc.epochs ? planFor(pos.epoch) : [];
    let epochStart = performance.now();
    // the next step's microbatches are read and encoded while the current step computes
    let prefetch: Promise<StepItem[]> | null = null;
    const nextPlanned = (): PlannedStep | null => {
      if (pos.stepInEpoch + 1 < plan.length) return plan[pos.stepInEpoch + 1]!;
      if (pos.epoch + 1 < tc.epochs) return planFor(pos.epoch + 1)[0] ?? null;
      return null;
    };

    try {
      while (stopped === 'finished' && pos.epoch < tc.epochs) {
        if (pos.stepInEpoch >= plan.length) {
          // epoch finished
          const rec = await this.closeEpoch(acc, performance.now() - epochStart);
          history.push(rec);
          pos.epoch++;
          pos.stepInEpoch = 0;
          acc = { epoch: pos.epoch, nCells: 0, loss: 0, reconstruction: 0, kl: 0 };
          epochStart = performance.now();
          if (early && rec.validationElbo !== undefined && early.observe(rec.epoch, rec.validationElbo)) {
            stopped = 'early-stopping';
            this.emit('log', 'info', early.describe());
            break;
          }
          if (pos.epoch < tc.epochs) plan = planFor(pos.epoch);
          continue;
        }
        if (this.opts.maxSteps !== null && pos.globalStep >= this.opts.maxSteps) {
          stopped = 'max-steps';
          break;
        }
        if (this.stopRequested) {
          stopped = 'interrupted';
          break;
        }
        const planned = plan[pos.stepInEpoch]!;
        const t0 = performance.now();
        const items = await (prefetch ?? this.prepareStep(planned));
        const dataWaitMs = performance.now() - t0;
        const nextP = nextPlanned();
        prefetch = null;
        // Read and encode the next step's microbatches once a core is idle: when this step's first
        // result arrives (its worker now waits for the others), else when the step ends. Started at
        // the broadcast instead, it competes with workers starting the step on a machine whose
        // cores they fill (measured: a worker waiting ~5 ms for a core to begin its microbatch).
        const startPrefetch = (): void => {
          if (prefetch || !nextP) return;
          prefetch = this.prepareStep(nextP);
          prefetch.catch(() => undefined);
        };
        let report: StepReport;
        try {
          report = await this.runStep(pos, plan.length, items, dataWaitMs, t0, startPrefetch);
        } catch (e) {
          if (!(e instanceof StepAbandoned)) throw e;
          this.emit('log', 'warn', `step ${pos.globalStep + 1} abandoned: it did not complete after the stop request (a resume redoes it)`);
          stopped = 'interrupted';
          break;
        }
        startPrefetch();
        acc.nCells += report.nCells;
        acc.loss += report.loss * report.nCells;
        acc.reconstruction += report.reconstruction * report.nCells;
        acc.kl += report.kl * report.nCells;
        pos.globalStep++;
        pos.stepInEpoch++;
        this.emit('stepCompleted', report);
        if (this.opts.checkpointEvery > 0 && pos.globalStep % this.opts.checkpointEvery === 0) {
          lastCheckpoint = this.checkpoint(pos, history, acc) ?? lastCheckpoint;
        }
      }
    } catch (e) {
      if (!(e instanceof DivergenceError)) throw e;
      // name the last checkpoint (this run's, or the one it resumed from): finite by construction
      const path = this.opts.checkpointPath;
      throw e.withCheckpoint(lastCheckpoint ?? (path && fs.existsSync(path) ? path : null));
    } finally {
      if (this.expiryTimer) clearInterval(this.expiryTimer);
      this.expiryTimer = null;
    }
    lastCheckpoint = this.checkpoint(pos, history, acc) ?? lastCheckpoint;
    const out: EpochRecord[] = [...history];
    if (acc.nCells > 0 && pos.stepInEpoch > 0) out.push(this.epochRecord(acc, true));
    return { position: pos, history: out, stopped, lastCheckpoint, ...(stopped === 'early-stopping' && early ? { earlyStopping: early } : {}) };
  }

  private epochRecord(acc: EpochAcc, partial: boolean): EpochRecord {
    const n = Math.max(1, acc.nCells);
    const r: EpochRecord = {
      epoch: acc.epoch, nCells: acc.nCells, loss: acc.loss / n, reconstruction: acc.reconstruction / n, kl: acc.kl / n,
      elbo: (acc.reconstruction + acc.kl) / n,
    };
    if (partial) r.partial = true;
    return r;
  }

  private async closeEpoch(acc: EpochAcc, ms: number): Promise<EpochRecord> {
    const rec = this.epochRecord(acc, false);
    if (this.validator) {
      this.emit('log', 'debug', `epoch ${acc.epoch + 1}: evaluating the held-out ELBO`);
      const snap = this.setup.optimizer.snapshot();
      const v = await this.validator(snap.params, snap.buffers, acc.epoch);
      rec.validationElbo = v.elbo;
      rec.validationReconstruction = v.reconstruction;
      rec.validationKl = v.kl;
    }
    this.emit('epochCompleted', { ...rec, ms });
    return rec;
  }

  private async runStep(pos: CheckpointPosition, stepsInEpoch: number, items: StepItem[], dataWaitMs: number, t0: number, onFirstResult: (() => void) | null = null): Promise<StepReport> {
    const { trainConfig: tc } = this.setup;
    const klWeight = klWeightForEpoch(pos.epoch, tc);
    const run = new StepRun(pos.globalStep, items);
    const acc = this.setup.optimizer.accumulator();
    const done = new Promise<void>((resolve, reject) => {
      this.current = { run, acc, summed: 0, version: this.version, epoch: pos.epoch, klWeight, onFirstResult, resolve, reject };
    });
    const tDispatch = performance.now();
    this.dispatch();
    if (this.connectedWorkers === 0) this.emit('waitingForWorkers', 0, 1);
    try {
      await done;
    } finally {
      this.current = null;
    }
    const tCollected = performance.now();
    if (acc.count !== items.length) throw new Error(`internal: step ${pos.globalStep} completed with ${acc.count} of ${items.length} microbatches summed`);
    const { cells: nCells, loss, reconstruction: rec, kl } = acc;
    checkStepLoss(pos.globalStep, pos.epoch, { loss, reconstruction: rec, kl });
    const { timing, streamMs, sendMs } = this.applyAndBroadcast(acc, pos.epoch);
    // non-finite gradients: these parameters are lost (never checkpointed), the last checkpoint is not
    checkGradNorm(pos.globalStep, pos.epoch, timing.gradNorm);
    const tEnd = performance.now();
    const collectMs = tCollected - tDispatch;
    const computeMs = Math.min(collectMs, Math.max(0, ...run.computeMsByWorker.values()));
    return {
      globalStep: pos.globalStep, epoch: pos.epoch, stepInEpoch: pos.stepInEpoch, stepsInEpoch,
      nCells, microbatches: items.length, loss: loss / nCells, reconstruction: rec / nCells, kl: kl / nCells, klWeight,
      totalMs: tEnd - t0, computeMs, communicationMs: collectMs - computeMs,
      // streamed sends interleave with Adam: all sending is reported as broadcastMs, the rest as applyMs
      applyMs: timing.applyMs - streamMs, aggregationMs: timing.aggregationMs, optimizerMs: timing.optimizerMs - streamMs, gradNorm: timing.gradNorm, dataWaitMs, broadcastMs: sendMs,
      workers: this.connectedWorkers, redone: run.redone,
    };
  }

  private checkpoint(pos: CheckpointPosition, history: EpochRecord[], acc: EpochAcc): string | null {
    const path = this.opts.checkpointPath;
    if (!path) return null;
    const t0 = performance.now();
    const { modelConfig, trainConfig, data, optimizer } = this.setup;
    const snap = optimizer.snapshot();
    const hist: EpochRecord[] = [...history];
    if (acc.nCells > 0 && pos.stepInEpoch > 0) hist.push(this.epochRecord(acc, true));
    const ckpt: Checkpoint = {
      format: 'atlasvae-checkpoint', version: 1, modelConfig, trainConfig,
      params: snap.params, buffers: snap.buffers, adam: snap.adam,
      position: { ...pos }, genes: data.genes, batchCategories: data.batchCategories, labelCategories: data.labelCategories,
      manifestHash: data.manifestHash, history: hist, createdAt: new Date().toISOString(),
    };
    const es = this.earlyStopping;
    if (es && es.wait >= es.config.patience) ckpt.earlyStopped = { epoch: es.bestEpoch + es.wait, bestEpoch: es.bestEpoch, bestValidationElbo: es.best };
    saveCheckpoint(path, ckpt);
    this.emit('checkpointWritten', { path, globalStep: pos.globalStep, bytes: 4 * (snap.params.length * 3 + snap.buffers.length), ms: performance.now() - t0 });
    return path;
  }
}
