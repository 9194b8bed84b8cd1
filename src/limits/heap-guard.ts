/**
 * How a worker ended by the heap guard (native/heap.cc) is told apart from any other death.
 * A process worker arms the guard with the exit code and marker below and the parent requires both,
 * so a task that calls process.exit(HEAP_GUARD_EXIT) is an ordinary crash, and one that merely prints
 * the marker too. A thread's guard reports through a SharedArrayBuffer instead, which the thread
 * runtime turns into the same line, under Node's own code for a thread out of heap.
 */

export const HEAP_GUARD_EXIT = 87;
export const HEAP_GUARD_MARKER = 'corral-heap-guard:';
/** A thread's report: three float64s, [used, limit, by]. */
export const HEAP_GUARD_REPORT_BYTES = 24;
const BY = ['', 'full', 'thrash', 'v8'];

const LINE = new RegExp(`${HEAP_GUARD_MARKER} used=(\\d+) limit=(\\d+) by=(\\w+)`);

/** What the guard found when it ended the worker: live old-generation bytes, and the limit. */
export interface HeapGuardKill {
  used: number;
  limit: number;
  /** 'full', 'thrash' (the guard's own GC test) or 'v8' (V8's near-heap-limit callback). */
  by: string;
}

/** The report line, as native/heap.cc writes it for a process. */
export function heapGuardLine(kill: HeapGuardKill): string {
  return `${HEAP_GUARD_MARKER} used=${kill.used} limit=${kill.limit} by=${kill.by}`;
}

/** What a thread's guard left in its report buffer, if it ended the thread. */
export function readHeapGuardReport(report: SharedArrayBuffer): HeapGuardKill | undefined {
  const [used = 0, limit = 0, by = 0] = new Float64Array(report, 0, 3);
  return used > 0 ? { used, limit, by: BY[by] ?? String(by) } : undefined;
}

/** The heap guard's line in a stderr tail, whatever the exit code says. */
export function heapGuardLineIn(detail: string | undefined): HeapGuardKill | undefined {
  const m = LINE.exec(detail ?? '');
  return m ? { used: Number(m[1]), limit: Number(m[2]), by: m[3]! } : undefined;
}

/** The guard's report in a dead worker's exit facts, if this death was the guard's. */
export function heapGuardKill(facts: {
  exitCode: number | null;
  code: string | undefined;
  detail: string | undefined;
}): HeapGuardKill | undefined {
  if (facts.exitCode !== HEAP_GUARD_EXIT && facts.code !== 'ERR_WORKER_OUT_OF_MEMORY') return undefined;
  return heapGuardLineIn(facts.detail);
}
