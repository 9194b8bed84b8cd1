import type { RuntimeKind } from '../runtime/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { WorkerState } from './worker.js';

export interface WorkerStats {
  id: number;
  runtime: RuntimeKind;
  pid: number | undefined;
  threadId: number | undefined;
  state: WorkerState;
  /** Units finished (an apply call, or a map chunk). */
  tasksDone: number;
  /** Time spent running tasks, as measured inside the worker. */
  busyMs: number;
  /** Units sent to it and not yet answered. */
  inflight: number;
  uptimeMs: number;
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
      tasksDone: w.tasksDone,
      busyMs: w.busyMs,
      inflight: w.inflight.size,
      uptimeMs: now - w.startedAt,
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
  };
}
