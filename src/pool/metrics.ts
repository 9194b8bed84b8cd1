/**
 * pool.metrics(): what the pool measured (metrics/meter.ts) with what its workers look like now, as
 * one typed value; and the sampler behind its time series (memory per worker, queue, throughput),
 * started by the first call that wants them.
 */
import { readRss } from '../limits/memory.js';
import type { HistogramSnapshot } from '../metrics/histogram.js';
import { type Meter, SERIES_LENGTH, type UnitOutcome } from '../metrics/meter.js';
import type { Dispatcher } from './dispatcher.js';
import type { Unit } from './unit.js';
import type { PoolWorker, WorkerState } from './worker.js';

export interface TaskMetrics {
  /** Time units (an apply, a map chunk) waited in the queue before a worker took them. */
  wait: HistogramSnapshot;
  /** Time units ran in their worker. */
  run: HistogramSnapshot;
  completed: number;
  failed: number;
  /** Map items (and apply calls) answered. */
  items: number;
}

export interface WorkerMetrics {
  id: number;
  pid: number | undefined;
  threadId: number | undefined;
  state: WorkerState;
  /**
   * The warm spare: started after a worker died under its task, it runs no work until it takes the
   * place of the next worker that ends (then false), and goes once deaths stop coming. At most one.
   */
  spare: boolean;
  tasksDone: number;
  /** Share of its life spent running tasks (0..1, by the worker's own clock). */
  utilization: number;
  /** Bytes; rss is the whole process for thread workers. */
  rss: number | undefined;
  peakRss: number | undefined;
  heapUsed: number;
  peakHeapUsed: number;
  /** The limits it runs under, in bytes (undefined: none). */
  heapLimit: number | undefined;
  rssLimit: number | undefined;
}

/** One second of the pool's life (the sampler's), oldest first in `series`. */
export interface MetricsSample {
  /** ms since the epoch. */
  at: number;
  queued: number;
  running: number;
  completed: number;
  failed: number;
  workers: { id: number; rss: number | undefined; heapUsed: number }[];
}

export interface PoolMetrics {
  uptimeSeconds: number;
  queued: number;
  running: number;
  /** Units completed and failed, all tasks together. */
  completed: number;
  failed: number;
  retries: number;
  timeouts: number;
  aborts: number;
  /** Workers that died on their own (crashes, breaches), not stopped by the pool. */
  crashes: number;
  /**
   * Results of tasks of microseconds that waited on a worker's claim board for batch-mates when the
   * worker died or went into a long unit, and were delivered from there (the tasks did not run again).
   */
  salvaged: number;
  breaches: number;
  recycles: number;
  leakedFds: number;
  /** By task name. */
  tasks: Record<string, TaskMetrics>;
  workers: WorkerMetrics[];
  memory: { total: number; budget: number | undefined };
  /** The last SERIES_LENGTH seconds, sampled once a second from the first metrics() call on. */
  series: MetricsSample[];
}

/** The once-a-second samples; runs while the pool is open, unref'd. */
export class Sampler {
  readonly series: MetricsSample[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly d: Dispatcher) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 1000);
    this.timer.unref();
  }

  private sample(): void {
    const d = this.d;
    const workers: MetricsSample['workers'] = [];
    let running = 0;
    for (const w of d.workers) {
      running += w.owed;
      workers.push({
        id: w.id,
        rss: w.rss || (w.rt.pid !== undefined ? readRss(w.rt.pid) : process.memoryUsage.rss()),
        heapUsed: w.heapUsed,
      });
    }
    this.series.push({
      at: Date.now(),
      queued: d.queued,
      running,
      completed: d.completed,
      failed: d.failed,
      workers,
    });
    if (this.series.length > SERIES_LENGTH) this.series.shift();
    if (!d.life.running) clearInterval(this.timer);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Per task name, what the meter counted: the same for every backend. */
export function taskMetrics(meter: Meter): Record<string, TaskMetrics> {
  const tasks: Record<string, TaskMetrics> = {};
  for (const [name, t] of meter.tasks) {
    tasks[name] = {
      wait: t.wait.snapshot(),
      run: t.run.snapshot(),
      completed: t.completed,
      failed: t.failed,
      items: t.items,
    };
  }
  return tasks;
}

/** For the task stream: a unit that ran on `w` from `start` until now, and how it ended. */
export function logUnit(meter: Meter, w: PoolWorker, u: Unit, start: number, outcome: UnitOutcome): void {
  meter.log({ workerId: w.id, task: u.name, items: u.size, start, end: performance.now(), outcome });
}

export function metricsOf(d: Dispatcher, meter: Meter, sampler: Sampler): PoolMetrics {
  const now = performance.now();
  const tasks = taskMetrics(meter);
  const { limits } = d.config;
  const workers: WorkerMetrics[] = [];
  let running = 0;
  for (const w of d.workers) {
    running += w.owed;
    const life = now - w.startedAt;
    workers.push({
      id: w.id,
      pid: w.rt.pid,
      threadId: w.rt.threadId,
      state: w.state,
      spare: w.spare,
      tasksDone: w.tasksDone,
      utilization: life > 0 ? Math.min(1, w.busyMs / life) : 0,
      rss: w.rss || (w.rt.pid !== undefined ? readRss(w.rt.pid) : undefined),
      peakRss: w.peakRss || undefined,
      heapUsed: w.heapUsed,
      peakHeapUsed: w.peakHeapUsed,
      heapLimit: limits.heap,
      rssLimit: limits.rss,
    });
  }
  return {
    uptimeSeconds: (now - d.createdAt) / 1000,
    queued: d.queued,
    running,
    completed: d.completed,
    failed: d.failed,
    retries: meter.retries,
    timeouts: meter.timeouts,
    aborts: meter.aborts,
    crashes: meter.crashes,
    salvaged: meter.salvaged,
    breaches: d.breaches,
    recycles: d.workers.recycles,
    leakedFds: d.leaks,
    tasks,
    workers,
    memory: { total: d.guard?.total ?? process.memoryUsage.rss(), budget: d.config.memoryBudget },
    series: [...sampler.series],
  };
}
