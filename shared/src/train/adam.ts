// torch.optim.Adam semantics: coupled L2 weight decay (grad += wd·param before the moments),
// bias-corrected moments, eps added to the bias-corrected sqrt(v). Arithmetic in float64.

export interface AdamState {
  m: Float32Array;
  v: Float32Array;
  /** steps taken */
  t: number;
}

export interface AdamConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps: number;
  weightDecay: number;
}

export function initAdam(size: number): AdamState {
  return { m: new Float32Array(size), v: new Float32Array(size), t: 0 };
}

/** One Adam step on `params` in place with gradient `grad` (float64 or float32). */
export function adamStep(params: Float32Array, grad: ArrayLike<number>, state: AdamState, cfg: AdamConfig): void {
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  if (grad.length !== params.length || state.m.length !== params.length) throw new RangeError('Adam: parameter, gradient and state sizes differ');
  state.t += 1;
  const bc1 = 1 - Math.pow(b1, state.t);
  const sqrtBc2 = Math.sqrt(1 - Math.pow(b2, state.t));
  const stepSize = cfg.lr / bc1;
  const { m, v } = state;
  const wd = cfg.weightDecay;
  const eps = cfg.eps;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const invSqrtBc2 = 1 / sqrtBc2;
  for (let i = 0; i < params.length; i++) {
    const p = params[i]!;
    const g = grad[i]! + wd * p;
    const mi = b1 * m[i]! + c1 * g;
    const vi = b2 * v[i]! + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = p - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
}

/**
 * The same Adam step with the gradient given as (partial + last) · scale, formed on the fly: the
 * trainer's mean gradient without writing it out first. Returns Σ of the squared mean gradient
 * (before weight decay), for the gradient norm.
 */
export function adamStepSum(params: Float32Array, partial: Float64Array | null, last: Float32Array, scale: number, state: AdamState, cfg: AdamConfig): number {
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  if (last.length !== params.length || state.m.length !== params.length || (partial && partial.length !== params.length)) {
    throw new RangeError('Adam: parameter, gradient and state sizes differ');
  }
  state.t += 1;
  const bc1 = 1 - Math.pow(b1, state.t);
  const sqrtBc2 = Math.sqrt(1 - Math.pow(b2, state.t));
  const stepSize = cfg.lr / bc1;
  const { m, v } = state;
  const wd = cfg.weightDecay;
  const eps = cfg.eps;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const invSqrtBc2 = 1 / sqrtBc2;
  let sq = 0;
  for (let i = 0; i < params.length; i++) {
    const mean = ((partial ? partial[i]! : 0) + last[i]!) * scale;
    sq += mean * mean;
    const p = params[i]!;
    const g = mean + wd * p;
    const mi = b1 * m[i]! + c1 * g;
    const vi = b2 * v[i]! + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = p - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
  return sq;
}

/**
 * The same Adam step with the gradient given as sum · scale, where `sum` holds every microbatch's
 * gradient already added in microbatch order (a GradientAccumulator). (partial + last) in
 * adamStepSum and a sum that had `last` added last are the same float64 additions, so both give
 * bit-identical parameters. Returns Σ of the squared mean gradient (before weight decay).
 */
export function adamStepScaled(params: Float32Array, sum: Float64Array, scale: number, state: AdamState, cfg: AdamConfig): number {
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  if (sum.length !== params.length || state.m.length !== params.length) throw new RangeError('Adam: parameter, gradient and state sizes differ');
  state.t += 1;
  const bc1 = 1 - Math.pow(b1, state.t);
  const sqrtBc2 = Math.sqrt(1 - Math.pow(b2, state.t));
  const stepSize = cfg.lr / bc1;
  const { m, v } = state;
  const wd = cfg.weightDecay;
  const eps = cfg.eps;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const invSqrtBc2 = 1 / sqrtBc2;
  let sq = 0;
  for (let i = 0; i < params.length; i++) {
    const mean = sum[i]! * scale;
    sq += mean * mean;
    const p = params[i]!;
    const g = mean + wd * p;
    const mi = b1 * m[i]! + c1 * g;
    const vi = b2 * v[i]! + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = p - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
  return sq;
}
