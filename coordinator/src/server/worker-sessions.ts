// Worker sessions, shared by training (coordinator.ts) and the inference fleet (results/fleet.ts):
// the endpoint (upgrade, token, version header: connections.ts), then per connection the hello
// within a time limit, the protocol-version check, the welcome, decoding and validating every
// message, and dropping a connection that breaks the protocol. What a ready session's messages
// mean is the role's business: it gets them through callbacks and never sees an invalid one.

import type { WebSocket } from 'ws';
import {
  encodeFrame,
  decodeFrame,
  FrameError,
  PROTOCOL_VERSION,
  CLOSE,
  ProtocolError,
  parseWorkerMessage,
  type ExpectedSizes,
  type HelloMsg,
  type WelcomeMsg,
  type WorkerMessage,
} from '@atlasvae/shared/protocol';
import { Endpoint, isLoopbackPeer, type EndpointOptions } from './connections.js';
import type { RejectReason } from './events.js';

/** One connection, as every role sees it; a role's session type extends this. */
export interface Session {
  readonly id: number;
  readonly ws: WebSocket;
  /** "address:port" of the peer */
  readonly remote: string;
  /** the worker connected over loopback (runs on this machine) */
  readonly local: boolean;
  /** it sent a valid hello and was welcomed */
  ready: boolean;
}

/** What a welcome carries besides its type, protocol and worker id (those are the session's). */
export type WelcomeBody = Omit<WelcomeMsg, 'type' | 'protocol' | 'workerId'>;

export interface SessionHandlers<S extends Session> {
  /** the role's session for a new connection (`base` extended with the role's fields) */
  create(base: Session): S;
  /** a valid hello of the right protocol version: the role's welcome (the session sends it) */
  welcome(s: S, hello: HelloMsg): WelcomeBody;
  /** after the welcome went out; `s.ready` is now true */
  joined(s: S, hello: HelloMsg): void;
  /** a valid message from a ready session (a second hello is dropped before it gets here) */
  message(s: S, msg: WorkerMessage, payload: Uint8Array): void;
  /** the connection is gone (closed, or dropped: then nothing it sends afterwards is read); once */
  gone(s: S, why: string): void;
  /** a connection refused or dropped, with the reason */
  rejected(reason: RejectReason, detail: string, remote: string): void;
  /** bytes sent or received (for the byte counters) */
  bytes?(direction: 'sent' | 'received', n: number): void;
}

export interface SessionOptions extends EndpointOptions {
  sizes: ExpectedSizes;
  /** a connection that sent no hello within this is dropped */
  helloTimeoutMs: number;
}

export class WorkerSessions<S extends Session> {
  private readonly endpoint: Endpoint;
  private readonly sessions = new Map<number, S>();
  private readonly helloTimers = new Map<number, NodeJS.Timeout>();
  private nextId = 1;
  readonly url: Promise<string>;

  constructor(
    private readonly opts: SessionOptions,
    private readonly h: SessionHandlers<S>,
  ) {
    this.endpoint = new Endpoint(opts, {
      open: (ws, remote) => this.onOpen(ws, remote),
      rejected: (reason, detail, remote) => h.rejected(reason, detail, remote),
    });
    this.url = this.endpoint.url;
  }

  /** The open sessions (ready or not), in the order they connected. */
  all(): IterableIterator<S> {
    return this.sessions.values();
  }

  get(id: number): S | undefined {
    return this.sessions.get(id);
  }

  has(s: S): boolean {
    return this.sessions.get(s.id) === s;
  }

  get readyCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.ready) n++;
    return n;
  }

  /** Send one frame (nothing when the socket is no longer open). */
  send(s: Session, frame: Buffer): void {
    if (s.ws.readyState !== s.ws.OPEN) return;
    s.ws.send(frame, { binary: true });
    this.h.bytes?.('sent', frame.byteLength);
  }

  /** One message as fragments, payload uncopied (for immutable payloads such as Arrow microbatches). */
  sendParts(s: Session, parts: Uint8Array[]): void {
    if (s.ws.readyState !== s.ws.OPEN) return;
    let n = 0;
    parts.forEach((p, i) => {
      s.ws.send(p, { binary: true, fin: i === parts.length - 1 });
      n += p.byteLength;
    });
    this.h.bytes?.('sent', n);
  }

  /** Close a connection for a protocol violation; nothing it sends afterwards is read. */
  drop(s: S, reason: RejectReason, detail: string, code: number = CLOSE.protocolError): void {
    this.h.rejected(reason, `worker ${s.id}: ${detail}`, s.remote);
    this.forget(s, `dropped: ${reason}`);
    s.ws.close(code, `${reason}: ${detail}`.slice(0, 120));
    // don't wait for the close handshake of a misbehaving peer
    setTimeout(() => s.ws.terminate(), 1000).unref();
  }

  /** Forget a connection without a protocol violation (e.g. to make it reconnect), then close it. */
  disconnect(s: S, why: string, code: number = CLOSE.goingAway): void {
    this.forget(s, why);
    s.ws.close(code, why.slice(0, 120));
  }

  /** Stop serving. With `done`, ready workers are told the work is over (they exit); without, they
   * see the connection drop and keep trying to reconnect. */
  async close(done: string | null): Promise<void> {
    if (done !== null) {
      const frame = encodeFrame({ type: 'done', reason: done });
      for (const s of this.sessions.values()) if (s.ready) this.send(s, frame);
    }
    await this.endpoint.close();
  }

  private onOpen(ws: WebSocket, remote: string): void {
    const id = this.nextId++;
    const s = this.h.create({ id, ws, remote, local: isLoopbackPeer(remote), ready: false });
    this.sessions.set(id, s);
    this.helloTimers.set(
      id,
      setTimeout(
        () => this.drop(s, 'hello-timeout', 'no hello within the time limit', CLOSE.policyViolation),
        this.opts.helloTimeoutMs,
      ),
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(s, data, isBinary));
    ws.on('close', (code, reason) =>
      this.forget(s, `${code}${reason.length ? ` ${reason.toString('utf8')}` : ''}`),
    );
    ws.on('error', (err) => {
      // ws reports oversize frames and framing errors here, then closes
      const reasonCode: RejectReason = /max payload|too big/i.test(err.message)
        ? 'oversize'
        : 'malformed-frame';
      this.h.rejected(reasonCode, err.message, remote);
    });
  }

  private forget(s: S, why: string): void {
    const t = this.helloTimers.get(s.id);
    if (t) clearTimeout(t);
    this.helloTimers.delete(s.id);
    if (!this.has(s)) return;
    this.sessions.delete(s.id);
    this.h.gone(s, why);
  }

  private onMessage(s: S, data: Buffer, isBinary: boolean): void {
    this.h.bytes?.('received', data.byteLength);
    if (!this.has(s)) return;
    if (!isBinary)
      return this.drop(s, 'text-frame', 'text frames are not part of the protocol', CLOSE.unsupported);
    let header: unknown;
    let payload: Uint8Array;
    try {
      ({ header, payload } = decodeFrame(data));
    } catch (e) {
      return this.drop(s, 'malformed-frame', (e as FrameError).message);
    }
    let msg: WorkerMessage;
    try {
      msg = parseWorkerMessage(header, payload.byteLength, this.opts.sizes);
    } catch (e) {
      if (e instanceof ProtocolError) return this.drop(s, 'invalid-message', e.reason);
      throw e;
    }
    if (s.ready) {
      if (msg.type === 'hello') return this.drop(s, 'unexpected-message', 'second hello');
      return this.h.message(s, msg, payload);
    }
    if (msg.type !== 'hello') return this.drop(s, 'unexpected-message', `${msg.type} before hello`);
    if (msg.protocol !== PROTOCOL_VERSION) {
      return this.drop(
        s,
        'bad-protocol-version',
        `worker speaks protocol ${msg.protocol}, coordinator ${PROTOCOL_VERSION}`,
        CLOSE.badVersion,
      );
    }
    const t = this.helloTimers.get(s.id);
    if (t) clearTimeout(t);
    this.helloTimers.delete(s.id);
    const w: WelcomeMsg = {
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      workerId: s.id,
      ...this.h.welcome(s, msg),
    };
    this.send(s, encodeFrame(w));
    s.ready = true;
    this.h.joined(s, msg);
  }
}
