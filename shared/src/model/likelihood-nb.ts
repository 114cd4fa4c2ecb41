// The negative binomial family (nb, zinb): the fast two-pass kernels used by the model, and the
// direct transcription of scvi's log_nb_positive / log_zinb_positive they are tested against.
import {
  dispersionRow,
  dispersionTables,
  expRow,
  gradStrides,
  LIKELIHOOD_EPS,
  softmaxRow,
  toPxrLayout,
  type LikelihoodInput,
  type LikelihoodOutput,
} from './likelihood-common.js';
import { digammaShiftDiff, fastExp, lgammaShiftDiff, logFactorial } from './special.js';

function softplus(v: number): number {
  return v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
}

function sigmoid(v: number): number {
  return v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
}

/**
 * NB in two passes per cell: a branch-free dense pass treating every count as 0 (one exp, one log and
 * one division per gene), then a correction at the nonzero counts only.
 */
export function negativeBinomialFast(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const G = cfg.nGenes;
  const B = batch.nCells;
  const [si, sg] = gradStrides(inp);
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const theta = tab.theta;
  const lte = tab.logThetaEps;
  const tte = tab.thetaOverThetaEps;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const lthmuRow = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    const invSum = 1 / expRow(logits, i, G, s);
    const muScale = batch.library[i]! * invSum;
    const off = dispersionRow(cfg, batch, i) * G;
    let ll = 0;
    let sumB = 0;
    if (needGrad) {
      for (let g = 0; g < G; g++) {
        const mu = s[g]! * muScale;
        const th = theta[off + g]!;
        const denom = th + mu + EPS;
        const lthmu = Math.log(denom);
        lthmuRow[g] = lthmu;
        const d = lte[off + g]! - lthmu;
        ll += th * d;
        const thInv = th / denom;
        const b = -mu * thInv;
        bb[g] = b;
        sumB += b;
        dPxr![off + g]! -= (d + tte[off + g]! - thInv) * th;
      }
    } else {
      for (let g = 0; g < G; g++) {
        const th = theta[off + g]!;
        const lthmu = Math.log(th + s[g]! * muScale + EPS);
        lthmuRow[g] = lthmu;
        ll += th * (lte[off + g]! - lthmu);
      }
    }
    for (let p = indptr[i]!; p < indptr[i + 1]!; p++) {
      const x = counts[p]!;
      if (!(x > 0)) continue;
      const g = indices[p]!;
      const j = off + g;
      const mu = s[g]! * muScale;
      const th = theta[j]!;
      const lthmu = lthmuRow[g]!;
      ll += x * (Math.log(mu + EPS) - lthmu) + lgammaShiftDiff(x, th, tab.lgTheta[j]!) - logFactorial(x);
      if (needGrad) {
        const inv = 1 / (th + mu + EPS);
        const b = mu * (x / (mu + EPS) - x * inv);
        bb[g]! += b;
        sumB += b;
        dPxr![j]! -= (-x * inv + digammaShiftDiff(x, th, tab.dgTheta[j]!)) * th;
      }
    }
    rec[i] = -ll;
    if (needGrad) {
      const dl = dLogits!;
      const c = sumB * invSum;
      const gi = i * si;
      for (let g = 0; g < G; g++) dl[gi + g * sg] = s[g]! * c - bb[g]!;
    }
  }
  return { rec, dLogits, dDrop: null, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}

/**
 * ZINB in one pass per cell with few transcendentals: with q = e^(−π) and r = (θ/(θ+μ))^θ (as
 * exp(θ(log(θ+eps) − log(θ+μ+eps)))), a zero count has log p = log((1 + q r)/(1 + q)), and
 * sigmoid(t) = q r/(1 + q r), sigmoid(−π) = q/(1 + q) come for free. Very negative π (q overflowing)
 * falls back to the softplus forms.
 */
export function zeroInflatedFast(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const drop = inp.dropLogits;
  if (!drop) throw new Error('zinb needs dropout logits');
  const G = cfg.nGenes;
  const B = batch.nCells;
  const [si, sg] = gradStrides(inp);
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const theta = tab.theta;
  const lte = tab.logThetaEps;
  const tte = tab.thetaOverThetaEps;
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dDrop = needGrad ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    const ro = i * G;
    const invSum = 1 / expRow(logits, i, G, s);
    const muScale = batch.library[i]! * invSum;
    const off = dispersionRow(cfg, batch, i) * G;
    let p = indptr[i]!;
    const end = indptr[i + 1]!;
    let next = p < end ? indices[p]! : G;
    let ll = 0;
    let sumB = 0;
    for (let g = 0; g < G; g++) {
      const mu = s[g]! * muScale;
      const j = off + g;
      const th = theta[j]!;
      const denom = th + mu + EPS;
      const lthmu = Math.log(denom);
      const d = lte[j]! - lthmu;
      const pi = drop[ro + g]!;
      let x = 0;
      if (g === next) {
        x = counts[p]!;
        p++;
        next = p < end ? indices[p]! : G;
      }
      const thInv = th / denom;
      let b: number;
      let dth: number;
      let dpi: number;
      if (x > 0) {
        // −softplus(−π) − π = −softplus(π)
        const spPos = pi > 0 ? pi + Math.log1p(fastExp(-pi)) : Math.log1p(fastExp(pi));
        ll +=
          -spPos +
          th * d +
          x * (Math.log(mu + EPS) - lthmu) +
          lgammaShiftDiff(x, th, tab.lgTheta[j]!) -
          logFactorial(x);
        if (!needGrad) continue;
        const inv = 1 / denom;
        b = mu * (-thInv + x / (mu + EPS) - x * inv);
        dth = d + tte[j]! - thInv - x * inv + digammaShiftDiff(x, th, tab.dgTheta[j]!);
        dpi = 1 / (1 + fastExp(-pi)); // d(−log p)/dπ = sigmoid(π)
      } else {
        let sgT: number;
        let sgNegPi: number;
        if (pi > -30) {
          const q = fastExp(-pi);
          const qr = q * fastExp(th * d);
          ll += Math.log((1 + qr) / (1 + q));
          sgT = qr / (1 + qr);
          sgNegPi = q / (1 + q);
        } else {
          const t = -pi + th * d;
          ll += softplus(t) - softplus(-pi);
          sgT = sigmoid(t);
          sgNegPi = sigmoid(-pi);
        }
        if (!needGrad) continue;
        b = -mu * sgT * thInv;
        dth = sgT * (d + tte[j]! - thInv);
        dpi = sgT - sgNegPi;
      }
      bb[g] = b;
      sumB += b;
      dPxr![j]! -= dth * th;
      dDrop![i * si + g * sg] = dpi;
    }
    rec[i] = -ll;
    if (needGrad) {
      const dl = dLogits!;
      const c = sumB * invSum;
      const gi = i * si;
      for (let g = 0; g < G; g++) dl[gi + g * sg] = s[g]! * c - bb[g]!;
    }
  }
  return { rec, dLogits, dDrop, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}

/**
 * NB or ZINB written directly from scvi's log_nb_positive / log_zinb_positive, one branchy pass per
 * gene: the reference the fast kernels are tested against.
 */
export function negativeBinomialReference(inp: LikelihoodInput): LikelihoodOutput {
  const { cfg, batch, logits, needGrad } = inp;
  const [si, sg] = gradStrides(inp);
  const zinb = cfg.likelihood === 'zinb';
  const drop = inp.dropLogits;
  if (zinb && !drop) throw new Error('zinb needs dropout logits');
  const G = cfg.nGenes;
  const B = batch.nCells;
  const EPS = LIKELIHOOD_EPS;
  const tab = dispersionTables(cfg, inp.pxr!, needGrad);
  const rec = new Float64Array(B);
  const dLogits = needGrad ? new Float32Array(B * G) : null;
  const dDrop = needGrad && zinb ? new Float32Array(B * G) : null;
  const dPxr = needGrad ? new Float64Array(tab.rows * G) : null;
  const s = new Float64Array(G);
  const bb = new Float64Array(G);
  const { indptr, indices, counts } = batch;
  for (let i = 0; i < B; i++) {
    softmaxRow(logits, i, G, s);
    const lib = batch.library[i]!;
    const off = dispersionRow(cfg, batch, i) * G;
    const ro = i * G;
    let p = indptr[i]!;
    const end = indptr[i + 1]!;
    let next = p < end ? indices[p]! : G;
    let ll = 0;
    let sumB = 0;
    for (let g = 0; g < G; g++) {
      const mu = lib * s[g]!;
      const j = off + g;
      const th = tab.theta[j]!;
      const denom = th + mu + EPS;
      const lthmu = Math.log(denom);
      const thTerm = th * (tab.logThetaEps[j]! - lthmu);
      let x = 0;
      if (g === next) {
        x = counts[p]!;
        p++;
        next = p < end ? indices[p]! : G;
      }
      const pi = zinb ? drop![ro + g]! : 0;
      const spNegPi = zinb ? softplus(-pi) : 0;
      if (x > 0) {
        const lmu = Math.log(mu + EPS);
        const lg = lgammaShiftDiff(x, th, tab.lgTheta[j]!) - logFactorial(x);
        ll += thTerm + x * (lmu - lthmu) + lg + (zinb ? -spNegPi - pi : 0);
        if (needGrad) {
          const inv = 1 / denom;
          const dmu = -th * inv + x / (mu + EPS) - x * inv;
          const dth =
            tab.logThetaEps[j]! -
            lthmu +
            tab.thetaOverThetaEps[j]! -
            th * inv -
            x * inv +
            digammaShiftDiff(x, th, tab.dgTheta[j]!);
          const b = mu * dmu;
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= dth * th;
          if (zinb) dDrop![i * si + g * sg] = sigmoid(pi); // −(sigmoid(−π) − 1)
        }
      } else if (zinb) {
        const t = -pi + thTerm;
        ll += softplus(t) - spNegPi;
        if (needGrad) {
          const inv = 1 / denom;
          const sgm = sigmoid(t);
          const b = mu * (-sgm * th * inv);
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= sgm * (tab.logThetaEps[j]! - lthmu + tab.thetaOverThetaEps[j]! - th * inv) * th;
          dDrop![i * si + g * sg] = sgm - sigmoid(-pi);
        }
      } else {
        ll += thTerm;
        if (needGrad) {
          const inv = 1 / denom;
          const b = -mu * th * inv;
          bb[g] = b;
          sumB += b;
          dPxr![j]! -= (tab.logThetaEps[j]! - lthmu + tab.thetaOverThetaEps[j]! - th * inv) * th;
        }
      }
    }
    rec[i] = -ll;
    if (needGrad) for (let g = 0; g < G; g++) dLogits![i * si + g * sg] = -(bb[g]! - s[g]! * sumB);
  }
  return { rec, dLogits, dDrop, dPxr: dPxr ? toPxrLayout(cfg, dPxr, tab.rows) : null };
}
