// The coordinator ⇄ worker messages: their types and the protocol's constants (validation is in
// ./message-validation.ts). Each is a msgpack header (below) plus a typed payload:
//
//   worker → coordinator
//     hello   {protocol, backend, name, pid, metrics?, engine?, device?, group?}  no payload; metrics: "HOST:PORT" of its
//                                                                    Prometheus endpoint (empty HOST: the address it connects
//                                                                    from); group: microbatches it takes per work request (default 1)
//     result  {version, step, microbatch, nCells, …loss sums, computeMs, gradLength, bnLength}
//                                                                    Float32[gradLength + bnLength]: gradient, then BN stats
//     result  {…, count, microbatches}                               a group of `count` consecutive microbatches from
//                                                                    `microbatch` on: Float32[gradLength + count·bnLength]:
//                                                                    the group's summed gradient, then each one's BN stats;
//                                                                    `microbatches` holds each one's nCells and loss sums
//     failure {version, step, microbatch, message, count?}           no payload
//     result  {…, file, seq}                                         no payload: the gradient is in result file `file`
//                                                                    as result number `seq` (after resultFiles)
//     result  {…, nonFinite: true}                                   a loss sum is NaN or ±Infinity (then, and only then,
//                                                                    the sums may be non-finite): training has diverged,
//                                                                    the coordinator stops the run (not a protocol error)
//     paramsFilesReady {}                                            no payload: the offered files opened (below)
//   coordinator → worker
//     welcome {protocol, workerId, modelConfig, seed, paramLength, bnLength, maxWorkBytes, paramsFiles?}
//             paramsFiles {paths, runId}: only to workers on the coordinator's host (transport/shared-memory.ts)
//     params  {version}                                             Float32[paramLength]
//     params  {version, file: 0 | 1}                                no payload: read it from that shared-memory file
//                                                                   (only after the worker sent paramsFilesReady)
//     resultFiles {paths, runId}                                    no payload: files this worker may write its results to
//     work    {version, step, epoch, microbatch, nCells, klWeight}  Arrow IPC bytes of the microbatch
//     work    {…, count, cellCounts, arrowBytes}                    a group: `count` microbatches from `microbatch` on,
//                                                                   their Arrow IPC bytes one after another
//     done    {reason}                                              no payload
//
// Inference (results commands run on the fleet, coordinator/src/results/fleet.ts):
//   coordinator → worker
//     buffers {version}                                             Float32[bnLength]: BatchNorm running statistics
//     infer   {id, op, nCells, seed, chunk, noiseEpoch, samples, transformBatch, genesLength}
//                                                                   Int32[genesLength] gene indices (padded to 8 bytes),
//                                                                   then Arrow IPC bytes of the cells
//   worker → coordinator
//     inferResult  {id, nCells, f64Length, f32Length, computeMs}    Float64[f64Length], then Float32[f32Length]
//     inferFailure {id, message}                                    no payload
// An infer request is a pure function of (parameters, buffers, cells, keys): shared/model/inference.
//
// `version` is the parameter version: the number of optimizer steps applied so far. `step` is the
// global step the microbatch belongs to (equal to the version it must be computed with).

import type { ModelConfig } from '../config.js';

/** Bumped on any incompatible change to the messages below. */
export const PROTOCOL_VERSION = 1;

/** HTTP headers of the WebSocket upgrade request. */
export const TOKEN_HEADER = 'authorization';
export const PROTOCOL_HEADER = 'x-atlasvae-protocol';

export interface HelloMsg {
  type: 'hello';
  protocol: number;
  backend: string;
  name: string;
  pid: number;
  /** "HOST:PORT" of its Prometheus endpoint (empty HOST: the address it connects from) */
  metrics?: string;
  /** the engine kind (js, device, simulated) and the compute device's name, for logs and metrics */
  engine?: string;
  device?: string;
  /** microbatches this worker takes per work request, 1…MAX_GROUP (default 1) */
  group?: number;
}

/** Largest group of microbatches one work request may carry. */
export const MAX_GROUP = 64;

/** One microbatch's loss terms inside a group result. */
export interface GroupMicrobatchTerms {
  nCells: number;
  reconstructionSum: number;
  klSum: number;
  lossSum: number;
}
export interface ResultMsg {
  type: 'result';
  version: number;
  step: number;
  microbatch: number;
  nCells: number;
  reconstructionSum: number;
  klSum: number;
  lossSum: number;
  computeMs: number;
  gradLength: number;
  bnLength: number;
  /** the gradient is in this result file (then no payload), as result number `seq` */
  file?: number;
  seq?: number;
  /** set (true) when a loss sum is not finite: the only case in which the sums may be NaN or ±Infinity */
  nonFinite?: true;
  /** a group result: `count` microbatches from `microbatch` on (nCells and the sums are the group's totals) */
  count?: number;
  /** with `count`: each microbatch's cell count and loss sums, in order */
  microbatches?: GroupMicrobatchTerms[];
}
export interface FailureMsg {
  type: 'failure';
  version: number;
  step: number;
  microbatch: number;
  message: string;
  count?: number;
}
export interface InferResultMsg {
  type: 'inferResult';
  id: number;
  nCells: number;
  f64Length: number;
  f32Length: number;
  computeMs: number;
}
export interface InferFailureMsg {
  type: 'inferFailure';
  id: number;
  message: string;
}
export interface ParamsFilesReadyMsg {
  type: 'paramsFilesReady';
}
export type WorkerMessage =
  HelloMsg | ResultMsg | FailureMsg | InferResultMsg | InferFailureMsg | ParamsFilesReadyMsg;

export interface WelcomeMsg {
  type: 'welcome';
  protocol: number;
  workerId: number;
  modelConfig: ModelConfig;
  seed: number;
  paramLength: number;
  bnLength: number;
  /** largest work payload the coordinator will send (the worker sizes its maxPayload from it) */
  maxWorkBytes: number;
  /** shared-memory parameter files a worker on the coordinator's host may read instead */
  paramsFiles?: { paths: [string, string]; runId: string };
}
export interface ParamsMsg {
  type: 'params';
  version: number;
  /** the parameters are in this shared-memory file (0 or 1) instead of the payload */
  file?: number;
}
export interface WorkMsg {
  type: 'work';
  version: number;
  step: number;
  epoch: number;
  microbatch: number;
  nCells: number;
  klWeight: number;
  /** a group: `count` consecutive microbatches from `microbatch` on; each one's cells and Arrow byte length */
  count?: number;
  cellCounts?: number[];
  arrowBytes?: number[];
}
export interface DoneMsg {
  type: 'done';
  reason: string;
}
export interface ResultFilesMsg {
  type: 'resultFiles';
  paths: string[];
  runId: string;
}
export interface BuffersMsg {
  type: 'buffers';
  version: number;
}
export interface InferMsg {
  type: 'infer';
  id: number;
  op: string;
  nCells: number;
  seed: number;
  chunk: number;
  /** −1: none */
  noiseEpoch: number;
  samples: number;
  /** −1: none */
  transformBatch: number;
  genesLength: number;
}
export type CoordinatorMessage =
  WelcomeMsg | ParamsMsg | WorkMsg | DoneMsg | BuffersMsg | InferMsg | ResultFilesMsg;

/** Most result files a worker is given (a ring at least as long as the microbatches it may hold). */
export const MAX_RESULT_FILES = 8;

/** Byte offset of the Arrow cells in an infer payload (after the 8-byte padded gene list). */
export function inferArrowOffset(genesLength: number): number {
  return (4 * genesLength + 7) & ~7;
}

/** Close codes used on protocol violations (RFC 6455 ranges; 4000+ are application defined). */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupported: 1003,
  policyViolation: 1008,
  tooBig: 1009,
  badVersion: 4001,
  timeout: 4002,
  replaced: 4003,
} as const;
