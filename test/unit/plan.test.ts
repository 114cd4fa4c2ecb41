import { test } from 'node:test';
import assert from 'node:assert/strict';
import { epochPlan, stepsPerEpoch, trainValidationSplit, splitMicrobatches } from '@atlasvae/shared';

test('epoch plan uses every training cell exactly once and depends only on (seed, epoch)', () => {
  const train = new Uint32Array(5000).map((_, i) => i * 2);
  const o = {
    seed: 3,
    epoch: 1,
    globalBatch: 300,
    microbatch: 128,
    minLastBatch: 3,
    planBlock: 256,
    planWindow: 4,
  };
  const plan = epochPlan(train, o);
  const seen = new Set<number>();
  for (const s of plan)
    for (const m of s.microbatches)
      for (const c of m) {
        assert.ok(!seen.has(c));
        seen.add(c);
      }
  assert.equal(seen.size, 5000);
  assert.equal(plan.length, stepsPerEpoch(5000, 300, 3));
  assert.deepEqual(epochPlan(train, o), plan);
  assert.notDeepEqual(epochPlan(train, { ...o, epoch: 2 })[0]!.microbatches[0], plan[0]!.microbatches[0]);
  assert.deepEqual(
    plan[0]!.microbatches.map((m) => m.length),
    [100, 100, 100],
  );
});

test('a trailing batch under minLastBatch cells is dropped', () => {
  const train = new Uint32Array(258).map((_, i) => i);
  const plan = epochPlan(train, {
    seed: 0,
    epoch: 0,
    globalBatch: 128,
    microbatch: 128,
    minLastBatch: 3,
    planBlock: 1024,
    planWindow: 8,
  });
  assert.equal(plan.length, 2);
  assert.equal(stepsPerEpoch(258, 128, 3), 2);
  assert.equal(stepsPerEpoch(259, 128, 3), 3);
});

test('train/validation split is seeded and disjoint', () => {
  const a = trainValidationSplit(1000, 7, 0.9);
  assert.equal(a.train.length, 900);
  assert.equal(a.validation.length, 100);
  assert.deepEqual(trainValidationSplit(1000, 7, 0.9), a);
  const all = new Set([...a.train, ...a.validation]);
  assert.equal(all.size, 1000);
  assert.equal(splitMicrobatches(new Uint32Array(10), 4).length, 3);
});

test('plan blocks follow storage blocks: a window of one block keeps each block contiguous', () => {
  // every other cell trains: blocks of 100 global indices hold 50 training cells each
  const train = new Uint32Array(1000).map((_, i) => i * 2);
  const order = epochPlan(train, {
    seed: 1,
    epoch: 0,
    globalBatch: 50,
    microbatch: 50,
    minLastBatch: 3,
    planBlock: 100,
    planWindow: 1,
  });
  assert.equal(order.length, 20);
  for (const s of order) {
    const block = Math.floor(s.microbatches[0]![0]! / 100);
    for (const c of s.microbatches[0]!) assert.equal(Math.floor(c / 100), block);
  }
});
