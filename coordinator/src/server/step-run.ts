// Bookkeeping of one synchronous step: which microbatches are pending, who holds which, which
// results have arrived. A microbatch's first valid result is kept; anything after it is dropped,
// so no microbatch is counted twice, and the step completes only when every slot is filled, so
// none is missed. Results are kept by microbatch index: the order they are summed in never
// depends on arrival order.
//
// Groups: a worker that takes g microbatches per request (a device engine) gets a block of
// consecutive microbatches whose boundaries are fixed by the step and g alone (block b is
// b·g … b·g+g−1), so which worker computed a block never changes what was summed; only when no
// whole block is pending (a fleet mixing group sizes) does it take the run of pending microbatches
// at the start of the lowest partly taken block. A group's one summed gradient is kept at its first
// microbatch (`unitSize`), each microbatch's loss terms and BatchNorm statistics at its own index.

import type { MicrobatchGradient } from '@atlasvae/shared/model';

export interface StepItem {
  index: number;
  nCells: number;
  cells: Uint32Array;
  arrow: Uint8Array;
}

interface Assignment {
  workerId: number;
  sentAt: number;
  /** first microbatch of the request it was handed out in */
  unit: number;
}

export type AcceptOutcome = 'accepted' | 'duplicate' | 'unassigned';

export class StepRun {
  readonly results: (MicrobatchGradient | undefined)[];
  /** microbatches summed in the result kept at this index: 1 for a single result, the group's
   * size at a group's first microbatch (whose `grad` is the group's sum), 0 inside a group */
  readonly unitSize: number[];
  /** pending microbatch indices, ascending */
  private readonly queue: number[];
  private readonly holders = new Map<number, Assignment[]>();
  private readonly failures = new Map<number, number>();
  private remaining: number;
  readonly computeMsByWorker = new Map<number, number>();
  redone = 0;

  constructor(
    readonly globalStep: number,
    readonly items: StepItem[],
  ) {
    this.results = new Array<MicrobatchGradient | undefined>(items.length).fill(undefined);
    this.unitSize = new Array<number>(items.length).fill(0);
    this.queue = items.map((_, i) => i);
    this.remaining = items.length;
  }

  get complete(): boolean {
    return this.remaining === 0;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Take the lowest pending microbatch for `workerId`, or null when none is pending. */
  take(workerId: number, now: number): StepItem | null {
    const i = this.queue.shift();
    if (i === undefined) return null;
    this.hold(i, workerId, now, i);
    return this.items[i]!;
  }

  private hold(i: number, workerId: number, now: number, unit: number): void {
    const list = this.holders.get(i) ?? [];
    list.push({ workerId, sentAt: now, unit });
    this.holders.set(i, list);
  }

  /** Take up to `size` consecutive pending microbatches for `workerId` (see the groups note above);
   * empty when none is pending. */
  takeGroup(workerId: number, now: number, size: number): StepItem[] {
    if (size <= 1) {
      const item = this.take(workerId, now);
      return item ? [item] : [];
    }
    if (this.queue.length === 0) return [];
    const pending = new Set(this.queue);
    const n = this.items.length;
    let first = -1;
    let end = -1;
    for (let b = 0; b < n && first < 0; b += size) {
      const e = Math.min(n, b + size);
      let whole = true;
      for (let i = b; i < e && whole; i++) whole = pending.has(i);
      if (whole) [first, end] = [b, e];
    }
    if (first < 0) {
      first = this.queue[0]!;
      const blockEnd = Math.min(n, (Math.floor(first / size) + 1) * size);
      end = first + 1;
      while (end < blockEnd && pending.has(end)) end++;
    }
    const out: StepItem[] = [];
    for (let i = first; i < end; i++) {
      this.queue.splice(this.queue.indexOf(i), 1);
      this.hold(i, workerId, now, first);
      out.push(this.items[i]!);
    }
    return out;
  }

  private requeue(i: number): boolean {
    if (this.results[i] !== undefined || this.queue.includes(i)) return false;
    let pos = 0;
    while (pos < this.queue.length && this.queue[pos]! < i) pos++;
    this.queue.splice(pos, 0, i);
    this.redone++;
    return true;
  }

  /** Record a result; only the first one for a microbatch counts. */
  /** Would `accept(workerId, i, …)` keep the result? (checked before reading a result file) */
  wouldAccept(workerId: number, i: number): boolean {
    return (
      this.results[i] === undefined && (this.holders.get(i)?.some((a) => a.workerId === workerId) ?? false)
    );
  }

  accept(workerId: number, i: number, r: MicrobatchGradient, computeMs: number): AcceptOutcome {
    return this.acceptGroup(workerId, i, [r], computeMs);
  }

  /** Would `acceptGroup(workerId, first, count results, …)` keep them? */
  wouldAcceptGroup(workerId: number, first: number, count: number): boolean {
    for (let i = first; i < first + count; i++) if (!this.wouldAccept(workerId, i)) return false;
    return true;
  }

  /**
   * Record a group's results (`rs[k]` for microbatch first + k; `rs[0].grad` is the group's summed
   * gradient, the others' `grad` is not read). All or nothing: kept only when the worker holds
   * every one of them and none has a result yet.
   */
  acceptGroup(workerId: number, first: number, rs: MicrobatchGradient[], computeMs: number): AcceptOutcome {
    const count = rs.length;
    if (count === 0 || first + count > this.items.length) return 'unassigned';
    for (let i = first; i < first + count; i++) {
      if (!this.holders.get(i)?.some((a) => a.workerId === workerId)) return 'unassigned';
    }
    let duplicate = false;
    for (let i = first; i < first + count; i++) {
      this.holders.set(
        i,
        this.holders.get(i)!.filter((a) => a.workerId !== workerId),
      );
      if (this.results[i] !== undefined) duplicate = true;
    }
    this.computeMsByWorker.set(workerId, (this.computeMsByWorker.get(workerId) ?? 0) + computeMs);
    if (duplicate) {
      // the rest of a dropped group must not be left without a holder
      for (let i = first; i < first + count; i++)
        if (this.results[i] === undefined && !this.holders.get(i)!.length) this.requeue(i);
      return 'duplicate';
    }
    for (const [k, r] of rs.entries()) {
      const i = first + k;
      this.results[i] = r;
      this.unitSize[i] = k === 0 ? count : 0;
      this.remaining--;
      // a copy handed out again after a timeout may still be queued: nobody needs it now
      const q = this.queue.indexOf(i);
      if (q >= 0) this.queue.splice(q, 1);
    }
    return 'accepted';
  }

  /** The worker failed to compute microbatch i: hand it out again. Returns how often it failed. */
  fail(workerId: number, i: number): number {
    const list = this.holders.get(i);
    if (list)
      this.holders.set(
        i,
        list.filter((a) => a.workerId !== workerId),
      );
    const n = (this.failures.get(i) ?? 0) + 1;
    this.failures.set(i, n);
    if (!this.holders.get(i)?.length) this.requeue(i);
    return n;
  }

  /** A worker left: its unfinished microbatches go back to the queue, each counted as a failure
   * (a microbatch that crashes or stalls every worker it meets must end the run). Returns them. */
  release(workerId: number): number[] {
    const out: number[] = [];
    for (const [i, list] of this.holders) {
      if (!list.some((a) => a.workerId === workerId) || this.results[i] !== undefined) continue;
      const rest = list.filter((a) => a.workerId !== workerId);
      this.holders.set(i, rest);
      this.failures.set(i, (this.failures.get(i) ?? 0) + 1);
      if (rest.length === 0 && this.requeue(i)) out.push(i);
    }
    return out;
  }

  /** times microbatch i failed: failure messages, holders that left, step timeouts */
  failuresOf(i: number): number {
    return this.failures.get(i) ?? 0;
  }

  /** Microbatches held longer than `timeoutMs` by their most recent holder: queued again (the
   * slow worker may still answer first; whichever result arrives first is kept). */
  expire(now: number, timeoutMs: number): { index: number; workerId: number }[] {
    const out: { index: number; workerId: number }[] = [];
    for (const [i, list] of this.holders) {
      const last = list.at(-1);
      if (last === undefined || this.results[i] !== undefined) continue;
      if (now - last.sentAt >= timeoutMs && this.requeue(i)) {
        this.failures.set(i, (this.failures.get(i) ?? 0) + 1);
        out.push({ index: i, workerId: last.workerId });
      }
    }
    return out;
  }

  /** requests (single microbatches or groups) a worker holds and has not answered */
  requestsHeldBy(workerId: number): number {
    const units = new Set<number>();
    for (const [i, list] of this.holders) {
      if (this.results[i] !== undefined) continue;
      for (const a of list) if (a.workerId === workerId) units.add(a.unit);
    }
    return units.size;
  }

  /** microbatch indices held by a worker and not yet answered */
  heldBy(workerId: number): number {
    let n = 0;
    for (const [i, list] of this.holders)
      if (this.results[i] === undefined && list.some((a) => a.workerId === workerId)) n++;
    return n;
  }
}
