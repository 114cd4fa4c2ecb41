// The worker process's connection to a coordinator: authenticate, receive the model and its
// parameters, compute microbatch gradients (gradient-reply.ts), send them back. Reconnects with exponential backoff
// when the coordinator goes away (e.g. restarts from a checkpoint); stops on `done`, on a rejected
// token or protocol version, or after `giveUpAfterMs` without a coordinator.

import os from 'node:os';
import { WebSocket, type ClientOptions } from 'ws';
import {
  encodeFrame,
  decodeFrame,
  payloadAsFloat32,
  FrameError,
  PROTOCOL_VERSION,
  PROTOCOL_HEADER,
  TOKEN_HEADER,
  CLOSE,
  ProtocolError,
  parseCoordinatorMessage,
  type ExpectedSizes,
  type HelloMsg,
  bearer,
} from '@atlasvae/shared/protocol';
import { ParamsFileReader } from '@atlasvae/shared/transport';
import type { WorkerOptions, WorkerOutcome } from './client-options.js';
import { GradientReplier } from './gradient-reply.js';
import { answerInfer } from './infer-reply.js';

export type { WorkerOptions, WorkerEvents, WorkerOutcome } from './client-options.js';

/** Not retried: the coordinator refuses this worker. */
class Rejected extends Error {}

export class WorkerClient {
  private ws: WebSocket | null = null;
  private stopped = false;
  private sizes: ExpectedSizes | null = null;
  private paramVersion = -1;
  private readonly log: (m: string) => void;
  /** computes work and sends its results (gradient-reply.ts) */
  private readonly replier: GradientReplier;
  /** the coordinator's shared-memory parameter files, when it offered them and this process can read them */
  private paramsFiles: ParamsFileReader | null = null;

  constructor(private readonly opts: WorkerOptions) {
    this.log = opts.log ?? ((m) => console.error(m));
    this.replier = new GradientReplier(opts, this.log, (ws, frame) => this.send(ws, frame));
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
    return { reason, message, microbatches: this.replier.computed };
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
        this.replier.closeResultFiles();
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
          this.chain(() => this.replier.computeGroup(ws, msg, payload, this.paramVersion, this.sizes!));
        else this.chain(() => this.replier.compute(ws, msg, payload, this.paramVersion, this.sizes!));
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
        this.chain(() => answerInfer(ws, msg, payload, this.opts.engine, (s, f) => this.send(s, f)));
        return null;
      case 'resultFiles': {
        // in order with the work: results computed after this message go to the files
        const offer = { paths: msg.paths, runId: msg.runId };
        this.chain(() => {
          this.replier.useResultFiles(offer, this.sizes!.paramLength + this.sizes!.bnLength);
        });
        return null;
      }
    }
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
}
