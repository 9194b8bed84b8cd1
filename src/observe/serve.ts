/**
 * The small HTTP servers of pool.serveMetrics() and pool.dashboard(): Node's http, loopback unless the
 * caller names another address, and never keeping the process alive by themselves (a program whose
 * work is done ends, dashboard or not).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigError } from '../errors.js';
import {
  type MetricsFormat,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
} from '../metrics/exposition.js';
import { isPlainObject, parseCount } from '../options.js';

export interface ServeOptions {
  /** TCP port; 0 (the default) takes any free one (see `url`). */
  port?: number;
  /** Address to listen on: '127.0.0.1' unless given ('0.0.0.0' or '::' for every interface). */
  host?: string;
}

export interface ObserveServer {
  /** Where it listens, e.g. 'http://127.0.0.1:9464/'. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stops listening and ends open connections (server-sent event streams included). */
  close(): Promise<void>;
}

/** What the metrics route needs of a pool. */
export interface MetricsSource {
  metricsText(options: { format: MetricsFormat }): string;
}

export type Route = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || host.startsWith('127.');
}

export function serveOptions(options: unknown): { port: number; host: string } {
  if (options !== undefined && !isPlainObject(options)) {
    throw new ConfigError('options', 'expected { port?, host? }');
  }
  const o = (options ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (key !== 'port' && key !== 'host') throw new ConfigError(key, 'unknown option; expected port or host');
  }
  const port = o.port === undefined ? 0 : parseCount('port', o.port, 0);
  if (port > 65535) throw new ConfigError('port', `expected 0..65535, got ${port}`);
  if (o.host !== undefined && (typeof o.host !== 'string' || o.host === '')) {
    throw new ConfigError('host', "expected an address such as '127.0.0.1' or '0.0.0.0'");
  }
  return { port, host: (o.host as string | undefined) ?? '127.0.0.1' };
}

/** GET /metrics: OpenMetrics for a scraper that asks for it (Prometheus does), the 0.0.4 text otherwise. */
export function metricsRoute(source: MetricsSource): Route {
  return (req, res, path) => {
    if (path !== '/metrics') return false;
    const open = /application\/openmetrics-text/.test(req.headers.accept ?? '');
    const body = source.metricsText({ format: open ? 'openmetrics' : 'prometheus' });
    res.writeHead(200, {
      'content-type': open ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE,
      'cache-control': 'no-store',
    });
    res.end(body);
    return true;
  };
}

/**
 * Listens with `routes` (the first that takes a request answers it). On a loopback address, requests
 * must name a loopback host: a web page elsewhere cannot reach the server by rebinding its own DNS
 * name to 127.0.0.1.
 */
export async function serve(options: unknown, routes: Route[], what: string): Promise<ObserveServer> {
  const { port, host } = serveOptions(options);
  const loopback = isLoopback(host);
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const named = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (loopback && !isLoopback(named)) {
      res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`corral ${what}: requests must name a loopback host (127.0.0.1, localhost, [::1])\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' });
      res.end();
      return;
    }
    for (const route of routes) if (route(req, res, url.pathname)) return;
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`corral ${what}: no page at ${url.pathname}\n`);
  });
  server.on('connection', (socket) => {
    socket.unref();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new ConfigError(
          'port',
          error.code === 'EADDRINUSE'
            ? `${host}:${port} is in use; pick another port, or 0 for any free one`
            : `the ${what} cannot listen on ${host}:${port}: ${error.message}`,
        ),
      );
    });
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${address.port}/`,
    host: address.address,
    port: address.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
  };
}
