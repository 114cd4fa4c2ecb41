// BatchNorm1d over [nCells, nFeatures] rows, PyTorch semantics: training mode normalises with the
// batch mean and biased variance and reports the unbiased variance for the running statistics.

export interface BnTrainResult {
  y: Float32Array;
  xhat: Float32Array;
  invStd: Float64Array;
  mean: Float64Array;
  /** unbiased batch variance (what PyTorch folds into running_var) */
  varUnbiased: Float64Array;
}

export function bnTrain(
  a: Float32Array,
  n: number,
  f: number,
  gamma: Float32Array,
  beta: Float32Array,
  eps: number,
): BnTrainResult {
  const mean = new Float64Array(f);
  const v = new Float64Array(f);
  for (let i = 0; i < n; i++) for (let j = 0; j < f; j++) mean[j]! += a[i * f + j]!;
  for (let j = 0; j < f; j++) mean[j]! /= n;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++) {
      const d = a[i * f + j]! - mean[j]!;
      v[j]! += d * d;
    }
  const invStd = new Float64Array(f);
  const varUnbiased = new Float64Array(f);
  for (let j = 0; j < f; j++) {
    invStd[j] = 1 / Math.sqrt(v[j]! / n + eps);
    varUnbiased[j] = n > 1 ? v[j]! / (n - 1) : 0;
  }
  const xhat = new Float32Array(n * f);
  const y = new Float32Array(n * f);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++) {
      const k = i * f + j;
      const xh = (a[k]! - mean[j]!) * invStd[j]!;
      xhat[k] = xh;
      y[k] = gamma[j]! * xh + beta[j]!;
    }
  return { y, xhat, invStd, mean, varUnbiased };
}

export function bnEval(
  a: Float32Array,
  n: number,
  f: number,
  gamma: Float32Array,
  beta: Float32Array,
  runMean: Float32Array,
  runVar: Float32Array,
  eps: number,
): Float32Array {
  const y = new Float32Array(n * f);
  for (let j = 0; j < f; j++) {
    const s = gamma[j]! / Math.sqrt(runVar[j]! + eps);
    const t = beta[j]! - runMean[j]! * s;
    for (let i = 0; i < n; i++) y[i * f + j] = a[i * f + j]! * s + t;
  }
  return y;
}

/** Training-mode backward: da, and dgamma/dbeta added into the given gradient slices. */
export function bnBackward(
  dy: Float32Array,
  n: number,
  f: number,
  r: BnTrainResult,
  gamma: Float32Array,
  dGamma: Float32Array,
  dBeta: Float32Array,
): Float32Array {
  const sumDy = new Float64Array(f);
  const sumDyXhat = new Float64Array(f);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++) {
      const k = i * f + j;
      sumDy[j]! += dy[k]!;
      sumDyXhat[j]! += dy[k]! * r.xhat[k]!;
    }
  const da = new Float32Array(n * f);
  for (let j = 0; j < f; j++) {
    dGamma[j]! += sumDyXhat[j]!;
    dBeta[j]! += sumDy[j]!;
  }
  // da = γ/(nσ) (n dy − Σdy − x̂ Σ(dy x̂))
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++) {
      const k = i * f + j;
      da[k] = ((gamma[j]! * r.invStd[j]!) / n) * (n * dy[k]! - sumDy[j]! - r.xhat[k]! * sumDyXhat[j]!);
    }
  return da;
}
