// Parameter transport, the coordinator's side: how each new parameter vector reaches the workers
// and how results come back outside the socket. Three ways out, chosen per worker: one `params`
// frame after Adam; the same frame streamed range by range while Adam computes it (workers on
// other hosts, `streamParams`); or, for workers on this host that opened them, a shared-memory
// file written once (`params` then names the file). Results of such workers come back through
// their ring of shared-memory result files. The worker's side of the files is
// shared/src/transport/shared-memory.ts (its readers and writers); this module owns the frames, the
// files' lifetime and the parameter version.

import { encodeFrame, ReusableFrame } from '@atlasvae/shared/protocol';
import { type ParamsFilesOffer, SharedMemoryFolder, type ResultFiles } from '@atlasvae/shared/transport';
import type { GradientAccumulator } from '@atlasvae/shared/train';
import type { Session } from './worker-sessions.js';
import type { Optimizer } from './optimizer.js';

/** Where parameters are streamed out of Adam range by range (`applyAndBroadcast`). */
export const STREAM_PARAMS = ['auto', 'always', 'never'] as const;
export type StreamParams = (typeof STREAM_PARAMS)[number];

/** A worker session as the transport sees it. */
export interface ParamTarget extends Session {
  /** it opened the shared-memory parameter files: `params` messages name a file instead of carrying the vector */
  paramsViaFile: boolean;
  /** shared-memory files it writes its results to (then `result` messages name a file) */
  resultFiles: ResultFiles | null;
}

export interface ParamTransportOptions {
  paramLength: number;
  bnLength: number;
  /** the parameter version to start from (the global step of the position) */
  version: number;
  streamParams: StreamParams;
  sharedMemory: 'auto' | 'never';
  /** result files per worker (a ring at least as long as the microbatches it may hold) */
  resultFilesPerWorker: number;
}

export interface ParamTransportHooks<C extends ParamTarget> {
  /** every open session (for whether a socket still holds the last frame) */
  sessions(): Iterable<C>;
  send(c: C, frame: Buffer): void;
  sent(bytes: number): void;
  log(level: 'warn', msg: string): void;
}

export type ApplyTiming = ReturnType<Optimizer['applyAccumulated']>;

export class ParamTransport<C extends ParamTarget> {
  /** the current parameter frame (null: encode one when a worker needs it) */
  private paramsFrame: Buffer | null = null;
  /** the parameter frame's buffer, reused across steps once every socket has flushed it */
  private readonly paramsWriter = new ReusableFrame();
  /** a dropped connection may still hold the last parameter frame in its queue */
  private paramsFrameShared = false;
  /** shared-memory files for workers on this host (created at open, removed at close) */
  private sharedMemory: SharedMemoryFolder | null = null;
  /** results read from shared-memory files, one buffer per microbatch index (reused every step) */
  private readonly resultSlots: Float32Array[] = [];
  /** the version of the parameters in the optimizer */
  version: number;

  constructor(
    private readonly opts: ParamTransportOptions,
    private readonly optimizer: Optimizer,
    private readonly hooks: ParamTransportHooks<C>,
  ) {
    this.version = opts.version;
  }

  /** Create the shared-memory parameter files (when allowed and possible). */
  open(): void {
    if (this.opts.sharedMemory !== 'auto') return;
    try {
      this.sharedMemory = new SharedMemoryFolder(this.opts.paramLength);
    } catch (e) {
      this.hooks.log(
        'warn',
        `shared-memory parameter files unavailable (${(e as Error).message}); local workers use the socket`,
      );
    }
  }

  close(): void {
    this.sharedMemory?.close();
    this.sharedMemory = null;
  }

  /** The parameter files to offer in a worker's welcome (workers on this host only). */
  offerFor(c: C): ParamsFilesOffer | undefined {
    return this.sharedMemory && c.local ? this.sharedMemory.offer : undefined;
  }

  /** A worker opened the parameter files; give it result files. False: it had no offer (a violation). */
  filesReady(c: C): boolean {
    if (!this.sharedMemory || !c.local || c.paramsViaFile) return false;
    c.paramsViaFile = true;
    try {
      c.resultFiles = this.sharedMemory.resultFiles(
        c.id,
        this.opts.resultFilesPerWorker,
        this.opts.paramLength + this.opts.bnLength,
      );
      this.hooks.send(c, encodeFrame({ type: 'resultFiles', ...c.resultFiles.offer }));
    } catch (e) {
      this.hooks.log(
        'warn',
        `worker ${c.id}: no shared-memory result files (${(e as Error).message}); its results use the socket`,
      );
    }
    return true;
  }

  /** A session is gone: its result files go, and the frame it may still hold is not reused. */
  gone(c: C): void {
    c.resultFiles?.close();
    c.resultFiles = null;
    if (c.ws.bufferedAmount > 0) this.paramsFrameShared = true;
  }

  /** Was this worker given result file `file`? */
  hasResultFile(c: C, file: number): boolean {
    return c.resultFiles !== null && file < c.resultFiles.paths.length;
  }

  /** A result from `c`'s file `file` (sequence `seq`) for `microbatch`, in a buffer reused every
   * step; null when the file was rewritten before it was read. */
  readResult(c: C, file: number, seq: number, microbatch: number): Float32Array | null {
    const slot = (this.resultSlots[microbatch] ??= new Float32Array(
      this.opts.paramLength + this.opts.bnLength,
    ));
    return c.resultFiles!.readInto(file, seq, slot) ? slot : null;
  }

  /** Last step's parameter buffer may be reused only when no socket still has it queued (ws sends by reference). */
  private paramsBufferReusable(): boolean {
    let flushed = !this.paramsFrameShared;
    for (const c of this.hooks.sessions()) if (c.ws.bufferedAmount > 0) flushed = false;
    this.paramsFrameShared = false;
    return flushed;
  }

  /** The current parameters as a `params` frame (for a worker that joins, reconnects or falls back to the socket). */
  currentFrame(): Buffer {
    this.paramsFrame ??= this.paramsWriter.encode(
      this.paramsBufferReusable(),
      { type: 'params', version: this.version },
      this.optimizer.params,
    );
    return this.paramsFrame;
  }

  /**
   * The optimizer step, with the new parameters going out while they are computed: the parameter
   * frame's header is written first, then Adam runs in ranges and each finished range is copied
   * into the frame and sent to each streamed worker as the next fragment of one message. Its
   * transfer and reading overlap Adam on the next range, instead of the whole update and then the
   * whole transfer on the step's critical path. The other workers (by default those on this host,
   * see `streamParams`) get the complete frame after Adam, which stays the current one for workers
   * that join later. Returns the optimizer timing and the ms spent sending.
   */
  applyAndBroadcast(
    acc: GradientAccumulator,
    epoch: number,
    targets: C[],
  ): { timing: ApplyTiming; streamMs: number; sendMs: number } {
    const params = this.optimizer.params;
    const viaFile = this.sharedMemory ? targets.filter((c) => c.paramsViaFile) : [];
    const mode = this.opts.streamParams;
    const streamed = targets.filter(
      (c) => !c.paramsViaFile && (mode === 'always' || (mode === 'auto' && !c.local)),
    );
    const whole = targets.filter((c) => !c.paramsViaFile && !streamed.includes(c));
    if (streamed.length === 0 && whole.length === 0) return this.applyAndWriteFile(acc, epoch, viaFile);
    const { frame, payloadStart } = this.paramsWriter.begin(
      this.paramsBufferReusable(),
      { type: 'params', version: this.version + 1 },
      4 * params.length,
    );
    const payload = new Float32Array(frame.buffer, frame.byteOffset + payloadStart, params.length);
    let sentUpTo = 0;
    let sendMs = 0;
    const timing = this.optimizer.applyAccumulated(acc, epoch, (start, end) => {
      const t = performance.now();
      payload.set(params.subarray(start, end), start);
      const upTo = end === params.length ? frame.byteLength : payloadStart + 4 * end;
      const part = frame.subarray(sentUpTo, upTo);
      const fin = upTo === frame.byteLength;
      for (const c of streamed) c.ws.send(part, { binary: true, fin });
      sentUpTo = upTo;
      sendMs += performance.now() - t;
    });
    // time spent sending inside Adam's callbacks (part of timing) and in all (streamed + whole)
    const streamMs = sendMs;
    const t = performance.now();
    if (viaFile.length && !this.sendViaFile(viaFile, this.version + 1, params)) whole.push(...viaFile);
    for (const c of whole) c.ws.send(frame, { binary: true });
    sendMs += performance.now() - t;
    this.version++;
    this.paramsFrame = frame;
    for (let i = 0; i < streamed.length + whole.length; i++) this.hooks.sent(frame.byteLength);
    return { timing, streamMs, sendMs };
  }

  /**
   * The optimizer step when no worker takes the parameters over its socket (all read the
   * shared-memory file, or none is connected): Adam in one pass, one file write, and no socket frame
   * this step. `currentFrame` encodes one on demand for a worker that joins, reconnects or
   * falls back to the socket, so the 2 MB copy per step stays off the critical path.
   */
  private applyAndWriteFile(
    acc: GradientAccumulator,
    epoch: number,
    viaFile: C[],
  ): { timing: ApplyTiming; streamMs: number; sendMs: number } {
    const timing = this.optimizer.applyAccumulated(acc, epoch);
    const t = performance.now();
    const written =
      viaFile.length === 0 || this.sendViaFile(viaFile, this.version + 1, this.optimizer.params);
    this.version++;
    this.paramsFrame = null;
    if (!written) for (const c of viaFile) this.hooks.send(c, this.currentFrame());
    return { timing, streamMs: 0, sendMs: performance.now() - t };
  }

  /**
   * Write `params` as `version` into the shared-memory file once and name it to `conns`; the file
   * of version v+1 is the one v−1 used, whose step is done. False when the write failed (e.g.
   * /dev/shm full): shared memory is then off and those workers need the parameters over the socket.
   */
  private sendViaFile(conns: C[], version: number, params: Float32Array): boolean {
    let file: number;
    try {
      file = this.sharedMemory!.write(version, params);
    } catch (e) {
      this.hooks.log(
        'warn',
        `shared-memory parameter file write failed (${(e as Error).message}); sending parameters over the sockets`,
      );
      this.sharedMemory!.close();
      this.sharedMemory = null;
      for (const c of conns) c.paramsViaFile = false;
      return false;
    }
    const note = encodeFrame({ type: 'params', version, file });
    for (const c of conns) this.hooks.send(c, note);
    return true;
  }
}
