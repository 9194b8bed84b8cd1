import type { RuntimeExit, RuntimeKind, RuntimeWorker } from '../runtime/types.js';
import type { Arena } from './arena.js';
import type { ClaimBoard } from './steal.js';
import type { Unit } from './unit.js';

/**
 * A worker's life. Every change goes through `to()`, which refuses moves the table does not allow:
 * a state machine that cannot be bypassed is what lets one place (Dispatcher.onExit) decide what an
 * exit means for the units the worker held.
 *
 *   starting ─ready→ idle ⇄ busy ─retire→ draining ─(empty)→ stopping ─→ exited
 *   any state ─kill/crash→ stopping | exited
 */
export type WorkerState = 'starting' | 'idle' | 'busy' | 'draining' | 'stopping' | 'exited';

const NEXT: Record<WorkerState, readonly WorkerState[]> = {
  starting: ['idle', 'stopping', 'exited'],
  idle: ['busy', 'draining', 'stopping', 'exited'],
  busy: ['idle', 'draining', 'stopping', 'exited'],
  draining: ['stopping', 'exited'],
  stopping: ['exited'],
  exited: [],
};

export class PoolWorker {
  state: WorkerState = 'starting';
  /** Units sent and not yet answered, in the order sent: the first `concurrency` are running. */
  readonly inflight = new Map<number, Unit>();
  tasksDone = 0;
  busyMs = 0;
  readonly startedAt = performance.now();
  idleTimer: NodeJS.Timeout | undefined = undefined;
  /** Why the pool stopped it, if it did: decides how its running units are reported. */
  stopReason: string | undefined = undefined;
  exit: RuntimeExit | undefined = undefined;
  /** Last sampled and highest RSS of a process worker (0 until sampled). */
  rss = 0;
  peakRss = 0;
  /** V8 heap in use as the worker last reported it (with its results), and the highest report. */
  heapUsed = 0;
  peakHeapUsed = 0;
  /** Set when the pool stopped it for a memory breach it observed itself, or the OOM killer took it. */
  breach: { kind: 'rss' | 'budget' | 'cgroup'; limit: number; value: number | undefined } | undefined =
    undefined;
  /** The memory cgroup's OOM-kill count when it started or last reported (process workers in a memory cgroup). */
  oomKillsSeen: number | undefined = undefined;
  oomReadAt = -Infinity;
  leaks = 0;

  noteHeap(bytes: number | undefined): void {
    if (bytes === undefined) return;
    this.heapUsed = bytes;
    if (bytes > this.peakHeapUsed) this.peakHeapUsed = bytes;
  }
  /** Its tasks failed by a memory or CPU-time limit. */
  breaches = 0;
  /** Shared claim words for work stealing (thread workers only). */
  board: ClaimBoard | undefined = undefined;
  /** Process workers: the shared segment big number chunks travel through, made on first need. */
  arena: Arena | undefined = undefined;
  arenaTried = false;
  readonly history: WorkerState[] = ['starting'];
  rt!: RuntimeWorker;

  constructor(
    readonly id: number,
    readonly runtime: RuntimeKind,
  ) {}

  to(next: WorkerState): void {
    if (next === this.state) return;
    if (!NEXT[this.state].includes(next)) {
      throw new Error(`corral internal error: worker ${this.id} cannot go from ${this.state} to ${next}`);
    }
    this.state = next;
    this.history.push(next);
  }

  /** Can take new units: started, not retiring. */
  get accepting(): boolean {
    return this.state === 'idle' || this.state === 'busy';
  }
}
