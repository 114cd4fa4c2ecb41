// lgamma/digamma against float64 references (scipy) over [1e-6, 1e7]: the tensor op used by
// TensorFlow.js code (with its customGrad gradient) and the scalar kernels of the likelihood.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@atlasvae/shared/backend';
import {
  lgamma,
  digamma,
  lgammaScalar,
  digammaScalar,
  logFactorial,
  lgammaShiftDiff,
  digammaShiftDiff,
  fastExp,
} from '@atlasvae/shared/model';
import { sharedPath, skipUnlessShared } from '../helpers/paths.js';

const skip = skipUnlessShared('fixtures', 'lgamma_reference.json');
const ref: { x: number[]; lgamma: number[]; digamma: number[] } = skip
  ? { x: [], lgamma: [], digamma: [] }
  : JSON.parse(fs.readFileSync(sharedPath('fixtures', 'lgamma_reference.json')!, 'utf8'));

for (const backend of ['wasm', 'cpu'] as const) {
  test(
    `tensor lgamma (${backend}): |error| ≤ 1e-5·max(1, |lgamma|) and gradient = digamma within 1e-4 for x ≥ 1e-3`,
    { skip },
    async () => {
      await initBackend(backend, () => undefined);
      const x = tf.tensor1d(ref.x);
      const value = lgamma(x).dataSync();
      // d Σ w·lgamma(x) / dx = w·ψ(x): the upstream gradient w checks the chain rule is applied
      const w = tf.fill([ref.x.length], 0.5);
      const grad = tf.mul(tf.grad((t: tf.Tensor) => lgamma(t))(x, w), 2).dataSync();
      const direct = digamma(x).dataSync();
      let worst = 0;
      ref.x.forEach((xv, i) => {
        const err = Math.abs(value[i]! - ref.lgamma[i]!) / Math.max(1, Math.abs(ref.lgamma[i]!));
        worst = Math.max(worst, err);
        assert.ok(
          err <= 1e-5,
          `lgamma(${xv}) = ${value[i]}, reference ${ref.lgamma[i]} (scaled error ${err.toExponential(2)})`,
        );
        if (xv >= 1e-3) {
          for (const [what, v] of [
            ['gradient', grad[i]!],
            ['digamma', direct[i]!],
          ] as const) {
            const rel = Math.abs(v - ref.digamma[i]!) / Math.abs(ref.digamma[i]!);
            assert.ok(
              rel <= 1e-4,
              `${what} at ${xv} = ${v}, digamma ${ref.digamma[i]} (relative ${rel.toExponential(2)})`,
            );
          }
        }
      });
      x.dispose();
      w.dispose();
      assert.ok(worst > 0, 'float32 results differ from float64 somewhere (the test compares real values)');
      await initBackend('wasm', () => undefined);
    },
  );
}

test('scalar lgamma/digamma (likelihood kernels) match the reference to float64 accuracy', { skip }, () => {
  ref.x.forEach((xv, i) => {
    const l = lgammaScalar(xv);
    assert.ok(
      Math.abs(l - ref.lgamma[i]!) <= 1e-10 * Math.max(1, Math.abs(ref.lgamma[i]!)),
      `lgammaScalar(${xv}) = ${l}, reference ${ref.lgamma[i]}`,
    );
    const d = digammaScalar(xv);
    assert.ok(
      Math.abs(d - ref.digamma[i]!) <= 1e-10 * Math.max(1, Math.abs(ref.digamma[i]!)),
      `digammaScalar(${xv}) = ${d}, reference ${ref.digamma[i]}`,
    );
  });
});

test('logFactorial agrees with lgamma(x + 1) and known values', () => {
  assert.equal(logFactorial(0), 0);
  assert.ok(Math.abs(logFactorial(5) - Math.log(120)) < 1e-12);
  assert.ok(Math.abs(logFactorial(10000) - lgammaScalar(10001)) < 1e-9 * lgammaScalar(10001));
  assert.ok(Math.abs(logFactorial(2.5) - lgammaScalar(3.5)) < 1e-12);
});

test('count differences lgamma(x+θ) − lgamma(θ) and ψ(x+θ) − ψ(θ) match the direct forms; fastExp matches Math.exp', () => {
  for (const theta of [1e-4, 0.03, 0.7, 1, 2.5, 40, 3e4, 1e7]) {
    for (const x of [0, 1, 2, 3, 5, 8, 9, 17, 250, 2.5]) {
      const lg = lgammaShiftDiff(x, theta, lgammaScalar(theta));
      const lgDirect = lgammaScalar(x + theta) - lgammaScalar(theta);
      assert.ok(
        Math.abs(lg - lgDirect) <= 1e-9 * Math.max(1, Math.abs(lgammaScalar(x + theta))),
        `lgamma diff x=${x} θ=${theta}: ${lg} vs ${lgDirect}`,
      );
      const dg = digammaShiftDiff(x, theta, digammaScalar(theta));
      const dgDirect = digammaScalar(x + theta) - digammaScalar(theta);
      assert.ok(
        Math.abs(dg - dgDirect) <= 1e-9 * Math.max(1, Math.abs(digammaScalar(theta))),
        `digamma diff x=${x} θ=${theta}: ${dg} vs ${dgDirect}`,
      );
    }
  }
  for (let v = -800; v <= 700; v += 0.37) {
    const e = Math.exp(v);
    assert.ok(Math.abs(fastExp(v) - e) <= 1e-9 * e, `fastExp(${v})`);
  }
});
