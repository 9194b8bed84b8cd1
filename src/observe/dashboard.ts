/**
 * pool.dashboard(): one local page that shows the pool at work, pushed by server-sent events. Routes:
 * `/` the page, `/events` the event stream (an `init` event, then one message per TICK_MS while any page
 * is connected), `/metrics` the same text as pool.serveMetrics().
 */
import type { ServerResponse } from 'node:http';
import { ConfigError } from '../errors.js';
import { isPlainObject } from '../options.js';
import { Feed, type FeedSource, TICK_MS } from './feed.js';
import { dashboardPage } from './page.js';
import { type MetricsSource, metricsRoute, type ObserveServer, type ServeOptions, serve } from './serve.js';

export interface DashboardOptions extends ServeOptions {
  /** The page's heading ('corral pool' unless given). */
  title?: string;
  /** Items the work will have in all, for the ETA: a number, or a function asked at every update. */
  total?: number | (() => number | undefined);
}

export interface DashboardServer extends ObserveServer {
  /** Pages connected now. */
  readonly clients: number;
}

export async function startDashboard(
  pool: FeedSource & MetricsSource,
  options: DashboardOptions | undefined,
): Promise<DashboardServer> {
  if (options !== undefined && !isPlainObject(options)) {
    throw new ConfigError('options', 'expected { port?, host?, title?, total? }');
  }
  const { title = 'corral pool', total, ...rest } = (options ?? {}) as DashboardOptions;
  if (typeof title !== 'string') throw new ConfigError('title', 'expected a string');
  if (total !== undefined && typeof total !== 'function' && !(typeof total === 'number' && total >= 0)) {
    throw new ConfigError('total', 'expected a number of items >= 0, or a function returning one');
  }
  const totalOf: () => number | undefined = typeof total === 'function' ? total : () => total;
  const feed = new Feed(pool, title, totalOf);
  const page = dashboardPage(title);
  const clients = new Set<ServerResponse>();
  /** Clients whose socket is full: they get a fresh init once it drains, instead of the ticks missed. */
  const lagging = new Set<ServerResponse>();
  let timer: NodeJS.Timeout | undefined;

  const send = (res: ServerResponse, text: string): void => {
    if (lagging.has(res)) return;
    if (!res.write(text)) {
      lagging.add(res);
      res.once('drain', () => {
        lagging.delete(res);
        send(res, `event: init\ndata: ${JSON.stringify(feed.init())}\n\n`);
      });
    }
  };
  const tick = (): void => {
    const t = feed.tick();
    const text = `data: ${JSON.stringify(t)}\n\n`;
    for (const res of clients) send(res, text);
    if (t.ended) stopTicking();
  };
  const stopTicking = (): void => {
    clearInterval(timer);
    timer = undefined;
  };

  const server = await serve(
    rest,
    [
      (_req, res, path) => {
        if (path !== '/') return false;
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(page);
        return true;
      },
      (req, res, path) => {
        if (path !== '/events') return false;
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-store',
          connection: 'keep-alive',
        });
        feed.start();
        clients.add(res);
        send(res, `retry: 1000\nevent: init\ndata: ${JSON.stringify(feed.init())}\n\n`);
        // One tick at once (for every page: ticks carry bars once): numbers before the first interval.
        tick();
        if (!timer && !feed.ended) {
          timer = setInterval(tick, TICK_MS);
          timer.unref();
        }
        req.on('close', () => {
          clients.delete(res);
          lagging.delete(res);
          if (clients.size === 0) {
            stopTicking();
            feed.pause();
          }
        });
        return true;
      },
      metricsRoute(pool),
    ],
    'dashboard',
  );
  return {
    url: server.url,
    host: server.host,
    port: server.port,
    get clients() {
      return clients.size;
    },
    async close() {
      stopTicking();
      feed.close();
      for (const res of clients) res.end();
      clients.clear();
      await server.close();
    },
  };
}
