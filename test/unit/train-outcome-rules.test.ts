// The shared decisions that end a run (both training loops use them): early stopping on the
// validation ELBO, divergence on non-finite loss terms or gradient norm, and the protocol's
// `nonFinite` result flag that carries a divergence instead of failing validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EarlyStopping,
  DivergenceError,
  checkGradNorm,
  checkStepLoss,
  nonFiniteTerm,
} from '@atlasvae/shared/train';
import { parseWorkerMessage, ProtocolError } from '@atlasvae/shared/protocol';

test('early stopping: patience epochs without an improvement beyond min delta stop; a new best resets the count', () => {
  const es = new EarlyStopping({ patience: 3, minDelta: 0 });
  const elbos = [100, 90, 91, 90, 85, 86, 85, 85.5];
  const stops = elbos.map((v, e) => es.observe(e, v));
  // 90 at epoch 1; 91 and 90 (equal is no improvement) wait 2; 85 resets; 86, 85, 85.5 wait 3 → stop
  assert.deepEqual(stops, [false, false, false, false, false, false, false, true]);
  assert.equal(es.best, 85);
  assert.equal(es.bestEpoch, 4);
  const delta = new EarlyStopping({ patience: 2, minDelta: 1 });
  assert.deepEqual(
    [100, 99.5, 99.2].map((v, e) => delta.observe(e, v)),
    [false, false, true],
  );
  // NaN (no validation cells) is not monitored
  assert.equal(new EarlyStopping({ patience: 1, minDelta: 0 }).observe(0, NaN), false);
  assert.throws(() => new EarlyStopping({ patience: 0, minDelta: 0 }), /patience/);
});

test('early stopping replays a history: a resumed run continues the count where it was', () => {
  const hist = [100, 90, 91, 92].map((validationElbo, epoch) => ({ epoch, validationElbo }));
  const es = EarlyStopping.replay({ patience: 3, minDelta: 0 }, hist);
  assert.equal(es.wait, 2);
  assert.equal(es.observe(4, 93), true);
});

test('divergence: non-finite loss terms or gradient norm raise DivergenceError naming the step (from 1) and the checkpoint', () => {
  assert.equal(nonFiniteTerm({ loss: 1, reconstruction: 1, kl: 0 }), null);
  assert.equal(nonFiniteTerm({ loss: NaN, reconstruction: 1, kl: 0 }), 'the loss is NaN');
  assert.equal(nonFiniteTerm({ loss: 1, reconstruction: 1, kl: Infinity }), 'the KL term is Infinity');
  assert.throws(
    () => checkStepLoss(4, 0, { loss: NaN, reconstruction: NaN, kl: 1 }),
    (e: unknown) =>
      e instanceof DivergenceError &&
      e.globalStep === 4 &&
      /step 5 \(epoch 1\): the loss is NaN; no checkpoint/.test(e.message),
  );
  assert.throws(
    () => checkGradNorm(9, 2, Infinity),
    /training diverged at step 10 \(epoch 3\): the gradient norm is Infinity/,
  );
  assert.doesNotThrow(() => checkGradNorm(9, 2, 12.5));
  const e = new DivergenceError(1, 0, 'the loss is NaN').withCheckpoint('run/model.ckpt');
  assert.match(
    e.message,
    /the last checkpoint with finite parameters is run\/model\.ckpt \(left as it was\)\. Try a smaller --lr/,
  );
});

test('protocol: non-finite loss sums are valid only in a result flagged nonFinite', () => {
  const sizes = { paramLength: 4, bnLength: 2 };
  const result = (over: Record<string, unknown>) => ({
    type: 'result',
    version: 1,
    step: 1,
    microbatch: 0,
    nCells: 8,
    reconstructionSum: 1,
    klSum: 1,
    lossSum: 2,
    computeMs: 1,
    gradLength: 4,
    bnLength: 2,
    ...over,
  });
  assert.throws(
    () => parseWorkerMessage(result({ klSum: NaN }), 24, sizes),
    (e: unknown) => e instanceof ProtocolError && /klSum must be a finite number/.test(e.reason),
  );
  const ok = parseWorkerMessage(result({ klSum: NaN, lossSum: Infinity, nonFinite: true }), 24, sizes);
  assert.equal(ok.type, 'result');
  assert.throws(() => parseWorkerMessage(result({ nonFinite: false }), 24, sizes), /nonFinite must be true/);
  // the flag opens only the loss sums: other numbers must stay finite
  assert.throws(
    () => parseWorkerMessage(result({ computeMs: NaN, nonFinite: true }), 24, sizes),
    /computeMs must be a finite number/,
  );
});
