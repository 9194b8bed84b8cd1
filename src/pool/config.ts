import type { BullmqOptions } from '../backend/bullmq/options.js';
import { ConfigError, NativeUnavailableError } from '../errors.js';
import {
  type LimitsOptions,
  PROCESS_ONLY,
  type RecycleOptions,
  type ResolvedLimits,
  type ResolvedRecycle,
  resolveBudget,
  resolveLimits,
  resolveRecycle,
} from '../limits/limits.js';
import { cpuCount, ioPoolSize } from '../limits/system.js';
import { nativeStatus } from '../native/index.js';
import {
  checkKnownKeys,
  isPlainObject,
  parseChoice,
  parseCount,
  parseDuration,
  parseSize,
  resolveModule,
} from '../options.js';
import type { RuntimeKind } from '../runtime/types.js';
import type { CallListeners } from './unit.js';

/**
 * A pool of more workers than this is a mistake, not a plan: each starts a V8 isolate (a thread's
 * reserves its own code range), and workers: 1e9 died in the constructor with a V8 fatal OOM.
 */
export const MAX_WORKERS = 4096;

/** Functions exported by a task module, by name. */
export type TaskFunction = (...args: never[]) => unknown;
export type TaskNames<M> = { [K in keyof M]: M[K] extends TaskFunction ? K : never }[keyof M] & string;
export type TaskArgs<M, K extends keyof M> = M[K] extends (...args: infer A) => unknown ? A : never;
export type TaskResult<M, K extends keyof M> = M[K] extends (...args: never[]) => infer R
  ? Awaited<R>
  : never;
/** What a generator task yields: the items pool.stream() gives. */
export type TaskYield<M, K extends keyof M> = M[K] extends (...args: never[]) => infer R
  ? unknown extends R
    ? unknown
    : R extends AsyncIterable<infer Y> | Iterable<infer Y>
      ? Y
      : never
  : never;
/** The tasks pool.stream() can run: exports that return an iterator (generator functions). */
export type StreamNames<M> = {
  [K in keyof M]: M[K] extends (...args: never[]) => infer R
    ? unknown extends R
      ? K
      : R extends AsyncIterable<unknown> | Iterable<unknown>
        ? K
        : never
    : never;
}[keyof M] &
  string;

/** Options of pool.stream(): a call's, with `window` (items the task may run ahead; default 64). */
export interface StreamOptions extends Omit<CallOptions, 'retries' | 'memoryHint'> {
  window?: number;
}

/** The first parameter of a task: what map() passes for each item. */
export type TaskItem<M, K extends keyof M> = TaskArgs<M, K> extends readonly [] ? never : TaskArgs<M, K>[0];
/**
 * The tasks map()/imap()/imapUnordered() can call with one item each: one required parameter
 * (optional ones after it keep their defaults). A task of two or more takes each item spread as its
 * arguments: that is starmap().
 */
export type MapTaskNames<M> = {
  [K in TaskNames<M>]: TaskArgs<M, K> extends readonly [unknown, unknown, ...unknown[]]
    ? never
    : 1 extends TaskArgs<M, K>['length']
      ? K
      : never;
}[TaskNames<M>];
/** What an untyped Pool assumes: any export name, unknown arguments and results. */
export type AnyModule = Record<string, (...args: unknown[]) => unknown>;
/**
 * A duration: milliseconds as a number, Infinity (or 'Infinity') for no limit, or a number with a
 * unit, e.g. '500ms', '30s', '2m', '1h', '7d'.
 */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}` | 'Infinity';

export interface PoolOptions<M = AnyModule> {
  /** The task module: its function exports are the tasks. Path or file URL; .js, .mjs, .cjs (.ts where Node runs it). */
  module: string | URL;
  /** 'thread' (worker_threads), 'process' (child processes) or 'auto' (threads unless a feature needs processes). */
  runtime?: 'thread' | 'process' | 'auto';
  /**
   * How many workers: a number, 'auto' (cpuCount() for kind 'cpu', 2 x cpuCount() for kind 'io'), or
   * elastic, `{ min, max }`: min start, more start while work waits that the live ones cannot take (up
   * to max, and never past memoryBudget), and idle ones above min retire after idleTimeout (default 10s).
   */
  workers?: number | 'auto' | { min: number; max: number | 'auto' };
  /** 'cpu' (default): one task at a time per worker. 'io': several at once per worker (see concurrency). */
  kind?: 'cpu' | 'io';
  /** Tasks a worker runs at once: 1 for kind 'cpu', 8 for kind 'io' unless given. */
  concurrency?: number;
  /**
   * Longest a task may run (per item for map chunks): ms, '30s', or Infinity (the default: none). Past it
   * the call rejects with TaskTimeoutError and the task's signal aborts (see corral/task); its worker is
   * stopped only if the task has not returned within cancelGrace.
   */
  taskTimeout?: Duration;
  /**
   * How long a timed-out or aborted task may take to return after its signal aborted, before its worker
   * is stopped (default 1s; 0 stops it at once). Tasks sharing the worker (kind 'io') are never stopped
   * with it: the worker takes no new work and stops once they are done.
   */
  cancelGrace?: Duration;
  /** How long a queued call waits for its priority to rise by one (default '1s'; Infinity: no aging). */
  priorityAging?: Duration;
  /**
   * Workers a task's input may kill (crashes and breaches while it runs) before it is quarantined:
   * not retried again, failed with PoisonTaskError and its crash history. Default 2; Infinity: never.
   */
  poisonAfter?: number;
  /** Most tasks waiting for a worker; past it apply() rejects with QueueFullError and imap stops reading. */
  maxQueue?: number;
  /** Replace a worker after it ran this many tasks (a map chunk counts as one, as in Python). */
  maxTasksPerWorker?: number;
  /** Times a failed task is run again (crash, timeout or throw). Default 0: re-running must be opted into. */
  retries?: number;
  /** An export run once in each worker before its first task, like Python's initializer. */
  initializer?: TaskNames<M>;
  initArgs?: unknown[];
  /**
   * An export run once in a worker that retires in good order (idle, recycled, pool closed), before it
   * exits: release what the initializer took. Not run when a worker crashes or is killed.
   */
  teardown?: TaskNames<M>;
  /** How long a worker told to stop (teardown included) may take before it is killed. Default 5s. */
  stopTimeout?: Duration;
  /**
   * Keep what each task writes to stdout and stderr (the last 16 KiB) and put it on its error
   * (`error.output`) when it fails. Still written to the terminal too. Exact per task for kind 'cpu';
   * with kind 'io' a task's output may hold its neighbours' lines.
   */
  captureOutput?: boolean;
  /** A worker idle this long exits; a new one starts when work arrives. Default: never. */
  idleTimeout?: Duration;
  /** Node flags for workers (default none). */
  execArgv?: string[];
  /** Environment of process workers (threads share the parent's). */
  env?: NodeJS.ProcessEnv;
  /** Per-worker limits; all but heap need process workers (runtime 'auto' then picks processes). */
  limits?: LimitsOptions;
  /** Retire workers between tasks when they grow or leak. */
  recycle?: RecycleOptions;
  /** Keep parent + workers' RSS under this: a size, or 'auto' (80% of the cgroup limit, else of available memory). */
  memoryBudget?: number | string;
  /** Count descriptors before and after each task in process workers and report leaks ('leak' event). */
  detectLeaks?: boolean;
  /**
   * Where tasks run: on this machine (the default), or `{ bullmq: { connection, queue } }`: on the
   * `corral worker` hosts serving that queue through Redis (see BullmqOptions).
   */
  backend?: { bullmq: BullmqOptions };
}

export interface PoolConfig {
  module: string;
  runtime: RuntimeKind;
  workers: number;
  kind: 'cpu' | 'io';
  concurrency: number;
  taskTimeout: number;
  cancelGrace: number;
  priorityAging: number;
  poisonAfter: number;
  maxQueue: number;
  maxTasksPerWorker: number;
  retries: number;
  initializer: string | undefined;
  teardown: string | undefined;
  stopTimeout: number;
  captureOutput: boolean;
  /** Fewest workers kept alive (elastic pools); `workers` is the most. */
  minWorkers: number;
  initArgs: unknown[];
  idleTimeout: number;
  execArgv: string[];
  env: NodeJS.ProcessEnv | undefined;
  limits: ResolvedLimits;
  recycle: ResolvedRecycle;
  memoryBudget: number | undefined;
  detectLeaks: boolean;
}

const KNOWN = [
  'module',
  'runtime',
  'workers',
  'kind',
  'concurrency',
  'taskTimeout',
  'cancelGrace',
  'priorityAging',
  'poisonAfter',
  'maxQueue',
  'maxTasksPerWorker',
  'retries',
  'initializer',
  'teardown',
  'stopTimeout',
  'captureOutput',
  'initArgs',
  'idleTimeout',
  'execArgv',
  'env',
  'limits',
  'recycle',
  'memoryBudget',
  'detectLeaks',
  'backend',
] as const;

export function resolvePoolOptions(options: unknown): PoolConfig {
  if (!isPlainObject(options)) {
    throw new ConfigError(
      'options',
      "expected an object like { module: new URL('./tasks.js', import.meta.url) }",
    );
  }
  checkKnownKeys('options', options, KNOWN);
  const o = options as unknown as PoolOptions;
  const kind = o.kind === undefined ? 'cpu' : parseChoice('kind', o.kind, ['cpu', 'io'] as const);
  const runtime =
    o.runtime === undefined
      ? 'auto'
      : parseChoice('runtime', o.runtime, ['thread', 'process', 'auto'] as const);
  // The CPU probe (and CORRAL_CPU_COUNT) matters only when the pool sizes itself.
  const auto = (): number => (kind === 'cpu' ? cpuCount() : ioPoolSize(cpuCount()));
  let workers: number;
  let minWorkers: number;
  if (isPlainObject(o.workers)) {
    checkKnownKeys('workers', o.workers, ['min', 'max']);
    const { min, max } = o.workers as { min: unknown; max: unknown };
    workers = max === 'auto' ? auto() : parseCount('workers.max', max, 1);
    minWorkers = parseCount('workers.min', min, 0);
    if (minWorkers > workers) {
      throw new ConfigError('workers.min', `must be at most workers.max (${workers}); got ${minWorkers}`);
    }
  } else {
    workers = o.workers === undefined || o.workers === 'auto' ? auto() : parseCount('workers', o.workers, 1);
    minWorkers = workers;
  }
  if (workers > MAX_WORKERS) {
    throw new ConfigError(
      isPlainObject(o.workers) ? 'workers.max' : 'workers',
      `at most ${MAX_WORKERS} workers (each is a thread or process with its own V8 heap; ${workers} would run the machine out of memory before the first task); for many concurrent I/O tasks per worker, use 'concurrency'`,
    );
  }
  if (o.initArgs !== undefined && !Array.isArray(o.initArgs)) {
    throw new ConfigError('initArgs', 'expected an array of arguments for the initializer');
  }
  for (const hook of ['initializer', 'teardown'] as const) {
    const name = o[hook];
    if (name !== undefined && (typeof name !== 'string' || name === '')) {
      throw new ConfigError(hook, 'expected the name of a function exported by the task module');
    }
  }
  if (o.captureOutput !== undefined && typeof o.captureOutput !== 'boolean') {
    throw new ConfigError('captureOutput', 'expected true or false');
  }
  if (
    o.execArgv !== undefined &&
    !(Array.isArray(o.execArgv) && o.execArgv.every((a) => typeof a === 'string'))
  ) {
    throw new ConfigError('execArgv', 'expected an array of strings (Node flags)');
  }
  if (o.env !== undefined && !isPlainObject(o.env)) {
    throw new ConfigError('env', 'expected an object of environment variables');
  }
  const limits = resolveLimits(o.limits);
  const maxTasksPerWorker =
    o.maxTasksPerWorker === undefined
      ? Infinity
      : parseCount('maxTasksPerWorker', o.maxTasksPerWorker, 1, true);
  const recycle = resolveRecycle(o.recycle, maxTasksPerWorker);
  if (o.detectLeaks !== undefined && typeof o.detectLeaks !== 'boolean') {
    throw new ConfigError('detectLeaks', 'expected true or false');
  }
  const detectLeaks = o.detectLeaks ?? recycle.onLeak;
  const needsProcess: string[] = PROCESS_ONLY.filter((k) => limits[k] !== undefined).map(
    (k) => `limits.${k}`,
  );
  if (detectLeaks) needsProcess.push(o.detectLeaks ? 'detectLeaks' : 'recycle.onLeak');
  if (recycle.whenRssAbove !== undefined) needsProcess.push('recycle.whenRssAbove');
  if (runtime === 'thread' && needsProcess.length > 0) {
    throw new ConfigError(
      needsProcess.join(', '),
      "needs runtime 'process': threads share one process, its memory, descriptors and rlimits, so no " +
        "per-thread bound exists. Use runtime 'process' or 'auto', or only limits.heap with threads.",
    );
  }
  // Worker RSS and descriptor counts are read from /proc: elsewhere these would be accepted and
  // never act, so they are refused like an rlimit without its addon.
  const needsProc = [
    ...(limits.rss !== undefined ? ['limits.rss'] : []),
    ...(recycle.whenRssAbove !== undefined ? ['recycle.whenRssAbove'] : []),
    ...(o.memoryBudget !== undefined ? ['memoryBudget'] : []),
    ...(detectLeaks ? [o.detectLeaks ? 'detectLeaks' : 'recycle.onLeak'] : []),
  ];
  if (needsProc.length > 0 && process.platform !== 'linux') {
    throw new NativeUnavailableError(
      needsProc.join(', '),
      `corral reads worker memory and descriptors from /proc, which only Linux has (this is ` +
        `${process.platform}). Fix: use limits.heap and recycle.whenHeapAbove, which work on every platform`,
    );
  }
  const rlimitKeys = ['addressSpace', 'data', 'openFiles', 'cpuTime'] as const;
  const wantsRlimits = rlimitKeys.filter((k) => limits[k] !== undefined);
  if (wantsRlimits.length > 0 && !nativeStatus().available) {
    const { reason, fix } = nativeStatus();
    throw new NativeUnavailableError(
      `limits.${wantsRlimits.join(', limits.')}`,
      `${reason ?? 'the native addon is not built'}; rlimits are set by corral's native addon, and a limit ` +
        `silently not enforced would be worse than none${fix ? `. Fix: ${fix}` : ''}`,
    );
  }
  return {
    module: resolveModule(o.module),
    runtime: runtime === 'auto' ? (needsProcess.length > 0 ? 'process' : 'thread') : runtime,
    workers,
    kind,
    concurrency:
      o.concurrency === undefined ? (kind === 'cpu' ? 1 : 8) : parseCount('concurrency', o.concurrency, 1),
    taskTimeout: o.taskTimeout === undefined ? Infinity : parseDuration('taskTimeout', o.taskTimeout, true),
    cancelGrace: o.cancelGrace === undefined ? 1000 : parseDuration('cancelGrace', o.cancelGrace),
    priorityAging:
      o.priorityAging === undefined ? 1000 : parseDuration('priorityAging', o.priorityAging, true),
    poisonAfter: o.poisonAfter === undefined ? 2 : parseCount('poisonAfter', o.poisonAfter, 1, true),
    // 0 would refuse every call on an idle pool: a queue must hold at least the call being made.
    maxQueue: o.maxQueue === undefined ? Infinity : parseCount('maxQueue', o.maxQueue, 1, true),
    // recycle.afterTasks and maxTasksPerWorker say the same thing; the stricter one wins.
    maxTasksPerWorker: recycle.afterTasks,
    retries: o.retries === undefined ? 0 : parseCount('retries', o.retries, 0),
    initializer: o.initializer,
    initArgs: o.initArgs ?? [],
    teardown: o.teardown,
    stopTimeout: o.stopTimeout === undefined ? 5000 : parseDuration('stopTimeout', o.stopTimeout, true),
    captureOutput: o.captureOutput ?? false,
    minWorkers,
    // An elastic pool shrinks back to its minimum once work stops coming, unless told otherwise.
    idleTimeout:
      o.idleTimeout !== undefined
        ? parseDuration('idleTimeout', o.idleTimeout)
        : minWorkers < workers
          ? 10_000
          : Infinity,
    execArgv: o.execArgv ?? [],
    env: o.env,
    limits,
    recycle,
    memoryBudget: resolveBudget(o.memoryBudget),
    detectLeaks,
  };
}

export interface CallOptions {
  /** Aborts the call: queued work is dropped, running work has its worker stopped. */
  signal?: AbortSignal;
  /** Deadline of each task of this call (per item for map), overriding taskTimeout. */
  timeout?: Duration;
  /** Times to re-run a failed task of this call, overriding the pool's retries. */
  retries?: number;
  /** Bytes the task is expected to need; with memoryBudget, it starts only when that much is free. */
  memoryHint?: number | string;
  /**
   * Higher goes first (default 0; any finite number). Equal priorities keep their order, and waiting
   * raises a call's priority by one per `priorityAging`, so low priorities are delayed, never starved.
   */
  priority?: number;
  /**
   * Fair queuing: calls of different keys take turns for workers. Each map/imap is a key of its own
   * unless given one, and single calls without a key share one, so a huge map never starves them.
   */
  key?: string | number;
  /**
   * The task's `context().progress(value)` reports, batched (of a burst, the latest). `index`: the
   * item's position in a map's input (0 for apply).
   */
  onProgress?: (value: unknown, index: number) => void;
  /** The task's `context().emit(name, data)` events, every one, in order. */
  onEvent?: (name: string, data: unknown, index: number) => void;
}

export interface MapOptions extends CallOptions {
  /** Items per message: a number, or 'auto' (sized from measured task time). */
  chunksize?: number | 'auto';
}

export interface ResolvedCall {
  signal: AbortSignal | undefined;
  timeout: number;
  retries: number;
  memoryHint: number;
  withUsage: boolean;
  priority: number;
  key: string | number | undefined;
  listeners: CallListeners | undefined;
}

export const CALL_OPTIONS = [
  'signal',
  'timeout',
  'retries',
  'memoryHint',
  'priority',
  'key',
  'onProgress',
  'onEvent',
] as const;

export function resolveCallOptions(
  options: unknown,
  config: Pick<PoolConfig, 'taskTimeout' | 'retries'>,
  known: readonly string[] = [...CALL_OPTIONS, 'withUsage'],
): ResolvedCall {
  if (options === undefined) {
    return {
      signal: undefined,
      timeout: config.taskTimeout,
      retries: config.retries,
      memoryHint: 0,
      withUsage: false,
      priority: 0,
      key: undefined,
      listeners: undefined,
    };
  }
  if (!isPlainObject(options))
    throw new ConfigError('options', 'expected an object like { timeout, signal }');
  checkKnownKeys('options', options, known);
  const o = options as CallOptions & { withUsage?: unknown };
  if (o.withUsage !== undefined && typeof o.withUsage !== 'boolean') {
    throw new ConfigError('withUsage', 'expected true or false');
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new ConfigError('signal', 'expected an AbortSignal, e.g. AbortSignal.timeout(1000)');
  }
  return {
    signal: o.signal,
    timeout: o.timeout === undefined ? config.taskTimeout : parseDuration('timeout', o.timeout, true),
    retries: o.retries === undefined ? config.retries : parseCount('retries', o.retries, 0),
    memoryHint: o.memoryHint === undefined ? 0 : parseSize('memoryHint', o.memoryHint),
    withUsage: o.withUsage === true,
    priority: o.priority === undefined ? 0 : parsePriority(o.priority),
    key: o.key === undefined ? undefined : parseKey(o.key),
    listeners:
      o.onProgress === undefined && o.onEvent === undefined
        ? undefined
        : { onProgress: callback('onProgress', o.onProgress), onEvent: callback('onEvent', o.onEvent) },
  };
}

function callback<F>(option: string, value: F | undefined): F | undefined {
  if (value === undefined || typeof value === 'function') return value;
  throw new ConfigError(option, `expected a function; got ${typeof value}`);
}

function parsePriority(value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  throw new ConfigError(
    'priority',
    `expected a finite number (higher goes first; default 0); got ${String(value)}`,
  );
}

function parseKey(value: unknown): string | number {
  if ((typeof value === 'string' && value !== '') || (typeof value === 'number' && Number.isFinite(value))) {
    return value;
  }
  throw new ConfigError(
    'key',
    `expected a non-empty string or a number naming the caller; got ${String(value)}`,
  );
}
