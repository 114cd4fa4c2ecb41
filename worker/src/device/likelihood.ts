// log p(x | z) per cell in TensorFlow.js ops, term for term scvi's log_nb_positive, log_zinb_positive,
// Poisson and Gaussian (as shared/src/model/likelihood.ts computes them on the host). The terms that
// depend on the counts alone (log x!, and Poisson's x·log(library) − library) arrive precomputed per
// cell in `llConst`.
import type * as tfNs from '@tensorflow/tfjs-core';
import type { ModelConfig } from '@atlasvae/shared';
import { LIKELIHOOD_EPS } from '@atlasvae/shared/model';
import type { DeviceOps } from './ops.js';

type Tensor = tfNs.Tensor;

export interface LikelihoodTensors {
  /** counts [rows, G] and log1p(counts) */
  x: Tensor;
  logX: Tensor;
  /** x > 0, [rows, G] (zinb) */
  nonzero: Tensor | null;
  library: Tensor;
  llConst: Tensor;
  /** scale-head logits (gaussian: the mean of log1p(x)) [rows, G] */
  logits: Tensor;
  dropLogits: Tensor | null;
  /** px_r per cell and gene ([rows, G]) or per gene ([1, G]); null for poisson */
  pxr: Tensor | null;
}

/** log p(x | z) per cell, [rows, 1] */
export function logLikelihood(ops: DeviceOps, cfg: ModelConfig, t: LikelihoodTensors): Tensor {
  const tf = ops.tf;
  const rowSum = (v: Tensor): Tensor => ops.sum(v, 1, true);
  switch (cfg.likelihood) {
    case 'nb':
      return tf.add(negativeBinomial(ops, t), t.llConst);
    case 'zinb':
      return tf.add(zeroInflated(ops, t), t.llConst);
    case 'poisson':
      return tf.add(rowSum(tf.mul(t.x, tf.logSoftmax(t.logits))), t.llConst);
    case 'gaussian': {
      const logVar = t.pxr!;
      const d = tf.sub(t.logX, t.logits);
      const perGene = tf.add(tf.mul(tf.mul(d, d), tf.exp(tf.neg(logVar))), logVar);
      return tf.sub(t.llConst, tf.mul(rowSum(perGene), ops.c(0.5)));
    }
  }
}

/**
 * NB's Σ_g log p per cell (without log x!) with its backward written out, as the JS model's fused
 * kernel: with b = μ (x/(μ+ε) − (θ+x)/(θ+μ+ε)), d/dlogits = b − s Σb; d/dθ = log(θ+ε) − log(θ+μ+ε)
 * + θ/(θ+ε) − (θ+x)/(θ+μ+ε) + ψ(x+θ) − ψ(θ), times θ for px_r. Fewer kernels and saved [cells, genes]
 * tensors than autograd through the same ops.
 */
function negativeBinomial(ops: DeviceOps, t: LikelihoodTensors): Tensor {
  const tf = ops.tf;
  const eps = ops.c(LIKELIHOOD_EPS);
  const { x, library } = t;
  const nb = tf.customGrad(((logits: Tensor, pxr: Tensor, save: (ts: Tensor[]) => void) => {
    const theta = tf.exp(pxr);
    const s = tf.softmax(logits);
    const mu = tf.mul(s, library);
    const denom = tf.add(tf.add(theta, mu), eps);
    const lthmu = tf.log(denom);
    const lte = tf.log(tf.add(theta, eps));
    const terms = tf.add(
      tf.add(tf.mul(theta, tf.sub(lte, lthmu)), tf.mul(x, tf.sub(tf.log(tf.add(mu, eps)), lthmu))),
      tf.sub(ops.lgamma(tf.add(x, theta)), ops.lgamma(theta)),
    );
    save([s, theta, denom]);
    return {
      value: tf.sum(terms, 1, true),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sm, th, den] = saved as [Tensor, Tensor, Tensor];
        const m = tf.mul(sm, library);
        const xTheta = tf.add(x, th);
        const thxOverDen = tf.div(xTheta, den);
        const b = tf.mul(m, tf.sub(tf.div(x, tf.add(m, eps)), thxOverDen));
        const dLogits = tf.mul(dy, tf.sub(b, tf.mul(sm, tf.sum(b, 1, true))));
        const dTheta = tf.add(
          tf.sub(
            tf.add(tf.sub(tf.log(tf.add(th, eps)), tf.log(den)), tf.div(th, tf.add(th, eps))),
            thxOverDen,
          ),
          tf.sub(ops.digamma(xTheta), ops.digamma(th)),
        );
        let dPxr = tf.mul(tf.mul(dy, th), dTheta);
        if (dPxr.shape[0] !== pxr.shape[0]) dPxr = tf.sum(dPxr, 0, true); // per gene: Σ over cells
        return [dLogits, dPxr];
      },
    };
  }) as unknown as Parameters<typeof tfNs.customGrad>[0]);
  return nb(t.logits, t.pxr!);
}

/**
 * ZINB's Σ_g log p per cell (without log x!) with its backward written out (scvi's log_zinb_positive):
 * x > 0: −softplus(π) + θd + x(log(μ+ε) − log(θ+μ+ε)) + log Γ(x+θ) − log Γ(θ), d = log(θ+ε) − log(θ+μ+ε);
 * x = 0: softplus(θd − π) − softplus(−π). With σ = sigmoid(θd − π) and A = d + θ/(θ+ε) − θ/(θ+μ+ε):
 * d/dθ = A − x/(θ+μ+ε) + ψ(x+θ) − ψ(θ) (x > 0), σA (x = 0); μ·d/dμ = μ(x/(μ+ε) − (θ+x)/(θ+μ+ε)) (x > 0),
 * −μσθ/(θ+μ+ε) (x = 0); d/dπ = sigmoid(−π) − (1 if x > 0 else σ).
 */
function zeroInflated(ops: DeviceOps, t: LikelihoodTensors): Tensor {
  const tf = ops.tf;
  const eps = ops.c(LIKELIHOOD_EPS);
  const { x, library } = t;
  const nonzero = t.nonzero!;
  const zinb = tf.customGrad(((logits: Tensor, pi: Tensor, pxr: Tensor, save: (ts: Tensor[]) => void) => {
    const theta = tf.exp(pxr);
    const s = tf.softmax(logits);
    const mu = tf.mul(s, library);
    const denom = tf.add(tf.add(theta, mu), eps);
    const lthmu = tf.log(denom);
    const spNegPi = tf.softplus(tf.neg(pi));
    const piThetaLog = tf.sub(tf.mul(theta, tf.sub(tf.log(tf.add(theta, eps)), lthmu)), pi);
    const caseZero = tf.sub(tf.softplus(piThetaLog), spNegPi);
    const caseNonZero = tf.add(
      tf.sub(piThetaLog, spNegPi),
      tf.add(
        tf.mul(x, tf.sub(tf.log(tf.add(mu, eps)), lthmu)),
        tf.sub(ops.lgamma(tf.add(x, theta)), ops.lgamma(theta)),
      ),
    );
    // saved, not captured: autograd disposes the forward pass's tensors before the backward runs
    save([s, theta, denom, pi, piThetaLog, nonzero]);
    return {
      value: tf.sum(tf.where(nonzero, caseNonZero, caseZero), 1, true),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sm, th, den, p, ptl, nz] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
        const m = tf.mul(sm, library);
        const sg = tf.sigmoid(ptl);
        const invDen = tf.reciprocal(den);
        const thOverDen = tf.mul(th, invDen);
        const xOverDen = tf.mul(x, invDen);
        const a = tf.sub(
          tf.add(tf.sub(tf.log(tf.add(th, eps)), tf.log(den)), tf.div(th, tf.add(th, eps))),
          thOverDen,
        );
        const xTheta = tf.add(x, th);
        const dThNz = tf.add(tf.sub(a, xOverDen), tf.sub(ops.digamma(xTheta), ops.digamma(th)));
        const dTheta = tf.where(nz, dThNz, tf.mul(sg, a));
        const bNz = tf.mul(m, tf.sub(tf.div(x, tf.add(m, eps)), tf.add(thOverDen, xOverDen)));
        const b = tf.where(nz, bNz, tf.neg(tf.mul(tf.mul(m, sg), thOverDen)));
        const dLogits = tf.mul(dy, tf.sub(b, tf.mul(sm, tf.sum(b, 1, true))));
        const dPi = tf.mul(dy, tf.sub(tf.sigmoid(tf.neg(p)), tf.where(nz, tf.onesLike(sg), sg)));
        let dPxr = tf.mul(tf.mul(dy, th), dTheta);
        if (dPxr.shape[0] !== pxr.shape[0]) dPxr = tf.sum(dPxr, 0, true); // per gene: Σ over cells
        return [dLogits, dPi, dPxr];
      },
    };
  }) as unknown as Parameters<typeof tfNs.customGrad>[0]);
  return zinb(t.logits, t.dropLogits!, t.pxr!);
}
