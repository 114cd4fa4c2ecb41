// Local regression (Cleveland's loess) of y on one predictor x, evaluated exactly at every point:
// for each x0, the q = floor(span · n) nearest points get tricube weights (1 − (d/h)³)³ with h the
// distance to the q-th nearest, and a weighted least-squares polynomial of the given degree
// (centred at x0) gives the fitted value. Neighbours of a point are a contiguous window of the
// x-sorted points, found with a sliding window, so the cost is O(n · q).
//
// R's loess (and skmisc, which scanpy uses) defaults to surface = "interpolate": it fits exactly
// at k-d tree vertices and interpolates between them. This is the "direct" surface; the two differ
// slightly (well below the spread of the normalized variances that HVG ranks).

export function loessFit(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  span: number,
  degree: 1 | 2,
): Float64Array {
  const n = x.length;
  const out = new Float64Array(n);
  if (n === 0) return out;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[a]! - x[b]! || a - b);
  const xs = Float64Array.from(order, (i) => x[i]!);
  const ys = Float64Array.from(order, (i) => y[i]!);
  const q = Math.min(n, Math.max(degree + 1, Math.floor(span * n)));
  let lo = 0;
  for (let i = 0; i < n; i++) {
    const x0 = xs[i]!;
    // slide the q-point window [lo, lo + q) towards x0 while that brings nearer points in
    while (lo + q < n && x0 - xs[lo]! > xs[lo + q]! - x0) lo++;
    const hi = lo + q; // exclusive
    let h = Math.max(x0 - xs[lo]!, xs[hi - 1]! - x0);
    // points tied at distance h outside the window would get weight 0 anyway
    if (h <= 0) h = 1e-300;
    // weighted sums for the normal equations in t = (x − x0) / h
    let s0 = 0,
      s1 = 0,
      s2 = 0,
      s3 = 0,
      s4 = 0,
      t0 = 0,
      t1 = 0,
      t2 = 0;
    for (let j = lo; j < hi; j++) {
      const t = (xs[j]! - x0) / h; // scaled to (-1, 1) for conditioning; the intercept is unchanged
      const r = Math.abs(t);
      if (r >= 1) continue;
      const c = 1 - r * r * r;
      const w = c * c * c;
      const wy = w * ys[j]!;
      const wt = w * t,
        wt2 = wt * t;
      s0 += w;
      s1 += wt;
      s2 += wt2;
      t0 += wy;
      t1 += wy * t;
      if (degree === 2) {
        s3 += wt2 * t;
        s4 += wt2 * t * t;
        t2 += wy * t * t;
      }
    }
    let fit: number;
    if (degree === 1) {
      const det = s0 * s2 - s1 * s1;
      fit = Math.abs(det) > 1e-12 * s0 * s2 ? (s2 * t0 - s1 * t1) / det : t0 / s0;
    } else {
      fit = solve3(s0, s1, s2, s3, s4, t0, t1, t2);
      if (!Number.isFinite(fit)) {
        const det = s0 * s2 - s1 * s1;
        fit = Math.abs(det) > 1e-12 * s0 * s2 ? (s2 * t0 - s1 * t1) / det : t0 / s0;
      }
    }
    out[order[i]!] = fit;
  }
  return out;
}

/** Intercept of the symmetric 3×3 system [[s0 s1 s2][s1 s2 s3][s2 s3 s4]] · β = [t0 t1 t2]; NaN if singular. */
function solve3(
  s0: number,
  s1: number,
  s2: number,
  s3: number,
  s4: number,
  t0: number,
  t1: number,
  t2: number,
): number {
  // Cramer's rule for β0
  const det = s0 * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2);
  const scale = Math.abs(s0 * s2 * s4) + 1e-300;
  if (!(Math.abs(det) > 1e-12 * scale)) return NaN;
  const num = t0 * (s2 * s4 - s3 * s3) - s1 * (t1 * s4 - s3 * t2) + s2 * (t1 * s3 - s2 * t2);
  return num / det;
}
