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

/**
 * One Adam step on `params` in place with the gradient `sum[i] · scale`: the trainer and the
 * coordinator pass their float64 microbatch sum and 1 / cells, so the mean gradient is never
 * written out. Returns Σ of the squared gradient (before weight decay), for the gradient norm.
 */
export function adamStepScaled(params: Float32Array, sum: ArrayLike<number>, scale: number, state: AdamState, cfg: AdamConfig): number {
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

/** One Adam step on `params` in place with gradient `grad` (float64 or float32). */
export function adamStep(params: Float32Array, grad: ArrayLike<number>, state: AdamState, cfg: AdamConfig): void {
  adamStepScaled(params, grad, 1, state, cfg);
}
