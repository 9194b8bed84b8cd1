import { readCpuMs, readPeakRss, readRss } from '../limits/memory.js';
import type { RuntimeKind } from '../runtime/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { WorkerState } from './worker.js';

export interface WorkerStats {
  id: number;
  runtime: RuntimeKind;
  pid: number | undefined;
  threadId: number | undefined;
  state: WorkerState;
  /**
   * The warm spare: started after a worker died under its task, it runs no work until it takes the
   * place of the next worker that ends (then false), and goes once deaths stop coming. At most one.
   */
  spare: boolean;
  /** Units finished (an apply call, or a map chunk). */
  tasksDone: number;
  /** Time spent running tasks, as measured inside the worker. */
  busyMs: number;
  /** Units sent to it and not yet answered. */
  inflight: number;
  uptimeMs: number;
  /** Last sampled and peak RSS in bytes (process workers, when memory is watched; else read now). */
  rss: number | undefined;
  peakRss: number | undefined;
  /**
   * V8 heap in use (bytes) as of its latest result batch (reported at most every 100 ms), and the
   * highest such report: JS objects only, not Buffers or ArrayBuffers (see rss for those).
   */
  heapUsed: number;
  peakHeapUsed: number;
  /** Descriptors its tasks left open (detectLeaks). */
  leakedFds: number;
  /** CPU time the worker process used, user + system (process workers; undefined for threads). */
  cpuMs: number | undefined;
  /** Its tasks failed by a memory or CPU-time limit. */
  breaches: number;
}

export interface MemoryStats {
  /** memoryBudget in bytes, if one is set. */
  budget: number | undefined;
  /** Parent + process workers' RSS at the last sample. */
  total: number;
  peakTotal: number;
  /** Whether dispatch is held back now for the budget, and for how long it has been in all. */
  held: boolean;
  heldBackMs: number;
}

export interface PoolStats {
  workers: WorkerStats[];
  /** Units waiting for a worker. */
  queued: number;
  /** Units sent to workers and not yet answered. */
  running: number;
  completed: number;
  failed: number;
  /** Completed units per second since the pool started. */
  throughput: number;
  uptimeMs: number;
  /** Tasks failed by a memory or CPU-time limit. */
  breaches: number;
  /** Workers retired between tasks (maxTasksPerWorker, recycle thresholds, leaks, idleTimeout, budget). */
  recycles: number;
  leakedFds: number;
  memory: MemoryStats;
}

export function snapshot(d: Dispatcher): PoolStats {
  const now = performance.now();
  const workers: WorkerStats[] = [];
  let running = 0;
  for (const w of d.workers) {
    running += w.inflight.size;
    workers.push({
      id: w.id,
      runtime: w.runtime,
      pid: w.rt.pid,
      threadId: w.rt.threadId,
      state: w.state,
      spare: w.spare,
      tasksDone: w.tasksDone,
      busyMs: w.busyMs,
      inflight: w.inflight.size,
      uptimeMs: now - w.startedAt,
      rss: d.guard ? w.rss || undefined : w.rt.pid !== undefined ? readRss(w.rt.pid) : undefined,
      peakRss: w.peakRss || (w.rt.pid !== undefined ? readPeakRss(w.rt.pid) : undefined),
      heapUsed: w.heapUsed,
      peakHeapUsed: w.peakHeapUsed,
      leakedFds: w.leaks,
      cpuMs: w.rt.pid !== undefined ? readCpuMs(w.rt.pid) : undefined,
      breaches: w.breaches,
    });
  }
  const uptimeMs = now - d.createdAt;
  return {
    workers,
    queued: d.queued,
    running,
    completed: d.completed,
    failed: d.failed,
    throughput: uptimeMs > 0 ? (d.completed / uptimeMs) * 1000 : 0,
    uptimeMs,
    breaches: d.breaches,
    recycles: d.workers.recycles,
    leakedFds: d.leaks,
    memory: {
      budget: d.config.memoryBudget,
      total: d.guard?.total ?? process.memoryUsage.rss(),
      peakTotal: d.guard?.peakTotal ?? 0,
      held: d.guard?.held ?? false,
      heldBackMs: d.guard?.heldBackMs() ?? 0,
    },
  };
}
