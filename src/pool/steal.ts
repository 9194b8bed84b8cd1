/**
 * Work stealing for thread workers. A worker may hold prefetched units behind one that runs long;
 * when another worker goes idle, the pool takes those units back, but only the ones the busy worker
 * has provably not started. Each unit sent gets a word on a board shared with its worker: the pool
 * writes the unit's seq, the worker swaps it to -seq before starting the unit, the pool swaps it to 0
 * to take the unit back. Whichever compare-and-swap wins owns the unit, so a unit is never run twice
 * and never dropped, with no message round trip. Process workers get their board in a small shared
 * memory segment (Atomics compare-and-swap is atomic across processes on a shared mapping); where the
 * shared-memory addon is missing they are not stolen from, and their prefetch follows measured task time.
 */
import { BOARD_SLOTS } from '../runtime/protocol.js';
import type { Unit } from './unit.js';
import type { PoolWorker } from './worker.js';

/** A unit ahead is "long" after this many times the mean unit time (and at least 1 ms). */
const LONG_FACTOR = 4;

export class ClaimBoard {
  private readonly words: Int32Array;
  private next = 0;

  /** For a thread: a fresh SharedArrayBuffer. For a process: the buffer of a shared segment. */
  constructor(
    readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(BOARD_SLOTS * 4),
    /** Released when its worker exits. */
    readonly segment?: { name: string; close(): void },
  ) {
    this.words = new Int32Array(buffer);
  }

  /** Posts the unit's claim word; the worker counts units in the same order, so slots agree. */
  offer(u: Unit): void {
    u.slot = this.next++ % BOARD_SLOTS;
    Atomics.store(this.words, u.slot, u.seq);
  }

  /** For units offered but not delivered (the send failed): the worker never counted them. */
  withdraw(count: number): void {
    this.next -= count;
  }

  /** True when the worker had not started the unit: it is the pool's again. */
  take(u: Unit): boolean {
    return Atomics.compareExchange(this.words, u.slot, u.seq, 0) === u.seq;
  }
}

/**
 * Units to take back for an idle worker: from the busy worker whose unit ahead has run longest
 * (past LONG_FACTOR x mean), the second half of what it holds, newest first. Returns how long to
 * wait before a worker would qualify, when none does yet.
 */
export function pickVictim(
  workers: Iterable<PoolWorker>,
  meanMs: number,
  now: number,
): { victim: PoolWorker | undefined; retryInMs: number | undefined } {
  const longAfter = Math.max(1, LONG_FACTOR * meanMs);
  let victim: PoolWorker | undefined;
  let retryInMs: number | undefined;
  for (const w of workers) {
    if (!w.board || w.inflight.size < 2) continue;
    const ran = now - w.headSince;
    if (ran < longAfter) {
      retryInMs = Math.min(retryInMs ?? Infinity, longAfter - ran);
      continue;
    }
    if (!victim || w.headSince < victim.headSince) victim = w;
  }
  return { victim, retryInMs };
}
