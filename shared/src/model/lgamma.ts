// A differentiable log Γ for TensorFlow.js (tfjs 4.22 has none), built from tensor ops so it runs on
// any backend: for x < 8 shift to x + 8 with log Γ(x) = log Γ(x + 8) − log(x (x+1) ⋯ (x+7)), then
// Stirling's series. Its gradient is digamma, computed the same way (recurrence + asymptotic series).
// Accurate in float32 over (0, 1e7].
import * as tf from '@tensorflow/tfjs-core';

const SHIFT = 8;
const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

function shifted(x: tf.Tensor): { small: tf.Tensor; y: tf.Tensor; xc: tf.Tensor } {
  const small = tf.less(x, SHIFT);
  // clamp so the product below never overflows for the (unselected) large values
  const xc = tf.minimum(x, SHIFT);
  const y = tf.where(small, tf.add(x, SHIFT), x);
  return { small, y, xc };
}

function lgammaForward(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const { small, y, xc } = shifted(x);
    let prod: tf.Tensor = xc;
    for (let k = 1; k < SHIFT; k++) prod = tf.mul(prod, tf.add(xc, k));
    const logProd = tf.where(small, tf.log(prod), tf.zerosLike(x));
    const inv = tf.reciprocal(y);
    const inv2 = tf.square(inv);
    // 1/(12y) − 1/(360y³) + 1/(1260y⁵)
    const series = tf.mul(inv, tf.sub(1 / 12, tf.mul(inv2, tf.sub(1 / 360, tf.mul(inv2, 1 / 1260)))));
    const stirling = tf.add(tf.sub(tf.mul(tf.sub(y, 0.5), tf.log(y)), y), tf.add(series, HALF_LOG_2PI));
    return tf.sub(stirling, logProd);
  });
}

/** ψ(x) for x > 0 as a tensor op. */
export function digamma(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const { small, y, xc } = shifted(x);
    let recip: tf.Tensor = tf.reciprocal(xc);
    for (let k = 1; k < SHIFT; k++) recip = tf.add(recip, tf.reciprocal(tf.add(xc, k)));
    const shiftSum = tf.where(small, recip, tf.zerosLike(x));
    const inv = tf.reciprocal(y);
    const f = tf.square(inv);
    // −f (1/12 − f (1/120 − f (1/252 − f/240)))
    const poly = tf.mul(
      f,
      tf.sub(1 / 12, tf.mul(f, tf.sub(1 / 120, tf.mul(f, tf.sub(1 / 252, tf.mul(f, 1 / 240)))))),
    );
    const asym = tf.sub(tf.sub(tf.log(y), tf.mul(inv, 0.5)), poly);
    return tf.sub(asym, shiftSum);
  });
}

/** log Γ(x) for x > 0, differentiable (gradient ψ(x)). */
export const lgamma: (x: tf.Tensor) => tf.Tensor = tf.customGrad<tf.Tensor>((x, save) => {
  const input = x as tf.Tensor;
  (save as (t: tf.Tensor[]) => void)([input]);
  return {
    value: lgammaForward(input),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, digamma(saved[0]!)),
  };
});
