// The worker process's connection to a coordinator: authenticate, receive the model and its
// parameters, compute microbatch gradients, send them back. Reconnects with exponential backoff
// when the coordinator goes away (e.g. restarts from a checkpoint); stops on `done`, on a rejected
// token or protocol version, or after `giveUpAfterMs` without a coordinator.

import os from 'node:os';
import { WebSocket, type ClientOptions } from 'ws';
import {
  encodeFrame,
  decodeFrame,
  payloadAsFloat32,
  FrameError,
  PayloadFirstFrame,
  PROTOCOL_VERSION,
  PROTOCOL_HEADER,
  TOKEN_HEADER,
  CLOSE,
  ProtocolError,
  parseCoordinatorMessage,
  inferArrowOffset,
  type ExpectedSizes,
  type HelloMsg,
  type ResultMsg,
  type FailureMsg,
  type WorkMsg,
  type InferMsg,
  type InferResultMsg,
  type InferFailureMsg,
  bearer,
} from '@atlasvae/shared/protocol';
import { INFER_OPS, type InferOp, type MicrobatchGradient } from '@atlasvae/shared/model';
import { nonFiniteTerm } from '@atlasvae/shared/train';
import { ParamsFileReader, ResultFileWriter } from '@atlasvae/shared/transport';
import type { GradientEngine, GroupGradient, WorkItem } from './engine.js';

export interface WorkerOptions {
  url: string;
  token?: string;
  engine: GradientEngine;
  name?: string;
  /** give up after this long without a connection (0 = never) */
  giveUpAfterMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** TLS: accept a self-signed coordinator certificate (ws `rejectUnauthorized: false`) */
  insecure?: boolean;
  /** extra CA certificate (PEM) for wss */
  ca?: string | Buffer;
  log?: (msg: string) => void;
  /** this worker's Prometheus endpoint, "HOST:PORT" (empty HOST: the address it connects from), told to the coordinator */
  metricsAddress?: string;
  /** observer hooks for metrics */
  events?: WorkerEvents;
}

export interface WorkerEvents {
  connected?(url: string, workerId: number): void;
  disconnected?(code: number, reason: string): void;
  microbatchComputed?(info: {
    step: number;
    microbatch: number;
    nCells: number;
    computeMs: number;
    epoch: number;
    klWeight: number;
    lossSum: number;
    reconstructionSum: number;
    klSum: number;
  }): void;
  bytes?(direction: 'sent' | 'received', n: number): void;
  /** a message from the coordinator refused (a fixed word, safe as a metric label) */
  rejected?(reason: 'text-frame' | 'malformed-frame' | 'invalid-message' | 'bad-protocol-version'): void;
}

export interface WorkerOutcome {
  reason: 'done' | 'rejected' | 'gave-up' | 'stopped';
  message: string;
  microbatches: number;
}

/** Not retried: the coordinator refuses this worker. */
class Rejected extends Error {}

export class WorkerClient {
  private ws: WebSocket | null = null;
  private stopped = false;
  private sizes: ExpectedSizes | null = null;
  private paramVersion = -1;
  private computed = 0;
  private readonly log: (m: string) => void;
  /** the gradient is computed straight into the result frame's payload; one buffer, reused while
   * the socket has nothing queued */
  private readonly resultFrame = new PayloadFirstFrame();
  /** the coordinator's shared-memory parameter files, when it offered them and this process can read them */
  private paramsFiles: ParamsFileReader | null = null;
  /** result files the coordinator gave this worker (same host): gradients go there, not on the socket */
  private resultFiles: ResultFileWriter | null = null;
  /** the gradient buffer for results written to files */
  private resultBuffer = new Float32Array(0);

  constructor(private readonly opts: WorkerOptions) {
    this.log = opts.log ?? ((m) => console.error(m));
  }

  /** Run until the coordinator says done, rejects us, or we give up. */
  async run(): Promise<WorkerOutcome> {
    const initial = this.opts.backoffInitialMs ?? 250;
    const max = this.opts.backoffMaxMs ?? 5000;
    let delay = initial;
    let lastConnected = Date.now();
    for (;;) {
      if (this.stopped) return this.outcome('stopped', 'stopped');
      let session: { welcomed: boolean; done: string | null };
      try {
        session = await this.session();
      } catch (e) {
        if (e instanceof Rejected) return this.outcome('rejected', e.message);
        throw e;
      }
      if (session.done !== null) return this.outcome('done', session.done);
      if (this.stopped) return this.outcome('stopped', 'stopped');
      if (session.welcomed) {
        delay = initial;
        lastConnected = Date.now();
      }
      const giveUp = this.opts.giveUpAfterMs ?? 0;
      if (giveUp > 0 && Date.now() - lastConnected > giveUp)
        return this.outcome(
          'gave-up',
          `no coordinator at ${this.opts.url} for ${Math.round(giveUp / 1000)} s`,
        );
      const wait = delay * (0.75 + 0.5 * Math.random());
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          this.wakeUp = null;
          r();
        }, wait);
        // stop() ends the wait at once
        this.wakeUp = () => {
          clearTimeout(t);
          this.wakeUp = null;
          r();
        };
      });
      delay = Math.min(max, delay * 2);
    }
  }

  stop(): void {
    this.stopped = true;
    this.ws?.close(CLOSE.goingAway, 'worker stopping');
    // a peer that does not answer the close handshake (stalled, or gone) does not hold us up
    const ws = this.ws;
    if (ws) setTimeout(() => ws.terminate(), 1000).unref();
    this.wakeUp?.();
  }

  /** ends the reconnect backoff wait early (set while waiting) */
  private wakeUp: (() => void) | null = null;

  private outcome(reason: WorkerOutcome['reason'], message: string): WorkerOutcome {
    return { reason, message, microbatches: this.computed };
  }

  /** One connection, from open to close. Resolves when it ends; throws Rejected when not to retry. */
  private session(): Promise<{ welcomed: boolean; done: string | null }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { [PROTOCOL_HEADER]: String(PROTOCOL_VERSION) };
      if (this.opts.token) headers[TOKEN_HEADER] = bearer(this.opts.token);
      const wsOpts: ClientOptions = {
        headers,
        perMessageDeflate: false,
        // masking protects browser-era intermediaries; workers are not browsers, and an all-zero
        // mask lets ws send the gradient without an extra masked copy
        generateMask: (mask: Buffer) => void mask.fill(0),
        // the coordinator's messages are parameters and microbatches; sized after the welcome
        maxPayload: 1 << 30,
        handshakeTimeout: 10_000,
      };
      if (this.opts.insecure) wsOpts.rejectUnauthorized = false;
      if (this.opts.ca) wsOpts.ca = this.opts.ca;
      const ws = new WebSocket(this.opts.url, wsOpts);
      this.ws = ws;
      let welcomed = false;
      let done: string | null = null;
      let rejected: string | null = null;

      ws.on('unexpected-response', (_req, res) => {
        const code = res.statusCode ?? 0;
        let body = '';
        res.on('data', (c: Buffer) => {
          if (body.length < 500) body += c.toString('utf8');
        });
        res.on('end', () => {
          const msg = `coordinator refused the connection: HTTP ${code}${body ? ` (${body.trim()})` : ''}`;
          if (code === 401 || code === 403 || code === 426) rejected = msg;
          else this.log(`atlasvae worker: ${msg}`);
          ws.terminate();
        });
      });
      ws.on('error', (err) => {
        if (!welcomed) this.log(`atlasvae worker: cannot reach ${this.opts.url}: ${err.message}`);
      });
      ws.on('open', () => {
        const e = this.opts.engine;
        const hello: HelloMsg = {
          type: 'hello',
          protocol: PROTOCOL_VERSION,
          backend: e.backend,
          name: this.opts.name ?? os.hostname(),
          pid: process.pid,
          engine: e.kind,
          device: e.device.slice(0, 200),
        };
        if (e.group > 1) hello.group = e.group;
        if (this.opts.metricsAddress) hello.metrics = this.opts.metricsAddress;
        this.send(ws, encodeFrame(hello));
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) {
          this.opts.events?.rejected?.('text-frame');
          return ws.close(CLOSE.unsupported, 'text frames are not part of the protocol');
        }
        this.opts.events?.bytes?.('received', data.byteLength);
        try {
          const r = this.handle(ws, data);
          if (r === 'welcome') {
            welcomed = true;
          } else if (r !== null) {
            done = r;
            ws.close(CLOSE.normal, 'done');
          }
        } catch (e) {
          if (e instanceof Rejected) {
            this.opts.events?.rejected?.('bad-protocol-version');
            rejected = e.message;
            ws.close(CLOSE.badVersion, 'protocol version mismatch');
          } else if (e instanceof ProtocolError || e instanceof FrameError) {
            this.opts.events?.rejected?.(e instanceof FrameError ? 'malformed-frame' : 'invalid-message');
            this.log(`atlasvae worker: invalid message from the coordinator (${e.message}); reconnecting`);
            ws.close(CLOSE.protocolError, e.message.slice(0, 120));
          } else {
            this.log(`atlasvae worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
            ws.close(CLOSE.goingAway, 'worker error');
          }
        }
      });
      ws.on('close', (code, reasonBuf) => {
        this.ws = null;
        this.paramsFiles?.close();
        this.paramsFiles = null;
        this.resultFiles?.close();
        this.resultFiles = null;
        const reason = reasonBuf.toString('utf8');
        this.opts.events?.disconnected?.(code, reason);
        if (code === CLOSE.badVersion || code === CLOSE.policyViolation)
          rejected ??= `coordinator closed the connection: ${reason || code}`;
        rejected ??= this.fatal;
        if (rejected) return reject(new Rejected(rejected));
        if (welcomed && done === null && !this.stopped)
          this.log(`atlasvae worker: connection closed (${code}${reason ? ` ${reason}` : ''}); reconnecting`);
        resolve({ welcomed, done });
      });
    });
  }

  private send(ws: WebSocket, frame: Buffer): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(frame, { binary: true });
    this.opts.events?.bytes?.('sent', frame.byteLength);
  }

  /** Handle one message: 'welcome', a done reason, or null. */
  private handle(ws: WebSocket, data: Buffer): string | null {
    const { header, payload } = decodeFrame(data);
    const msg = parseCoordinatorMessage(header, payload.byteLength, this.sizes);
    switch (msg.type) {
      case 'welcome': {
        if (msg.protocol !== PROTOCOL_VERSION)
          throw new Rejected(`coordinator speaks protocol ${msg.protocol}, this worker ${PROTOCOL_VERSION}`);
        this.sizes = { paramLength: msg.paramLength, bnLength: msg.bnLength };
        // after everything queued from an earlier connection, before anything from this one; a
        // model this worker cannot build is fatal (retrying would fail the same way)
        this.ready = this.ready.then(async () => {
          this.paramVersion = -1;
          try {
            await this.opts.engine.configure(msg.modelConfig, msg.seed, msg.paramLength, msg.bnLength);
          } catch (e) {
            this.fatal = `cannot build the coordinator's model: ${(e as Error).message}`;
            ws.close(CLOSE.goingAway, 'worker cannot build the model');
            throw e;
          }
        });
        // on the coordinator's host: take parameters from its shared-memory files when this
        // process can open them (a loopback peer may be a container without that filesystem)
        this.paramsFiles?.close();
        this.paramsFiles = msg.paramsFiles ? ParamsFileReader.open(msg.paramsFiles, msg.paramLength) : null;
        if (this.paramsFiles) this.send(ws, encodeFrame({ type: 'paramsFilesReady' }));
        this.log(
          `atlasvae worker: connected to ${this.opts.url} as worker ${msg.workerId} (${this.opts.engine.backend}${this.paramsFiles ? ', parameters through shared memory' : ''})`,
        );
        this.opts.events?.connected?.(this.opts.url, msg.workerId);
        this.chain(() => undefined);
        return 'welcome';
      }
      case 'params': {
        const version = msg.version;
        if (msg.file !== undefined) {
          const file = msg.file;
          this.chain(() => {
            const params = this.paramsFiles?.read(version, file) ?? null;
            if (!params) {
              // the file was rewritten before we read it (we are more than a step behind) or is
              // gone: reconnect, and the welcome brings the current parameters over the socket
              this.log(
                `atlasvae worker: parameters v${version} no longer in the shared-memory file; reconnecting`,
              );
              ws.close(CLOSE.goingAway, 'params file unreadable');
              return;
            }
            this.opts.engine.setParams(params);
            this.paramVersion = version;
          });
          return null;
        }
        // a view into the message (ws hands each message its own buffer): no copy
        const params = payloadAsFloat32(payload);
        this.chain(() => {
          this.opts.engine.setParams(params);
          this.paramVersion = version;
        });
        return null;
      }
      case 'work': {
        if (msg.count !== undefined || !this.opts.engine.gradient)
          this.chain(() => this.computeGroup(ws, msg, payload));
        else this.chain(() => this.compute(ws, msg, payload));
        return null;
      }
      case 'done':
        return msg.reason || 'done';
      case 'buffers': {
        const buffers = payloadAsFloat32(payload);
        this.chain(() => this.opts.engine.setBuffers?.(buffers));
        return null;
      }
      case 'infer':
        this.chain(() => this.infer(ws, msg, payload));
        return null;
      case 'resultFiles': {
        // in order with the work: results computed after this message go to the files
        const offer = { paths: msg.paths, runId: msg.runId };
        this.chain(() => {
          this.resultFiles?.close();
          this.resultFiles = ResultFileWriter.open(offer, this.sizes!.paramLength + this.sizes!.bnLength);
        });
        return null;
      }
    }
  }

  /** One inference request: answered with inferResult, or inferFailure naming the problem. */
  private async infer(ws: WebSocket, m: InferMsg, payload: Uint8Array): Promise<void> {
    if (ws.readyState !== WebSocket.OPEN) return;
    const fail = (message: string): void => {
      const f: InferFailureMsg = { type: 'inferFailure', id: m.id, message: message.slice(0, 1000) };
      this.send(ws, encodeFrame(f));
    };
    const engine = this.opts.engine;
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
    this.send(ws, encodeFrame(r, out.f64, out.f32));
  }

  private ready: Promise<void> = Promise.resolve();
  /** set when this worker cannot go on with this coordinator (not retried) */
  private fatal: string | null = null;

  /** Run `fn` after everything queued before it (the model build, earlier messages), in order. */
  private chain(fn: () => void | Promise<void>): void {
    // yield to the event loop between items so pings, pongs and new messages are served
    this.ready = this.ready
      .then(() => new Promise<void>((r) => setImmediate(r)))
      .then(fn)
      .catch((e: unknown) => {
        this.log(`atlasvae worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        this.ws?.close(CLOSE.goingAway, 'worker error');
      });
  }

  /**
   * A group of microbatches (or a single one, for an engine without a synchronous path) computed
   * in one asynchronous call; the result carries the summed gradient and each one's BatchNorm
   * statistics and loss terms.
   */
  private async computeGroup(ws: WebSocket, w: WorkMsg, payload: Uint8Array): Promise<void> {
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
    if (w.version !== this.paramVersion)
      return fail(`have parameters v${this.paramVersion}, work needs v${w.version}`);
    const engine = this.opts.engine;
    const sizes = this.sizes!;
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

  private compute(ws: WebSocket, w: WorkMsg, arrow: Uint8Array): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (w.version !== this.paramVersion) {
      const f: FailureMsg = {
        type: 'failure',
        version: w.version,
        step: w.step,
        microbatch: w.microbatch,
        message: `have parameters v${this.paramVersion}, work needs v${w.version}`,
      };
      this.send(ws, encodeFrame(f));
      return;
    }
    const t0 = performance.now();
    const sizes = this.sizes!;
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
