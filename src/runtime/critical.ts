/**
 * Corral's code that a task calls synchronously (channel handles, shared memory, progress and events)
 * updates state in several steps: a queue's credits and its outgoing batch, a segment and its tracker
 * entry. An rss stop in place (native/heap.cc) ends a task's call wherever it is, without running any
 * `finally`, and the worker goes on: a stop that lands between two of those steps would leave it
 * running with the state half-updated (a queue item counted but never sent, a segment never tracked).
 * So that code runs inside critical(): a stop that lands there leaves the count raised, and the worker
 * then ends its process as it did before stops in place existed (worker/limits.ts).
 *
 * The count lives on globalThis, not in this module: a task may load another copy of corral (its own
 * node_modules) whose channel handles the same worker runs.
 */
const KEY = Symbol.for('corral.critical');

interface Count {
  depth: number;
  /** A pool of its own runs in this process: too much state to count in steps (see ownPool). */
  pool: boolean;
}

const count: Count = ((globalThis as { [KEY]?: Count })[KEY] ??= { depth: 0, pool: false });

export function critical<T>(fn: () => T): T {
  count.depth++;
  try {
    return fn();
  } finally {
    // Not reached when a stop lands in fn: that is the point.
    count.depth--;
  }
}

/**
 * A Pool was made in this process. Its dispatcher's state changes in a task's synchronous calls
 * (apply, map, its constructor starting workers) and in callbacks, in too many steps to count: a
 * worker that runs a pool of its own ends its process on an rss breach, as before.
 */
export function ownPool(): void {
  count.pool = true;
}

/** Right after a stopped call: whether the worker may go on (the stop landed outside corral's steps). */
export function stopLandedSafely(): boolean {
  return count.depth === 0 && !count.pool;
}
