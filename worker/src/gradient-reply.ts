// The training compute-and-reply path of a worker: a work message's microbatch (or group of
// microbatches) through the engine, answered with a result (or a failure naming the problem).
// Owns where results go: straight into a reused frame payload, or a shared-memory result file.

import { WebSocket } from 'ws';
import {
  encodeFrame,
  PayloadFirstFrame,
  type ExpectedSizes,
  type ResultMsg,
  type FailureMsg,
  type WorkMsg,
} from '@atlasvae/shared/protocol';
import type { MicrobatchGradient } from '@atlasvae/shared/model';
import { nonFiniteTerm } from '@atlasvae/shared/train';
import { ResultFileWriter } from '@atlasvae/shared/transport';
import type { GroupGradient, WorkItem } from './engine.js';
import type { WorkerOptions } from './client-options.js';

/** Computes a connection's work in the order given and sends each result or failure. */
export class GradientReplier {
  /** microbatches computed and answered */
  computed = 0;
  /** the gradient is computed straight into the result frame's payload; one buffer, reused while
   * the socket has nothing queued */
  private readonly resultFrame = new PayloadFirstFrame();
  /** result files the coordinator gave this worker (same host): gradients go there, not on the socket */
  private resultFiles: ResultFileWriter | null = null;
  /** the gradient buffer for results written to files */
  private resultBuffer = new Float32Array(0);

  constructor(
    private readonly opts: Pick<WorkerOptions, 'engine' | 'events'>,
    private readonly log: (m: string) => void,
    private readonly send: (ws: WebSocket, frame: Buffer) => void,
  ) {}

  /** Results computed from now on go to these files (in order with the work). */
  useResultFiles(offer: { paths: string[]; runId: string }, floats: number): void {
    this.resultFiles?.close();
    this.resultFiles = ResultFileWriter.open(offer, floats);
  }

  /** The connection ended: its result files are no longer ours. */
  closeResultFiles(): void {
    this.resultFiles?.close();
    this.resultFiles = null;
  }

  /**
   * A group of microbatches (or a single one, for an engine without a synchronous path) computed
   * in one asynchronous call; the result carries the summed gradient and each one's BatchNorm
   * statistics and loss terms.
   */
  async computeGroup(
    ws: WebSocket,
    w: WorkMsg,
    payload: Uint8Array,
    paramVersion: number,
    sizes: ExpectedSizes,
  ): Promise<void> {
    if (ws.readyState !== WebSocket.OPEN) return;
    const count = w.count ?? 1;
    const fail = (message: string): void => {
      const f: FailureMsg = {
        type: 'failure',
        version: w.version,
        step: w.step,
        microbatch: w.microbatch,
        message: message.slice(0, 1000),
      };
      if (w.count !== undefined) f.count = count;
      this.send(ws, encodeFrame(f));
    };
    if (w.version !== paramVersion) return fail(`have parameters v${paramVersion}, work needs v${w.version}`);
    const engine = this.opts.engine;
    const items: WorkItem[] = [];
    let at = 0;
    for (let k = 0; k < count; k++) {
      const bytes = w.arrowBytes?.[k] ?? payload.byteLength;
      const nCells = w.cellCounts?.[k] ?? w.nCells;
      items.push({
        step: w.step,
        epoch: w.epoch,
        microbatch: w.microbatch + k,
        nCells,
        klWeight: w.klWeight,
        arrow: payload.subarray(at, at + bytes),
      });
      at += bytes;
    }
    const t0 = performance.now();
    let g: GroupGradient;
    try {
      if (engine.gradientGroup) {
        g = await engine.gradientGroup(items);
      } else {
        const microbatches = items.map((it) => engine.gradient!(it));
        const grad = microbatches[0]!.grad.slice();
        for (const m of microbatches.slice(1)) for (let j = 0; j < grad.length; j++) grad[j]! += m.grad[j]!;
        g = { grad, microbatches };
      }
      if (
        g.grad.length !== sizes.paramLength ||
        g.microbatches.length !== count ||
        g.microbatches.some((m) => m.bnStats.length !== sizes.bnLength)
      ) {
        throw new Error(
          `the engine returned a gradient of ${g.grad.length} floats for ${g.microbatches.length} microbatches, the coordinator expects ${sizes.paramLength} for ${count}`,
        );
      }
    } catch (e) {
      return fail((e as Error).message);
    }
    if (ws.readyState !== WebSocket.OPEN) return;
    const computeMs = performance.now() - t0;
    const sum = (f: (m: MicrobatchGradient) => number): number =>
      g.microbatches.reduce((a, m) => a + f(m), 0);
    const r: ResultMsg = {
      type: 'result',
      version: w.version,
      step: w.step,
      microbatch: w.microbatch,
      nCells: sum((m) => m.nCells),
      reconstructionSum: sum((m) => m.reconstructionSum),
      klSum: sum((m) => m.klSum),
      lossSum: sum((m) => m.lossSum),
      computeMs,
      gradLength: g.grad.length,
      bnLength: sizes.bnLength,
    };
    // a diverged loss is reported as such (the coordinator stops training), never as a malformed result
    if (
      g.microbatches.some((m) =>
        nonFiniteTerm({ loss: m.lossSum, reconstruction: m.reconstructionSum, kl: m.klSum }),
      )
    )
      r.nonFinite = true;
    if (w.count !== undefined) {
      r.count = count;
      r.microbatches = g.microbatches.map((m) => ({
        nCells: m.nCells,
        reconstructionSum: m.reconstructionSum,
        klSum: m.klSum,
        lossSum: m.lossSum,
      }));
    }
    this.send(ws, encodeFrame(r, g.grad, ...g.microbatches.map((m) => m.bnStats)));
    this.computed += count;
    for (const [k, m] of g.microbatches.entries()) {
      this.opts.events?.microbatchComputed?.({
        step: w.step,
        microbatch: w.microbatch + k,
        nCells: m.nCells,
        computeMs: computeMs / count,
        epoch: w.epoch,
        klWeight: w.klWeight,
        lossSum: m.lossSum,
        reconstructionSum: m.reconstructionSum,
        klSum: m.klSum,
      });
    }
  }

  /** One microbatch through the engine's synchronous path, its gradient written in place. */
  compute(ws: WebSocket, w: WorkMsg, arrow: Uint8Array, paramVersion: number, sizes: ExpectedSizes): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (w.version !== paramVersion) {
      const f: FailureMsg = {
        type: 'failure',
        version: w.version,
        step: w.step,
        microbatch: w.microbatch,
        message: `have parameters v${paramVersion}, work needs v${w.version}`,
      };
      this.send(ws, encodeFrame(f));
      return;
    }
    const t0 = performance.now();
    const viaFile = this.resultFiles;
    const floats = sizes.paramLength + sizes.bnLength;
    if (viaFile && this.resultBuffer.length !== floats) this.resultBuffer = new Float32Array(floats);
    const payload = viaFile ? this.resultBuffer : this.resultFrame.payload(ws.bufferedAmount === 0, floats);
    const out = {
      grad: payload.subarray(0, sizes.paramLength),
      bnStats: payload.subarray(sizes.paramLength),
    };
    let g;
    try {
      g = this.opts.engine.gradient!(
        {
          step: w.step,
          epoch: w.epoch,
          microbatch: w.microbatch,
          nCells: w.nCells,
          klWeight: w.klWeight,
          arrow,
        },
        out,
      );
      if (g.grad.length !== sizes.paramLength || g.bnStats.length !== sizes.bnLength) {
        throw new Error(
          `the engine returned ${g.grad.length} + ${g.bnStats.length} floats, the coordinator expects ${sizes.paramLength} + ${sizes.bnLength}`,
        );
      }
      // an engine that kept its own arrays: one copy into the message
      if (g.grad !== out.grad) out.grad.set(g.grad);
      if (g.bnStats !== out.bnStats) out.bnStats.set(g.bnStats);
    } catch (e) {
      const f: FailureMsg = {
        type: 'failure',
        version: w.version,
        step: w.step,
        microbatch: w.microbatch,
        message: (e as Error).message.slice(0, 1000),
      };
      this.send(ws, encodeFrame(f));
      return;
    }
    const computeMs = performance.now() - t0;
    const r: ResultMsg = {
      type: 'result',
      version: w.version,
      step: w.step,
      microbatch: w.microbatch,
      nCells: g.nCells,
      reconstructionSum: g.reconstructionSum,
      klSum: g.klSum,
      lossSum: g.lossSum,
      computeMs,
      gradLength: g.grad.length,
      bnLength: g.bnStats.length,
    };
    // a diverged loss is reported as such (the coordinator stops training), never as a malformed result
    if (nonFiniteTerm({ loss: g.lossSum, reconstruction: g.reconstructionSum, kl: g.klSum }))
      r.nonFinite = true;
    let written: { file: number; seq: number } | null = null;
    if (viaFile) {
      try {
        written = viaFile.write(payload); // one in-place write of the shared file; the message only names it
      } catch (e) {
        // e.g. /dev/shm full: this and later results go over the socket
        this.log(
          `atlasvae worker: cannot write the shared-memory result file (${(e as Error).message}); sending results over the socket`,
        );
        viaFile.close();
        this.resultFiles = null;
      }
    }
    if (written) {
      this.send(ws, encodeFrame({ ...r, ...written }));
    } else if (viaFile) {
      this.send(ws, encodeFrame(r, payload));
    } else {
      // one frame, its payload already in place (no copy)
      this.send(ws, this.resultFrame.finish(r));
    }
    this.computed++;
    this.opts.events?.microbatchComputed?.({
      step: w.step,
      microbatch: w.microbatch,
      nCells: g.nCells,
      computeMs,
      epoch: w.epoch,
      klWeight: w.klWeight,
      lossSum: g.lossSum,
      reconstructionSum: g.reconstructionSum,
      klSum: g.klSum,
    });
  }
}
