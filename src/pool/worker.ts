import type { Deadline } from '../deadline.js';
import type { RuntimeExit, RuntimeKind, RuntimeWorker } from '../runtime/types.js';
import type { Arena } from './arena.js';
import type { ClaimBoard } from './steal.js';
import type { Unit } from './unit.js';

/**
 * A worker's life. Every change goes through `to()`, which refuses moves the table does not allow:
 * a state machine that cannot be bypassed is what lets one place (exits.ts) decide what an
 * exit means for the units the worker held.
 *
 *   starting ─ready→ idle ⇄ busy ─retire→ draining ─(nothing running)→ stopping ─→ exited
 *   any live state ─stop(cause)→ stopping ─→ exited;  any state ─died→ exited
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

/**
 * Why the pool ended a worker, recorded as a value when the stop is decided (never inferred later
 * from the state it happens to be in): what its exit means for its units and for the pool follows
 * from this alone. No cause at exit means the worker died on its own.
 */
export type StopCause =
  /** Not ready within limits.startTimeout. */
  | { kind: 'start-timeout'; ms: number }
  /** The module, its initializer or the rlimits failed in the worker: the pool is broken. */
  | { kind: 'fatal' }
  /** Retired between tasks (recycle thresholds, maxTasksPerWorker, idleTimeout, memory budget, leaks). */
  | { kind: 'retired'; reason: string }
  /** A timed-out or aborted task did not return within cancelGrace. `blocked`: its event loop did not even answer. */
  | { kind: 'cancelled'; task: string; why: 'timeout' | 'abort'; blocked: boolean }
  /** Stopped for a memory breach the pool observed (rss, budget). */
  | { kind: 'breach'; limit: string }
  | { kind: 'closed' }
  | { kind: 'terminated' }
  | { kind: 'broken' };

/** Causes that end the pool's use of workers, not just this one: its death is no start failure. */
export function isShutdown(cause: StopCause | undefined): boolean {
  return cause?.kind === 'closed' || cause?.kind === 'terminated' || cause?.kind === 'broken';
}

/** Words for events and messages. */
export function describeCause(cause: StopCause): string {
  switch (cause.kind) {
    case 'start-timeout':
      return `start timeout: not ready within ${cause.ms} ms`;
    case 'fatal':
      return 'fatal';
    case 'retired':
      return cause.reason;
    case 'cancelled':
      return cause.blocked
        ? `task '${cause.task}' (${cause.why === 'timeout' ? 'timed out' : 'aborted'}) kept its event loop blocked past cancelGrace`
        : `task '${cause.task}' (${cause.why === 'timeout' ? 'timed out' : 'aborted'}) did not return within cancelGrace`;
    case 'breach':
      return `${cause.limit} limit`;
    case 'closed':
      return 'pool closed';
    case 'terminated':
      return 'pool terminated';
    case 'broken':
      return 'the pool cannot start workers';
  }
}

export class PoolWorker {
  state: WorkerState = 'starting';
  /**
   * Units sent and not yet answered, in the order sent. The first `concurrency` are running, or finished
   * with their results held on the claim board (worker/runner.ts), never with one that can be cancelled
   * behind them; the claim board tells exactly (ClaimBoard.phase). A unit cancelled while running
   * (timeout, abort) stays here as a zombie until its worker answers or is stopped: it still holds its
   * slot in the worker.
   */
  readonly inflight = new Map<number, Unit>();
  /** Seqs in `inflight` whose unit was settled by a cancel while its worker still runs it. */
  readonly zombies = new Set<number>();
  /** Zombies whose cancel the worker acknowledged: its event loop is alive. */
  readonly acked = new Set<number>();
  /** broadcast() units for this worker alone, not sent yet: they go before the shared queue. */
  pinned: Unit[] = [];
  tasksDone = 0;
  busyMs = 0;
  /** When it last posted results, or was sent units while it held none: when its current unit started, about. */
  runningSince = 0;
  /** Result batches received from it: with its claim board's count, whether one is on its way. */
  batches = 0;
  readonly startedAt = performance.now();
  /** Set when it said it is ready: a death before that is a failed start. */
  readyAt: number | undefined = undefined;
  /** The one timer this worker has at a time: its start timeout, or its idle timeout. */
  timer: Deadline | undefined = undefined;
  /** Why the pool ended it, set when the stop (or the retirement) was decided. */
  cause: StopCause | undefined = undefined;
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
  /** Its tasks failed by a memory or CPU-time limit. */
  breaches = 0;
  /** Its rss guard stops a breaching call in place (it said so when ready): see memory.ts. */
  rssInPlace = false;
  /** The secret its errors for calls stopped in place carry (see classifyThrown); gone once ready if it does not stop in place. */
  rssStopKey: string | undefined = undefined;
  /** Shared claim words for work stealing (thread workers only). */
  board: ClaimBoard | undefined = undefined;
  /** Process workers: the shared segment big number chunks travel through, made on first need. */
  arena: Arena | undefined = undefined;
  arenaTried = false;
  rt!: RuntimeWorker;
  /**
   * Started ahead of need, after a worker died under its task: it takes no work until it takes the
   * place of a worker that ends (WorkerSet.promote), so a breach costs the pool the death, not a start.
   */
  spare = false;

  constructor(
    readonly id: number,
    readonly runtime: RuntimeKind,
    /** Told of every change of state: the pool checks its progress invariant after each. */
    private readonly changed: (w: PoolWorker) => void,
  ) {}

  noteHeap(bytes: number | undefined): void {
    if (bytes === undefined) return;
    this.heapUsed = bytes;
    if (bytes > this.peakHeapUsed) this.peakHeapUsed = bytes;
  }

  to(next: WorkerState): void {
    if (next === this.state) return;
    if (!NEXT[this.state].includes(next)) {
      throw new Error(`corral internal error: worker ${this.id} cannot go from ${this.state} to ${next}`);
    }
    this.state = next;
    this.changed(this);
  }

  /** Can take new units: started, not retiring, not a spare. */
  get accepting(): boolean {
    return (this.state === 'idle' || this.state === 'busy') && !this.spare;
  }

  /** Will take units now or once started: what keeps queued work from waiting forever. */
  get live(): boolean {
    return (this.state === 'starting' && !this.spare) || this.accepting;
  }

  /** Units it holds that a caller still waits for (zombies excluded). */
  get owed(): number {
    return this.inflight.size - this.zombies.size;
  }
}
