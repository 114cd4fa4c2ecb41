// Groups of microbatches (device workers): fixed block boundaries, all-or-nothing acceptance,
// redo after a loss, the messages' validation, and the accumulator's group sum.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StepRun, type StepItem } from '@atlasvae/coordinator/server';
import {
  parseWorkerMessage,
  parseCoordinatorMessage,
  ProtocolError,
  MAX_GROUP,
} from '@atlasvae/shared/protocol';
import { GradientAccumulator } from '@atlasvae/shared/train';
import type { MicrobatchGradient } from '@atlasvae/shared/model';

function items(k: number): StepItem[] {
  return Array.from({ length: k }, (_, i) => ({
    index: i,
    nCells: 10 + i,
    cells: new Uint32Array(10 + i).fill(i),
    arrow: new Uint8Array(8),
  }));
}
const g = (v: number, nCells = 10): MicrobatchGradient => ({
  grad: new Float32Array([v]),
  bnStats: new Float32Array([v]),
  nCells,
  reconstructionSum: v,
  klSum: 0,
  lossSum: v,
});
const idx = (xs: StepItem[]): number[] => xs.map((x) => x.index);

test('a group worker takes whole blocks fixed by the group size, whoever takes them', () => {
  const run = new StepRun(0, items(10));
  assert.deepEqual(idx(run.takeGroup(1, 0, 4)), [0, 1, 2, 3]);
  assert.deepEqual(idx(run.takeGroup(2, 0, 4)), [4, 5, 6, 7]);
  assert.deepEqual(idx(run.takeGroup(1, 0, 4)), [8, 9], 'the last block is shorter');
  assert.deepEqual(run.takeGroup(2, 0, 4), []);
  assert.equal(run.requestsHeldBy(1), 2);
  assert.equal(run.heldBy(1), 6);
  // a single-microbatch worker beside it takes one at a time
  const mixed = new StepRun(0, items(8));
  assert.equal(mixed.take(3, 0)!.index, 0);
  assert.deepEqual(idx(mixed.takeGroup(1, 0, 4)), [4, 5, 6, 7], 'the lowest block still whole');
  assert.deepEqual(idx(mixed.takeGroup(1, 0, 4)), [1, 2, 3], 'then the pending rest of a partly taken block');
});

test('a group result is accepted all or nothing and summed in microbatch order', () => {
  const run = new StepRun(0, items(6));
  run.takeGroup(1, 0, 3);
  run.takeGroup(2, 0, 3);
  assert.equal(run.acceptGroup(2, 0, [g(1), g(2), g(3)], 5), 'unassigned', 'worker 2 holds 3–5, not 0–2');
  assert.equal(run.acceptGroup(2, 3, [g(4), g(5), g(6)], 5), 'accepted');
  assert.equal(run.complete, false);
  assert.equal(run.acceptGroup(1, 0, [g(1), g(2), g(3)], 5), 'accepted');
  assert.ok(run.complete);
  assert.deepEqual(run.unitSize, [3, 0, 0, 3, 0, 0]);
  assert.deepEqual(
    run.results.map((r) => r!.bnStats[0]),
    [1, 2, 3, 4, 5, 6],
  );
});

test('a lost or timed-out group is handed out again as the same block; a late duplicate is dropped', () => {
  const run = new StepRun(0, items(8));
  run.takeGroup(1, 0, 4);
  run.takeGroup(2, 0, 4);
  assert.deepEqual(run.release(1), [0, 1, 2, 3]);
  assert.deepEqual(idx(run.takeGroup(2, 200, 4)), [0, 1, 2, 3], 'the same block, to the survivor');
  // worker 2's first group times out and goes to worker 3; worker 2 answers it first after all
  const expired = run.expire(600, 500).map((e) => e.index);
  assert.deepEqual(expired, [4, 5, 6, 7]);
  assert.deepEqual(idx(run.takeGroup(3, 600, 4)), [4, 5, 6, 7]);
  assert.equal(run.acceptGroup(2, 4, [g(5), g(6), g(7), g(8)], 1), 'accepted');
  assert.equal(run.acceptGroup(3, 4, [g(5), g(6), g(7), g(8)], 1), 'duplicate');
  // a single-microbatch worker answered part of a block first: the group result is dropped and
  // the rest of the block stays pending, never lost
  const mixed = new StepRun(0, items(4));
  mixed.takeGroup(1, 0, 4);
  mixed.expire(1000, 500);
  assert.equal(mixed.take(9, 1000)!.index, 0);
  assert.equal(mixed.accept(9, 0, g(1), 1), 'accepted');
  assert.equal(mixed.acceptGroup(1, 0, [g(1), g(2), g(3), g(4)], 1), 'duplicate');
  assert.equal(mixed.pending, 3);
  assert.equal(mixed.fail(9, 0), 2, 'the timeout counted as its first failure, this as its second');
  assert.equal(mixed.pending, 3, 'a microbatch with a result is never queued again');
});

test('group messages are validated: counts, per-microbatch terms, payload sizes', () => {
  const sizes = { paramLength: 100, bnLength: 8 };
  const terms = [
    { nCells: 3, reconstructionSum: 1, klSum: 2, lossSum: 3 },
    { nCells: 4, reconstructionSum: 1, klSum: 2, lossSum: 3 },
  ];
  const r = {
    type: 'result',
    version: 1,
    step: 1,
    microbatch: 2,
    nCells: 7,
    reconstructionSum: 2,
    klSum: 4,
    lossSum: 6,
    computeMs: 1,
    gradLength: 100,
    bnLength: 8,
    count: 2,
    microbatches: terms,
  };
  assert.equal(parseWorkerMessage(r, 4 * (100 + 2 * 8), sizes).type, 'result');
  const bad = (h: object, n: number, re: RegExp): void =>
    void assert.throws(
      () => parseWorkerMessage(h, n, sizes),
      (e: Error) => e instanceof ProtocolError && re.test(e.message),
    );
  bad(r, 4 * (100 + 8), /payload/);
  bad({ ...r, count: MAX_GROUP + 1 }, 4 * (100 + 2 * 8), /count/);
  bad({ ...r, microbatches: terms.slice(1) }, 4 * (100 + 2 * 8), /microbatches/);
  bad({ ...r, nCells: 8 }, 4 * (100 + 2 * 8), /cells/);
  bad({ ...r, file: 0, seq: 1 }, 0, /file/);
  bad({ type: 'hello', protocol: 1, backend: 'webgpu', name: 'x', pid: 1, group: 0 }, 0, /count/);
  assert.equal(
    parseWorkerMessage(
      {
        type: 'hello',
        protocol: 1,
        backend: 'webgpu',
        name: 'x',
        pid: 1,
        group: 16,
        engine: 'device',
        device: 'gpu',
      },
      0,
      sizes,
    ).type,
    'hello',
  );
  const w = {
    type: 'work',
    version: 1,
    step: 1,
    epoch: 0,
    microbatch: 4,
    nCells: 7,
    klWeight: 1,
    count: 2,
    cellCounts: [3, 4],
    arrowBytes: [16, 24],
  };
  assert.equal(parseCoordinatorMessage(w, 40, sizes).type, 'work');
  assert.throws(() => parseCoordinatorMessage(w, 48, sizes), /arrowBytes/);
  assert.throws(() => parseCoordinatorMessage({ ...w, cellCounts: [3, 5] }, 40, sizes), /cellCounts/);
});

test("the accumulator adds a group sum once and keeps each microbatch's terms and statistics", () => {
  const a = new GradientAccumulator(2);
  a.add({ ...g(1), grad: new Float32Array([1, 2]) });
  a.addGroup(new Float32Array([10, 20]), [g(2, 5), g(3, 6)]);
  assert.deepEqual([...a.sum], [11, 22]);
  assert.equal(a.count, 3);
  assert.equal(a.cells, 21);
  assert.equal(a.loss, 6);
  assert.deepEqual(
    a.batchStats.map((s) => s[0]),
    [1, 2, 3],
  );
});
