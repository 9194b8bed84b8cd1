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
import {
  BOARD_BYTES,
  BOARD_DONE,
  BOARD_POSTED,
  BOARD_READ,
  BOARD_SLOTS,
  BOARD_VALUES,
} from '../runtime/protocol.js';
import type { Unit } from './unit.js';
import type { PoolWorker } from './worker.js';

export class ClaimBoard {
  private readonly words: Int32Array;
  private readonly values: Float64Array;
  private next = 0;

  /** For a thread: a fresh SharedArrayBuffer. For a process: the buffer of a shared segment. */
  constructor(
    readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(BOARD_BYTES),
    /** Released when its worker exits. */
    readonly segment?: { name: string; close(): void },
  ) {
    this.words = new Int32Array(buffer, 0, BOARD_VALUES / 4);
    this.values = new Float64Array(buffer, BOARD_VALUES, BOARD_SLOTS);
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
    // A done word left by the slot's last unit could name this one, 2^32 seqs later.
    Atomics.store(this.words, BOARD_DONE + (u.slot % BOARD_SLOTS), 0);
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

  /**
   * Where the worker is with a unit it holds: not started (its word still says seq), running (-seq),
   * finished with its result kept here (its done word says seq: see result()), or revoked by a cancel
   * (0). Exact once the worker is dead: nothing changes the words then (pool/exits.ts).
   */
  phase(u: Unit): 'waiting' | 'running' | 'finished' | 'revoked' {
    const i = u.slot % BOARD_SLOTS;
    if (Atomics.load(this.words, BOARD_DONE + i) === (u.seq | 0)) return 'finished';
    const word = Atomics.load(this.words, i);
    if (word === (u.seq | 0)) return 'waiting';
    return word === (-u.seq | 0) ? 'running' : 'revoked';
  }

  /** Whether the worker posted result batches the pool has not received yet (`received`: those it has). */
  inFlight(received: number): boolean {
    return ((Atomics.load(this.words, BOARD_POSTED) - received) | 0) !== 0;
  }

  /** The number result of a unit whose phase is 'finished'. */
  result(u: Unit): number {
    return this.values[u.slot % BOARD_SLOTS]!;
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

/**
 * How long results may wait on the board of a worker that has posted nothing since: a worker holds a
 * result for ~1 ms at most (worker/runner.ts), unless the unit after it runs long.
 */
const HELD_STALE_MS = 10;

/**
 * A worker holds a result only while it runs a unit of a task it has seen take under 0.05 ms
 * (worker/runner.ts HOLD_BELOW_MS). The pool's average of a task's unit time is over all workers and
 * lags a little: twenty times that leaves it room. A look at the board every HELD_STALE_MS is a timer
 * wake-up on the main thread, ~0.2 ms of a core each here (2-vCPU VM): for a pool of 7 ms tasks that
 * held nothing it took 2-3 % of a core from the workers, which is what keeps a CPU-bound pool off the
 * bare-thread floor.
 */
const HOLDABLE_MS = 1;

/**
 * The units a worker holds whose results wait on its board, taken out of its hands, once it has posted
 * nothing for HELD_STALE_MS: it is inside a long unit (a task of microseconds that, this once, does not
 * return), and their callers need not wait for its end. Its batch brings them again later, and finds
 * them settled.
 */
export function heldResults(w: PoolWorker, now: number): Unit[] {
  const taken: Unit[] = [];
  if (!w.board || now - w.runningSince < HELD_STALE_MS) return taken;
  for (const [seq, u] of w.inflight) {
    if (u.seq === seq && u.state === 'sent' && w.board.phase(u) === 'finished') {
      w.inflight.delete(seq);
      taken.push(u);
    }
  }
  return taken;
}

/** A worker is stuck once its unit has run this many times its task's usual time, and this long at least. */
const STUCK_FACTOR = 3;
const STUCK_MIN_MS = 5;
/** How soon dispatch looks again at a worker whose claim board is full (see boardWait). */
const BOARD_WAIT_MS = 2;

/**
 * The first unit a worker holds: inflight keeps units in the order they were sent. An entry whose
 * unit went on elsewhere (a zombie left by a timeout, its unit retried under a new seq) no longer
 * speaks for its place on the board; its word was revoked at the cancel anyway.
 */
function oldestHeld(w: PoolWorker): Unit | undefined {
  for (const [seq, u] of w.inflight) if (u.seq === seq) return u;
  return undefined;
}

/**
 * The dispatcher's side of stealing: how much a worker's claim board has room for, which workers are
 * stuck behind a long unit, and the units taken back from them. The dispatcher keeps its own counts
 * of what it took back and queues those units again.
 */
export class Stealing {
  /** Each task's usual unit time (ms, a moving average): what tells a stuck worker. */
  private readonly costs = new Map<string, number>();
  /** A dispatch to come once a worker has read further down its claim board (boardWait). */
  private boardTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** A look for results left waiting on boards (watchHeld). */
  private heldTimer: ReturnType<typeof setTimeout> | undefined = undefined;

  constructor(
    private readonly workers: Iterable<PoolWorker>,
    /** Asks for a dispatch (the dispatcher's schedule()). */
    private readonly wake: () => void,
    /** Settles units whose results a busy worker left waiting on its board (see heldResults). */
    private readonly salvage: (w: PoolWorker, units: Unit[]) => void,
  ) {}

  /**
   * Units went to a worker or came back from one: while a worker may hold results (mayHold), with no
   * result batch of its on the way (its arrival looks again), a look every HELD_STALE_MS for results it
   * leaves waiting.
   */
  watchHeld(): void {
    if (this.heldTimer !== undefined || !this.anyMayHold()) return;
    this.heldTimer = setTimeout(() => {
      this.heldTimer = undefined;
      const now = performance.now();
      for (const w of this.workers) {
        if (!this.mayHold(w)) continue;
        const units = heldResults(w, now);
        if (units.length > 0) this.salvage(w, units);
      }
      this.watchHeld();
    }, HELD_STALE_MS);
    this.heldTimer.unref();
  }

  private anyMayHold(): boolean {
    for (const w of this.workers) if (this.mayHold(w)) return true;
    return false;
  }

  /**
   * Whether `w` may be holding results now: it has a board, no batch of its is on the way, and besides
   * a finished unit it has one in hand of a task that may be tiny (its cost unknown yet, or under
   * HOLDABLE_MS). A worker that holds only long units never holds a result, and needs no look.
   */
  private mayHold(w: PoolWorker): boolean {
    if (!w.board || w.inflight.size < 2 || w.board.inFlight(w.batches)) return false;
    for (const u of w.inflight.values()) {
      const cost = this.costs.get(u.name);
      if (cost === undefined || cost < HOLDABLE_MS) return true;
    }
    return false;
  }

  /** A unit of task `name` ran `ms` in its worker. */
  ran(name: string, ms: number): void {
    const cost = this.costs.get(name);
    this.costs.set(name, cost === undefined ? ms : cost * 0.8 + ms * 0.2);
  }

  /** Of `wanted` more units, how many `w` may be sent now: all of them without a claim board. */
  room(w: PoolWorker, wanted: number): number {
    if (!w.board) return wanted;
    const room = Math.max(0, w.board.room(oldestHeld(w)));
    if (room < wanted) this.boardWait(w);
    return Math.min(wanted, room);
  }

  /** Takes back units not started yet for an idle worker; `stuckOnly`: only from stuck workers. */
  take(stuckOnly: boolean): Unit[] {
    if (!stuckOnly) return stealFor(this.workers);
    const now = performance.now();
    return stealFor(this.workers, (w) => {
      const head = w.inflight.values().next().value as Unit | undefined;
      const usual = head && this.costs.get(head.name);
      return usual !== undefined && now - w.runningSince > Math.max(STUCK_MIN_MS, STUCK_FACTOR * usual);
    });
  }

  /**
   * A worker's claim board is full (see ClaimBoard.room()). While it has units to read it may read them
   * without a word (units taken back are skipped silently), so dispatch looks again shortly rather than
   * wait for a message that might not come. Held only by a unit it runs, its result is that message.
   */
  private boardWait(w: PoolWorker): void {
    if (this.boardTimer !== undefined || !w.board?.unread()) return;
    this.boardTimer = setTimeout(() => {
      this.boardTimer = undefined;
      this.wake();
    }, BOARD_WAIT_MS);
  }
}
