// Bookkeeping of one synchronous step: which microbatches are pending, who holds which, which
// results have arrived. A microbatch's first valid result is kept; anything after it is dropped,
// so no microbatch is counted twice, and the step completes only when every slot is filled, so
// none is missed. Results are kept by microbatch index: the order they are summed in never
// depends on arrival order.

import type { MicrobatchGradient } from '@atlasvae/shared/model/types';

export interface StepItem {
  index: number;
  nCells: number;
  cells: Uint32Array;
  arrow: Uint8Array;
}

interface Assignment {
  workerId: number;
  sentAt: number;
}

export type AcceptOutcome = 'accepted' | 'duplicate' | 'unassigned';

export class StepRun {
  readonly results: (MicrobatchGradient | undefined)[];
  /** pending microbatch indices, ascending */
  private readonly queue: number[];
  private readonly holders = new Map<number, Assignment[]>();
  private readonly failures = new Map<number, number>();
  private remaining: number;
  readonly computeMsByWorker = new Map<number, number>();
  redone = 0;

  constructor(readonly globalStep: number, readonly items: StepItem[]) {
    this.results = new Array<MicrobatchGradient | undefined>(items.length).fill(undefined);
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
    const list = this.holders.get(i) ?? [];
    list.push({ workerId, sentAt: now });
    this.holders.set(i, list);
    return this.items[i]!;
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
    return this.results[i] === undefined && (this.holders.get(i)?.some((a) => a.workerId === workerId) ?? false);
  }

  accept(workerId: number, i: number, r: MicrobatchGradient, computeMs: number): AcceptOutcome {
    const list = this.holders.get(i);
    if (!list || !list.some((a) => a.workerId === workerId)) return 'unassigned';
    this.holders.set(i, list.filter((a) => a.workerId !== workerId));
    this.computeMsByWorker.set(workerId, (this.computeMsByWorker.get(workerId) ?? 0) + computeMs);
    if (this.results[i] !== undefined) return 'duplicate';
    this.results[i] = r;
    this.remaining--;
    // a copy handed out again after a timeout may still be queued: nobody needs it now
    const q = this.queue.indexOf(i);
    if (q >= 0) this.queue.splice(q, 1);
    return 'accepted';
  }

  /** The worker failed to compute microbatch i: hand it out again. Returns how often it failed. */
  fail(workerId: number, i: number): number {
    const list = this.holders.get(i);
    if (list) this.holders.set(i, list.filter((a) => a.workerId !== workerId));
    const n = (this.failures.get(i) ?? 0) + 1;
    this.failures.set(i, n);
    if (!(this.holders.get(i)?.length)) this.requeue(i);
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
      if (list.length === 0 || this.results[i] !== undefined) continue;
      const last = list[list.length - 1]!;
      if (now - last.sentAt >= timeoutMs && this.requeue(i)) {
        this.failures.set(i, (this.failures.get(i) ?? 0) + 1);
        out.push({ index: i, workerId: last.workerId });
      }
    }
    return out;
  }

  /** microbatch indices held by a worker and not yet answered */
  heldBy(workerId: number): number {
    let n = 0;
    for (const [i, list] of this.holders) if (this.results[i] === undefined && list.some((a) => a.workerId === workerId)) n++;
    return n;
  }
}
