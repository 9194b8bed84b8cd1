/**
 * Per-worker accounting for the summary: every worker the pool ever started (replacements too), its tasks,
 * its peak resident memory and how it ended. Uses only the public API: the pool's workerStart/workerExit
 * events and stats(); peak RSS comes from stats() when the pool reports it (`peakRss`), else from the
 * kernel's high-water mark of each worker process (/proc/<pid>/status VmHWM), or of this process for
 * worker threads, which share it.
 */
import type { PoolStats } from '../index.js';
import type { CliPool } from './engine.js';
import { procMemory } from './procfs.js';

export interface WorkerRecord {
  id: number;
  runtime: string;
  pid: number | undefined;
  threadId: number | undefined;
  /** Units finished (one per item, or one per chunk with --chunksize N); from the last stats() sample. */
  tasks: number;
  /** Peak resident memory in bytes; for threads, that of the whole process they share. */
  peakRss: number | null;
  peakRssSource: 'stats' | 'procfs' | 'shared-process' | null;
  rss: number | null;
  startedAt: number;
  exit: { reason: string; signal: string | null; exitCode: number | null; detail?: string } | null;
}

type StatsWorker = PoolStats['workers'][number] & { peakRss?: number; rss?: number };

/** Exit reasons that mean "retired on purpose and replaced", as opposed to crashes or shutdown. */
const RECYCLE =
  /recycl|maxTasksPerWorker|afterTasks|whenRss|whenHeap|leak|above|budget|memory limit reached/i;

export class WorkerTracker {
  readonly workers = new Map<number, WorkerRecord>();
  crashes = 0;
  recycles = 0;
  timeouts = 0;
  parentPeak: number | null = null;
  memoryNow = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly pool: CliPool) {
    pool.on('workerStart', (info) => {
      const r = this.record(info.workerId);
      r.pid = info.pid;
      r.threadId = info.threadId;
    });
    pool.on('workerExit', (info) => {
      const r = this.record(info.workerId);
      r.exit = {
        reason: info.reason,
        signal: info.signal,
        exitCode: info.exitCode,
        ...(info.detail ? { detail: info.detail } : {}),
      };
      r.rss = null;
      if (info.reason === 'crashed') this.crashes++;
      else if (/timed out/.test(info.reason)) this.timeouts++;
      else if (/ limit$/.test(info.reason)) {
        // Killed for going over a limit (e.g. the rss watchdog): a breach, counted from the task's error.
      } else if (RECYCLE.test(info.reason)) this.recycles++;
    });
  }

  private record(id: number): WorkerRecord {
    let r = this.workers.get(id);
    if (!r) {
      r = {
        id,
        runtime: '?',
        pid: undefined,
        threadId: undefined,
        tasks: 0,
        peakRss: null,
        peakRssSource: null,
        rss: null,
        startedAt: performance.now(),
        exit: null,
      };
      this.workers.set(id, r);
    }
    return r;
  }

  /** Samples now and then every `ms` (memory included) until stop(). */
  start(ms = 200): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A cheap sample for task counts, at most every `ms`: call it as often as you like. */
  maybeSample(ms = 25): void {
    const now = performance.now();
    if (now - this.lastSample >= ms) this.sample(false);
  }
  private lastSample = -Infinity;
  /** Units each worker had finished before the input started (the check of the export), not counted. */
  private readonly before = new Map<number, number>();

  /** From now on tasks are items: what workers ran so far (the start-up check) is left out of their counts. */
  countFromNow(): void {
    let stats: PoolStats;
    try {
      stats = this.pool.stats();
    } catch {
      return;
    }
    for (const w of stats.workers) this.before.set(w.id, w.tasksDone);
    for (const r of this.workers.values()) r.tasks = 0;
  }
  /** From the pool's stats(): limit breaches and workers retired between tasks. */
  breaches = 0;
  poolRecycles = 0;
  /** Descriptors tasks left open (detectLeaks), from the pool's stats. */
  leakedFds = 0;
  budget: number | undefined;

  sample(memory = true): void {
    let stats: PoolStats;
    try {
      stats = this.pool.stats();
    } catch {
      return;
    }
    this.lastSample = performance.now();
    this.breaches = stats.breaches ?? 0;
    this.poolRecycles = stats.recycles ?? 0;
    this.leakedFds = stats.leakedFds ?? 0;
    this.budget = stats.memory?.budget;
    let total = 0;
    if (memory) {
      const self = procMemory('self');
      const parentRss = self?.rss ?? process.memoryUsage.rss();
      this.parentPeak = Math.max(this.parentPeak ?? 0, self?.peak ?? parentRss);
      total = parentRss;
    }
    for (const w of stats.workers as StatsWorker[]) {
      const r = this.record(w.id);
      r.runtime = w.runtime;
      r.pid = w.pid;
      r.threadId = w.threadId;
      r.tasks = Math.max(r.tasks, w.tasksDone - (this.before.get(w.id) ?? 0));
      if (!memory) continue;
      if (typeof w.peakRss === 'number') {
        r.peakRss = Math.max(r.peakRss ?? 0, w.peakRss);
        r.peakRssSource = 'stats';
      }
      if (typeof w.rss === 'number') r.rss = w.rss;
      if (
        w.runtime === 'process' &&
        w.pid !== undefined &&
        (w.rss === undefined || w.peakRss === undefined)
      ) {
        // Older pools do not report memory: ask the kernel.
        const m = procMemory(w.pid);
        if (m) {
          r.rss = m.rss;
          if (r.peakRssSource !== 'stats') {
            r.peakRss = Math.max(r.peakRss ?? 0, m.peak);
            r.peakRssSource = 'procfs';
          }
        }
      } else if (w.runtime === 'thread' && r.peakRssSource !== 'stats') {
        r.peakRss = this.parentPeak;
        r.peakRssSource = 'shared-process';
      }
      if (w.runtime === 'process' && r.rss !== null) total += r.rss;
    }
    if (memory) {
      // With a memory guard the pool sums it itself (peakTotal is then non-zero).
      const m = stats.memory;
      this.memoryNow = m && m.peakTotal > 0 ? m.total : total;
    }
  }

  list(): WorkerRecord[] {
    return [...this.workers.values()].sort((a, b) => a.id - b.id);
  }
}
