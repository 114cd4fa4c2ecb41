// Differentiable building blocks for the device model that move nothing between host and device:
// every constant is a scalar tensor made once (an op given a JS number uploads it on every call),
// and the reductions' gradients broadcast on the device (tfjs's Sum gradient uploads a host array
// of ones the size of its input). log Γ and ψ follow shared/src/model/lgamma.ts (shift by 8, then
// the asymptotic series), rebuilt from the cached constants.
import type * as tfNs from '@tensorflow/tfjs-core';

type Tensor = tfNs.Tensor;
type SaveFn = (tensors: Tensor[]) => void;
type CustomGradientFunc = Parameters<typeof tfNs.customGrad>[0];

const SHIFT = 8;
const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

export class DeviceOps {
  private readonly consts = new Map<number, Tensor>();
  private readonly sums = new Map<string, (x: Tensor) => Tensor>();
  readonly lgamma: (x: Tensor) => Tensor;
  /** √x and 1/√x whose gradients use cached constants (tfjs's multiply by a JS number) */
  readonly sqrt: (x: Tensor) => Tensor;
  readonly rsqrt: (x: Tensor) => Tensor;

  constructor(readonly tf: typeof tfNs) {
    const lgammaGrad = tf.customGrad(((x: Tensor, save: SaveFn) => {
      save([x]);
      return {
        value: this.lgammaValue(x),
        gradFunc: (dy: Tensor, saved: Tensor[]) => tf.mul(dy, this.digamma(saved[0]!)),
      };
    }) as unknown as CustomGradientFunc);
    this.lgamma = (x) => lgammaGrad(x);
    const sqrtGrad = tf.customGrad(((x: Tensor, save: SaveFn) => {
      const y = tf.sqrt(x);
      save([y]);
      return {
        value: y,
        gradFunc: (dy: Tensor, saved: Tensor[]) => tf.div(tf.mul(dy, this.c(0.5)), saved[0]!),
      };
    }) as unknown as CustomGradientFunc);
    this.sqrt = (x) => sqrtGrad(x);
    const rsqrtGrad = tf.customGrad(((x: Tensor, save: SaveFn) => {
      const y = tf.rsqrt(x);
      save([y]);
      // d x^(−1/2) = −½ y³
      return {
        value: y,
        gradFunc: (dy: Tensor, saved: Tensor[]) =>
          tf.mul(tf.mul(dy, this.c(-0.5)), tf.mul(saved[0]!, tf.mul(saved[0]!, saved[0]!))),
      };
    }) as unknown as CustomGradientFunc);
    this.rsqrt = (x) => rsqrtGrad(x);
  }

  /** a float32 scalar made once and kept */
  c(v: number): Tensor {
    let t = this.consts.get(v);
    if (!t) {
      t = this.tf.keep(this.tf.scalar(v, 'float32'));
      this.consts.set(v, t);
    }
    return t;
  }

  /** Σ over `axis` (all axes when null); its gradient tiles dy on the device */
  sum(x: Tensor, axis: number | null, keepDims = false): Tensor {
    const key = `${axis}:${keepDims}:${x.shape.join('x')}`;
    let f = this.sums.get(key);
    if (!f) {
      const tf = this.tf;
      const shape = x.shape.slice();
      const expanded =
        axis === null
          ? shape.map(() => 1)
          : shape.map((d, i) => (i === (axis < 0 ? shape.length + axis : axis) ? 1 : d));
      const g = tf.customGrad(((input: Tensor) => ({
        value: axis === null ? tf.sum(input) : tf.sum(input, axis, keepDims),
        gradFunc: (dy: Tensor) => tf.broadcastTo(tf.reshape(dy, expanded), shape),
      })) as unknown as CustomGradientFunc);
      f = (t) => g(t);
      if (this.sums.size > 256) this.sums.clear();
      this.sums.set(key, f);
    }
    return f(x);
  }

  private shifted(x: Tensor): { small: Tensor; y: Tensor; xc: Tensor } {
    const tf = this.tf;
    const s = this.c(SHIFT);
    const small = tf.less(x, s);
    // clamped so the product below never overflows for the (unselected) large values
    const xc = tf.minimum(x, s);
    return { small, y: tf.where(small, tf.add(x, s), x), xc };
  }

  private lgammaValue(x: Tensor): Tensor {
    const tf = this.tf;
    return tf.tidy(() => {
      const { small, y, xc } = this.shifted(x);
      // x(x+1)⋯(x+7) = u(u+6)(u+10)(u+12) with u = x(x+7): 8 kernels instead of 14
      const u = tf.mul(xc, tf.add(xc, this.c(7)));
      const prod = tf.mul(
        tf.mul(u, tf.add(u, this.c(6))),
        tf.mul(tf.add(u, this.c(10)), tf.add(u, this.c(12))),
      );
      const logProd = tf.where(small, tf.log(prod), tf.zerosLike(x));
      const inv = tf.reciprocal(y);
      const inv2 = tf.mul(inv, inv);
      // 1/(12y) − 1/(360y³) + 1/(1260y⁵)
      const series = tf.mul(
        inv,
        tf.sub(this.c(1 / 12), tf.mul(inv2, tf.sub(this.c(1 / 360), tf.mul(inv2, this.c(1 / 1260))))),
      );
      const stirling = tf.add(
        tf.sub(tf.mul(tf.sub(y, this.c(0.5)), tf.log(y)), y),
        tf.add(series, this.c(HALF_LOG_2PI)),
      );
      return tf.sub(stirling, logProd);
    });
  }

  /** ψ(x) for x > 0 */
  digamma(x: Tensor): Tensor {
    const tf = this.tf;
    return tf.tidy(() => {
      const { small, y, xc } = this.shifted(x);
      // Σ_{k<8} 1/(x+k), pairing k with 7−k: (2x+7)·Σ 1/(u + {0, 6, 10, 12}) with u = x(x+7)
      const x7 = tf.add(xc, this.c(7));
      const u = tf.mul(xc, x7);
      const inv4 = tf.add(
        tf.add(tf.reciprocal(u), tf.reciprocal(tf.add(u, this.c(6)))),
        tf.add(tf.reciprocal(tf.add(u, this.c(10))), tf.reciprocal(tf.add(u, this.c(12)))),
      );
      const shiftSum = tf.where(small, tf.mul(tf.add(xc, x7), inv4), tf.zerosLike(x));
      const inv = tf.reciprocal(y);
      const f = tf.mul(inv, inv);
      // −f (1/12 − f (1/120 − f (1/252 − f/240)))
      const poly = tf.mul(
        f,
        tf.sub(
          this.c(1 / 12),
          tf.mul(f, tf.sub(this.c(1 / 120), tf.mul(f, tf.sub(this.c(1 / 252), tf.mul(f, this.c(1 / 240)))))),
        ),
      );
      const asym = tf.sub(tf.sub(tf.log(y), tf.mul(inv, this.c(0.5))), poly);
      return tf.sub(asym, shiftSum);
    });
  }

  dispose(): void {
    for (const t of this.consts.values()) t.dispose();
    this.consts.clear();
    this.sums.clear();
  }
}
