// torch.optim.Adam semantics: coupled L2 weight decay (grad += wd·param before the moments),
// bias-corrected moments, eps added to the bias-corrected sqrt(v). Arithmetic in float64.
import { optimizerMemoryOf } from './optimizer-memory.js';

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

/** Per-step constants of one Adam update (after `t` is incremented). */
export interface AdamStepConstants {
  scale: number;
  b1: number;
  b2: number;
  c1: number;
  c2: number;
  wd: number;
  eps: number;
  stepSize: number;
  invSqrtBc2: number;
}

/**
 * One Adam step on `params` in place with the gradient `sum[i] · scale`: the trainer and the
 * coordinator pass their float64 microbatch sum and 1 / cells, so the mean gradient is never
 * written out. Returns Σ of the squared gradient (before weight decay), for the gradient norm,
 * summed as two running sums (even and odd elements, in element order) added at the end.
 *
 * With `onChunk`, the parameters are updated in ranges of `chunk` and `onChunk(start, end)` is
 * called after each, in order, with params[start, end) final: the coordinator sends each range to
 * the workers while the next is computed. Every element sees the same arithmetic either way, and
 * the squared-gradient sums run in the same order, so the results are identical to the bit.
 *
 * When params, sum and moments live in one OptimizerMemory, the WebAssembly SIMD kernel does the
 * work, two elements at a time with the same float64 arithmetic: again the same bits.
 */
export function adamStepScaled(
  params: Float32Array,
  sum: ArrayLike<number>,
  scale: number,
  state: AdamState,
  cfg: AdamConfig,
  onChunk?: (start: number, end: number) => void,
  chunk = 1 << 16,
): number {
  if (sum.length !== params.length || state.m.length !== params.length || state.v.length !== params.length)
    throw new RangeError('Adam: parameter, gradient and state sizes differ');
  if (!(chunk >= 1)) throw new RangeError(`Adam: chunk must be at least 1, got ${chunk}`);
  state.t += 1;
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  const k: AdamStepConstants = {
    scale,
    b1,
    b2,
    c1: 1 - b1,
    c2: 1 - b2,
    wd: cfg.weightDecay,
    eps: cfg.eps,
    stepSize: cfg.lr / (1 - Math.pow(b1, state.t)),
    invSqrtBc2: 1 / Math.sqrt(1 - Math.pow(b2, state.t)),
  };
  const mem = optimizerMemoryOf(params);
  const simd = mem && mem.holds(params, sum, state) ? mem : null;
  const n = params.length;
  const sq: [number, number] = [0, 0];
  if (!onChunk) chunk = n;
  for (let start = 0; start < n; start += chunk) {
    const end = Math.min(n, start + chunk);
    let i = start;
    if (simd) {
      if (i & 1) adamRange(params, sum, state, k, i, ++i, sq);
      i = simd.adamPairs(i, end, sq, k);
    }
    adamRange(params, sum, state, k, i, end, sq);
    onChunk?.(start, end);
  }
  return sq[0] + sq[1];
}

/** Adam on params[start, end); `sq` carries the squared-gradient sums of even and odd elements. */
function adamRange(
  params: Float32Array,
  sum: ArrayLike<number>,
  state: AdamState,
  k: AdamStepConstants,
  start: number,
  end: number,
  sq: [number, number],
): void {
  const { m, v } = state;
  const { scale, b1, b2, c1, c2, wd, eps, stepSize, invSqrtBc2 } = k;
  let even = sq[0],
    odd = sq[1];
  for (let i = start; i < end; i++) {
    const mean = sum[i]! * scale;
    if (i & 1) odd += mean * mean;
    else even += mean * mean;
    const p = params[i]!;
    const g = mean + wd * p;
    const mi = b1 * m[i]! + c1 * g;
    const vi = b2 * v[i]! + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = p - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
  sq[0] = even;
  sq[1] = odd;
}

/** One Adam step on `params` in place with gradient `grad` (float64 or float32). */
export function adamStep(
  params: Float32Array,
  grad: ArrayLike<number>,
  state: AdamState,
  cfg: AdamConfig,
): void {
  adamStepScaled(params, grad, 1, state, cfg);
}
