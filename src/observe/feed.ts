/**
 * What the dashboard page is sent: the task stream folded into bars per worker lane, memory per worker,
 * counters, throughput and ETA, and breaches, recycles and crashes as they happen.
 *
 * It must keep up with 100k units a second without slowing the pool: a unit costs one Map lookup and
 * a few field writes (tiny units fold into the bar open on their worker), and the page gets at most
 * TICK_MS worth of bars per message. Units are followed only while a page is connected; with none,
 * only worker events are kept (rare), and the memory history comes from pool.metrics().series.
 */
import type { UnitOutcome, UnitRecord } from '../metrics/meter.js';
import type { MetricsSample, PoolMetrics } from '../pool/metrics.js';

/** One message every TICK_MS while a page is connected. */
export const TICK_MS = 100;
/**
 * A bar stays open for the next unit of its worker and task until it is this long (shorter ones are
 * ~1 px).
 */
const BAR_MS = 40;
/** Bars a lane sends per tick at most; past it, units fold into the last one whatever their outcome. */
const BARS_PER_TICK = 40;
/** History a page gets when it connects. */
const KEEP_BARS_MS = 60_000;
const KEEP_EVENTS = 500;
/** Throughput is measured over this many ticks. */
const RATE_TICKS = 20;

/** [workerId, start, end, units, items, failed units, outcome of the last failed one (or 'ok'), task] */
export type BarFrame = [number, number, number, number, number, number, UnitOutcome, string];

export interface FeedEvent {
  /** ms on the feed's clock (see `origin`). */
  t: number;
  kind: 'breach' | 'recycle' | 'crash' | 'exit' | 'start';
  workerId: number;
  text: string;
}

/** What the feed needs of a pool: its public API (pool.ts). */
export interface FeedSource {
  follow(listener: (unit: UnitRecord) => void): () => void;
  metrics(): PoolMetrics;
  readonly state: string;
  on(event: 'breach', fn: (error: BreachLike) => void): unknown;
  on(event: 'workerExit', fn: (info: ExitLike) => void): unknown;
  on(event: 'workerStart', fn: (info: { workerId: number; pid: number | undefined }) => void): unknown;
  off(event: string, fn: (...args: never[]) => void): unknown;
}

interface BreachLike {
  message: string;
  workerId: number;
  kind?: string;
  limit?: number;
  observed?: number | undefined;
}

interface ExitLike {
  workerId: number;
  reason: string;
  signal: string | null;
  exitCode: number | null;
}

/**
 * What a worker's exit was, by the reason the pool gave (pool/worker.ts describeCause, workers.ts
 * deathReason): a death of its own, a recycle (the thresholds of `recycle`, maxTasksPerWorker, the
 * memory budget), or another end (idle, the stop after a breach, whose marker is the breach's own).
 */
function exitKind(reason: string): FeedEvent['kind'] {
  if (reason === 'crashed') return 'crash';
  return /above recycle|leaked|maxTasksPerWorker|memory budget/.test(reason) ? 'recycle' : 'exit';
}

class Lane {
  open: BarFrame | undefined = undefined;
  closed: BarFrame[] = [];
  private lastEnd = -Infinity;

  /** `origin`: the feed's zero on the performance.now() clock of the unit's times. */
  add(u: UnitRecord, origin: number): void {
    const bad = u.outcome !== 'ok';
    let start = u.start - origin;
    const end = u.end - origin;
    // A worker's death logs its unit from the worker's start (when the unit started is not known
    // there); it began after the last unit this lane saw end.
    if ((u.outcome === 'crash' || u.outcome === 'breach') && start < this.lastEnd) start = this.lastEnd;
    if (end > this.lastEnd) this.lastEnd = end;
    const b = this.open;
    if (b !== undefined) {
      const fits = b[2] - b[1] < BAR_MS && b[7] === u.task && (bad ? b[6] === u.outcome : b[5] === 0);
      if (fits || this.closed.length >= BARS_PER_TICK) {
        if (end > b[2]) b[2] = end;
        if (start < b[1]) b[1] = start;
        b[3]++;
        b[4] += u.items;
        if (bad) {
          b[5]++;
          b[6] = u.outcome;
        }
        return;
      }
      this.closed.push(b);
    }
    this.open = [u.workerId, start, end, 1, u.items, bad ? 1 : 0, u.outcome, u.task];
  }

  take(): BarFrame[] {
    if (this.open) this.closed.push(this.open);
    this.open = undefined;
    const bars = this.closed;
    this.closed = [];
    return bars;
  }
}

export interface Tick {
  t: number;
  bars: BarFrame[];
  /** [workerId, rss (null: not measured), heapUsed] */
  mem: [number, number | null, number][];
  /** Resident memory of the pool's own process (thread workers live in it). */
  procRss: number;
  stats: {
    queued: number;
    running: number;
    completed: number;
    failed: number;
    items: number;
    /** Items a second over the last two seconds. */
    rate: number;
    /** Seconds left: from `total` when known, else until the queue is empty; null when unknown. */
    eta: number | null;
    total: number | null;
    breaches: number;
    recycles: number;
    crashes: number;
    retries: number;
    timeouts: number;
  };
  /** [id, state, pid (null for threads), 1 for the warm spare (runs no work until promoted) else 0] */
  workers: [number, string, number | null, 0 | 1][];
  events: FeedEvent[];
  /** The pool is closed or terminated: no more ticks come. */
  ended: boolean;
}

export interface Init {
  /** performance.now() of the pool's process at the feed's zero, and Date.now() then. */
  origin: number;
  wallOrigin: number;
  title: string;
  limits: { heap: number | null; rss: number | null; budget: number | null };
  /** Once-a-second memory history (pool.metrics().series) on the feed's clock. */
  series: { t: number; workers: [number, number | null, number][] }[];
  bars: BarFrame[];
  events: FeedEvent[];
}

export class Feed {
  readonly origin = performance.now();
  readonly wallOrigin = Date.now();
  private readonly lanes = new Map<number, Lane>();
  private readonly history: BarFrame[] = [];
  private readonly events: FeedEvent[] = [];
  private newEvents: FeedEvent[] = [];
  private unfollow: (() => void) | undefined;
  private readonly rates: [t: number, items: number][] = [];
  private readonly onBreach: (e: BreachLike) => void;
  private readonly onExit: (e: ExitLike) => void;
  private readonly onStart: (e: { workerId: number; pid: number | undefined }) => void;

  constructor(
    private readonly pool: FeedSource,
    readonly title: string,
    private readonly total: () => number | undefined,
  ) {
    this.onBreach = (e) => this.event('breach', e.workerId, e.message);
    this.onExit = (e) => {
      if (e.reason === 'pool closed' || e.reason === 'pool terminated') return;
      const how = e.signal ? `signal ${e.signal}` : `code ${e.exitCode}`;
      this.event(exitKind(e.reason), e.workerId, `worker ${e.workerId} ended (${e.reason}, ${how})`);
    };
    this.onStart = (e) =>
      this.event('start', e.workerId, `worker ${e.workerId} started${e.pid ? ` (pid ${e.pid})` : ''}`);
    pool.on('breach', this.onBreach);
    pool.on('workerExit', this.onExit);
    pool.on('workerStart', this.onStart);
  }

  /** The pool is closed or terminated. */
  get ended(): boolean {
    return this.pool.state !== 'open' && this.pool.state !== 'closing';
  }

  private now(): number {
    return performance.now() - this.origin;
  }

  private event(kind: FeedEvent['kind'], workerId: number, text: string): void {
    const e: FeedEvent = { t: this.now(), kind, workerId, text };
    this.events.push(e);
    if (this.events.length > KEEP_EVENTS) this.events.shift();
    if (this.unfollow) this.newEvents.push(e);
  }

  /** Units are folded into bars from now on (a page connected). */
  start(): void {
    if (this.unfollow) return;
    const origin = this.origin;
    const lanes = this.lanes;
    this.unfollow = this.pool.follow((u) => {
      let lane = lanes.get(u.workerId);
      if (lane === undefined) {
        lane = new Lane();
        lanes.set(u.workerId, lane);
      }
      lane.add(u, origin);
    });
  }

  /** No page is connected any more: units are no longer followed. */
  pause(): void {
    this.unfollow?.();
    this.unfollow = undefined;
    this.lanes.clear();
    this.newEvents = [];
  }

  close(): void {
    this.pause();
    this.pool.off('breach', this.onBreach);
    this.pool.off('workerExit', this.onExit);
    this.pool.off('workerStart', this.onStart);
  }

  init(): Init {
    const m = this.pool.metrics();
    const w = m.workers[0];
    const cut = this.now() - KEEP_BARS_MS;
    while (this.history.length > 0 && this.history[0]![2] < cut) this.history.shift();
    return {
      origin: this.origin,
      wallOrigin: this.wallOrigin,
      title: this.title,
      limits: { heap: w?.heapLimit ?? null, rss: w?.rssLimit ?? null, budget: m.memory.budget ?? null },
      series: m.series.map((s: MetricsSample) => ({
        t: s.at - this.wallOrigin,
        workers: s.workers.map((x): [number, number | null, number] => [x.id, x.rss ?? null, x.heapUsed]),
      })),
      bars: [...this.history],
      events: [...this.events],
    };
  }

  tick(): Tick {
    const t = this.now();
    const bars: BarFrame[] = [];
    for (const lane of this.lanes.values()) for (const b of lane.take()) bars.push(b);
    for (const b of bars) this.history.push(b);
    if (this.history.length > 20_000) this.history.splice(0, this.history.length - 20_000);
    const m = this.pool.metrics();
    let items = 0;
    for (const task of Object.values(m.tasks)) items += task.items;
    this.rates.push([t, items]);
    if (this.rates.length > RATE_TICKS) this.rates.shift();
    const [t0, i0] = this.rates[0]!;
    const rate = t > t0 ? ((items - i0) / (t - t0)) * 1000 : 0;
    const total = this.total();
    let eta: number | null = null;
    if (rate > 0) {
      if (total !== undefined) eta = Math.max(0, total - items) / rate;
      else if (m.queued + m.running > 0) {
        const unitRate = rate / Math.max(1, items / Math.max(1, m.completed + m.failed));
        eta = (m.queued + m.running) / unitRate;
      } else eta = 0;
    }
    const events = this.newEvents;
    this.newEvents = [];
    return {
      t,
      bars,
      mem: m.workers.map((w) => [w.id, w.rss ?? null, w.heapUsed]),
      procRss: process.memoryUsage.rss(),
      stats: {
        queued: m.queued,
        running: m.running,
        completed: m.completed,
        failed: m.failed,
        items,
        rate,
        eta,
        total: total ?? null,
        breaches: m.breaches,
        recycles: m.recycles,
        crashes: m.crashes,
        retries: m.retries,
        timeouts: m.timeouts,
      },
      workers: m.workers.map((w) => [w.id, w.state, w.pid ?? null, w.spare ? 1 : 0]),
      events,
      ended: this.ended,
    };
  }
}
