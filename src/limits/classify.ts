/**
 * Most breaches are deaths, not exceptions: V8 aborts (SIGABRT/SIGTRAP) when it cannot grow its
 * heap or commit a semi-space, the kernel sends SIGXCPU for CPU time, an rss watchdog or a cgroup
 * kills with SIGKILL. This turns how a worker ended into the breach it was, if it was one.
 * Messages matched here are the ones measured on Node 20, 22 and 24 (shared FACTS §1b, §1c).
 */
import type { MemoryLimitKind } from '../errors.js';
import { heapGuardKill, heapGuardLineIn } from './heap-guard.js';
import type { ResolvedLimits } from './limits.js';
import { RSS_STOPPED_CODE, rssGuardKill } from './rss-guard.js';

export type Breach =
  | {
      type: 'memory';
      kind: MemoryLimitKind;
      limit: number;
      observed: number | undefined;
      /** The worker's rss guard stopped the call in place: the worker freed the memory and lives on. */
      inPlace?: true;
    }
  | { type: 'cpu'; limit: number };

export interface DeathFacts {
  exitCode: number | null;
  signal: string | null;
  /** Node's code for a thread's death, e.g. ERR_WORKER_OUT_OF_MEMORY. */
  code: string | undefined;
  /** stderr tail (process) or the thread's error message. */
  detail: string | undefined;
  /** Set when the pool itself killed the worker for a breach it observed (rss, budget), or saw the OOM killer take it. */
  observed: { kind: MemoryLimitKind; limit: number; value: number | undefined } | undefined;
}

const HEAP_OOM =
  /JavaScript heap out of memory|Reached heap limit|Worker terminated due to reaching memory limit/;
/** Out of memory outside the JS heap: what an address-space or data rlimit produces. */
const NATIVE_OOM =
  /Committing semi space failed|Failed to reserve virtual memory|Array buffer allocation failed|std::bad_alloc|Fatal process out of memory|Fatal process OOM|Failed to allocate memory/;

/** The breach a death was, or undefined when it was an ordinary crash. */
export function classifyDeath(facts: DeathFacts, limits: ResolvedLimits): Breach | undefined {
  if (limits.cpuTime !== undefined && (facts.signal === 'SIGXCPU' || facts.signal === 'SIGKILL')) {
    // SIGKILL alone could be anyone's; SIGXCPU is only ever the CPU rlimit. Checked first: the
    // cgroup's OOM count may have risen for another process meanwhile.
    if (facts.signal === 'SIGXCPU' || /CPU time limit/.test(facts.detail ?? '')) {
      return { type: 'cpu', limit: limits.cpuTime };
    }
  }
  if (facts.observed) {
    return {
      type: 'memory',
      kind: facts.observed.kind,
      limit: facts.observed.limit,
      observed: facts.observed.value,
    };
  }
  const rss = rssGuardKill(facts, limits.rss);
  // Both guards can fire at once (a heap bomb's heap and rss fill together): two threads, each
  // writing its line and then _exit-ing, and the first _exit sets the code. A heap that was full
  // first (the heap guard's line, or V8 already printing its heap-OOM report) is the cause.
  const guard = heapGuardKill(facts) ?? (rss ? heapGuardLineIn(facts.detail) : undefined);
  if (guard) {
    // The heap limit comes from limits.heap, or from an address-space or data rlimit (heapMbFor).
    const kind = limits.heap === undefined ? rlimitKind(limits) : undefined;
    return kind
      ? { type: 'memory', kind: kind[0], limit: kind[1], observed: guard.used }
      : { type: 'memory', kind: 'heap', limit: limits.heap ?? guard.limit, observed: guard.used };
  }
  if (rss) {
    if (HEAP_OOM.test(facts.detail ?? '')) {
      const heap = heapBreach(limits);
      if (heap) return heap;
    }
    return { type: 'memory', kind: 'rss', limit: limits.rss ?? rss.limit, observed: rss.rss };
  }
  const detail = facts.detail ?? '';
  const aborted =
    facts.code === 'ERR_WORKER_OUT_OF_MEMORY' ||
    facts.signal === 'SIGABRT' ||
    facts.signal === 'SIGTRAP' ||
    facts.exitCode === 134 ||
    facts.exitCode === 133;
  if (!aborted) return undefined;
  const rlimit = limits.addressSpace !== undefined || limits.data !== undefined;
  if (NATIVE_OOM.test(detail) && rlimit) {
    return limits.addressSpace !== undefined
      ? { type: 'memory', kind: 'address-space', limit: limits.addressSpace, observed: undefined }
      : { type: 'memory', kind: 'data', limit: limits.data!, observed: undefined };
  }
  if (HEAP_OOM.test(detail) || facts.code === 'ERR_WORKER_OUT_OF_MEMORY' || NATIVE_OOM.test(detail)) {
    return heapBreach(limits);
  }
  return undefined;
}

/** A full heap, with no measurement: of limits.heap, or of the rlimit the heap was sized by. */
function heapBreach(limits: ResolvedLimits): Breach | undefined {
  if (limits.heap !== undefined)
    return { type: 'memory', kind: 'heap', limit: limits.heap, observed: undefined };
  const kind = rlimitKind(limits);
  return kind ? { type: 'memory', kind: kind[0], limit: kind[1], observed: undefined } : undefined;
}

/** The rlimit a heap sized by heapMbFor was derived from. */
function rlimitKind(limits: ResolvedLimits): [MemoryLimitKind, number] | undefined {
  if (limits.addressSpace !== undefined) return ['address-space', limits.addressSpace];
  if (limits.data !== undefined) return ['data', limits.data];
  return undefined;
}

/**
 * A RangeError a task caught and rethrew under an rlimit is the same breach, reported as such; so is
 * the error a worker throws for a call its rss guard stopped in place (RSS_STOPPED_CODE), when it
 * carries the worker's `stopKey`: a secret the pool gave that worker alone, so that a task cannot pass
 * its own error off as one.
 */
export function classifyThrown(
  error: { name?: string; message?: string; code?: unknown; rss?: unknown; key?: unknown },
  limits: ResolvedLimits,
  stopKey?: string,
): Breach | undefined {
  if (
    stopKey !== undefined &&
    error.key === stopKey &&
    error.code === RSS_STOPPED_CODE &&
    limits.rss !== undefined
  ) {
    const observed = typeof error.rss === 'number' && error.rss > 0 ? error.rss : undefined;
    return { type: 'memory', kind: 'rss', limit: limits.rss, observed, inPlace: true };
  }
  if (error.name !== 'RangeError' || !NATIVE_OOM.test(error.message ?? '')) return undefined;
  if (limits.addressSpace !== undefined) {
    return { type: 'memory', kind: 'address-space', limit: limits.addressSpace, observed: undefined };
  }
  if (limits.data !== undefined)
    return { type: 'memory', kind: 'data', limit: limits.data, observed: undefined };
  return undefined;
}
