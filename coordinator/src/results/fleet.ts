// Inference on the worker fleet: the results commands' InferenceEngine over WebSocket workers
// (`atlasvae worker --connect`, or local worker processes). Same worker sessions as training
// (server/worker-sessions.ts: token, TLS, protocol version, maxPayload, heartbeats, hello, drop);
// after the hello each worker gets the model
// (welcome), its parameters and BatchNorm buffers, then `infer` requests, at most `perWorker` at a
// time. A worker that leaves hands its requests back to the queue; answers are validated against
// the expected sizes. Results equal in-process ones: workers run shared/model/inference.

import type { CellBatch, ModelConfig } from '@atlasvae/shared';
import { encodeCellBatch } from '@atlasvae/shared/arrow';
import {
  encodeFrame,
  MAX_HEADER_BYTES,
  type InferMsg,
  type ExpectedSizes,
  type HelloMsg,
  type WorkerMessage,
} from '@atlasvae/shared/protocol';
import {
  inferOutputLengths,
  type InferOutput,
  type InferRequest,
  paramLayout,
  bufferLayout,
} from '@atlasvae/shared/model';
import { WorkerSessions, type Session, type WelcomeBody } from '../server/worker-sessions.js';
import { LocalWorkers } from '../server/local-workers.js';
import type { InferenceEngine } from './engine.js';

export interface FleetOptions {
  modelConfig: ModelConfig;
  params: Float32Array;
  buffers: Float32Array;
  host: string;
  /** 0: any free port */
  port: number;
  token: string;
  tls: { cert: string | Buffer; key: string | Buffer } | null;
  /** worker processes to start on this machine */
  localWorkers: number;
  /** backend of the local workers */
  backend: string;
  /** workers to wait for before the first request */
  minWorkers: number;
  /** largest chunk sent (sizes the largest answer accepted) */
  maxChunkCells: number;
  /** requests in flight per worker (one computing, one in transit) */
  perWorker?: number;
  /** give up when no worker has been connected for this long while requests wait */
  noWorkerTimeoutMs?: number;
  log?: (level: 'info' | 'warn', msg: string) => void;
}

interface Job {
  id: number;
  frame: Buffer;
  req: InferRequest;
  nCells: number;
  resolve: (o: InferOutput) => void;
  reject: (e: Error) => void;
}

interface Conn extends Session {
  name: string;
  inflight: Map<number, Job>;
}

export class FleetEngine implements InferenceEngine {
  private sessions: WorkerSessions<Conn> | null = null;
  private local: LocalWorkers | null = null;
  private readonly queue: Job[] = [];
  private nextJob = 1;
  private readonly sizes: ExpectedSizes;
  private readonly perWorker: number;
  private readonly log: (level: 'info' | 'warn', msg: string) => void;
  private noWorkerSince: number | null = Date.now();
  private watchdog: NodeJS.Timeout | null = null;
  private closed = false;
  url = '';

  private constructor(private readonly o: FleetOptions) {
    this.sizes = { paramLength: paramLayout(o.modelConfig).size, bnLength: bufferLayout(o.modelConfig).size };
    if (o.params.length !== this.sizes.paramLength)
      throw new RangeError(
        `parameter vector has ${o.params.length} floats, the model needs ${this.sizes.paramLength}`,
      );
    if (o.buffers.length !== this.sizes.bnLength)
      throw new RangeError(
        `buffer vector has ${o.buffers.length} floats, the model needs ${this.sizes.bnLength}`,
      );
    this.perWorker = o.perWorker ?? 2;
    this.log = o.log ?? ((_l, m) => console.error(m));
  }

  /** Listen, start the local workers, and wait until `minWorkers` are ready. */
  static async start(o: FleetOptions): Promise<FleetEngine> {
    const f = new FleetEngine(o);
    const cfg = o.modelConfig;
    const biggest = o.maxChunkCells * Math.max(2 * cfg.nLatent * 4, cfg.nGenes * 4, 8);
    f.sessions = new WorkerSessions<Conn>(
      {
        host: o.host,
        port: o.port,
        token: o.token,
        tls: o.tls,
        maxPayload: 8 + MAX_HEADER_BYTES + biggest,
        heartbeatMs: 10_000,
        sizes: f.sizes,
        helloTimeoutMs: 10_000,
      },
      {
        create: (base) => ({ ...base, name: base.remote, inflight: new Map() }),
        welcome: (c, hello) => f.welcome(c, hello),
        joined: (c) => f.joined(c),
        message: (c, msg, payload) => f.onMessage(c, msg, payload),
        gone: (c) => f.onClose(c),
        rejected: (reason, detail, remote) =>
          f.log('warn', `inference fleet: rejected ${remote}: ${reason}${detail ? ` (${detail})` : ''}`),
      },
    );
    f.url = await f.sessions.url;
    f.log('info', `inference fleet listening on ${f.url}; waiting for ${o.minWorkers} worker(s)`);
    if (o.localWorkers > 0) {
      f.local = new LocalWorkers(o.localWorkers, o.backend);
      f.local.start(f.url.replace('0.0.0.0', '127.0.0.1'), o.token);
    }
    f.watchdog = setInterval(() => f.checkStarved(), 1000);
    f.watchdog.unref();
    const started = Date.now();
    const limit = o.noWorkerTimeoutMs ?? 60_000;
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setInterval(() => {
          if (f.readyCount() >= o.minWorkers) {
            clearInterval(t);
            resolve();
          } else if (Date.now() - started > limit) {
            clearInterval(t);
            reject(
              new Error(
                `only ${f.readyCount()} of ${o.minWorkers} inference worker(s) joined ${f.url} within ${Math.round(limit / 1000)} s`,
              ),
            );
          }
        }, 50);
      });
    } catch (e) {
      await f.close();
      throw e;
    }
    return f;
  }

  get config(): ModelConfig {
    return this.o.modelConfig;
  }

  get parallelism(): number {
    return this.perWorker * Math.max(1, this.o.minWorkers, this.readyCount());
  }

  describe(): string {
    return `${this.readyCount()} worker(s) at ${this.url}`;
  }

  private readyCount(): number {
    return this.sessions?.readyCount ?? 0;
  }

  run(batch: CellBatch, req: InferRequest): Promise<InferOutput> {
    if (this.closed) return Promise.reject(new Error('inference fleet is closed'));
    return new Promise((resolve, reject) => {
      const id = this.nextJob++;
      const genes = req.genes ?? new Int32Array(0);
      const padded = new Int32Array((genes.length + 1) & ~1); // whole 8-byte words
      padded.set(genes);
      const header: InferMsg = {
        type: 'infer',
        id,
        op: req.op,
        nCells: batch.nCells,
        seed: req.seed,
        chunk: req.chunk,
        noiseEpoch: req.noiseEpoch,
        samples: req.samples,
        transformBatch: req.transformBatch,
        genesLength: genes.length,
      };
      const frame = encodeFrame(header, padded, encodeCellBatch(batch));
      this.queue.push({ id, frame, req, nCells: batch.nCells, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    if (!this.sessions) return;
    for (const c of this.sessions.all()) {
      while (c.ready && c.inflight.size < this.perWorker && this.queue.length) {
        const job = this.queue.shift()!;
        c.inflight.set(job.id, job);
        this.sessions.send(c, job.frame);
      }
    }
  }

  private welcome(c: Conn, hello: HelloMsg): WelcomeBody {
    c.name = `${hello.name}, ${hello.backend}`;
    return {
      modelConfig: this.o.modelConfig,
      seed: 0,
      paramLength: this.sizes.paramLength,
      bnLength: this.sizes.bnLength,
      maxWorkBytes: 0,
    };
  }

  private joined(c: Conn): void {
    this.sessions!.send(c, encodeFrame({ type: 'params', version: 0 }, this.o.params));
    this.sessions!.send(c, encodeFrame({ type: 'buffers', version: 0 }, this.o.buffers));
    this.noWorkerSince = null;
    this.log('info', `inference fleet: worker ${c.id} (${c.name}) joined; ${this.readyCount()} ready`);
    this.dispatch();
  }

  private drop(
    c: Conn,
    why: string,
    reason: 'unexpected-message' | 'invalid-message' = 'unexpected-message',
  ): void {
    this.sessions?.drop(c, reason, why);
  }

  private onClose(c: Conn): void {
    if (c.inflight.size) {
      // hand its requests back, first in line: they were the oldest
      this.queue.unshift(...[...c.inflight.values()].sort((a, b) => a.id - b.id));
      if (!this.closed)
        this.log(
          'warn',
          `inference fleet: worker ${c.id} (${c.name}) left; ${c.inflight.size} request(s) handed to the others`,
        );
    }
    c.inflight.clear();
    if (this.readyCount() === 0 && this.noWorkerSince === null) this.noWorkerSince = Date.now();
    this.dispatch();
  }

  private onMessage(c: Conn, msg: WorkerMessage, payload: Uint8Array): void {
    switch (msg.type) {
      case 'inferResult': {
        const job = c.inflight.get(msg.id);
        if (!job) return this.drop(c, `answer to unknown request ${msg.id}`);
        const want = inferOutputLengths(
          job.req,
          job.nCells,
          this.o.modelConfig.nLatent,
          this.o.modelConfig.nGenes,
        );
        if (msg.nCells !== job.nCells || msg.f64Length !== want.f64 || msg.f32Length !== want.f32) {
          return this.drop(
            c,
            `answer to request ${msg.id} has ${msg.f64Length}+${msg.f32Length} values for ${msg.nCells} cells, expected ${want.f64}+${want.f32} for ${job.nCells}`,
            'invalid-message',
          );
        }
        c.inflight.delete(msg.id);
        // copies: aligned, and independent of the message buffer
        const bytes = Uint8Array.from(payload);
        const f64 = new Float64Array(bytes.buffer, 0, msg.f64Length);
        const f32 = new Float32Array(bytes.buffer, 8 * msg.f64Length, msg.f32Length);
        job.resolve({ f64, f32 });
        return this.dispatch();
      }
      case 'inferFailure': {
        const job = c.inflight.get(msg.id);
        if (!job) return this.drop(c, `failure of unknown request ${msg.id}`);
        c.inflight.delete(msg.id);
        job.reject(new Error(`worker ${c.id} (${c.name}) could not run ${job.req.op}: ${msg.message}`));
        return this.dispatch();
      }
      default:
        return this.drop(c, `unexpected ${msg.type} during inference`);
    }
  }

  private checkStarved(): void {
    const limit = this.o.noWorkerTimeoutMs ?? 60_000;
    if (this.noWorkerSince === null || this.readyCount() > 0) return;
    if (Date.now() - this.noWorkerSince < limit) return;
    if (!this.queue.length) return;
    const err = new Error(`no inference worker connected to ${this.url} for ${Math.round(limit / 1000)} s`);
    for (const j of this.queue.splice(0)) j.reject(err);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    await this.sessions?.close('inference finished');
    await this.local?.stop();
  }
}
