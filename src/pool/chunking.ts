/**
 * How many items go in a map's next chunk, and how many chunks it may have in flight: a chunk is
 * timed in its worker, and later chunks aim at a few milliseconds of work each, growing from one-item
 * probes, shrinking while other callers wait for the workers and towards the end of an array. The
 * job (map.ts) reads its input, runs its chunks and hands out their results; it asks here how much.
 */
import type { Backend } from '../backend/types.js';

/** Work per message that amortises the ~30 µs a message costs, yet keeps load balancing fine. */
const TARGET_CHUNK_MS = 4;
/** The same while other callers compete for the workers (Backend.contended). */
const CONTENDED_CHUNK_MS = 1;
/**
 * Largest automatic chunk for input of unknown length. With the window of chunks read ahead, it
 * bounds what a lazy input costs: at most ~64k items read ahead of the consumer (8 chunks with 2
 * workers), while a chunk of tiny items is still a fraction of a millisecond of work per message.
 */
const MAX_AUTO_CHUNK = 8192;
/**
 * Chunks sent before any has been timed: one item, so a map of tasks of milliseconds never puts several
 * behind one slow item in a chunk no idle worker can take apart (a 5/200 ms mix: 1.06x ideal with 8,
 * 1.03x with 1). Tiny items pay one more growth step, one round trip.
 */
const PROBE_CHUNK = 1;
/** How much larger than the largest timed chunk the next may be (1, 8, 64, 512, 4096, ...). */
const GROWTH = 8;
/** Items a job may hold in flight when its chunks are small. */
const WINDOW_ITEMS = 4096;

export class ChunkSizer {
  private readonly cap: number;
  private readonly workers: number;
  /** Decaying sums of chunk time and chunk items: the estimate weighs a chunk by its items. */
  private timedMs = 0;
  private timedItems = 0;
  /** The largest chunk whose time is known: the next may be at most GROWTH times larger. */
  private largestTimed = PROBE_CHUNK / GROWTH;
  /** close() was called: read the rest of the input without waiting for the consumer. */
  private eager = false;

  /** Measured work per item, once a chunk has been timed. */
  private get perItemMs(): number | undefined {
    return this.timedItems > 0 ? this.timedMs / this.timedItems : undefined;
  }

  constructor(
    private readonly backend: Backend,
    private readonly chunksize: number | 'auto',
    /** The input's length when it is an array; undefined for an iterable. */
    length: number | undefined,
  ) {
    const { workers } = backend.config;
    // Python's rule (about four chunks per worker) is the largest chunk: balance needs several.
    this.cap = length === undefined ? MAX_AUTO_CHUNK : Math.max(1, Math.ceil(length / (workers * 4)));
    this.workers = workers;
  }

  /** Pool.close(): no window from now on. */
  unbound(): void {
    this.eager = true;
  }

  /**
   * Chunks read ahead of the consumer: four per worker for big chunks; small chunks (chunksize 1
   * for I/O-ish work) need more in flight to keep workers fed, up to 64 per worker, which is
   * still only a few thousand items held. `left`: items of an array input not read yet.
   */
  window(left: number | undefined): number {
    if (this.eager) return Infinity;
    const small = Math.ceil(WINDOW_ITEMS / this.size(left));
    // While chunks are still growing their size is a guess: a few in flight, not a window of them
    // (dozens of chunks of a few hundred tiny items cost a process pool more than their work).
    const window =
      this.chunksize === 'auto' && this.growing()
        ? this.workers * Math.max(2, this.backend.config.concurrency)
        : Math.max(4, this.workers * 4, Math.min(this.workers * 64, small));
    // A small maxQueue asks for tight memory: read ahead no further than it allows.
    const { maxQueue } = this.backend.config;
    return Number.isFinite(maxQueue) ? Math.min(window, Math.max(this.workers * 4, maxQueue)) : window;
  }

  /** Items in the next chunk. `left`: items of an array input not read yet; undefined for an iterable. */
  size(left: number | undefined): number {
    const { chunksize } = this;
    if (chunksize !== 'auto') return chunksize;
    const size = Math.min(this.timedSize(), this.largestTimed * GROWTH);
    if (left === undefined) return size;
    // Towards the end of an array the chunks shrink (guided scheduling), so the workers finish
    // close together rather than a whole chunk apart; not below ~1 ms of work, though, or tiny
    // items would end in dozens of messages of a few items each.
    const { chunkMs } = this.backend.config;
    const floorMs = chunkMs ?? TARGET_CHUNK_MS / 4;
    const floor = this.perItemMs === undefined ? 1 : Math.round(floorMs / Math.max(this.perItemMs, 1e-6));
    return Math.min(size, Math.max(1, floor, Math.ceil(left / (2 * this.workers))));
  }

  /**
   * A whole chunk of `items` took `ms` in its worker. Later chunks aim at TARGET_CHUNK_MS of work from
   * these times, items weighing, not chunks. A chunk GROWTH times smaller than one already timed
   * mostly times its fixed cost and is left out: a worker's cold first one-item probe, answering
   * after the other worker's 8-item chunks, once set the estimate alone (~0.07 ms an item) and the
   * map sent ~70 round trips of 57 tiny items where 64 and then 512 were due. Halving the sums at
   * each result still follows a task whose cost drifts along the input.
   */
  timed(items: number, ms: number): void {
    if (items * GROWTH <= this.largestTimed) return;
    if (items > this.largestTimed) this.largestTimed = items;
    this.timedMs = this.timedMs * 0.5 + ms;
    this.timedItems = this.timedItems * 0.5 + items;
  }

  /** The automatic size the timings ask for: TARGET_CHUNK_MS of work, at most the cap. */
  private timedSize(): number {
    if (this.perItemMs === undefined) return Math.min(PROBE_CHUNK, this.cap);
    // While other callers wait for the same workers, chunks shrink: a chunk is how long they wait.
    const target =
      this.backend.config.chunkMs ?? (this.backend.contended ? CONTENDED_CHUNK_MS : TARGET_CHUNK_MS);
    return Math.max(1, Math.min(this.cap, Math.round(target / Math.max(this.perItemMs, 1e-6))));
  }

  /**
   * Chunks grow at most GROWTH times past the largest one timed so far: a small chunk's time is
   * mostly the message's fixed cost, so its per-item estimate is too high (and could be too low).
   */
  private growing(): boolean {
    return this.perItemMs === undefined || this.largestTimed * GROWTH < this.timedSize();
  }
}
