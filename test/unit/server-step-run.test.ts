import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StepRun, type StepItem } from '@atlasvae/coordinator/server';
import type { MicrobatchGradient } from '@atlasvae/shared/model';

function items(k: number): StepItem[] {
  return Array.from({ length: k }, (_, i) => ({
    index: i,
    nCells: 10,
    cells: new Uint32Array(10).fill(i),
    arrow: new Uint8Array(1),
  }));
}
const g = (v: number): MicrobatchGradient => ({
  grad: new Float32Array([v]),
  bnStats: new Float32Array(0),
  nCells: 10,
  reconstructionSum: 0,
  klSum: 0,
  lossSum: 0,
});

test('results are kept by microbatch index whatever the arrival order; duplicates and strangers are dropped', () => {
  const run = new StepRun(0, items(3));
  const a = run.take(1, 0)!,
    b = run.take(2, 0)!,
    c = run.take(1, 0)!;
  assert.deepEqual([a.index, b.index, c.index], [0, 1, 2]);
  assert.equal(run.take(3, 0), null);
  assert.equal(run.accept(1, 2, g(2), 1), 'accepted');
  assert.equal(run.accept(3, 1, g(9), 1), 'unassigned');
  assert.equal(run.accept(2, 1, g(1), 1), 'accepted');
  assert.equal(run.accept(2, 1, g(1), 1), 'unassigned');
  assert.equal(run.complete, false);
  assert.equal(run.accept(1, 0, g(0), 1), 'accepted');
  assert.equal(run.complete, true);
  assert.deepEqual(
    run.results.map((r) => r!.grad[0]),
    [0, 1, 2],
  );
});

test("a departed worker's microbatches are handed out again; the first result wins", () => {
  const run = new StepRun(0, items(4));
  for (let i = 0; i < 4; i++) run.take(i % 2 ? 2 : 1, 0);
  run.accept(1, 0, g(0), 1);
  assert.deepEqual(run.release(1), [2]);
  assert.equal(run.redone, 1);
  assert.equal(run.take(2, 0)!.index, 2);
  assert.equal(run.heldBy(2), 3);
  // timeout: worker 2 holds 1, 2, 3; all expire and go back to the queue in order
  const expired = run.expire(1000, 500).map((e) => e.index);
  assert.deepEqual(expired, [1, 2, 3]);
  assert.equal(run.take(3, 1000)!.index, 1);
  // the slow worker answers first: kept; the later answer is a duplicate
  assert.equal(run.accept(2, 1, g(1), 1), 'accepted');
  assert.equal(run.accept(3, 1, g(1), 1), 'duplicate');
  assert.equal(run.pending, 2);
  // microbatch 2 has now failed three times, for any reason: its holder left, it timed out, and a failure message
  assert.equal(run.fail(2, 2), 3);
  assert.equal(run.failuresOf(2), 3);
  assert.equal(run.failuresOf(0), 0, 'a microbatch answered before its worker left is no failure');
  assert.equal(run.accept(2, 3, g(3), 1), 'accepted');
  assert.equal(run.take(3, 0)!.index, 2);
  assert.equal(run.accept(3, 2, g(2), 1), 'accepted');
  assert.ok(run.complete);
  assert.deepEqual(
    run.results.map((r) => r!.grad[0]),
    [0, 1, 2, 3],
  );
});

test('isLoopbackPeer: IPv4, IPv6 and IPv4-mapped loopback peers are this machine; others are not', async () => {
  const { isLoopbackPeer } = await import('@atlasvae/coordinator/server');
  for (const r of ['127.0.0.1:5000', '127.8.9.10:1', '::1:40000', '::ffff:127.0.0.1:8787'])
    assert.equal(isLoopbackPeer(r), true, r);
  for (const r of ['10.0.0.5:5000', '192.168.1.2:80', '::ffff:10.1.2.3:8787', 'fe80::1:22', '?:?'])
    assert.equal(isLoopbackPeer(r), false, r);
});

test('StepRun.wouldAccept (checked before reading a result file) agrees with accept', () => {
  const run = new StepRun(0, items(2));
  const g: MicrobatchGradient = {
    grad: new Float32Array(1),
    bnStats: new Float32Array(1),
    nCells: 10,
    reconstructionSum: 0,
    klSum: 0,
    lossSum: 0,
  };
  const a = run.take(1, 0)!;
  assert.equal(run.wouldAccept(1, a.index), true, 'its holder');
  assert.equal(run.wouldAccept(2, a.index), false, 'not handed to worker 2');
  assert.equal(run.wouldAccept(1, 1), false, 'not handed out yet');
  assert.equal(run.accept(1, a.index, g, 1), 'accepted');
  assert.equal(run.wouldAccept(1, a.index), false, 'already has its result');
});
