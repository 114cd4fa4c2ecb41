// The epoch plan: which cells form each step's microbatches. It depends on (seed, epoch, cells,
// batch sizes) alone, never on the number of workers, so every deployment trains on the same
// sequence of minibatches.
//
// Block shuffle: the training cells are grouped by storage block, floor(global index / planBlock)
// (with planBlock = the shards' record-batch size, a block is the training cells of one record
// batch, so an epoch reads each record batch once); the block order is shuffled, then
// consecutive windows of `planWindow` blocks are shuffled cell by cell. A reader touches a
// window's blocks only, yet cells from many parts of the atlas are mixed within each minibatch.

import { Rng } from './rng.js';

export interface PlanOptions {
  seed: number;
  epoch: number;
  globalBatch: number;
  microbatch: number;
  /** a trailing global batch with fewer cells is dropped */
  minLastBatch: number;
  planBlock: number;
  planWindow: number;
}

export interface PlannedStep {
  /** step index within the epoch */
  step: number;
  /** global cell indices per microbatch, in microbatch order */
  microbatches: Uint32Array[];
  nCells: number;
}

const PLAN_STREAM = 0x504c414e; // "PLAN"
const SPLIT_STREAM = 0x53504c54; // "SPLT"

/** The shuffled order of the training cells (ascending global indices) for one epoch. */
export function epochOrder(
  trainCells: Uint32Array,
  o: Pick<PlanOptions, 'seed' | 'epoch' | 'planBlock' | 'planWindow'>,
): Uint32Array {
  const rng = new Rng(PLAN_STREAM, o.seed, o.epoch);
  const n = trainCells.length;
  // starts of the non-empty storage blocks within trainCells
  const starts: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i === 0 || Math.floor(trainCells[i]! / o.planBlock) !== Math.floor(trainCells[i - 1]! / o.planBlock))
      starts.push(i);
  }
  starts.push(n);
  const nBlocks = starts.length - 1;
  const blocks = new Uint32Array(nBlocks);
  for (let i = 0; i < nBlocks; i++) blocks[i] = i;
  rng.shuffle(blocks);
  const out = new Uint32Array(n);
  let pos = 0;
  for (let w = 0; w < nBlocks; w += o.planWindow) {
    const start = pos;
    for (let b = w; b < Math.min(w + o.planWindow, nBlocks); b++) {
      const s = starts[blocks[b]!]!;
      const e = starts[blocks[b]! + 1]!;
      out.set(trainCells.subarray(s, e), pos);
      pos += e - s;
    }
    rng.shuffle(out.subarray(start, pos));
  }
  return out;
}

/** Split `n` cells into ceil(n / micro) microbatches whose sizes differ by at most one. */
export function splitMicrobatches(cells: Uint32Array, micro: number): Uint32Array[] {
  const k = Math.max(1, Math.ceil(cells.length / micro));
  const base = Math.floor(cells.length / k);
  const extra = cells.length % k;
  const out: Uint32Array[] = [];
  let pos = 0;
  for (let i = 0; i < k; i++) {
    const size = base + (i < extra ? 1 : 0);
    out.push(cells.slice(pos, pos + size));
    pos += size;
  }
  return out;
}

/** All steps of one epoch. */
export function epochPlan(trainCells: Uint32Array, o: PlanOptions): PlannedStep[] {
  const order = epochOrder(trainCells, o);
  const steps: PlannedStep[] = [];
  for (let s = 0, pos = 0; pos < order.length; s++, pos += o.globalBatch) {
    const cells = order.subarray(pos, Math.min(pos + o.globalBatch, order.length));
    if (cells.length < o.minLastBatch) break;
    steps.push({ step: s, microbatches: splitMicrobatches(cells, o.microbatch), nCells: cells.length });
  }
  return steps;
}

/** Number of steps an epoch has, without building it. */
export function stepsPerEpoch(nTrain: number, globalBatch: number, minLastBatch: number): number {
  const full = Math.floor(nTrain / globalBatch);
  const rest = nTrain - full * globalBatch;
  return full + (rest >= minLastBatch && rest > 0 ? 1 : 0);
}

/** Seeded train/validation assignment: a random `trainFraction` of cells train, the rest validate. */
export function trainValidationSplit(
  nCells: number,
  seed: number,
  trainFraction: number,
): { train: Uint32Array; validation: Uint32Array } {
  const perm = new Uint32Array(nCells);
  for (let i = 0; i < nCells; i++) perm[i] = i;
  new Rng(SPLIT_STREAM, seed).shuffle(perm);
  const nTrain = Math.round(nCells * trainFraction);
  const train = perm.slice(0, nTrain).sort();
  const validation = perm.slice(nTrain).sort();
  return { train, validation };
}
