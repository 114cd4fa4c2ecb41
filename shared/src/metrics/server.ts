// The HTTP endpoint Prometheus scrapes: `/metrics` (text exposition format) and `/healthz`
// (200 while training is live, 503 otherwise, so a Kubernetes readiness probe or a load
// balancer sees a process that is up but idle, finished or disconnected as not ready).

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { CliError } from '../errors.js';
import { getLogger } from '../log.js';

export interface MetricsServerOptions {
  /** 0 picks a free port (see `port` after `start`) */
  port: number;
  /** interface to bind; default all interfaces, so Prometheus can scrape from another host */
  host?: string;
  /** is training live right now? drives `/healthz` */
  isLive: () => boolean;
  /** a short word for `/healthz` bodies when not live, e.g. "idle", "finished", "disconnected" */
  state?: () => string;
}

export class MetricsServer {
  private server: http.Server | null = null;
  private boundPort = 0;

  constructor(
    private readonly registry: Registry,
    private readonly opts: MetricsServerOptions,
  ) {}

  /** The port actually bound (after `start`). */
  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const host =
      !this.opts.host || this.opts.host === '0.0.0.0' || this.opts.host === '::'
        ? '127.0.0.1'
        : this.opts.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.boundPort}`;
  }

  /** Listen; resolves with the bound port, rejects if the port is taken. */
  async start(): Promise<number> {
    if (this.server) return this.boundPort;
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`error: ${err instanceof Error ? err.message : String(err)}\n`);
      });
    });
    // a scrape is small and quick; do not let a stuck client hold a socket for long
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.opts.port, this.opts.host ?? '0.0.0.0', () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.unref();
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
    return this.boundPort;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      const body = await this.registry.metrics();
      res.writeHead(200, { 'content-type': this.registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (path === '/healthz') {
      const live = this.opts.isLive();
      const word = live ? 'ok' : (this.opts.state?.() ?? 'not training');
      res.writeHead(live ? 200 : 503, {
        'content-type': 'text/plain; charset=utf-8',
        'cache-control': 'no-store',
      });
      res.end(req.method === 'HEAD' ? undefined : `${word}\n`);
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('atlasvae metrics: /metrics (Prometheus), /healthz (200 while training is live)\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('not found: try /metrics or /healthz\n');
  }
}

/** yargs options shared by the coordinator, worker and train commands: `.options(metricsCliOptions)`. */
export const metricsCliOptions = {
  'metrics-port': {
    type: 'number',
    describe:
      'serve Prometheus /metrics and /healthz on this port (0: any free port; default: none). `train`: local worker i (1…N) serves on this port + i',
  },
  'metrics-host': {
    type: 'string',
    default: '0.0.0.0',
    describe: 'interface the metrics server listens on',
  },
} as const;

/** Start a metrics server when `--metrics-port` was given; logs where it listens. */
export async function startMetricsServer(
  metrics: { server(port: number, host?: string): MetricsServer },
  port: number | undefined,
  host?: string,
): Promise<MetricsServer | null> {
  if (port === undefined || port === null || Number.isNaN(port)) return null;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new CliError(`--metrics-port: ${port} is not a port number (0-65535)`);
  const server = metrics.server(port, host);
  try {
    await server.start();
  } catch (err) {
    throw new CliError(
      `--metrics-port ${port}: cannot listen (${err instanceof Error ? err.message : String(err)})`,
    );
  }
  getLogger('metrics').info('metrics server listening', { url: `${server.url}/metrics`, port: server.port });
  return server;
}
