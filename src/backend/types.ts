/**
 * The seam under Pool: everything a user sees (apply, map and imap chunking, typed errors, abort,
 * timeouts, back pressure) lives once, above it, in pool/; a backend runs units and settles them
 * through their sinks. The local dispatcher (pool/dispatcher.ts: threads and processes on this
 * machine) is one backend; a distributed one implements the same few calls.
 */
import type { UnitRecord } from '../metrics/meter.js';
import type { PoolState } from '../pool/lifecycle.js';
import type { PoolMetrics } from '../pool/metrics.js';
import type { PoolStats } from '../pool/stats.js';
import type { Unit } from '../pool/unit.js';
import type { RuntimeKind } from '../runtime/types.js';

/** What the layer above needs to know of a backend's set-up. */
export interface BackendConfig {
  /** Workers (or capacity) to size map chunks by. */
  readonly workers: number;
  /** Tasks a worker runs at once. */
  readonly concurrency: number;
  /** Units that may wait; past it apply() is refused and maps stop reading. */
  readonly maxQueue: number;
  /** Where the tasks run: handles in arguments are encoded for it ('remote': none can travel). */
  readonly runtime: RuntimeKind | 'remote';
  /** Defaults of a call's options. */
  readonly taskTimeout: number;
  readonly retries: number;
  /**
   * Work a map chunk aims at, in ms, and the least it may shrink to at the end of an input: a backend
   * whose units cost milliseconds each (a remote job) asks for more than the local default.
   */
  readonly chunkMs?: number;
}

/** A map job: what close() waits for and lets finish (see pool/map.ts). */
export interface Job {
  /** close() was called: read the rest of the input now, keeping results for the consumer. */
  drain(): void;
  /** The backend no longer holds maps back (Backend.heldBack): read input again. */
  resume?(): void;
  /**
   * terminate(), or the pool broke: the job ends now with `error`, also while it waits for its input
   * or is held back (no chunk of it out, so no settled chunk would have told it).
   */
  stop(error: Error): void;
}

export interface Backend {
  readonly config: BackendConfig;
  readonly state: PoolState;
  /** The error a new call gets now, if any. */
  refusal(): Error | undefined;
  /** The error a chunk of a job already running gets: only terminate() or a broken pool stop it. */
  jobRefusal(): Error | undefined;
  /** Whether a unit may be queued now (maxQueue). */
  readonly hasRoom: boolean;
  /**
   * Maps should stop reading input for now, whatever their window (a shared queue is long); the
   * backend calls Job.resume() when that ends. Absent: never.
   */
  readonly heldBack?: boolean;
  /** Several callers (keys, priorities) compete for the workers now or did a moment ago. */
  readonly contended: boolean;
  /** Runs the unit; it settles exactly once through unit.sink. */
  submit(unit: Unit, front?: boolean): void;
  /** The unit's signal fired: drop it if queued, cancel it if running. */
  abort(unit: Unit): void;
  /** Settles a unit that will not be submitted (or is dropped) with this error. */
  settleFail(unit: Unit, error: Error): void;
  /** Drops the queued units `belongs` picks, failing them with `error`. */
  cancelQueued(belongs: (u: Unit) => boolean, error: Error): void;
  /** A job has input left or units out (close() waits for it), and when it has none. */
  jobWorking(job: Job): void;
  jobDone(job: Job): void;
  /** A stream's consumer took `n` items (pool.stream); absent where streams are not supported. */
  credit?(unit: Unit, n: number): void;
  stats(): PoolStats;
  /** What the pool measured (histograms, counters, per-worker memory, the last minutes). */
  metrics(): PoolMetrics;
  /** Calls `listener` with each unit that ends until the returned function is called (the task stream). */
  follow?(listener: (unit: UnitRecord) => void): () => void;
  close(): Promise<void>;
  terminate(): Promise<void>;
}
