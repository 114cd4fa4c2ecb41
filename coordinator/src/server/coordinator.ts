// The coordinator: the fleet as the training loop's step executor (trainingLoop.ts). It hands
// each step's microbatches (Arrow IPC bytes) to whichever workers are connected (sessions:
// workerSessions.ts), collects their summed gradients, applies one optimizer step with the results
// in microbatch order, and broadcasts the new parameters (paramTransport.ts).
//
// Invariants:
// - the plan comes from (seed, epoch) only; a microbatch's noise from (seed, step, microbatch);
//   so the parameters never depend on how many workers there were or who computed what;
// - a result is accepted only for the current parameter version and only once per microbatch;
//   a step completes only when every microbatch has exactly one accepted result;
// - a worker that leaves, fails or exceeds the step timeout has its microbatches handed out again.

import type { PlannedStep, CheckpointPosition } from '@atlasvae/shared';
import type { MicrobatchGradient } from '@atlasvae/shared/model';
import {
  encodeFrameParts,
  payloadAsFloat32,
  type ExpectedSizes,
  type WorkMsg,
  type ResultMsg,
  type FailureMsg,
  type HelloMsg,
  type WorkerMessage,
} from '@atlasvae/shared/protocol';
import {
  type GradientAccumulator,
  DivergenceError,
  checkGradNorm,
  checkStepLoss,
  nonFiniteTerm,
} from '@atlasvae/shared/train';
import { maxWorkerPayload } from './connections.js';
import { WorkerSessions, type WelcomeBody } from './workerSessions.js';
import { ParamTransport, type ParamTarget, type StreamParams } from './paramTransport.js';
import { StepRun, type StepItem, type AcceptOutcome } from './stepRun.js';
import {
  notify,
  type CoordinatorObserver,
  type ObserverList,
  type RejectReason,
  type StepReport,
  type WorkerInfo,
} from './events.js';
import {
  TrainingLoop,
  StepAbandoned,
  type StepExecutor,
  type TrainOutcome,
  type TrainingSetup,
  type Validator,
} from './trainingLoop.js';

export { STREAM_PARAMS, type StreamParams } from './paramTransport.js';
export type { Validator, TrainingSetup, EpochRecord, TrainOutcome } from './trainingLoop.js';

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

interface Conn extends ParamTarget {
  info: WorkerInfo;
  /** microbatches it takes per work request (its hello's `group`) */
  group: number;
  /** exceeded --step-timeout: gets no new work until it answers again */
  stalled: boolean;
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

export class Coordinator implements StepExecutor<StepItem[]> {
  private readonly observers: ObserverList = [];
  private sessions: WorkerSessions<Conn> | null = null;
  private readonly transport: ParamTransport<Conn>;
  private current: Current | null = null;
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
    notify(this.observers, name, ...args);
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
    const cur = this.current;
    if (cur) {
      for (const i of cur.run.release(c.id)) {
        this.emit('microbatchRedone', {
          globalStep: cur.version,
          microbatch: i,
          reason: 'disconnect',
          workerId: c.id,
        });
        if (this.failedTooOften(cur, i, `worker ${c.id} left while computing it: ${why}`)) return;
      }
      this.dispatch();
    }
  }

  private onMessage(c: Conn, msg: WorkerMessage, payload: Uint8Array): void {
    switch (msg.type) {
      case 'result':
        return this.onResult(c, msg, payload);
      case 'failure':
        return this.onFailure(c, msg);
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
    this.dispatch();
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

  private onResult(c: Conn, r: ResultMsg, payload: Uint8Array): void {
    c.stalled = false;
    const cur = this.current;
    if (!cur || r.version !== cur.version) return this.emit('resultDropped', 'stale', c.id);
    if (r.step !== r.version)
      return this.drop(c, 'invalid-message', `result.step ${r.step} != version ${r.version}`);
    const item = cur.run.items[r.microbatch];
    if (!item)
      return this.drop(
        c,
        'invalid-message',
        `microbatch ${r.microbatch} does not exist in step ${cur.version}`,
      );
    if (r.count !== undefined) return this.onGroupResult(c, cur, r, payload);
    if (r.nCells !== item.nCells)
      return this.drop(c, 'invalid-message', `result for ${r.nCells} cells, microbatch has ${item.nCells}`);
    let flat: Float32Array;
    if (r.file !== undefined) {
      if (!this.transport.hasResultFile(c, r.file))
        return this.drop(
          c,
          'invalid-message',
          `result names file ${r.file}, which this worker was not given`,
        );
      if (cur.run.wouldAccept(c.id, r.microbatch)) {
        const read = this.transport.readResult(c, r.file, r.seq!, r.microbatch);
        if (!read) {
          // rewritten before we read it (cannot happen while results are handled in order); the
          // microbatch goes back to the queue when the connection is gone, and is redone
          this.emit(
            'log',
            'warn',
            `worker ${c.id}: result ${r.seq} of microbatch ${r.microbatch} no longer in its file; reconnecting it`,
          );
          this.sessions!.disconnect(c, 'result file unreadable');
          return;
        }
        flat = read;
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
      const bad =
        nonFiniteTerm({ loss: r.lossSum, reconstruction: r.reconstructionSum, kl: r.klSum }) ??
        'a loss term is not finite';
      cur.reject(
        new DivergenceError(cur.version, cur.epoch, `${bad} on microbatch ${r.microbatch} (worker ${c.id})`),
      );
      return;
    }
    const outcome = cur.run.accept(c.id, r.microbatch, g, r.computeMs);
    if (outcome !== 'accepted') {
      this.emit('resultDropped', outcome, c.id);
    } else {
      this.emit('microbatchAccepted', {
        globalStep: cur.version,
        epoch: cur.epoch,
        microbatch: r.microbatch,
        workerId: c.id,
        cells: item.cells,
        computeMs: r.computeMs,
      });
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
        else
          cur.acc.addGroup(
            results[cur.summed]!.grad,
            results.slice(cur.summed, cur.summed + k) as MicrobatchGradient[],
          );
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
    if (r.microbatch + count > cur.run.items.length)
      return this.drop(
        c,
        'invalid-message',
        `group of ${count} from microbatch ${r.microbatch} runs past the step's ${cur.run.items.length}`,
      );
    for (let k = 0; k < count; k++) {
      const want = cur.run.items[r.microbatch + k]!.nCells;
      if (terms[k]!.nCells !== want)
        return this.drop(
          c,
          'invalid-message',
          `group result for ${terms[k]!.nCells} cells in microbatch ${r.microbatch + k}, which has ${want}`,
        );
    }
    const flat = payloadAsFloat32(payload);
    const grad = flat.subarray(0, r.gradLength);
    const bn = this.sizes.bnLength;
    const rs: MicrobatchGradient[] = terms.map((t, k) => ({
      grad: k === 0 ? grad : NOT_READ,
      bnStats: flat.subarray(r.gradLength + k * bn, r.gradLength + (k + 1) * bn),
      nCells: t.nCells,
      reconstructionSum: t.reconstructionSum,
      klSum: t.klSum,
      lossSum: t.lossSum,
    }));
    if (r.nonFinite && cur.run.wouldAcceptGroup(c.id, r.microbatch, count)) {
      const k = terms.findIndex(
        (t) => nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) !== null,
      );
      const t = terms[Math.max(k, 0)]!;
      const bad =
        nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) ??
        'a loss term is not finite';
      cur.reject(
        new DivergenceError(
          cur.version,
          cur.epoch,
          `${bad} on microbatch ${r.microbatch + Math.max(k, 0)} (worker ${c.id})`,
        ),
      );
      return;
    }
    const outcome = cur.run.acceptGroup(c.id, r.microbatch, rs, r.computeMs);
    if (outcome !== 'accepted') {
      this.emit('resultDropped', outcome, c.id);
    } else {
      for (let k = 0; k < count; k++) {
        const i = r.microbatch + k;
        this.emit('microbatchAccepted', {
          globalStep: cur.version,
          epoch: cur.epoch,
          microbatch: i,
          workerId: c.id,
          cells: cur.run.items[i]!.cells,
          computeMs: r.computeMs / count,
        });
      }
    }
    this.afterResult(cur, outcome);
  }

  private onFailure(c: Conn, f: FailureMsg): void {
    const cur = this.current;
    const count = f.count ?? 1;
    if (!cur || f.version !== cur.version || !cur.run.items[f.microbatch + count - 1]) return;
    const what =
      count > 1 ? `microbatches ${f.microbatch}–${f.microbatch + count - 1}` : `microbatch ${f.microbatch}`;
    this.emit('log', 'warn', `worker ${c.id} failed ${what} of step ${f.step}: ${f.message}`);
    for (let i = f.microbatch; i < f.microbatch + count; i++) {
      cur.run.fail(c.id, i);
      this.emit('microbatchRedone', {
        globalStep: cur.version,
        microbatch: i,
        reason: 'failure',
        workerId: c.id,
      });
    }
    for (let i = f.microbatch; i < f.microbatch + count; i++)
      if (this.failedTooOften(cur, i, `error from worker ${c.id}: ${f.message}`)) return;
    this.dispatch();
  }

  /** A microbatch that failed `maxFailures` times for any reason (failure message, its worker
   * leaving or dropped, a step timeout) ends the run: the step's promise rejects. */
  private failedTooOften(cur: Current, i: number, last: string): boolean {
    const n = cur.run.failuresOf(i);
    if (n < (this.opts.maxFailures ?? 3)) return false;
    cur.reject(
      new Error(
        `microbatch ${i} of step ${cur.version + 1} (epoch ${cur.epoch + 1}) failed ${n} times; last: ${last}`,
      ),
    );
    return true;
  }

  /** Hand pending microbatches to workers: first one request each (a microbatch, or a group for a
   * worker that takes groups), then up to `workerDepth` requests each. */
  private dispatch(): void {
    const cur = this.current;
    if (!cur || cur.run.pending === 0) return;
    const ready = [...this.sessions!.all()].filter((c) => c.ready && !c.stalled);
    if (ready.length === 0) return;
    const depth = this.opts.workerDepth ?? 2;
    const now = performance.now();
    for (let d = 1; d <= depth; d++) {
      const held = ready
        .map((c) => ({ c, n: c.group > 1 ? cur.run.requestsHeldBy(c.id) : cur.run.heldBy(c.id) }))
        .sort((a, b) => a.n - b.n || a.c.id - b.c.id);
      for (const { c, n } of held) {
        if (n >= d) continue;
        if (c.group <= 1) {
          const item = cur.run.take(c.id, now);
          if (!item) return;
          const w: WorkMsg = {
            type: 'work',
            version: cur.version,
            step: cur.version,
            epoch: cur.epoch,
            microbatch: item.index,
            nCells: item.nCells,
            klWeight: cur.klWeight,
          };
          this.sessions!.sendParts(c, encodeFrameParts(w, item.arrow));
          continue;
        }
        const items = cur.run.takeGroup(c.id, now, c.group);
        if (items.length === 0) return;
        const w: WorkMsg = {
          type: 'work',
          version: cur.version,
          step: cur.version,
          epoch: cur.epoch,
          microbatch: items[0]!.index,
          nCells: items.reduce((a, it) => a + it.nCells, 0),
          klWeight: cur.klWeight,
          count: items.length,
          cellCounts: items.map((it) => it.nCells),
          arrowBytes: items.map((it) => it.arrow.byteLength),
        };
        this.sessions!.sendParts(c, encodeFrameParts(w, ...items.map((it) => it.arrow)));
      }
    }
  }

  private checkExpiry(): void {
    const cur = this.current;
    if (!cur) return;
    const expired = cur.run.expire(performance.now(), this.opts.stepTimeoutMs);
    for (const e of expired) {
      const slow = this.sessions?.get(e.workerId);
      if (slow) slow.stalled = true;
      this.emit('microbatchRedone', {
        globalStep: cur.version,
        microbatch: e.index,
        reason: 'timeout',
        workerId: e.workerId,
      });
      this.emit(
        'log',
        'warn',
        `worker ${e.workerId} exceeded the step timeout on microbatch ${e.index} of step ${cur.version}; handing it to another worker`,
      );
      if (
        this.failedTooOften(
          cur,
          e.index,
          `worker ${e.workerId} exceeded the step timeout (${this.opts.stepTimeoutMs / 1000} s)`,
        )
      )
        return;
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

  // ---------------------------------------------------------------- the executor of the training loop

  /** Run the training loop (trainingLoop.ts) with this fleet as its executor. */
  train(): Promise<TrainOutcome> {
    const { checkpointEvery, checkpointPath, maxSteps } = this.opts;
    return new TrainingLoop(
      this.setup,
      { checkpointEvery, checkpointPath, maxSteps, validator: this.validator },
      this,
      this.observers,
    ).run();
  }

  async begin(needWorkers: boolean): Promise<void> {
    const timer = Math.max(50, Math.min(1000, this.opts.stepTimeoutMs / 4));
    this.expiryTimer = setInterval(() => this.checkExpiry(), timer);
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
    const run = new StepRun(pos.globalStep, items);
    const acc = this.setup.optimizer.accumulator();
    const done = new Promise<void>((resolve, reject) => {
      this.current = {
        run,
        acc,
        summed: 0,
        version: this.transport.version,
        epoch: pos.epoch,
        klWeight,
        onFirstResult,
        resolve,
        reject,
      };
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
    const computeMs = Math.min(collectMs, Math.max(0, ...run.computeMsByWorker.values()));
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
      redone: run.redone,
    };
  }
}
