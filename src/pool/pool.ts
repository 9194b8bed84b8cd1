import { EventEmitter } from 'node:events';
import { resolveBullmq } from '../backend/bullmq/options.js';
import { BullmqBackend } from '../backend/bullmq/producer.js';
import type { Backend } from '../backend/types.js';
import { emitSafely } from '../callback.js';
import type { WorkerExit } from '../errors.js';
import {
  AbortError,
  ConfigError,
  type CpuTimeLimitError,
  type MemoryLimitError,
  NotSupportedError,
  QueueFullError,
} from '../errors.js';
import { formatMetrics, type MetricsFormat } from '../metrics/exposition.js';
import type { UnitRecord } from '../metrics/meter.js';
import type { DashboardOptions, DashboardServer } from '../observe/dashboard.js';
import type { ObserveServer, ServeOptions } from '../observe/serve.js';
import { isPlainObject, parseChoice, parseCount } from '../options.js';
import { codecError, type Encoded, encodeArgs } from '../runtime/codec.js';
import { ownPool } from '../runtime/critical.js';
import { type TaskUsage, UNIT_USAGE, UnitMode } from '../runtime/protocol.js';
import {
  type AnyModule,
  CALL_OPTIONS,
  type CallOptions,
  type MapOptions,
  type MapTaskNames,
  type PoolOptions,
  resolveCallOptions,
  resolvePoolOptions,
  type StreamNames,
  type StreamOptions,
  type TaskArgs,
  type TaskItem,
  type TaskNames,
  type TaskResult,
  type TaskYield,
} from './config.js';
import { Dispatcher } from './dispatcher.js';
import type { PoolState } from './lifecycle.js';
import { MapJob } from './map.js';
import type { PoolMetrics } from './metrics.js';
import type { PoolStats } from './stats.js';
import { StreamJob } from './stream.js';
import { PromiseSink, Unit } from './unit.js';

const MAP_OPTIONS = [...CALL_OPTIONS, 'chunksize'] as const;
const STREAM_OPTIONS = CALL_OPTIONS.filter((o) => o !== 'retries' && o !== 'memoryHint');
/** Items a streamed task may run ahead of its consumer, unless the call says otherwise. */
const STREAM_WINDOW = 64;

/** One async method per task export: `await pool.proxy().square(3)`. */
export type PoolProxy<M> = {
  [K in TaskNames<M>]: (...args: TaskArgs<M, K>) => Promise<TaskResult<M, K>>;
};

export interface PoolEvents {
  workerStart: [info: { workerId: number; pid: number | undefined; threadId: number | undefined }];
  workerExit: [info: WorkerExit & { reason: string }];
  workerError: [error: Error];
  /** A task in a process worker left descriptors open (detectLeaks / recycle.onLeak). */
  leak: [info: { workerId: number; pid: number | undefined; task: string; fds: number }];
  /** A worker went over a limit; the task got this error. */
  breach: [error: MemoryLimitError | CpuTimeLimitError];
}

/** One worker's outcome of `pool.broadcast()`. */
export type BroadcastOutcome<R> =
  | { workerId: number; status: 'fulfilled'; value: R }
  | { workerId: number; status: 'rejected'; reason: Error };

/** A result with what its task cost: `pool.apply(name, args, { withUsage: true })`. */
export interface WithUsage<R> {
  result: R;
  usage: TaskUsage;
}

/**
 * A pool of workers running the exports of one task module, modelled on Python's
 * multiprocessing.Pool. `M` is the module's type (`typeof import('./tasks.js')`): it makes task
 * names, arguments and results type-checked.
 */
export class Pool<M = AnyModule> extends EventEmitter<PoolEvents> {
  private readonly backend: Backend;

  constructor(options: PoolOptions<M>) {
    super();
    // A worker that makes a pool of its own gives up rss stops in place (runtime/critical.ts).
    ownPool();
    const config = resolvePoolOptions(options);
    const remote = isPlainObject(options) ? (options as PoolOptions).backend : undefined;
    if (remote !== undefined) {
      if (!isPlainObject(remote) || Object.keys(remote).join() !== 'bullmq') {
        throw new ConfigError(
          'backend',
          "expected { bullmq: { connection: 'redis://host:6379', queue: 'name' } }",
        );
      }
      for (const key of ['lockDuration', 'stalledInterval']) {
        // How long a host's lock lasts and how often hosts check for lost jobs are the hosts' own
        // (BullMQ sets them per worker): accepted here they changed nothing.
        if (isPlainObject(remote.bullmq) && (remote.bullmq as Record<string, unknown>)[key] !== undefined) {
          throw new ConfigError(
            `backend.bullmq.${key}`,
            `a setting of the hosts, not of a pool: pass it to corral worker (--lock-duration, --stalled-interval)`,
          );
        }
      }
      this.backend = new BullmqBackend(config, resolveBullmq(remote.bullmq));
      return;
    }
    this.backend = new Dispatcher(config, {
      workerStart: (info) => emitSafely(this, 'workerStart', info),
      workerExit: (info) => emitSafely(this, 'workerExit', info),
      workerError: (error) => emitSafely(this, 'workerError', error),
      leak: (info) => emitSafely(this, 'leak', info),
      breach: (error) => emitSafely(this, 'breach', error),
    });
  }

  /** Runs one task: `await pool.apply('square', [3])`. */
  apply<K extends TaskNames<M>>(
    name: K,
    args: TaskArgs<M, K>,
    options?: CallOptions,
  ): Promise<TaskResult<M, K>> {
    const d = this.backend;
    let call: ReturnType<typeof resolveCallOptions>;
    let encoded: Encoded;
    try {
      this.checkCall('apply', name, args);
      const refusal = d.refusal() ?? (d.hasRoom ? undefined : new QueueFullError(d.config.maxQueue));
      if (refusal) throw refusal;
      call = resolveCallOptions(options, d.config);
      encoded = this.encode(name, args);
    } catch (error) {
      return Promise.reject(error);
    }
    const { signal } = call;
    if (signal?.aborted) return Promise.reject(new AbortError(name, signal.reason));
    return new Promise<TaskResult<M, K>>((resolve, reject) => {
      const sink = new PromiseSink(resolve as (value: unknown) => void, reject, call.listeners);
      const unit = new Unit(
        name,
        UnitMode.Apply,
        encoded.payload,
        1,
        sink,
        call.timeout,
        call.retries,
        signal,
      );
      unit.flags = encoded.flags;
      unit.memoryHint = call.memoryHint;
      unit.priority = call.priority;
      unit.key = call.key;
      if (call.withUsage) {
        unit.wantUsage = true;
        unit.flags |= UNIT_USAGE;
      }
      d.submit(unit);
    });
  }

  /** Like Python's Pool.map: every result, in input order. Rejects with the first failure. */
  async map<K extends MapTaskNames<M>>(
    name: K,
    items: Iterable<TaskItem<M, K>> | AsyncIterable<TaskItem<M, K>>,
    options?: MapOptions,
  ): Promise<TaskResult<M, K>[]> {
    return (await this.job(name, items, options, UnitMode.Map, true).collect()) as TaskResult<M, K>[];
  }

  /** Like Python's Pool.starmap: each item is spread as the task's arguments. */
  async starmap<K extends TaskNames<M>>(
    name: K,
    items: Iterable<TaskArgs<M, K>> | AsyncIterable<TaskArgs<M, K>>,
    options?: MapOptions,
  ): Promise<TaskResult<M, K>[]> {
    return (await this.job(name, items, options, UnitMode.Starmap, true).collect()) as TaskResult<M, K>[];
  }

  /** Results in input order, lazily: input is read only as far as the consumer keeps up. */
  imap<K extends MapTaskNames<M>>(
    name: K,
    items: Iterable<TaskItem<M, K>> | AsyncIterable<TaskItem<M, K>>,
    options?: MapOptions,
  ): AsyncIterableIterator<TaskResult<M, K>> {
    return this.job(name, items, options, UnitMode.Map, true) as AsyncIterableIterator<TaskResult<M, K>>;
  }

  /** Results as they complete: a slow item never holds back the others. */
  imapUnordered<K extends MapTaskNames<M>>(
    name: K,
    items: Iterable<TaskItem<M, K>> | AsyncIterable<TaskItem<M, K>>,
    options?: MapOptions,
  ): AsyncIterableIterator<TaskResult<M, K>> {
    return this.job(name, items, options, UnitMode.Map, false) as AsyncIterableIterator<TaskResult<M, K>>;
  }

  private job(
    name: string,
    items: unknown,
    options: MapOptions | undefined,
    mode: UnitMode.Map | UnitMode.Starmap,
    ordered: boolean,
  ): MapJob {
    if (typeof name !== 'string') throw new ConfigError('name', 'expected the name of a task');
    if (
      items === null ||
      typeof items !== 'object' ||
      !(Symbol.iterator in items || Symbol.asyncIterator in items)
    ) {
      throw new ConfigError('items', 'expected an array, an iterable or an async iterable of task inputs');
    }
    const refusal = this.backend.refusal();
    if (refusal) throw refusal;
    const call = resolveCallOptions(options, this.backend.config, MAP_OPTIONS);
    const chunksize = parseChunksize(isPlainObject(options) ? options.chunksize : undefined);
    return new MapJob(this.backend, {
      name,
      mode,
      source: items as Iterable<unknown>,
      chunksize,
      ordered,
      call,
    });
  }

  /**
   * Runs a generator export and yields its items as they come, with back pressure: the task runs at
   * most `window` items (default 64) ahead of this loop. `for await (const row of pool.stream('rows',
   * [file])) {}`. Breaking out cancels the task; its worker's death ends the loop with the typed error
   * after every item yielded before it. Streams are never retried.
   */
  stream<K extends StreamNames<M>>(
    name: K,
    args: TaskArgs<M, K>,
    options?: StreamOptions,
  ): AsyncIterableIterator<TaskYield<M, K>> {
    const b = this.backend;
    this.checkCall('stream', name, args);
    if (!b.credit) {
      throw new NotSupportedError(
        'pool.stream()',
        "not there yet on this pool's backend; use apply() or map()",
      );
    }
    const refusal = b.refusal() ?? (b.hasRoom ? undefined : new QueueFullError(b.config.maxQueue));
    if (refusal) throw refusal;
    const rest = isPlainObject(options) ? { ...options } : options;
    const window =
      isPlainObject(rest) && rest.window !== undefined ? parseCount('window', rest.window, 1) : STREAM_WINDOW;
    if (isPlainObject(rest)) delete rest.window;
    const call = resolveCallOptions(rest, b.config, STREAM_OPTIONS);
    if (call.signal?.aborted)
      return StreamJob.aborted(name, call.signal) as AsyncIterableIterator<TaskYield<M, K>>;
    const encoded = this.encode(name, args);
    const job = new StreamJob(b, window, call);
    const unit = new Unit(
      name,
      UnitMode.Stream,
      [window, encoded.payload],
      1,
      job,
      call.timeout,
      0,
      call.signal,
    );
    unit.flags = encoded.flags;
    unit.priority = call.priority;
    unit.key = call.key;
    job.unit = unit;
    b.submit(unit);
    return job as AsyncIterableIterator<TaskYield<M, K>>;
  }

  /**
   * Runs a task once on every live worker (a starting one included), e.g. to reload a cache, and
   * settles with one outcome per worker, as Promise.allSettled does: `{ workerId, status: 'fulfilled',
   * value }` or `{ workerId, status: 'rejected', reason }` (a worker that ends first: WorkerCrashedError).
   * Never retried, never moved to another worker; workers started later do not run it (use
   * `initializer` for what every worker must do).
   */
  async broadcast<K extends TaskNames<M>>(
    name: K,
    args: TaskArgs<M, K>,
    options?: Pick<CallOptions, 'signal' | 'timeout'>,
  ): Promise<BroadcastOutcome<TaskResult<M, K>>[]> {
    const b = this.backend;
    if (typeof name !== 'string') throw new ConfigError('name', 'expected the name of a task');
    if (!Array.isArray(args))
      throw new ConfigError('args', `expected an array of arguments for task '${name}'`);
    if (!(b instanceof Dispatcher)) {
      throw new NotSupportedError(
        'pool.broadcast()',
        "this pool's backend has no workers of its own to broadcast to",
      );
    }
    const refusal = b.refusal();
    if (refusal) throw refusal;
    const call = resolveCallOptions(options, b.config, ['signal', 'timeout']);
    const encoded = this.encode(name, args);
    const outcomes: Promise<BroadcastOutcome<TaskResult<M, K>>>[] = [];
    b.broadcast((w) => {
      let sink!: PromiseSink;
      outcomes.push(
        new Promise<unknown>((resolve, reject) => {
          sink = new PromiseSink(resolve, reject);
        }).then(
          (value) => ({ workerId: w.id, status: 'fulfilled' as const, value: value as TaskResult<M, K> }),
          (reason: Error) => ({ workerId: w.id, status: 'rejected' as const, reason }),
        ),
      );
      const unit = new Unit(name, UnitMode.Apply, encoded.payload, 1, sink, call.timeout, 0, call.signal);
      unit.flags = encoded.flags;
      return unit;
    });
    return Promise.all(outcomes);
  }

  /** A call's task name and argument list, checked: a ConfigError says what to pass instead. */
  private checkCall(method: string, name: unknown, args: unknown): void {
    if (typeof name !== 'string') {
      throw new ConfigError('name', 'expected the name of a task (an export of the task module)');
    }
    if (!Array.isArray(args)) {
      throw new ConfigError(
        'args',
        `expected an array of arguments for task '${name}', e.g. pool.${method}('${name}', [x])`,
      );
    }
  }

  /** The arguments with their handles encoded for the backend (one codec stage, one error policy). */
  private encode(name: string, args: unknown[]): Encoded {
    try {
      return encodeArgs(args, this.backend.config.runtime);
    } catch (error) {
      throw codecError(name, 'arguments', error);
    }
  }

  /** An object with one async method per task export. */
  proxy(): PoolProxy<M> {
    return new Proxy({} as PoolProxy<M>, {
      get: (_target, key) => {
        if (typeof key !== 'string' || key === 'then') return undefined;
        return (...args: unknown[]) => this.apply(key as TaskNames<M>, args as TaskArgs<M, TaskNames<M>>);
      },
    });
  }

  /**
   * What the pool measured, typed: per task the queue wait and run time histograms (p50/p90/p99/max
   * and OpenMetrics buckets), counts of completions, failures, retries, timeouts, crashes, breaches and
   * recycles, each worker's utilization, memory and limits, and one sample a second of the last ten
   * minutes (started by the first call).
   */
  metrics(): PoolMetrics {
    return this.backend.metrics();
  }

  /**
   * pool.metrics() as text for a Prometheus scrape: OpenMetrics 1.0 (the default; serve it as
   * OPENMETRICS_CONTENT_TYPE) or `{ format: 'prometheus' }`, the text format 0.0.4
   * (PROMETHEUS_CONTENT_TYPE). Families: corral_task_wait_seconds and corral_task_run_seconds
   * (histograms by task), corral_worker_rss_bytes and the other per-worker gauges, `_total` counters.
   */
  metricsText(options?: { format?: MetricsFormat }): string {
    const format = isPlainObject(options)
      ? parseChoice('format', options.format ?? 'openmetrics', ['openmetrics', 'prometheus'] as const)
      : 'openmetrics';
    return formatMetrics(this.metrics(), format);
  }

  /**
   * Serves metricsText() at http://127.0.0.1:PORT/metrics for Prometheus to scrape (OpenMetrics when the
   * scraper asks for it, else the 0.0.4 text). `port` 0 (the default) takes a free one: see `url`. Only
   * loopback unless `host` says otherwise; it never keeps the process alive; `close()` stops it.
   */
  async serveMetrics(options?: ServeOptions): Promise<ObserveServer> {
    const { metricsRoute, serve } = await import('../observe/serve.js');
    return serve(options, [metricsRoute(this)], 'metrics endpoint');
  }

  /**
   * Serves a live dashboard of the pool at http://127.0.0.1:PORT/: one lane per worker with each task
   * a bar (failures in colour), memory per worker against its limits, throughput and ETA (give `total`
   * items for it), breaches, recycles and crashes as they happen; `/metrics` beside it. `port` 0 (the
   * default) takes a free one: see `url`. Loopback only unless `host` says otherwise; nothing is
   * loaded from elsewhere; it never keeps the process alive; `close()` stops it.
   */
  async dashboard(options?: DashboardOptions): Promise<DashboardServer> {
    const { startDashboard } = await import('../observe/dashboard.js');
    return startDashboard(this, options);
  }

  /**
   * The task stream: calls `listener` with every unit (an apply call, a map chunk) that ends from now
   * on: its worker, task, items, start and end (performance.now() ms) and outcome. Returns the function
   * that stops it. Costs nothing while nobody follows; the dashboard is built on it.
   */
  follow(listener: (unit: UnitRecord) => void): () => void {
    if (typeof listener !== 'function') throw new ConfigError('listener', 'expected a function');
    const { backend } = this;
    if (!backend.follow) throw new ConfigError('follow', "this pool's backend has no task stream");
    return backend.follow(listener);
  }

  stats(): PoolStats {
    return this.backend.stats();
  }

  /** Finishes queued and running work, then stops the workers. New work is refused. */
  close(): Promise<void> {
    return this.backend.close();
  }

  /** The pool's state: 'open', 'closing', 'closed', 'terminated' or 'broken' (its workers cannot start). */
  get state(): PoolState {
    return this.backend.state;
  }

  /** Stops now: queued and running tasks reject with PoolClosedError. */
  terminate(): Promise<void> {
    return this.backend.terminate();
  }

  /** `await using pool = new Pool(...)` closes it: finishes the work, unlike Python's terminate(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function parseChunksize(value: unknown): number | 'auto' {
  if (value === undefined) return 'auto';
  if (value === 'auto') return value;
  if (typeof value === 'string') return parseChoice('chunksize', value, ['auto'] as const);
  return parseCount('chunksize', value, 1);
}
