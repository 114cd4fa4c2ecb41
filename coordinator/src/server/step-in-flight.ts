// One step in flight on the fleet: hand its microbatches (and groups of them) to workers, accept
// each result once and only for this step's parameter version, sum them in microbatch order as the
// in-order prefix grows, and hand work out again when a worker leaves, fails or stalls. It knows the
// fleet only through the callbacks the coordinator gives it (FleetPort).
//
// Invariants: a result is accepted only for the current version and only once per microbatch; the
// step completes only when every microbatch has exactly one accepted result; a microbatch that
// failed `maxFailures` times ends the run.

import type { MicrobatchGradient } from '@atlasvae/shared/model';
import {
  encodeFrameParts,
  payloadAsFloat32,
  type WorkMsg,
  type ResultMsg,
  type FailureMsg,
} from '@atlasvae/shared/protocol';
import { type GradientAccumulator, DivergenceError, nonFiniteTerm } from '@atlasvae/shared/train';
import type { ParamTarget } from './param-transport.js';
import type { StepRun, AcceptOutcome } from './step-run.js';
import type { CoordinatorObserver, RejectReason, WorkerInfo } from './events.js';

/** the payload of a file result that will be dropped, so its file is never read */
const NOT_READ = new Float32Array(0);

/** A worker connection as the coordinator keeps it. */
export interface Conn extends ParamTarget {
  info: WorkerInfo;
  /** microbatches it takes per work request (its hello's `group`) */
  group: number;
  /** exceeded --step-timeout: gets no new work until it answers again */
  stalled: boolean;
}

/** What a step in flight may do to the fleet. */
export interface FleetPort<C extends Conn> {
  workers(): C[];
  worker(id: number): C | undefined;
  sendParts(c: C, parts: Uint8Array[]): void;
  drop(c: C, reason: RejectReason, detail: string): void;
  disconnect(c: C, why: string): void;
  emit<K extends keyof CoordinatorObserver>(name: K, ...args: Parameters<CoordinatorObserver[K]>): void;
  transport: {
    hasResultFile(c: C, file: number): boolean;
    readResult(c: C, file: number, seq: number, microbatch: number): Float32Array | null;
  };
  bnLength: number;
  /** microbatches (or groups) a worker may hold at once */
  workerDepth: number;
  stepTimeoutMs: number;
  /** a microbatch that failed this many times stops training */
  maxFailures: number;
}

export class StepInFlight<C extends Conn> {
  /** microbatches 0…summed−1 are in acc */
  private summed = 0;
  /** settles when every microbatch is summed (or the step fails) */
  readonly done: Promise<void>;
  private resolve!: () => void;
  reject!: (e: Error) => void;

  constructor(
    private readonly fleet: FleetPort<C>,
    /** the step's bookkeeping: pending, handed out, accepted */
    readonly run: StepRun,
    /** gradients summed so far, in microbatch order */
    readonly acc: GradientAccumulator,
    readonly version: number,
    readonly epoch: number,
    private readonly klWeight: number,
    /** called once, when the step's first result is accepted (starts the next step's prefetch) */
    private onFirstResult: (() => void) | null,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** `c` is gone: what it held goes back to the queue. */
  release(c: C, why: string): void {
    for (const i of this.run.release(c.id)) {
      this.fleet.emit('microbatchRedone', {
        globalStep: this.version,
        microbatch: i,
        reason: 'disconnect',
        workerId: c.id,
      });
      if (this.failedTooOften(i, `worker ${c.id} left while computing it: ${why}`)) return;
    }
    this.dispatch();
  }

  /** A result of this step's version from `c` (stale ones are the caller's to drop). */
  result(c: C, r: ResultMsg, payload: Uint8Array): void {
    if (r.step !== r.version)
      return this.fleet.drop(c, 'invalid-message', `result.step ${r.step} != version ${r.version}`);
    const item = this.run.items[r.microbatch];
    if (!item)
      return this.fleet.drop(
        c,
        'invalid-message',
        `microbatch ${r.microbatch} does not exist in step ${this.version}`,
      );
    if (r.count !== undefined) return this.groupResult(c, r, payload);
    if (r.nCells !== item.nCells)
      return this.fleet.drop(
        c,
        'invalid-message',
        `result for ${r.nCells} cells, microbatch has ${item.nCells}`,
      );
    let flat: Float32Array;
    if (r.file !== undefined) {
      if (!this.fleet.transport.hasResultFile(c, r.file))
        return this.fleet.drop(
          c,
          'invalid-message',
          `result names file ${r.file}, which this worker was not given`,
        );
      if (this.run.wouldAccept(c.id, r.microbatch)) {
        const read = this.fleet.transport.readResult(c, r.file, r.seq!, r.microbatch);
        if (!read) {
          // rewritten before we read it (cannot happen while results are handled in order); the
          // microbatch goes back to the queue when the connection is gone, and is redone
          this.fleet.emit(
            'log',
            'warn',
            `worker ${c.id}: result ${r.seq} of microbatch ${r.microbatch} no longer in its file; reconnecting it`,
          );
          this.fleet.disconnect(c, 'result file unreadable');
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
    if (r.nonFinite && this.run.wouldAccept(c.id, r.microbatch)) {
      const bad =
        nonFiniteTerm({ loss: r.lossSum, reconstruction: r.reconstructionSum, kl: r.klSum }) ??
        'a loss term is not finite';
      this.reject(
        new DivergenceError(
          this.version,
          this.epoch,
          `${bad} on microbatch ${r.microbatch} (worker ${c.id})`,
        ),
      );
      return;
    }
    const outcome = this.run.accept(c.id, r.microbatch, g, r.computeMs);
    if (outcome !== 'accepted') {
      this.fleet.emit('resultDropped', outcome, c.id);
    } else {
      this.fleet.emit('microbatchAccepted', {
        globalStep: this.version,
        epoch: this.epoch,
        microbatch: r.microbatch,
        workerId: c.id,
        cells: item.cells,
        computeMs: r.computeMs,
      });
    }
    this.afterResult(outcome);
  }

  /** Sum what now continues the in-order prefix (never out of microbatch order), then go on. */
  private afterResult(outcome: AcceptOutcome): void {
    if (outcome === 'accepted') {
      const { results, unitSize } = this.run;
      while (this.summed < results.length && results[this.summed] !== undefined) {
        const k = unitSize[this.summed]!;
        if (k <= 1) this.acc.add(results[this.summed]!);
        else
          this.acc.addGroup(
            results[this.summed]!.grad,
            results.slice(this.summed, this.summed + k) as MicrobatchGradient[],
          );
        this.summed += Math.max(1, k);
      }
    }
    if (this.run.complete) return this.resolve();
    this.dispatch();
    if (outcome === 'accepted' && this.onFirstResult) {
      const first = this.onFirstResult;
      this.onFirstResult = null;
      first();
    }
  }

  /** A group result: one summed gradient, then each microbatch's BatchNorm statistics (socket only). */
  private groupResult(c: C, r: ResultMsg, payload: Uint8Array): void {
    const count = r.count!;
    const terms = r.microbatches!;
    if (r.microbatch + count > this.run.items.length)
      return this.fleet.drop(
        c,
        'invalid-message',
        `group of ${count} from microbatch ${r.microbatch} runs past the step's ${this.run.items.length}`,
      );
    for (let k = 0; k < count; k++) {
      const want = this.run.items[r.microbatch + k]!.nCells;
      if (terms[k]!.nCells !== want)
        return this.fleet.drop(
          c,
          'invalid-message',
          `group result for ${terms[k]!.nCells} cells in microbatch ${r.microbatch + k}, which has ${want}`,
        );
    }
    const flat = payloadAsFloat32(payload);
    const grad = flat.subarray(0, r.gradLength);
    const bn = this.fleet.bnLength;
    const rs: MicrobatchGradient[] = terms.map((t, k) => ({
      grad: k === 0 ? grad : NOT_READ,
      bnStats: flat.subarray(r.gradLength + k * bn, r.gradLength + (k + 1) * bn),
      nCells: t.nCells,
      reconstructionSum: t.reconstructionSum,
      klSum: t.klSum,
      lossSum: t.lossSum,
    }));
    if (r.nonFinite && this.run.wouldAcceptGroup(c.id, r.microbatch, count)) {
      const k = terms.findIndex(
        (t) => nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) !== null,
      );
      const t = terms[Math.max(k, 0)]!;
      const bad =
        nonFiniteTerm({ loss: t.lossSum, reconstruction: t.reconstructionSum, kl: t.klSum }) ??
        'a loss term is not finite';
      this.reject(
        new DivergenceError(
          this.version,
          this.epoch,
          `${bad} on microbatch ${r.microbatch + Math.max(k, 0)} (worker ${c.id})`,
        ),
      );
      return;
    }
    const outcome = this.run.acceptGroup(c.id, r.microbatch, rs, r.computeMs);
    if (outcome !== 'accepted') {
      this.fleet.emit('resultDropped', outcome, c.id);
    } else {
      for (let k = 0; k < count; k++) {
        const i = r.microbatch + k;
        this.fleet.emit('microbatchAccepted', {
          globalStep: this.version,
          epoch: this.epoch,
          microbatch: i,
          workerId: c.id,
          cells: this.run.items[i]!.cells,
          computeMs: r.computeMs / count,
        });
      }
    }
    this.afterResult(outcome);
  }

  failure(c: C, f: FailureMsg): void {
    const count = f.count ?? 1;
    if (f.version !== this.version || !this.run.items[f.microbatch + count - 1]) return;
    const what =
      count > 1 ? `microbatches ${f.microbatch}–${f.microbatch + count - 1}` : `microbatch ${f.microbatch}`;
    this.fleet.emit('log', 'warn', `worker ${c.id} failed ${what} of step ${f.step}: ${f.message}`);
    for (let i = f.microbatch; i < f.microbatch + count; i++) {
      this.run.fail(c.id, i);
      this.fleet.emit('microbatchRedone', {
        globalStep: this.version,
        microbatch: i,
        reason: 'failure',
        workerId: c.id,
      });
    }
    for (let i = f.microbatch; i < f.microbatch + count; i++)
      if (this.failedTooOften(i, `error from worker ${c.id}: ${f.message}`)) return;
    this.dispatch();
  }

  /** A microbatch that failed `maxFailures` times for any reason (failure message, its worker
   * leaving or dropped, a step timeout) ends the run: the step's promise rejects. */
  private failedTooOften(i: number, last: string): boolean {
    const n = this.run.failuresOf(i);
    if (n < this.fleet.maxFailures) return false;
    this.reject(
      new Error(
        `microbatch ${i} of step ${this.version + 1} (epoch ${this.epoch + 1}) failed ${n} times; last: ${last}`,
      ),
    );
    return true;
  }

  /** Hand pending microbatches to workers: first one request each (a microbatch, or a group for a
   * worker that takes groups), then up to `workerDepth` requests each. */
  dispatch(): void {
    if (this.run.pending === 0) return;
    const ready = this.fleet.workers().filter((c) => c.ready && !c.stalled);
    if (ready.length === 0) return;
    const depth = this.fleet.workerDepth;
    const now = performance.now();
    for (let d = 1; d <= depth; d++) {
      const held = ready
        .map((c) => ({ c, n: c.group > 1 ? this.run.requestsHeldBy(c.id) : this.run.heldBy(c.id) }))
        .sort((a, b) => a.n - b.n || a.c.id - b.c.id);
      for (const { c, n } of held) {
        if (n >= d) continue;
        if (c.group <= 1) {
          const item = this.run.take(c.id, now);
          if (!item) return;
          const w: WorkMsg = {
            type: 'work',
            version: this.version,
            step: this.version,
            epoch: this.epoch,
            microbatch: item.index,
            nCells: item.nCells,
            klWeight: this.klWeight,
          };
          this.fleet.sendParts(c, encodeFrameParts(w, item.arrow));
          continue;
        }
        const items = this.run.takeGroup(c.id, now, c.group);
        if (items.length === 0) return;
        const w: WorkMsg = {
          type: 'work',
          version: this.version,
          step: this.version,
          epoch: this.epoch,
          microbatch: items[0]!.index,
          nCells: items.reduce((a, it) => a + it.nCells, 0),
          klWeight: this.klWeight,
          count: items.length,
          cellCounts: items.map((it) => it.nCells),
          arrowBytes: items.map((it) => it.arrow.byteLength),
        };
        this.fleet.sendParts(c, encodeFrameParts(w, ...items.map((it) => it.arrow)));
      }
    }
  }

  /** Hand out again what a worker held longer than the step timeout; that worker gets no more. */
  expire(): void {
    const expired = this.run.expire(performance.now(), this.fleet.stepTimeoutMs);
    for (const e of expired) {
      const slow = this.fleet.worker(e.workerId);
      if (slow) slow.stalled = true;
      this.fleet.emit('microbatchRedone', {
        globalStep: this.version,
        microbatch: e.index,
        reason: 'timeout',
        workerId: e.workerId,
      });
      this.fleet.emit(
        'log',
        'warn',
        `worker ${e.workerId} exceeded the step timeout on microbatch ${e.index} of step ${this.version}; handing it to another worker`,
      );
      if (
        this.failedTooOften(
          e.index,
          `worker ${e.workerId} exceeded the step timeout (${this.fleet.stepTimeoutMs / 1000} s)`,
        )
      )
        return;
    }
    if (expired.length) this.dispatch();
  }
}
