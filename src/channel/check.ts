/**
 * Items are checked when they are put, not when their batch is sent: a put that resolved must
 * never fail later, and one bad item must not take its batch-mates down. The check doubles as the
 * byte estimate that flushes a batch by size.
 *
 * Plain data (primitives, arrays, plain objects, typed arrays, Date, RegExp, Map, Set) is walked
 * in JS, a few tens of nanoseconds per small object. Anything else (class instances, errors,
 * cycles, deep or large values) is serialised once with v8.serialize: the serializer 'advanced'
 * IPC uses, stricter than a thread's structured clone, so an item that passes travels under both
 * runtimes.
 */

import { isProxy } from 'node:util/types';
import { MAX_TIMER_MS } from '../deadline.js';
import { ConfigError, SerializationError } from '../errors.js';
import { builtin } from '../lazy.js';
import { parseDuration, parseSize } from '../options.js';
import { type BatchConfig, CHANNEL_BRAND } from './wire.js';

const FALLBACK = Symbol('fallback');
const WALK_BUDGET = 200;
const MAX_DEPTH = 24;

interface Walk {
  left: number;
}

/** Estimated bytes of an item on the wire; throws SerializationError if it cannot travel. */
export function itemBytes(item: unknown, where: string): number {
  switch (typeof item) {
    case 'number':
      return 9;
    case 'string':
      return 5 + item.length;
    case 'boolean':
    case 'undefined':
      return 1;
    case 'bigint':
      return 16;
    case 'symbol':
    case 'function':
      throw new SerializationError(where, 'item', new TypeError(`a ${typeof item} cannot be cloned`));
  }
  if (item === null) return 1;
  try {
    return walk(item as object, { left: WALK_BUDGET }, 0);
  } catch (error) {
    if (error !== FALLBACK) throw new SerializationError(where, 'item', error);
  }
  try {
    return builtin('node:v8').serialize(item).length;
  } catch (error) {
    throw new SerializationError(where, 'item', error);
  }
}

function value(v: unknown, w: Walk, depth: number): number {
  switch (typeof v) {
    case 'number':
      return 9;
    case 'string':
      return 5 + v.length;
    case 'boolean':
    case 'undefined':
      return 1;
    case 'bigint':
      return 16;
    case 'object':
      return v === null ? 1 : walk(v, w, depth + 1);
    default:
      throw new TypeError(`a ${typeof v} cannot be cloned`);
  }
}

function walk(v: object, w: Walk, depth: number): number {
  if (--w.left < 0 || depth > MAX_DEPTH || isProxy(v)) throw FALLBACK;
  if (Array.isArray(v)) {
    let n = 4;
    for (let i = 0; i < v.length; i++) n += value(v[i], w, depth);
    return n;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    let n = 4;
    for (const key in v) n += key.length + 2 + value((v as Record<string, unknown>)[key], w, depth);
    return n;
  }
  if (ArrayBuffer.isView(v)) {
    if (v.buffer instanceof SharedArrayBuffer) throw FALLBACK;
    return v.byteLength + 16;
  }
  if (v instanceof ArrayBuffer) return v.byteLength + 8;
  if (v instanceof Date) return 9;
  if (v instanceof Map) {
    let n = 4;
    for (const [k, x] of v) n += value(k, w, depth) + value(x, w, depth);
    return n;
  }
  if (v instanceof Set) {
    let n = 4;
    for (const x of v) n += value(x, w, depth);
    return n;
  }
  if ((v as { [CHANNEL_BRAND]?: boolean })[CHANNEL_BRAND]) {
    throw new TypeError(
      'a Queue or Pipe end cannot travel inside a queue item; pass it to the task as an argument',
    );
  }
  throw FALLBACK;
}

export interface QueueOptions {
  /** Most items the queue holds (put but not yet got); put waits beyond it. Default: unbounded. */
  maxsize?: number;
  /**
   * How puts from workers are gathered into messages: `{ size, bytes, delay }`, or `false` to send
   * every put on its own (and fetch one item per get). Default `{ size: 512, bytes: '64KiB', delay: '2ms' }`.
   */
  batch?: false | { size?: number; bytes?: number | string; delay?: number | string };
}

export interface QueueConfig {
  maxsize: number;
  batch: BatchConfig | false;
}

export const DEFAULT_BATCH: BatchConfig = { size: 512, bytes: 64 * 1024, delay: 2 };

export function resolveQueueOptions(options: unknown): QueueConfig {
  if (options === undefined) return { maxsize: Infinity, batch: DEFAULT_BATCH };
  if (options === null || typeof options !== 'object') {
    throw new ConfigError(
      'options',
      "expected an object like { maxsize: 1000, batch: { size: 256, delay: '2ms' } }",
    );
  }
  const o = options as QueueOptions;
  for (const key of Object.keys(o)) {
    if (key !== 'maxsize' && key !== 'batch')
      throw new ConfigError(key, 'unknown queue option; known: maxsize, batch');
  }
  let maxsize = Infinity;
  if (o.maxsize !== undefined && o.maxsize !== Infinity && o.maxsize !== 0) {
    if (!Number.isSafeInteger(o.maxsize) || o.maxsize < 0) {
      throw new ConfigError(
        'maxsize',
        `expected a whole number of items >= 1 (0 or Infinity: unbounded); got ${o.maxsize}`,
      );
    }
    maxsize = o.maxsize;
  }
  let batch: BatchConfig | false = DEFAULT_BATCH;
  if (o.batch === false) batch = false;
  else if (o.batch !== undefined && (o.batch as unknown) !== true) {
    if (o.batch === null || typeof o.batch !== 'object') {
      throw new ConfigError(
        'batch',
        "expected false or { size, bytes, delay }, e.g. { size: 256, delay: '2ms' }",
      );
    }
    for (const key of Object.keys(o.batch)) {
      if (key !== 'size' && key !== 'bytes' && key !== 'delay') {
        throw new ConfigError(`batch.${key}`, 'unknown batch option; known: size, bytes, delay');
      }
    }
    const size = o.batch.size ?? DEFAULT_BATCH.size;
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new ConfigError('batch.size', `expected a whole number of items >= 1; got ${size}`);
    }
    batch = {
      size,
      bytes: o.batch.bytes === undefined ? DEFAULT_BATCH.bytes : parseSize('batch.bytes', o.batch.bytes),
      delay: o.batch.delay === undefined ? DEFAULT_BATCH.delay : batchDelay(o.batch.delay),
    };
  }
  return { maxsize, batch };
}

/** A batch waits at most this long for company: finite, or a lone put would never be sent. */
function batchDelay(value: unknown): number {
  const ms = parseDuration('batch.delay', value);
  if (!Number.isFinite(ms) || ms > MAX_TIMER_MS) {
    throw new ConfigError(
      'batch.delay',
      `must be finite (a few ms: a lone put waits that long); got ${String(value)}`,
    );
  }
  return ms;
}

/** `{ wait, timeout }` of put and get: -1 = wait forever, 0 = do not wait, else ms. */
export function waitMs(options: unknown): number {
  if (options === undefined) return -1;
  if (options === null || typeof options !== 'object') {
    throw new ConfigError('options', "expected an object like { timeout: '1s' } or { wait: false }");
  }
  const o = options as { wait?: unknown; timeout?: unknown };
  for (const key of Object.keys(o)) {
    if (key !== 'wait' && key !== 'timeout')
      throw new ConfigError(key, 'unknown option; known: wait, timeout');
  }
  if (o.wait !== undefined && typeof o.wait !== 'boolean')
    throw new ConfigError('wait', 'expected true or false');
  if (o.wait === false) return 0;
  return o.timeout === undefined ? -1 : Math.max(1, parseDuration('timeout', o.timeout));
}
