// Inference requests on a trained model, as pure functions of (parameters, buffers, cells, keys):
// the coordinator's local engine and fleet workers run exactly this code, so an answer does not
// depend on who computed it. Noise is drawn from explicit keys, never from shared state.
// Each op is written once, as a generator that yields the model calls it needs: run synchronously on
// the JS model (VaeModelApi) or awaited on the device model (its evaluation methods are async).

import type { CellBatch } from '../batch.js';
import { Rng } from '../rng.js';
import { validationNoise } from './noise.js';
import type { CellTerms, VaeModelApi } from './types.js';

export const INFER_OPS = ['encode', 'evaluate', 'marginal', 'normalize'] as const;
export type InferOp = (typeof INFER_OPS)[number];

export interface InferRequest {
  op: InferOp;
  /** noise seed (evaluate, marginal, normalize with samples) */
  seed: number;
  /** chunk number: the noise key of these cells */
  chunk: number;
  /** evaluate: ε from the trainer's validation noise of this epoch; −1: z = q_m */
  noiseEpoch: number;
  /** marginal: importance samples; normalize: posterior samples averaged (0: z = q_m) */
  samples: number;
  /** normalize: decode every cell as this batch; −1: its own */
  transformBatch: number;
  /** normalize: gene indices returned; null: all genes */
  genes: Int32Array | null;
}

/**
 * What an op returns, as float arrays (the wire payload): encode → f32 = q_m ‖ q_v;
 * evaluate → f32 = reconstruction ‖ kl; marginal → f64 = log p(x); normalize → f32 = scale rows.
 */
export interface InferOutput {
  f64: Float64Array;
  f32: Float32Array;
}

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);
export const MARGINAL_STREAM = 0x4d4c4c4b; // "MLLK"
export const NORMALIZE_STREAM = 0x4e4f524d; // "NORM"

/** Expected output lengths of an op on n cells (validates answers from workers). */
export function inferOutputLengths(
  req: Pick<InferRequest, 'op' | 'genes'>,
  n: number,
  nLatent: number,
  nGenes: number,
): { f64: number; f32: number } {
  switch (req.op) {
    case 'encode':
      return { f64: 0, f32: 2 * n * nLatent };
    case 'evaluate':
      return { f64: 0, f32: 2 * n };
    case 'marginal':
      return { f64: n, f32: 0 };
    case 'normalize':
      return { f64: 0, f32: n * (req.genes ? req.genes.length : nGenes) };
  }
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The evaluation-mode half of the model with async methods (the device model). */
export interface AsyncInferenceModel {
  readonly config: VaeModelApi['config'];
  evaluate(batch: CellBatch, eps: Float32Array | null): Promise<CellTerms>;
  encode(batch: CellBatch): Promise<{ qm: Float32Array; qv: Float32Array }>;
  logLikelihood(batch: CellBatch, z: Float32Array): Promise<Float32Array>;
  decodeScale(batch: CellBatch, z: Float32Array, transformBatch?: number): Promise<Float32Array>;
}

/** A model call an op needs; the generator receives its result. */
type ModelCall =
  | { fn: 'encode'; batch: CellBatch }
  | { fn: 'evaluate'; batch: CellBatch; eps: Float32Array | null }
  | { fn: 'logLikelihood'; batch: CellBatch; z: Float32Array }
  | { fn: 'decodeScale'; batch: CellBatch; z: Float32Array; transformBatch: number | undefined };
type Steps<T> = Generator<ModelCall, T, unknown>;
type Encoded = { qm: Float32Array; qv: Float32Array };

function callModel(model: VaeModelApi | AsyncInferenceModel, c: ModelCall): unknown {
  switch (c.fn) {
    case 'encode':
      return model.encode(c.batch);
    case 'evaluate':
      return model.evaluate(c.batch, c.eps);
    case 'logLikelihood':
      return model.logLikelihood(c.batch, c.z);
    case 'decodeScale':
      return model.decodeScale(c.batch, c.z, c.transformBatch);
  }
}

function runSync<T>(model: VaeModelApi, steps: Steps<T>): T {
  let r = steps.next();
  while (!r.done) r = steps.next(callModel(model, r.value));
  return r.value;
}

async function runAsync<T>(model: AsyncInferenceModel, steps: Steps<T>): Promise<T> {
  let r = steps.next();
  while (!r.done) r = steps.next(await callModel(model, r.value));
  return r.value;
}

function* inferenceSteps(
  config: VaeModelApi['config'],
  batch: CellBatch,
  req: InferRequest,
): Steps<InferOutput> {
  const none64 = new Float64Array(0),
    none32 = new Float32Array(0);
  switch (req.op) {
    case 'encode': {
      const { qm, qv } = (yield { fn: 'encode', batch }) as Encoded;
      return { f64: none64, f32: concat(qm, qv) };
    }
    case 'evaluate': {
      const eps =
        req.noiseEpoch >= 0
          ? validationNoise(config, req.seed, req.noiseEpoch, req.chunk, batch.nCells)
          : null;
      const t = (yield { fn: 'evaluate', batch, eps }) as CellTerms;
      return { f64: none64, f32: concat(t.reconstruction, t.kl) };
    }
    case 'marginal':
      return { f64: yield* marginalSteps(config, batch, req.samples, req.seed, req.chunk), f32: none32 };
    case 'normalize':
      return { f64: none64, f32: yield* normalizeSteps(config, batch, req) };
  }
}

export function runInference(model: VaeModelApi, batch: CellBatch, req: InferRequest): InferOutput {
  return runSync(model, inferenceSteps(model.config, batch, req));
}

/** runInference on a model with async evaluation methods (the device engine): the same op, the same keys. */
export function runInferenceAsync(
  model: AsyncInferenceModel,
  batch: CellBatch,
  req: InferRequest,
): Promise<InferOutput> {
  return runAsync(model, inferenceSteps(model.config, batch, req));
}

/**
 * Importance-sampled log p(x) per cell (scvi's get_marginal_ll, sign flipped): with q(z|x) as
 * proposal, logsumexp_s [log p(x|z_s) + log p(z_s) − log q(z_s|x)] − log S. Noise from
 * Rng(MARGINAL_STREAM, seed, chunk).
 */
export function marginalLogLikelihood(
  model: VaeModelApi,
  batch: CellBatch,
  samples: number,
  seed: number,
  chunk: number,
): Float64Array {
  return runSync(model, marginalSteps(model.config, batch, samples, seed, chunk));
}

function* marginalSteps(
  config: VaeModelApi['config'],
  batch: CellBatch,
  samples: number,
  seed: number,
  chunk: number,
): Steps<Float64Array> {
  if (!(samples >= 1)) throw new RangeError('marginal log-likelihood needs at least one sample');
  const n = batch.nCells;
  const L = config.nLatent;
  const { qm, qv } = (yield { fn: 'encode', batch }) as Encoded;
  const halfLogDetQ = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < L; d++) s += 0.5 * Math.log(qv[i * L + d]!);
    halfLogDetQ[i] = s;
  }
  const rng = new Rng(MARGINAL_STREAM, seed, chunk);
  const eps = new Float32Array(n * L);
  const z = new Float32Array(n * L);
  // running logsumexp per cell: max and Σ exp(w − max)
  const runMax = new Float64Array(n).fill(-Infinity);
  const runSum = new Float64Array(n);
  for (let s = 0; s < samples; s++) {
    rng.fillNormal(eps);
    for (let t = 0; t < n * L; t++) z[t] = qm[t]! + Math.sqrt(qv[t]!) * eps[t]!;
    const logPx = (yield { fn: 'logLikelihood', batch, z }) as Float32Array;
    for (let i = 0; i < n; i++) {
      let logPz = 0;
      let logQz = -halfLogDetQ[i]!;
      for (let d = 0; d < L; d++) {
        const zi = z[i * L + d]!;
        const e = eps[i * L + d]!;
        logPz -= 0.5 * zi * zi + HALF_LOG_2PI;
        // log N(z; m, v) with z − m = sqrt(v)·ε
        logQz -= 0.5 * e * e + HALF_LOG_2PI;
      }
      const w = logPx[i]! + logPz - logQz;
      if (w > runMax[i]!) {
        runSum[i] = runSum[i]! * Math.exp(runMax[i]! - w) + 1;
        runMax[i] = w;
      } else {
        runSum[i]! += Math.exp(w - runMax[i]!);
      }
    }
  }
  const out = new Float64Array(n);
  const logS = Math.log(samples);
  for (let i = 0; i < n; i++) out[i] = runMax[i]! + Math.log(runSum[i]!) - logS;
  return out;
}

/** Decoder scale at the selected genes, at the posterior mean or averaged over posterior samples. */
export function normalizedScale(
  model: VaeModelApi,
  batch: CellBatch,
  req: Pick<InferRequest, 'samples' | 'transformBatch' | 'seed' | 'chunk' | 'genes'>,
): Float32Array {
  return runSync(model, normalizeSteps(model.config, batch, req));
}

function* normalizeSteps(
  config: VaeModelApi['config'],
  batch: CellBatch,
  req: Pick<InferRequest, 'samples' | 'transformBatch' | 'seed' | 'chunk' | 'genes'>,
): Steps<Float32Array> {
  const n = batch.nCells;
  const G = config.nGenes;
  const L = config.nLatent;
  const sel = req.genes;
  const width = sel ? sel.length : G;
  const { qm, qv } = (yield { fn: 'encode', batch }) as Encoded;
  const out = new Float32Array(n * width);
  const draws = Math.max(1, req.samples);
  const rng = req.samples > 0 ? new Rng(NORMALIZE_STREAM, req.seed, req.chunk) : null;
  const z = new Float32Array(n * L);
  const tb = req.transformBatch >= 0 ? req.transformBatch : undefined;
  for (let s = 0; s < draws; s++) {
    if (rng) for (let t = 0; t < n * L; t++) z[t] = qm[t]! + Math.sqrt(qv[t]!) * rng.normal();
    else z.set(qm);
    const scale = (yield { fn: 'decodeScale', batch, z, transformBatch: tb }) as Float32Array;
    for (let i = 0; i < n; i++) {
      const row = i * G;
      const o = i * width;
      if (sel) for (let g = 0; g < width; g++) out[o + g]! += scale[row + sel[g]!]!;
      else for (let g = 0; g < G; g++) out[o + g]! += scale[row + g]!;
    }
  }
  if (draws > 1) for (let t = 0; t < out.length; t++) out[t]! /= draws;
  return out;
}
