// A worker's answer to one inference request (the results commands' fleet): the engine's
// inference op on the request's cells, answered with inferResult or an inferFailure naming the problem.

import { WebSocket } from 'ws';
import {
  encodeFrame,
  inferArrowOffset,
  type InferMsg,
  type InferResultMsg,
  type InferFailureMsg,
} from '@atlasvae/shared/protocol';
import { INFER_OPS, type InferOp } from '@atlasvae/shared/model';
import type { GradientEngine } from './engine.js';

/** One inference request: answered with inferResult, or inferFailure naming the problem. */
export async function answerInfer(
  ws: WebSocket,
  m: InferMsg,
  payload: Uint8Array,
  engine: GradientEngine,
  send: (ws: WebSocket, frame: Buffer) => void,
): Promise<void> {
  if (ws.readyState !== WebSocket.OPEN) return;
  const fail = (message: string): void => {
    const f: InferFailureMsg = { type: 'inferFailure', id: m.id, message: message.slice(0, 1000) };
    send(ws, encodeFrame(f));
  };
  if (!engine.infer) return fail(`the ${engine.backend} engine does not run inference`);
  if (!(INFER_OPS as readonly string[]).includes(m.op)) return fail(`unknown inference op ${m.op}`);
  const t0 = performance.now();
  let out;
  try {
    // copy: the gene list may sit at an unaligned offset of the message buffer
    const genes = m.genesLength
      ? new Int32Array(Uint8Array.from(payload.subarray(0, 4 * m.genesLength)).buffer)
      : null;
    const req = {
      op: m.op as InferOp,
      seed: m.seed,
      chunk: m.chunk,
      noiseEpoch: m.noiseEpoch,
      samples: m.samples,
      transformBatch: m.transformBatch,
      genes,
    };
    out = await engine.infer(req, payload.subarray(inferArrowOffset(m.genesLength)), m.nCells);
  } catch (e) {
    return fail((e as Error).message);
  }
  const r: InferResultMsg = {
    type: 'inferResult',
    id: m.id,
    nCells: m.nCells,
    f64Length: out.f64.length,
    f32Length: out.f32.length,
    computeMs: performance.now() - t0,
  };
  send(ws, encodeFrame(r, out.f64, out.f32));
}
