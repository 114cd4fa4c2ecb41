import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkGenes,
  mapBatches,
  resolveGenes,
  splitDelimited,
  encodeCategories,
} from '@atlasvae/coordinator/results';

test('checkGenes accepts the same genes in order and explains any difference', () => {
  checkGenes(['a', 'b', 'c'], ['a', 'b', 'c'], 'data/', 'm.ckpt');
  assert.throws(
    () => checkGenes(['a', 'b', 'c'], ['a', 'c', 'b'], 'data/', 'm.ckpt'),
    /data\/: .*gene 2 is c in the dataset but b in the model/,
  );
  assert.throws(
    () => checkGenes(['a', 'b', 'c'], ['a', 'b'], 'data/', 'm.ckpt'),
    /it has 2 genes, the model \(m\.ckpt\) 3, 2 in common.*--genes/,
  );
});

test('mapBatches matches batches by name, and --as-batch names one model batch', () => {
  assert.equal(mapBatches(['x', 'y'], ['x', 'y'], undefined, 'd'), undefined);
  assert.deepEqual(mapBatches(['x', 'y', 'z'], ['z', 'x'], undefined, 'd'), new Int32Array([2, 0]));
  assert.throws(
    () => mapBatches(['x', 'y'], ['x', 'w'], undefined, 'd'),
    /d: batches w are not among the model's \(x, y\); choose one with --as-batch/,
  );
  assert.deepEqual(mapBatches(['x', 'y'], ['p', 'q', 'r'], 'y', 'd'), new Int32Array([1, 1, 1]));
  assert.throws(
    () => mapBatches(['x', 'y'], ['p'], 'nope', 'd'),
    /--as-batch nope: the model's batches are x, y/,
  );
  // a model without batches takes any data as its single batch
  assert.deepEqual(mapBatches(['batch0'], ['p', 'q'], undefined, 'd'), new Int32Array([0, 0]));
});

test('resolveGenes keeps the requested order and rejects unknown or repeated genes', () => {
  const r = resolveGenes(['c', 'a'], ['a', 'b', 'c'], 'genes.txt');
  assert.deepEqual(Array.from(r.indices), [2, 0]);
  assert.deepEqual(resolveGenes(null, ['a', 'b'], 'x').names, ['a', 'b']);
  assert.throws(
    () => resolveGenes(['a', 'zz'], ['a', 'b'], 'genes.txt'),
    /genes\.txt: 1 gene\(s\) are not in the model's gene list: zz/,
  );
  assert.throws(() => resolveGenes(['a', 'a'], ['a', 'b'], 'genes.txt'), /gene a is listed twice/);
});

test('CSV fields split with quotes; categories encode with unknown as -1', () => {
  assert.deepEqual(splitDelimited('"a,b",c,"q""x"', ','), ['a,b', 'c', 'q"x']);
  const e = encodeCategories(['t2', '', 't1', 't2']);
  assert.deepEqual(e.names, ['t1', 't2']);
  assert.deepEqual(Array.from(e.codes), [1, -1, 0, 1]);
});
