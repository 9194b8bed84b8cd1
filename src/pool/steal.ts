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
import { BOARD_READ, BOARD_SLOTS, BOARD_WORDS } from '../runtime/protocol.js';
import type { Unit } from './unit.js';
import type { PoolWorker } from './worker.js';

export class ClaimBoard {
  private readonly words: Int32Array;
  private next = 0;

  /** For a thread: a fresh SharedArrayBuffer. For a process: the buffer of a shared segment. */
  constructor(
    readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(BOARD_WORDS * 4),
    /** Released when its worker exits. */
    readonly segment?: { name: string; close(): void },
  ) {
    this.words = new Int32Array(buffer);
  }

  /**
   * How many more units may be offered now. A slot is given to a new unit only once the worker has
   * read past the unit that had it: a worker held up (a long synchronous task, a starved process) still
   * has, unread in its queue, units taken back from it, and every one of them was sent again elsewhere.
   * Reusing such a slot made the old unit look like the worker's own again (it ran twice), and once the
   * new unit was taken back in turn, made a unit still waiting there look taken (skipped: its call never
   * settled). Steady work holds a few dozen units per worker; only a steal storm gets near this.
   * `oldest`: the first unit the worker holds (its inflight map keeps the order they were offered in).
   */
  room(oldest: Unit | undefined): number {
    // The worker's count comes as 32 bits: rebuilt here as a full count.
    let from = this.next - ((this.next - Atomics.load(this.words, BOARD_READ)) | 0);
    // A unit it has read may still run, and a cancellable one watches its word while it does
    // (claimRevoked): the word of the oldest unit the worker holds stays its own until it ends.
    if (oldest !== undefined && oldest.slot < from) from = oldest.slot;
    return BOARD_SLOTS - (this.next - from);
  }

  /** Units offered that the worker has not read yet: it may read them without a word to the pool. */
  unread(): boolean {
    return ((this.next - Atomics.load(this.words, BOARD_READ)) | 0) > 0;
  }

  /** Posts the unit's claim word; the worker counts units in the same order, so slots agree. */
  offer(u: Unit): void {
    u.slot = this.next++;
    Atomics.store(this.words, u.slot % BOARD_SLOTS, u.seq);
  }

  /** For units offered but not delivered (the send failed): the worker never counted them. */
  withdraw(count: number): void {
    this.next -= count;
  }

  /** Marks a unit the worker runs as cancelled: a map chunk of it stops at its next item. */
  revoke(u: Unit): void {
    Atomics.compareExchange(this.words, u.slot % BOARD_SLOTS, -u.seq, 0);
  }

  /** True when the worker had not started the unit: it is the pool's again. */
  take(u: Unit): boolean {
    // The word holds the seq as 32 bits (a long-lived pool's seq passes 2^31).
    return Atomics.compareExchange(this.words, u.slot % BOARD_SLOTS, u.seq, 0) === (u.seq | 0);
  }
}

/**
 * Takes back, for an idle worker, the newer half of what the busiest worker holds beyond the unit it
 * runs. Stopping at the first unit the worker has claimed keeps it exact: a worker starts units in
 * order, so everything before a claimed unit has started too. Cheap enough (one compare-and-swap per
 * unit) to do whenever a worker is idle and the queue is empty, without waiting to see if the unit
 * ahead is slow.
 */
export function stealFor(
  workers: Iterable<PoolWorker>,
  /** Only these workers: the stuck ones, while the queue still has work of its own. */
  pick?: (w: PoolWorker) => boolean,
): Unit[] {
  let victim: PoolWorker | undefined;
  for (const w of workers) {
    if (!w.board || w.inflight.size < 2 || (pick && !pick(w))) continue;
    if (!victim || w.inflight.size > victim.inflight.size) victim = w;
  }
  if (!victim) return [];
  const held = [...victim.inflight.values()];
  const taken: Unit[] = [];
  // A stuck worker gives up all it holds behind the unit it runs; otherwise the newer half.
  const keep = pick ? 1 : held.length - Math.ceil((held.length - 1) / 2);
  for (let i = held.length - 1; i >= keep; i--) {
    const u = held[i]!;
    // A cancelled unit (settled, waiting for its worker to drop it) is not the pool's to hand out.
    if (u.state === 'settled' || u.pin || !victim.board!.take(u)) break;
    victim.inflight.delete(u.seq);
    victim.arena?.free(u.seq);
    u.attempts--; // never started: this try does not count
    u.worker = undefined;
    taken.push(u);
  }
  return taken;
}
