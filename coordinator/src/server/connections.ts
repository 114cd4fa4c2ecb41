// The coordinator's WebSocket endpoint: TLS when given a certificate, token check and protocol
// version check at the HTTP upgrade (refused before any WebSocket exists), maxPayload sized from
// the model, heartbeats, and a per-connection hello handshake. Every violation closes only the
// offending connection, with a logged reason.

import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket } from 'ws';
import {
  tokenChecker,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
  TOKEN_HEADER,
  CLOSE,
  MAX_GROUP,
  MAX_HEADER_BYTES,
} from '@atlasvae/shared/protocol';
import type { RejectReason } from './events.js';

export interface EndpointOptions {
  host: string;
  port: number;
  token: string | null;
  tls: { cert: string | Buffer; key: string | Buffer } | null;
  /** largest message a worker may send (a result: header + gradient + BN statistics) */
  maxPayload: number;
  heartbeatMs: number;
}

export interface EndpointHandlers {
  open(ws: WebSocket, remote: string): void;
  rejected(reason: RejectReason, detail: string, remote: string): void;
}

/** Is this socket's peer on this machine? (`remote` is "address:port" as the endpoint reports it) */
export function isLoopbackPeer(remote: string): boolean {
  const addr = remote.slice(0, remote.lastIndexOf(':'));
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
}

export function maxWorkerPayload(paramLength: number, bnLength: number): number {
  // a group result carries one gradient and each of its microbatches' BatchNorm statistics
  return 8 + MAX_HEADER_BYTES + 4 * (paramLength + MAX_GROUP * bnLength);
}

function refuse(socket: Duplex, status: number, text: string, body: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

export class Endpoint {
  private readonly server: http.Server | https.Server;
  private readonly wss: WebSocketServer;
  /** heartbeats missed in a row: a worker busy with a long microbatch may answer a ping late */
  private readonly missed = new WeakMap<WebSocket, number>();
  private heartbeat: NodeJS.Timeout | null = null;
  readonly url: Promise<string>;

  constructor(
    opts: EndpointOptions,
    private readonly handlers: EndpointHandlers,
  ) {
    const check = opts.token ? tokenChecker(opts.token) : null;
    const onRequest = (_req: http.IncomingMessage, res: http.ServerResponse): void => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
      res.end('atlasvae coordinator: connect with `atlasvae worker --connect ws://host:port`\n');
    };
    this.server = opts.tls
      ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest)
      : http.createServer(onRequest);
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.maxPayload,
      perMessageDeflate: false,
      clientTracking: true,
    });
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
      socket.on('error', () => undefined);
      if (check && !check(req.headers[TOKEN_HEADER])) {
        handlers.rejected('bad-token', 'missing or wrong token', remote);
        return refuse(
          socket,
          401,
          'Unauthorized',
          "wrong or missing token (set --token or ATLASVAE_TOKEN to the coordinator's)",
        );
      }
      const pv = req.headers[PROTOCOL_HEADER];
      if (pv !== undefined && pv !== String(PROTOCOL_VERSION)) {
        handlers.rejected('bad-protocol-version', `protocol ${String(pv)}`, remote);
        return refuse(
          socket,
          426,
          'Upgrade Required',
          `this coordinator speaks protocol ${PROTOCOL_VERSION}, the worker ${String(pv)}: use the same atlasvae version`,
        );
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        this.missed.set(ws, 0);
        ws.on('pong', () => this.missed.set(ws, 0));
        handlers.open(ws, remote);
      });
    });
    this.server.on('clientError', (_err, socket) => socket.destroy());
    this.url = new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(opts.port, opts.host, () => {
        const a = this.server.address();
        const port = typeof a === 'object' && a ? a.port : opts.port;
        const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
        resolve(`${opts.tls ? 'wss' : 'ws'}://${host}:${port}`);
      });
    });
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Terminate connections that left the last three pings unanswered. */
  private beat(): void {
    for (const ws of this.wss.clients) {
      const missed = this.missed.get(ws) ?? 0;
      if (missed >= 3) {
        this.handlers.rejected('heartbeat-timeout', `no pong to ${missed} pings`, '');
        ws.terminate();
        continue;
      }
      this.missed.set(ws, missed + 1);
      ws.ping();
    }
  }

  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const ws of this.wss.clients) ws.close(CLOSE.goingAway, 'coordinator shutting down');
    await new Promise<void>((r) => setTimeout(r, 50));
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
