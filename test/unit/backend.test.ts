// Backend selection: auto falls back to the embedded wasm backend when native TensorFlow is not
// installed (as here), an explicit `tensorflow` says what is missing, and selection is idempotent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { activeBackend, initBackend } from '@atlasvae/shared/backend';
import { CliError } from '@atlasvae/shared';

test('auto chooses wasm here, logs it once, and is idempotent', async () => {
  const lines: string[] = [];
  const name = await initBackend('auto', (m) => lines.push(m));
  assert.equal(name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.equal(activeBackend(), 'wasm');
  assert.equal(await initBackend('auto', (m) => lines.push(m)), 'wasm');
  assert.equal(await initBackend('wasm', (m) => lines.push(m)), 'wasm');
  assert.equal(
    lines.filter((l) => /compute backend wasm/.test(l)).length,
    1,
    'logged once: later calls find it running',
  );
  // the backend really computes
  const c = tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([5, 6, 7, 8], [2, 2]));
  assert.deepEqual(Array.from(c.dataSync()), [19, 22, 43, 50]);
  c.dispose();
});

test('an explicit tensorflow choice without tfjs-node fails with a clear message; cpu works', async () => {
  await assert.rejects(
    initBackend('tensorflow', () => undefined),
    (e: unknown) =>
      e instanceof CliError &&
      /tfjs-node-gpu nor @tensorflow\/tfjs-node is installed/.test((e as Error).message),
  );
  assert.equal(await initBackend('cpu', () => undefined), 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.equal(await initBackend('wasm', () => undefined), 'wasm');
});
