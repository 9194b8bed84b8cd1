/**
 * What the pool measures about itself, always: per task name, the time units waited in the queue and
 * the time they ran in their worker (histograms), and counters of outcomes. The recording costs a
 * couple of log2s and increments per unit (a map chunk is one unit); bench/metrics.mjs measures it.
 *
 * Two things cost more and start only when someone looks: a once-a-second sample of the workers'
 * memory and of the queue (the last SERIES_LENGTH seconds), and a log of the latest units with their
 * worker, start, end and outcome (the dashboard's task stream).
 */
import { Histogram } from './histogram.js';

/** Seconds of history the sampler keeps. */
export const SERIES_LENGTH = 600;
/** Units the task-stream log keeps. */
const STREAM_LENGTH = 5000;

export type UnitOutcome = 'ok' | 'error' | 'crash' | 'breach' | 'timeout' | 'aborted' | 'cancelled';

/** One unit as the task stream shows it: ms on the performance.now() clock of the pool's process. */
export interface UnitRecord {
  workerId: number;
  task: string;
  /** Items (1 for an apply). */
  items: number;
  start: number;
  end: number;
  outcome: UnitOutcome;
}

export class TaskMeter {
  readonly wait = new Histogram();
  readonly run = new Histogram();
  completed = 0;
  failed = 0;
  items = 0;
}

export class Meter {
  readonly tasks = new Map<string, TaskMeter>();
  retries = 0;
  crashes = 0;
  /** Results taken off a worker's claim board (see pool/exits.ts and heldResults in pool/steal.ts). */
  salvaged = 0;
  timeouts = 0;
  aborts = 0;
  /** The task-stream log, while someone follows it (see follow()). */
  private stream: UnitRecord[] | undefined = undefined;
  private streamAt = 0;
  private followers = 0;
  /** Listeners of each recorded unit (the dashboard pushes them). */
  private readonly listeners = new Set<(u: UnitRecord) => void>();

  task(name: string): TaskMeter {
    let t = this.tasks.get(name);
    if (!t) {
      t = new TaskMeter();
      this.tasks.set(name, t);
    }
    return t;
  }

  /** A unit was sent to a worker after waiting `ms` since it was queued. */
  sent(name: string, ms: number): void {
    this.task(name).wait.record(ms / 1000);
  }

  /** A unit's worker answered: it ran `ms`. */
  ran(name: string, ms: number, items: number, ok: boolean): void {
    const t = this.task(name);
    t.run.record(ms / 1000);
    t.items += items;
    if (ok) t.completed++;
    else t.failed++;
  }

  /** A unit whose result was taken off its worker's claim board: its run time is not known. */
  salvage(name: string, items: number): void {
    const t = this.task(name);
    t.items += items;
    t.completed++;
    this.salvaged++;
  }

  /** Whether anyone follows the task stream (then units are logged). */
  get following(): boolean {
    return this.followers > 0;
  }

  log(record: UnitRecord): void {
    if (!this.stream) return;
    if (this.stream.length < STREAM_LENGTH) this.stream.push(record);
    else {
      this.stream[this.streamAt] = record;
      this.streamAt = (this.streamAt + 1) % STREAM_LENGTH;
    }
    for (const listener of this.listeners) listener(record);
  }

  /** Starts logging units for `listener` until the returned function is called. */
  follow(listener?: (u: UnitRecord) => void): () => void {
    this.followers++;
    this.stream ??= [];
    if (listener) this.listeners.add(listener);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (listener) this.listeners.delete(listener);
      if (--this.followers === 0) {
        this.stream = undefined;
        this.streamAt = 0;
      }
    };
  }

  /** The logged units, oldest first. */
  recent(): UnitRecord[] {
    const s = this.stream ?? [];
    return s.length < STREAM_LENGTH ? [...s] : [...s.slice(this.streamAt), ...s.slice(0, this.streamAt)];
  }
}
