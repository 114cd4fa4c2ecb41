// The coordinator: the fleet as the training loop's step executor (shared/train/loop.ts). It hands
// each step's microbatches (Arrow IPC bytes) to whichever workers are connected (sessions:
// worker-sessions.ts), collects their summed gradients, applies one optimizer step with the results
// in microbatch order, and broadcasts the new parameters (param-transport.ts).
//
// Dispatch, acceptance and the in-order sum of one step are step-in-flight.ts's; this file is the glue:
// sessions in, the step in flight, the optimizer step and the broadcast out.
//
// Invariant: the plan comes from (seed, epoch) only, a microbatch's noise from (seed, step,
// microbatch), so the parameters never depend on how many workers there were or who computed what.

import type { PlannedStep, CheckpointPosition } from '@atlasvae/shared';
import {
  checkGradNorm,
  checkStepLoss,
  notifyObservers,
  TrainingLoop,
  StepAbandoned,
  type StateSnapshot,
  type StepExecutor,
  type TrainOutcome,
  type TrainingSetup as LoopSetup,
  type Validator,
} from '@atlasvae/shared/train';
import type { ExpectedSizes, HelloMsg, WorkerMessage } from '@atlasvae/shared/protocol';
import { maxWorkerPayload } from './connections.js';
import { WorkerSessions, type WelcomeBody } from './worker-sessions.js';
import { ParamTransport, type StreamParams } from './param-transport.js';
import { StepRun, type StepItem } from './step-run.js';
import { StepInFlight, type Conn, type FleetPort } from './step-in-flight.js';
import { type CoordinatorObserver, type ObserverList, type RejectReason, type StepReport } from './events.js';
import type { TrainingData } from './data.js';
import type { Optimizer } from './optimizer.js';

export { STREAM_PARAMS, type StreamParams } from './param-transport.js';
export type { Validator, EpochRecord, TrainOutcome } from '@atlasvae/shared/train';

/** The loop's setup with the fleet's data (Arrow microbatches) and optimizer. */
export interface TrainingSetup extends LoopSetup {
  data: TrainingData;
  optimizer: Optimizer;
}

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
   * two shared-memory files (transport/shared-memory.ts) instead of the socket; 'never': sockets only.
   */
  sharedMemory?: 'auto' | 'never';
}

export class Coordinator implements StepExecutor<StepItem[]> {
  private readonly observers: ObserverList = [];
  private sessions: WorkerSessions<Conn> | null = null;
  private readonly transport: ParamTransport<Conn>;
  private current: StepInFlight<Conn> | null = null;
  private readonly port: FleetPort<Conn>;
  private readonly sizes: ExpectedSizes;
  stopRequested = false;
  private workerWaiters: (() => void)[] = [];
  private expiryTimer: NodeJS.Timeout | null = null;
  private readonly maxWorkBytes: number;
  private validator: Validator | null = null;
  /** worker count at the last idle-workers warning */
  private idleWarnedAt = 0;
  url = '';

  constructor(
    private readonly opts: CoordinatorOptions,
    private readonly setup: TrainingSetup,
  ) {
    this.sizes = { paramLength: setup.optimizer.params.length, bnLength: setup.optimizer.bnStatsLength };
    this.transport = new ParamTransport<Conn>(
      {
        ...this.sizes,
        version: setup.position.globalStep,
        streamParams: opts.streamParams ?? 'auto',
        sharedMemory: opts.sharedMemory ?? 'auto',
        resultFilesPerWorker: (opts.workerDepth ?? 2) + 1,
      },
      setup.optimizer,
      {
        sessions: () => this.sessions?.all() ?? [],
        send: (c, frame) => this.sessions?.send(c, frame),
        sent: (n) => this.emit('bytes', 'sent', n),
        log: (level, msg) => this.emit('log', level, msg),
      },
    );
    this.maxWorkBytes = setup.data.maxMicrobatchBytes(setup.trainConfig.microbatch);
    this.port = {
      workers: () => [...(this.sessions?.all() ?? [])],
      worker: (id) => this.sessions?.get(id),
      sendParts: (c, parts) => this.sessions?.sendParts(c, parts),
      drop: (c, reason, detail) => this.drop(c, reason, detail),
      disconnect: (c, why) => this.sessions?.disconnect(c, why),
      emit: (name, ...args) => this.emit(name, ...args),
      transport: this.transport,
      bnLength: this.sizes.bnLength,
      workerDepth: opts.workerDepth ?? 2,
      stepTimeoutMs: opts.stepTimeoutMs,
      maxFailures: opts.maxFailures ?? 3,
    };
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

  private emit<K extends keyof CoordinatorObserver>(
    name: K,
    ...args: Parameters<CoordinatorObserver[K]>
  ): void {
    notifyObservers(this.observers, name, ...args);
  }

  get connectedWorkers(): number {
    return this.sessions?.readyCount ?? 0;
  }

  async listen(): Promise<string> {
    this.transport.open();
    this.sessions = new WorkerSessions<Conn>(
      {
        host: this.opts.host,
        port: this.opts.port,
        token: this.opts.token,
        tls: this.opts.tls,
        maxPayload: maxWorkerPayload(this.sizes.paramLength, this.sizes.bnLength),
        heartbeatMs: this.opts.heartbeatMs ?? 10_000,
        sizes: this.sizes,
        helloTimeoutMs: this.opts.helloTimeoutMs ?? 10_000,
      },
      {
        create: (base) => ({
          ...base,
          info: { id: base.id, backend: '?', name: '?', remote: base.remote },
          paramsViaFile: false,
          resultFiles: null,
          group: 1,
          stalled: false,
        }),
        welcome: (c, hello) => this.welcome(c, hello),
        joined: (c, hello) => this.joined(c, hello),
        message: (c, msg, payload) => this.onMessage(c, msg, payload),
        gone: (c, why) => this.forget(c, why),
        rejected: (reason, detail, remote) => this.reject(reason, detail, remote),
        bytes: (direction, n) => this.emit('bytes', direction, n),
      },
    );
    this.url = await this.sessions.url;
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
    await this.sessions?.close(done);
    this.sessions = null;
    this.transport.close();
  }

  private reject(reason: RejectReason, detail: string, remote: string): void {
    this.emit('connectionRejected', reason, detail, remote);
    this.emit('log', 'warn', `rejected connection ${remote}: ${reason}${detail ? ` (${detail})` : ''}`);
  }

  // ---------------------------------------------------------------- workers and their messages

  private drop(c: Conn, reason: RejectReason, detail: string): void {
    this.sessions?.drop(c, reason, detail);
  }

  /** A connection is gone (closed or dropped): its unfinished microbatches go back to the queue. */
  private forget(c: Conn, why: string): void {
    this.transport.gone(c);
    if (!c.ready) return;
    c.ready = false;
    this.emit('workerDisconnected', c.info, why, this.connectedWorkers);
    this.emit(
      'log',
      'info',
      `worker ${c.id} (${c.info.name}, ${c.info.backend}) left: ${why}; ${this.connectedWorkers} connected`,
    );
    this.current?.release(c, why);
  }

  private onMessage(c: Conn, msg: WorkerMessage, payload: Uint8Array): void {
    switch (msg.type) {
      case 'result': {
        c.stalled = false;
        const cur = this.current;
        if (!cur || msg.version !== cur.version) return this.emit('resultDropped', 'stale', c.id);
        return cur.result(c, msg, payload);
      }
      case 'failure':
        return this.current?.failure(c, msg);
      case 'paramsFilesReady':
        if (!this.transport.filesReady(c))
          return this.drop(c, 'unexpected-message', 'paramsFilesReady without an offer');
        return;
      default:
        // inference answers belong to an inference fleet (results/fleet.ts), not to training
        return this.drop(c, 'unexpected-message', `${msg.type} during training`);
    }
  }

  private welcome(c: Conn, hello: HelloMsg): WelcomeBody {
    c.group = hello.group ?? 1;
    c.info = {
      ...c.info,
      backend: hello.backend,
      name: `${hello.name}:${hello.pid}`,
      metrics: hello.metrics,
      group: c.group,
    };
    if (hello.engine !== undefined) c.info.engine = hello.engine;
    if (hello.device !== undefined) c.info.device = hello.device;
    const w: WelcomeBody = {
      modelConfig: this.setup.modelConfig,
      seed: this.setup.trainConfig.seed,
      paramLength: this.sizes.paramLength,
      bnLength: this.sizes.bnLength,
      maxWorkBytes: this.maxWorkBytes,
    };
    const files = this.transport.offerFor(c);
    if (files) w.paramsFiles = files;
    return w;
  }

  private joined(c: Conn, hello: HelloMsg): void {
    this.sessions!.send(c, this.transport.currentFrame());
    this.emit('workerConnected', c.info, this.connectedWorkers);
    const backend = hello.backend;
    const engine = hello.engine
      ? `${hello.engine} engine on ${backend}${hello.device ? ` (${hello.device})` : ''}`
      : backend;
    this.emit(
      'log',
      'info',
      `worker ${c.id} joined (${c.info.name}, ${engine}${c.group > 1 ? `, groups of ${c.group}` : ''}, ${c.info.remote}); ${this.connectedWorkers} connected`,
    );
    this.warnIfIdleWorkers();
    const waiters = this.workerWaiters;
    this.workerWaiters = [];
    for (const w of waiters) w();
    this.current?.dispatch();
  }

  /** Warn (once per worker count) when a step has fewer microbatches than workers: some idle every step. */
  private warnIfIdleWorkers(): void {
    const { globalBatch, microbatch } = this.setup.trainConfig;
    const perStep = Math.max(1, Math.ceil(globalBatch / microbatch));
    const n = this.connectedWorkers;
    if (n <= perStep || n <= this.idleWarnedAt) return;
    this.idleWarnedAt = n;
    this.emit(
      'log',
      'warn',
      `${n} workers connected, but a step has ${perStep} microbatch${perStep === 1 ? '' : 'es'} (global batch ${globalBatch} / microbatch ${microbatch}): ${n - perStep} worker${n - perStep === 1 ? '' : 's'} idle every step. Start with --local-workers/--min-workers ${n} (the default microbatch then splits each step ${n} ways) or set --microbatch`,
    );
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

  // ---------------------------------------------------------------- the executor of the training loop

  /** Run the training loop (shared/train/loop.ts) with this fleet as its executor. */
  train(): Promise<TrainOutcome> {
    const { checkpointEvery, checkpointPath, maxSteps } = this.opts;
    return new TrainingLoop(
      this.setup,
      { checkpointEvery, checkpointPath, maxSteps, validator: this.validator },
      this,
      this.observers,
    ).run();
  }

  snapshot(): StateSnapshot {
    return this.setup.optimizer.snapshot();
  }

  async begin(needWorkers: boolean): Promise<void> {
    const timer = Math.max(50, Math.min(1000, this.opts.stepTimeoutMs / 4));
    this.expiryTimer = setInterval(() => this.current?.expire(), timer);
    this.expiryTimer.unref();
    if (needWorkers) await this.waitForWorkers(Math.max(1, this.opts.minWorkers));
  }

  end(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.expiryTimer = null;
  }

  async prepare(p: PlannedStep): Promise<StepItem[]> {
    const items: StepItem[] = [];
    for (let i = 0; i < p.microbatches.length; i++) {
      const cells = p.microbatches[i]!;
      items.push({
        index: i,
        nCells: cells.length,
        cells,
        arrow: await this.setup.data.microbatchArrow(cells),
      });
    }
    return items;
  }

  async run(
    pos: CheckpointPosition,
    stepsInEpoch: number,
    klWeight: number,
    items: StepItem[],
    dataWaitMs: number,
    t0: number,
    onFirstResult: () => void,
  ): Promise<StepReport> {
    const acc = this.setup.optimizer.accumulator();
    const step = new StepInFlight(
      this.port,
      new StepRun(pos.globalStep, items),
      acc,
      this.transport.version,
      pos.epoch,
      klWeight,
      onFirstResult,
    );
    this.current = step;
    const tDispatch = performance.now();
    step.dispatch();
    if (this.connectedWorkers === 0) this.emit('waitingForWorkers', 0, 1);
    try {
      await step.done;
    } finally {
      this.current = null;
    }
    const tCollected = performance.now();
    if (acc.count !== items.length)
      throw new Error(
        `internal: step ${pos.globalStep} completed with ${acc.count} of ${items.length} microbatches summed`,
      );
    const { cells: nCells, loss, reconstruction: rec, kl } = acc;
    checkStepLoss(pos.globalStep, pos.epoch, { loss, reconstruction: rec, kl });
    const targets = [...this.sessions!.all()].filter((c) => c.ready && c.ws.readyState === c.ws.OPEN);
    const { timing, streamMs, sendMs } = this.transport.applyAndBroadcast(acc, pos.epoch, targets);
    // non-finite gradients: these parameters are lost (never checkpointed), the last checkpoint is not
    checkGradNorm(pos.globalStep, pos.epoch, timing.gradNorm);
    const tEnd = performance.now();
    const collectMs = tCollected - tDispatch;
    const computeMs = Math.min(collectMs, Math.max(0, ...step.run.computeMsByWorker.values()));
    return {
      globalStep: pos.globalStep,
      epoch: pos.epoch,
      stepInEpoch: pos.stepInEpoch,
      stepsInEpoch,
      nCells,
      microbatches: items.length,
      loss: loss / nCells,
      reconstruction: rec / nCells,
      kl: kl / nCells,
      klWeight,
      totalMs: tEnd - t0,
      computeMs,
      communicationMs: collectMs - computeMs,
      // streamed sends interleave with Adam: all sending is reported as broadcastMs, the rest as applyMs
      applyMs: timing.applyMs - streamMs,
      aggregationMs: timing.aggregationMs,
      optimizerMs: timing.optimizerMs - streamMs,
      gradNorm: timing.gradNorm,
      dataWaitMs,
      broadcastMs: sendMs,
      workers: this.connectedWorkers,
      redone: step.run.redone,
    };
  }
}
