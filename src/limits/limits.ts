/**
 * What a user may ask of each worker, checked against what this Node version can live with.
 * Floors are measured (see shared FACTS §1a): a process worker of ours, once ready, already maps
 * ~873 MiB of address space on Node 20/22 and ~1375 MiB on Node 24 (V8 reserves its code range
 * and cage up front), and its data segment is ~82 / ~50 / ~562 MiB. A limit below that kills the
 * worker at start (SIGTRAP) or hangs it, so we refuse it with the minimum instead.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { checkKnownKeys, isPlainObject, parseCount, parseDuration, parseSize } from '../options.js';
import type { RlimitSpec } from '../runtime/protocol.js';
import { probeMemory } from './system.js';

const MiB = 2 ** 20;

interface Floors {
  addressSpace: number;
  data: number;
}
/** Startup usage once ready, plus ~64 MiB for the first task to run at all. */
const FLOORS: Record<number, Floors> = {
  20: { addressSpace: 960 * MiB, data: 160 * MiB },
  22: { addressSpace: 960 * MiB, data: 128 * MiB },
  24: { addressSpace: 1472 * MiB, data: 640 * MiB },
};
/** Node needs ~20 descriptors of its own, the IPC channel and stderr a few more. */
export const MIN_OPEN_FILES = 32;

export function floorsFor(version = process.versions.node): Floors {
  const major = Number(version.split('.')[0]);
  const known = Object.keys(FLOORS).map(Number);
  if (FLOORS[major]) return FLOORS[major]!;
  // An unmeasured version: take the nearest measured one at or below it, else the largest.
  const below = known.filter((m) => m <= major);
  return FLOORS[below.length ? Math.max(...below) : Math.max(...known)]!;
}

export interface LimitsOptions {
  /** V8 old-generation limit of each worker (threads and processes). */
  heap?: number | string;
  /** Resident memory of each worker process, enforced by sampling (see sampleInterval). */
  rss?: number | string;
  /** RLIMIT_AS of each worker process. */
  addressSpace?: number | string;
  /** RLIMIT_DATA of each worker process. */
  data?: number | string;
  /** RLIMIT_NOFILE of each worker process. */
  openFiles?: number;
  /** CPU seconds each task may use (RLIMIT_CPU, re-armed before every task). */
  cpuTime?: number;
  /** How often worker memory is sampled for rss, recycle.whenRssAbove and memoryBudget. Default 100 ms. */
  sampleInterval?: number | string;
  /** How long a worker may take to start before it is killed. Default 20 s. */
  startTimeout?: number | string;
}

export interface RecycleOptions {
  /** Retire a worker after this many tasks. */
  afterTasks?: number;
  /** Retire a worker, between tasks, once its RSS is above this. */
  whenRssAbove?: number | string;
  /** Retire a worker, between tasks, once its V8 heap in use is above this. */
  whenHeapAbove?: number | string;
  /** Retire a worker whose task leaked file descriptors (process workers). */
  onLeak?: boolean;
  /**
   * Replace a worker after every limits.rss breach. By default a breach during the synchronous part
   * of a call stops that call inside its worker, which frees the memory and goes on (a process start,
   * its cold JIT and its page faults saved); the call fails with the same MemoryLimitError. Set this
   * for a fresh process after every breach, e.g. for tasks that leave shared state half-updated.
   */
  onBreach?: boolean;
}

export interface ResolvedLimits {
  heap: number | undefined;
  rss: number | undefined;
  addressSpace: number | undefined;
  data: number | undefined;
  openFiles: number | undefined;
  cpuTime: number | undefined;
  sampleInterval: number;
  startTimeout: number;
}

export interface ResolvedRecycle {
  afterTasks: number;
  whenRssAbove: number | undefined;
  whenHeapAbove: number | undefined;
  onLeak: boolean;
  onBreach: boolean;
}

/** Limits only a process can have: a thread shares its process's rlimits and memory. */
export const PROCESS_ONLY = ['rss', 'addressSpace', 'data', 'openFiles', 'cpuTime'] as const;

const LIMIT_KEYS = [
  'heap',
  'rss',
  'addressSpace',
  'data',
  'openFiles',
  'cpuTime',
  'sampleInterval',
  'startTimeout',
];
const RECYCLE_KEYS = ['afterTasks', 'whenRssAbove', 'whenHeapAbove', 'onLeak', 'onBreach'];

const opt = <T>(v: unknown, parse: (v: unknown) => T): T | undefined =>
  v === undefined ? undefined : parse(v);

export function resolveLimits(value: unknown): ResolvedLimits {
  if (value !== undefined && !isPlainObject(value)) {
    throw new ConfigError(
      'limits',
      "expected an object like { heap: '256MiB', rss: '512MiB', openFiles: 256 }",
    );
  }
  const o = (value ?? {}) as LimitsOptions;
  checkKnownKeys('limits', o as Record<string, unknown>, LIMIT_KEYS);
  const limits: ResolvedLimits = {
    heap: opt(o.heap, (v) => parseSize('limits.heap', v)),
    rss: opt(o.rss, (v) => parseSize('limits.rss', v)),
    addressSpace: opt(o.addressSpace, (v) => parseSize('limits.addressSpace', v)),
    data: opt(o.data, (v) => parseSize('limits.data', v)),
    openFiles: opt(o.openFiles, (v) => parseCount('limits.openFiles', v, 1)),
    cpuTime: opt(o.cpuTime, (v) => parseCount('limits.cpuTime', v, 1)),
    sampleInterval:
      o.sampleInterval === undefined ? 100 : parseDuration('limits.sampleInterval', o.sampleInterval, true),
    startTimeout:
      o.startTimeout === undefined ? 20_000 : parseDuration('limits.startTimeout', o.startTimeout, true),
  };
  if (!Number.isFinite(limits.sampleInterval)) {
    throw new ConfigError(
      'limits.sampleInterval',
      'must be finite: memory that is never sampled is a limit never enforced',
    );
  }
  const floors = floorsFor();
  const node = `Node ${process.versions.node}`;
  if (limits.heap !== undefined && limits.heap < 16 * MiB) {
    throw new ConfigError(
      'limits.heap',
      `must be at least 16MiB for V8 to run a task; got ${limits.heap} bytes`,
    );
  }
  if (limits.addressSpace !== undefined && limits.addressSpace < floors.addressSpace) {
    throw new ConfigError(
      'limits.addressSpace',
      `${node} needs at least ${floors.addressSpace / MiB}MiB of address space to start a worker (V8 reserves much of it up front); ` +
        `got ${(limits.addressSpace / MiB).toFixed(0)}MiB. Use limits.data or limits.rss for a tighter bound.`,
    );
  }
  if (limits.data !== undefined && limits.data < floors.data) {
    throw new ConfigError(
      'limits.data',
      `${node} needs at least ${floors.data / MiB}MiB of data segment to start a worker; got ${(limits.data / MiB).toFixed(0)}MiB`,
    );
  }
  // Read only when asked: a pool without the limit starts its workers ~0.1 ms sooner.
  const nrOpen = limits.openFiles !== undefined ? kernelMaxOpenFiles() : undefined;
  if (limits.openFiles !== undefined && nrOpen !== undefined && limits.openFiles > nrOpen) {
    throw new ConfigError(
      'limits.openFiles',
      `the kernel allows at most ${nrOpen} descriptors per process (/proc/sys/fs/nr_open); got ${limits.openFiles}`,
    );
  }
  if (limits.openFiles !== undefined && limits.openFiles < MIN_OPEN_FILES) {
    throw new ConfigError(
      'limits.openFiles',
      `a Node worker needs at least ${MIN_OPEN_FILES} descriptors of its own; got ${limits.openFiles}`,
    );
  }
  for (const [key, floor] of [
    ['addressSpace', floors.addressSpace],
    ['data', floors.data],
  ] as const) {
    const hard = limits[key];
    if (hard !== undefined && limits.heap !== undefined && limits.heap > hard - floor) {
      throw new ConfigError(
        'limits.heap',
        `must leave room under limits.${key}: at most ${Math.floor((hard - floor) / MiB)}MiB here, got ${Math.floor(limits.heap / MiB)}MiB`,
      );
    }
  }
  return limits;
}

/** RLIMIT_NOFILE can never be set above fs.nr_open, not even by root. */
function kernelMaxOpenFiles(): number | undefined {
  try {
    const n = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8'));
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The rlimits a worker sets on itself before its task module loads (soft = hard). */
export function rlimitsFor(limits: ResolvedLimits): RlimitSpec[] {
  const wanted = [
    ['as', limits.addressSpace],
    ['data', limits.data],
    ['nofile', limits.openFiles],
  ] as const;
  return wanted.flatMap(([resource, limit]): RlimitSpec[] =>
    limit === undefined ? [] : [[resource, limit]],
  );
}

/**
 * The V8 heap limit to give a worker: the user's, or, under an address-space or data limit, half of
 * what is left above the floor, so V8 collects garbage before the kernel refuses it memory.
 */
export function heapMbFor(limits: ResolvedLimits): number | undefined {
  if (limits.heap !== undefined) return Math.max(16, Math.floor(limits.heap / MiB));
  const floors = floorsFor();
  let room = Infinity;
  if (limits.addressSpace !== undefined) room = Math.min(room, limits.addressSpace - floors.addressSpace);
  if (limits.data !== undefined) room = Math.min(room, limits.data - floors.data);
  return Number.isFinite(room) ? Math.max(16, Math.floor(room / 2 / MiB)) : undefined;
}

export function resolveRecycle(value: unknown, maxTasksPerWorker: number): ResolvedRecycle {
  if (value !== undefined && !isPlainObject(value)) {
    throw new ConfigError('recycle', "expected an object like { afterTasks: 1000, whenRssAbove: '1GiB' }");
  }
  const o = (value ?? {}) as RecycleOptions;
  checkKnownKeys('recycle', o as Record<string, unknown>, RECYCLE_KEYS);
  for (const key of ['onLeak', 'onBreach'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') {
      throw new ConfigError(`recycle.${key}`, 'expected true or false');
    }
  }
  const afterTasks = opt(o.afterTasks, (v) => parseCount('recycle.afterTasks', v, 1, true)) ?? Infinity;
  return {
    afterTasks: Math.min(afterTasks, maxTasksPerWorker),
    whenRssAbove: opt(o.whenRssAbove, (v) => parseSize('recycle.whenRssAbove', v)),
    whenHeapAbove: opt(o.whenHeapAbove, (v) => parseSize('recycle.whenHeapAbove', v)),
    onLeak: o.onLeak ?? false,
    onBreach: o.onBreach ?? false,
  };
}

/** Share of the memory limit an 'auto' budget takes: room for the kernel, page cache and others. */
export const AUTO_BUDGET_FRACTION = 0.8;

export function resolveBudget(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (value === 'auto') {
    // A container's limit is the hard wall; on a bare machine, what is free now (others live here too).
    const mem = probeMemory();
    return Math.floor((mem.cgroupLimit ?? mem.available) * AUTO_BUDGET_FRACTION);
  }
  return parseSize('memoryBudget', value);
}
