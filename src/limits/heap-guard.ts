/**
 * How a process worker ended by the heap guard (native/heap.cc) is told apart from any other
 * death. The worker arms the guard with these two; the parent requires both, so a task that calls
 * process.exit(HEAP_GUARD_EXIT) is an ordinary crash, and one that merely prints the marker too.
 */

export const HEAP_GUARD_EXIT = 87;
export const HEAP_GUARD_MARKER = 'corral-heap-guard:';

const LINE = new RegExp(`${HEAP_GUARD_MARKER} used=(\\d+) limit=(\\d+) by=(\\w+)`);

/** What the guard found when it ended the worker: live old-generation bytes, and the limit. */
export interface HeapGuardKill {
  used: number;
  limit: number;
  /** 'full', 'thrash' (the guard's own GC test) or 'v8' (V8's near-heap-limit callback). */
  by: string;
}

/** The guard's report in a dead worker's stderr tail, if this death was the guard's. */
export function heapGuardKill(
  exitCode: number | null,
  stderrTail: string | undefined,
): HeapGuardKill | undefined {
  if (exitCode !== HEAP_GUARD_EXIT || !stderrTail) return undefined;
  const m = LINE.exec(stderrTail);
  return m ? { used: Number(m[1]), limit: Number(m[2]), by: m[3]! } : undefined;
}

/** Whether a line of a worker's stderr is the guard's report (kept out of the parent's terminal). */
export function isHeapGuardLine(line: string): boolean {
  return line.startsWith(HEAP_GUARD_MARKER);
}
