/**
 * The options of the BullMQ backend, shared by the producer (`new Pool({ backend: { bullmq } })`)
 * and the worker host (`corral worker`), validated once. Nothing here loads bullmq or ioredis.
 *
 * Failure detection: a host renews each job's lock every lockDuration / 2; a host that dies (or is
 * cut off) stops renewing, its lock expires after at most lockDuration, and the next stalled-job
 * check of any live host (every stalledInterval) puts the job back in the queue. A lost job is thus
 * seen within lockDuration + stalledInterval. Defaults 10 s + 5 s: a host's own event loop only
 * forwards jobs to its local pool (the CPU work runs in child workers), so a renewal is never seconds
 * late unless the host is really gone, while BullMQ's own 30 s + 30 s would keep a caller waiting a
 * minute for a dead machine.
 */
import { MAX_TIMER_MS } from '../../deadline.js';
import { ConfigError } from '../../errors.js';
import { checkKnownKeys, isPlainObject, parseCount, parseDuration, parseSize } from '../../options.js';

/** How to reach Redis: a redis:// URL or ioredis options ({ host, port, password, db, tls, ... }). */
export type RedisConnection = string | Record<string, unknown>;

export interface BullmqOptions {
  connection: RedisConnection;
  /** The BullMQ queue name: producers and `corral worker --queue` must agree. */
  queue: string;
  /** Prefix of every Redis key (BullMQ's prefix too). Default 'corral'. */
  prefix?: string;
  /** How long a host's lock on a job lasts without renewal (ms or '10s'). Default 10 s. */
  lockDuration?: number | string;
  /** How often hosts look for jobs whose lock expired (ms or '5s'). Default 5 s. */
  stalledInterval?: number | string;
  /**
   * Times a job may lose its host and run again before it fails with WorkerLostError. Default 1. A
   * pool's travels with its jobs, and wins over the host's own.
   */
  stallBudget?: number;
  /** Largest serialised arguments (per job) and results, bytes or '16MiB'. Default 16 MiB. */
  maxPayload?: number | string;
  /** The task module's version; hosts refuse jobs of another one. Default: a hash of the module file. */
  moduleVersion?: string;
  /** How long the first connection may take, and a lost one may stay lost, before BackendUnavailableError. Default 5 s / 30 s. */
  connectTimeout?: number | string;
  reconnectFor?: number | string;
  /**
   * Jobs of other producers waiting in the queue above which map/imap stop reading their input
   * (sampled every ~150 ms while a map runs); below it they read again. Default 'auto': four times
   * the live hosts' slots, at least 16.
   */
  maxWaiting?: number | 'auto';
  /**
   * How long a call may wait while no `corral worker` has a live heartbeat on the queue before it
   * fails with NoHostError (ms, '60s', or Infinity to wait for hosts forever). Default 60 s.
   */
  hostWait?: number | string;
}

export interface ResolvedBullmq {
  connection: RedisConnection;
  queue: string;
  prefix: string;
  lockDuration: number;
  stalledInterval: number;
  /** Set by the user (a pool's travels with each job and wins over its host's); undefined: the host's, default 1. */
  stallBudget: number | undefined;
  maxPayload: number;
  moduleVersion: string | undefined;
  connectTimeout: number;
  reconnectFor: number;
  /** undefined: 'auto'. */
  maxWaiting: number | undefined;
  hostWait: number;
}

const KNOWN = [
  'connection',
  'queue',
  'prefix',
  'lockDuration',
  'stalledInterval',
  'stallBudget',
  'maxPayload',
  'moduleVersion',
  'connectTimeout',
  'reconnectFor',
  'maxWaiting',
  'hostWait',
];

export function resolveBullmq(value: unknown): ResolvedBullmq {
  const o = 'backend.bullmq';
  if (!isPlainObject(value)) {
    throw new ConfigError(o, "expected { connection: 'redis://host:6379', queue: 'name' }");
  }
  checkKnownKeys(o, value, KNOWN);
  const { connection, queue, prefix } = value;
  if (typeof connection !== 'string' && !isPlainObject(connection)) {
    throw new ConfigError(
      `${o}.connection`,
      'expected a redis:// URL or ioredis options like { host, port }',
    );
  }
  if (typeof queue !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(queue)) {
    throw new ConfigError(`${o}.queue`, 'expected a queue name of letters, digits, _ . and - (1 to 100)');
  }
  if (prefix !== undefined && (typeof prefix !== 'string' || !/^[A-Za-z0-9_.-]{1,50}$/.test(prefix))) {
    throw new ConfigError(`${o}.prefix`, 'expected letters, digits, _ . and - (1 to 50)');
  }
  const mv = value.moduleVersion;
  if (mv !== undefined && (typeof mv !== 'string' || mv.length === 0)) {
    throw new ConfigError(`${o}.moduleVersion`, 'expected a non-empty string');
  }
  const lockDuration = parseDuration(`${o}.lockDuration`, value.lockDuration ?? 10_000, true);
  const stalledInterval = parseDuration(`${o}.stalledInterval`, value.stalledInterval ?? 5_000, true);
  if (!Number.isFinite(lockDuration) || !Number.isFinite(stalledInterval)) {
    throw new ConfigError(`${o}.lockDuration`, 'lockDuration and stalledInterval must be finite');
  }
  return {
    connection: connection as RedisConnection,
    queue,
    prefix: (prefix as string | undefined) ?? 'corral',
    lockDuration,
    stalledInterval,
    stallBudget:
      value.stallBudget === undefined ? undefined : parseCount(`${o}.stallBudget`, value.stallBudget, 0),
    maxPayload: parseSize(`${o}.maxPayload`, value.maxPayload ?? '16MiB'),
    moduleVersion: mv as string | undefined,
    connectTimeout: timerDuration(`${o}.connectTimeout`, value.connectTimeout ?? 5_000, false),
    reconnectFor: timerDuration(`${o}.reconnectFor`, value.reconnectFor ?? 30_000, true),
    maxWaiting:
      value.maxWaiting === undefined || value.maxWaiting === 'auto'
        ? undefined
        : parseCount(`${o}.maxWaiting`, value.maxWaiting, 0, true),
    hostWait: parseDuration(`${o}.hostWait`, value.hostWait ?? 60_000, true),
  };
}

/**
 * A duration that goes to a timer (or to ioredis as one): at most MAX_TIMER_MS, which is 24.8 days.
 * Past it Node fires the timer after 1 ms (reconnectFor: '30d' broke the pool a millisecond into a
 * Redis restart), and connectTimeout: Infinity made ioredis throw. `forever`: Infinity means no limit.
 */
function timerDuration(option: string, value: unknown, forever: boolean): number {
  const ms = parseDuration(option, value, true);
  if (ms === Infinity && forever) return ms;
  if (ms > MAX_TIMER_MS) {
    throw new ConfigError(
      option,
      `at most ${MAX_TIMER_MS} ms (24.8 days)${forever ? ', or Infinity to wait forever' : ': a connection that has not answered by then will not'}; got ${String(value)}`,
    );
  }
  return ms;
}

/** Where to reach Redis, for messages (never the password). */
export function describeConnection(c: RedisConnection): string {
  if (typeof c === 'string') {
    try {
      const u = new URL(c);
      return `${u.hostname}:${u.port || 6379}`;
    } catch {
      return c.replace(/\/\/[^@]*@/, '//');
    }
  }
  return `${String(c.host ?? '127.0.0.1')}:${String(c.port ?? 6379)}`;
}
