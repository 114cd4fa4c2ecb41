import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseCoordinatorMessage,
  parseWorkerMessage,
  inferArrowOffset,
  ProtocolError,
} from '@atlasvae/shared/protocol';
import { inferOutputLengths } from '@atlasvae/shared/model';

const sizes = { paramLength: 100, bnLength: 8 };
const infer = {
  type: 'infer',
  id: 1,
  op: 'encode',
  nCells: 5,
  seed: 0,
  chunk: 3,
  noiseEpoch: -1,
  samples: 0,
  transformBatch: -1,
  genesLength: 3,
};

test('infer and buffers messages are validated', () => {
  assert.equal(inferArrowOffset(3), 16);
  assert.equal(inferArrowOffset(0), 0);
  assert.equal(parseCoordinatorMessage(infer, 16 + 200, sizes).type, 'infer');
  assert.throws(() => parseCoordinatorMessage(infer, 16, sizes), /holds no cells/);
  assert.throws(() => parseCoordinatorMessage(infer, 300, null), /infer before welcome/);
  assert.throws(() => parseCoordinatorMessage({ ...infer, noiseEpoch: -2 }, 300, sizes), /noiseEpoch/);
  assert.throws(
    () => parseCoordinatorMessage({ ...infer, transformBatch: 0.5 }, 300, sizes),
    /transformBatch/,
  );
  assert.throws(
    () => parseCoordinatorMessage({ ...infer, nCells: 0 }, 300, sizes),
    /nCells must be positive/,
  );
  assert.throws(() => parseCoordinatorMessage({ ...infer, op: 7 }, 300, sizes), ProtocolError);
  assert.equal(parseCoordinatorMessage({ type: 'buffers', version: 0 }, 32, sizes).type, 'buffers');
  assert.throws(
    () => parseCoordinatorMessage({ type: 'buffers', version: 0 }, 28, sizes),
    /buffers payload is 28 bytes, expected 32/,
  );
});

test('inferResult payload must hold exactly the announced float64 and float32 values', () => {
  const r = { type: 'inferResult', id: 1, nCells: 5, f64Length: 5, f32Length: 0, computeMs: 1.5 };
  assert.equal(parseWorkerMessage(r, 40, sizes).type, 'inferResult');
  assert.throws(() => parseWorkerMessage(r, 20, sizes), /inferResult payload is 20 bytes, expected 40/);
  assert.equal(
    parseWorkerMessage({ type: 'inferFailure', id: 2, message: 'x' }, 0, sizes).type,
    'inferFailure',
  );
  assert.throws(
    () => parseWorkerMessage({ type: 'inferFailure', id: 2, message: 'x' }, 4, sizes),
    /unexpected/,
  );
});

test('expected answer sizes per op', () => {
  assert.deepEqual(inferOutputLengths({ op: 'encode', genes: null }, 7, 10, 50), { f64: 0, f32: 140 });
  assert.deepEqual(inferOutputLengths({ op: 'evaluate', genes: null }, 7, 10, 50), { f64: 0, f32: 14 });
  assert.deepEqual(inferOutputLengths({ op: 'marginal', genes: null }, 7, 10, 50), { f64: 7, f32: 0 });
  assert.deepEqual(inferOutputLengths({ op: 'normalize', genes: new Int32Array(3) }, 7, 10, 50), {
    f64: 0,
    f32: 21,
  });
  assert.deepEqual(inferOutputLengths({ op: 'normalize', genes: null }, 7, 10, 50), { f64: 0, f32: 350 });
});
