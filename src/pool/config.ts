import { ConfigError } from '../errors.js';
import { cpuCount, ioPoolSize } from '../limits/system.js';
import {
  checkKnownKeys,
  isPlainObject,
  parseChoice,
  parseCount,
  parseDuration,
  resolveModule,
} from '../options.js';
import type { RuntimeKind } from '../runtime/types.js';

/** Functions exported by a task module, by name. */
export type TaskFunction = (...args: never[]) => unknown;
export type TaskNames<M> = { [K in keyof M]: M[K] extends TaskFunction ? K : never }[keyof M] & string;
export type TaskArgs<M, K extends keyof M> = M[K] extends (...args: infer A) => unknown ? A : never;
export type TaskResult<M, K extends keyof M> = M[K] extends (...args: never[]) => infer R
  ? Awaited<R>
  : never;
/** The first parameter of a task: what map() passes for each item. */
export type TaskItem<M, K extends keyof M> =
  TaskArgs<M, K> extends [infer First, ...unknown[]] ? First : never;
/** What an untyped Pool assumes: any export name, unknown arguments and results. */
export type AnyModule = Record<string, (...args: never[]) => unknown>;

export interface PoolOptions<M = AnyModule> {
  /** The task module: its function exports are the tasks. Path or file URL; .js, .mjs, .cjs (.ts where Node runs it). */
  module: string | URL;
  /** 'thread' (worker_threads), 'process' (child processes) or 'auto' (threads unless a feature needs processes). */
  runtime?: 'thread' | 'process' | 'auto';
  /** How many workers: a number, or 'auto' = cpuCount() for kind 'cpu', 2 x cpuCount() for kind 'io'. */
  workers?: number | 'auto';
  /** 'cpu' (default): one task at a time per worker. 'io': several at once per worker (see concurrency). */
  kind?: 'cpu' | 'io';
  /** Tasks a worker runs at once: 1 for kind 'cpu', 8 for kind 'io' unless given. */
  concurrency?: number;
  /** Longest a task may run (per item for map chunks): ms or '30s'. The worker is stopped and replaced. */
  taskTimeout?: number | string;
  /** Most tasks waiting for a worker; past it apply() rejects with QueueFullError and imap stops reading. */
  maxQueue?: number;
  /** Replace a worker after it ran this many tasks (a map chunk counts as one, as in Python). */
  maxTasksPerWorker?: number;
  /** Times a failed task is run again (crash, timeout or throw). Default 0: re-running must be opted into. */
  retries?: number;
  /** An export run once in each worker before its first task, like Python's initializer. */
  initializer?: TaskNames<M>;
  initArgs?: unknown[];
  /** A worker idle this long exits; a new one starts when work arrives. Default: never. */
  idleTimeout?: number | string;
  /** Node flags for workers (default none). */
  execArgv?: string[];
  /** Environment of process workers (threads share the parent's). */
  env?: NodeJS.ProcessEnv;
}

export interface PoolConfig {
  module: string;
  runtime: RuntimeKind;
  workers: number;
  kind: 'cpu' | 'io';
  concurrency: number;
  taskTimeout: number;
  maxQueue: number;
  maxTasksPerWorker: number;
  retries: number;
  initializer: string | undefined;
  initArgs: unknown[];
  idleTimeout: number;
  execArgv: string[];
  env: NodeJS.ProcessEnv | undefined;
}

const KNOWN = [
  'module',
  'runtime',
  'workers',
  'kind',
  'concurrency',
  'taskTimeout',
  'maxQueue',
  'maxTasksPerWorker',
  'retries',
  'initializer',
  'initArgs',
  'idleTimeout',
  'execArgv',
  'env',
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
  const cpus = cpuCount();
  const workers =
    o.workers === undefined || o.workers === 'auto'
      ? kind === 'cpu'
        ? cpus
        : ioPoolSize(cpus)
      : parseCount('workers', o.workers, 1);
  if (o.initArgs !== undefined && !Array.isArray(o.initArgs)) {
    throw new ConfigError('initArgs', 'expected an array of arguments for the initializer');
  }
  if (o.initializer !== undefined && (typeof o.initializer !== 'string' || o.initializer === '')) {
    throw new ConfigError('initializer', 'expected the name of a function exported by the task module');
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
  return {
    module: resolveModule(o.module),
    runtime: runtime === 'auto' ? 'thread' : runtime,
    workers,
    kind,
    concurrency:
      o.concurrency === undefined ? (kind === 'cpu' ? 1 : 8) : parseCount('concurrency', o.concurrency, 1),
    taskTimeout: o.taskTimeout === undefined ? 0 : parseDuration('taskTimeout', o.taskTimeout),
    maxQueue: o.maxQueue === undefined ? Infinity : parseCount('maxQueue', o.maxQueue, 0, true),
    maxTasksPerWorker:
      o.maxTasksPerWorker === undefined
        ? Infinity
        : parseCount('maxTasksPerWorker', o.maxTasksPerWorker, 1, true),
    retries: o.retries === undefined ? 0 : parseCount('retries', o.retries, 0),
    initializer: o.initializer,
    initArgs: o.initArgs ?? [],
    idleTimeout: o.idleTimeout === undefined ? Infinity : parseDuration('idleTimeout', o.idleTimeout),
    execArgv: o.execArgv ?? [],
    env: o.env,
  };
}

export interface CallOptions {
  /** Aborts the call: queued work is dropped, running work has its worker stopped. */
  signal?: AbortSignal;
  /** Deadline of each task of this call (per item for map), overriding taskTimeout. */
  timeout?: number | string;
  /** Times to re-run a failed task of this call, overriding the pool's retries. */
  retries?: number;
}

export interface MapOptions extends CallOptions {
  /** Items per message: a number, or 'auto' (sized from measured task time). */
  chunksize?: number | 'auto';
}

export interface ResolvedCall {
  signal: AbortSignal | undefined;
  timeout: number;
  retries: number;
}

export function resolveCallOptions(
  options: unknown,
  config: PoolConfig,
  known: readonly string[] = ['signal', 'timeout', 'retries'],
): ResolvedCall {
  if (options === undefined)
    return { signal: undefined, timeout: config.taskTimeout, retries: config.retries };
  if (!isPlainObject(options))
    throw new ConfigError('options', 'expected an object like { timeout, signal }');
  checkKnownKeys('options', options, known);
  const o = options as CallOptions;
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new ConfigError('signal', 'expected an AbortSignal, e.g. AbortSignal.timeout(1000)');
  }
  return {
    signal: o.signal,
    timeout: o.timeout === undefined ? config.taskTimeout : parseDuration('timeout', o.timeout),
    retries: o.retries === undefined ? config.retries : parseCount('retries', o.retries, 0),
  };
}
