/**
 * map / imap / imapUnordered / starmap: input is read lazily in chunks, each chunk travels as one
 * unit, and results come back in input order (imap) or as chunks complete (imapUnordered). Memory
 * stays bounded: no more than `window` chunks are read ahead of what the consumer has taken.
 */

import { encodeChannelsIn } from '../channel/handles.js';
import { AbortError, TaskError } from '../errors.js';
import { fromWireError, packNumbers, UNIT_SHM, UnitMode, type WireError } from '../runtime/protocol.js';
import { DEFAULT_BUDGET, encodeShm } from '../shm/handle.js';
import { shmEverUsed } from '../shm/used.js';
import type { ResolvedCall } from './config.js';
import type { Dispatcher } from './dispatcher.js';
import { Unit, type UnitSink } from './unit.js';

/** Work per message that amortises the ~30 µs a message costs, yet keeps load balancing fine. */
const TARGET_CHUNK_MS = 4;
/**
 * Largest automatic chunk for input of unknown length. With the window of chunks read ahead, it
 * bounds what a lazy input costs: at most ~64k items read ahead of the consumer (8 chunks with 2
 * workers), while a chunk of tiny items is still a fraction of a millisecond of work per message.
 */
const MAX_AUTO_CHUNK = 8192;
/** Chunks sent before any has been timed: small, so a slow task is found out early. */
const PROBE_CHUNK = 8;
/** How much larger than the largest timed chunk the next may be (8, 64, 512, 4096, ...). */
const GROWTH = 8;
/** Items a job may hold in flight when its chunks are small. */
const WINDOW_ITEMS = 4096;

interface ChunkOutcome {
  /** An array, or a Float64Array when every result was a number. */
  results: ArrayLike<unknown>;
  itemErrors: [number, WireError][] | undefined;
  error: Error | undefined;
}

export interface MapSpec {
  name: string;
  mode: UnitMode.Map | UnitMode.Starmap;
  source: Iterable<unknown> | AsyncIterable<unknown>;
  chunksize: number | 'auto';
  ordered: boolean;
  call: ResolvedCall;
}

export class MapJob implements UnitSink, AsyncIterableIterator<unknown> {
  private readonly sync: Iterator<unknown> | undefined;
  private readonly async: AsyncIterator<unknown> | undefined;
  private readonly array: readonly unknown[] | undefined;
  private arrayPos = 0;
  private readonly cap: number;
  /** Decaying sums of chunk time and chunk items: the estimate weighs a chunk by its items. */
  private timedMs = 0;
  private timedItems = 0;
  /** The largest chunk whose time is known: the next may be at most GROWTH times larger. */
  private largestTimed = PROBE_CHUNK / GROWTH;

  /** Measured work per item, once a chunk has been timed. */
  private get perItemMs(): number | undefined {
    return this.timedItems > 0 ? this.timedMs / this.timedItems : undefined;
  }
  private exhausted = false;
  private reading = false;
  private finished = false;
  private nextIndex = 0;
  private emitIndex = 0;
  private outstanding = 0;
  private readonly workers: number;
  private readonly ready = new Map<number, ChunkOutcome>();
  private readonly readyOrder: number[] = [];
  private current: ChunkOutcome | undefined = undefined;
  private currentPos = 0;
  /** This job's units not yet settled, with their chunk's position in the input. */
  private readonly units = new Map<Unit, number>();
  private waiter: { resolve: () => void } | undefined = undefined;
  private sourceError: Error | undefined = undefined;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly spec: MapSpec,
  ) {
    const { source } = spec;
    const workers = dispatcher.config.workers;
    if (Array.isArray(source)) {
      this.array = source;
      // Python's rule (about four chunks per worker) is the largest chunk: balance needs several.
      this.cap = Math.max(1, Math.ceil(source.length / (workers * 4)));
    } else {
      this.cap = MAX_AUTO_CHUNK;
      if (Symbol.asyncIterator in Object(source))
        this.async = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      else this.sync = (source as Iterable<unknown>)[Symbol.iterator]();
    }
    this.workers = workers;
    if (spec.call.signal) {
      const signal = spec.call.signal;
      this.onAbort = () => this.end(new AbortError(spec.name, signal.reason), true);
      if (signal.aborted) queueMicrotask(this.onAbort);
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
    dispatcher.jobStarted(this);
    this.fill();
  }

  /**
   * Chunks read ahead of the consumer: four per worker for big chunks; small chunks (chunksize 1
   * for I/O-ish work) need more in flight to keep workers fed, up to 64 per worker, which is
   * still only a few thousand items held.
   */
  private window(): number {
    const small = Math.ceil(WINDOW_ITEMS / this.chunkSize());
    // While chunks are still growing their size is a guess: a few in flight, not a window of them
    // (dozens of chunks of a few hundred tiny items cost a process pool more than their work).
    const window =
      this.spec.chunksize === 'auto' && this.growing()
        ? this.workers * Math.max(2, this.dispatcher.config.concurrency)
        : Math.max(4, this.workers * 4, Math.min(this.workers * 64, small));
    // A small maxQueue asks for tight memory: read ahead no further than it allows.
    const { maxQueue } = this.dispatcher.config;
    return Number.isFinite(maxQueue) ? Math.min(window, Math.max(this.workers * 4, maxQueue)) : window;
  }

  private chunkSize(): number {
    const { chunksize } = this.spec;
    if (chunksize !== 'auto') return chunksize;
    const size = Math.min(this.timedSize(), this.largestTimed * GROWTH);
    if (!this.array) return size;
    // Towards the end of an array the chunks shrink (guided scheduling), so the workers finish
    // close together rather than a whole chunk apart; not below ~1 ms of work, though, or tiny
    // items would end in dozens of messages of a few items each.
    const left = this.array.length - this.arrayPos;
    const floor =
      this.perItemMs === undefined ? 1 : Math.round(TARGET_CHUNK_MS / 4 / Math.max(this.perItemMs, 1e-6));
    return Math.min(size, Math.max(1, floor, Math.ceil(left / (2 * this.workers))));
  }

  /** The automatic size the timings ask for: TARGET_CHUNK_MS of work, at most the cap. */
  private timedSize(): number {
    if (this.perItemMs === undefined) return Math.min(PROBE_CHUNK, this.cap);
    return Math.max(1, Math.min(this.cap, Math.round(TARGET_CHUNK_MS / Math.max(this.perItemMs, 1e-6))));
  }

  /**
   * Chunks grow at most GROWTH times past the largest one timed so far: a small chunk's time is
   * mostly the message's fixed cost, so its per-item estimate is too high (and could be too low).
   */
  private growing(): boolean {
    return this.perItemMs === undefined || this.largestTimed * GROWTH < this.timedSize();
  }

  /** Reads input and submits chunks while the window and the pool's queue have room. */
  private fill(): void {
    // Called on every result: return before making a promise when there is nothing to read.
    if (this.reading || this.exhausted || this.finished || this.outstanding >= this.window()) return;
    void this.read();
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      while (!this.exhausted && !this.finished && this.outstanding < this.window()) {
        if (!this.dispatcher.hasRoom) {
          // maxQueue is back pressure for imap too: stop reading until the queue drains.
          if (this.outstanding === 0) setTimeout(() => void this.fill(), 5).unref();
          break;
        }
        // Arrays and sync iterables are read without a promise per chunk: small chunks stay cheap.
        const n = this.chunkSize();
        const items = this.async ? await this.readAsync(n) : this.readSync(n);
        if (this.finished) break;
        if (items.length > 0) this.submit(items);
      }
    } catch (error) {
      this.sourceError = error instanceof Error ? error : new Error(String(error));
      this.exhausted = true;
    } finally {
      this.reading = false;
      this.wake();
    }
  }

  private readSync(n: number): unknown[] {
    if (this.array) {
      const items = this.array.slice(this.arrayPos, this.arrayPos + n);
      this.arrayPos += items.length;
      if (this.arrayPos >= this.array.length) this.exhausted = true;
      return items;
    }
    const items: unknown[] = [];
    while (items.length < n) {
      const r = this.sync!.next();
      if (r.done) {
        this.exhausted = true;
        break;
      }
      items.push(r.value);
    }
    return items;
  }

  private async readAsync(n: number): Promise<unknown[]> {
    const items: unknown[] = [];
    while (items.length < n) {
      const r = await this.async!.next();
      if (r.done) {
        this.exhausted = true;
        break;
      }
      items.push(r.value);
    }
    return items;
  }

  private submit(items: unknown[]): void {
    const { call } = this.spec;
    const numbers = this.spec.mode === UnitMode.Map ? packNumbers(items) : undefined;
    let payload: unknown = numbers ?? items;
    let shm = false;
    if (!numbers && shmEverUsed()) {
      // Each item gets the walk budget, so a long chunk of { shm, from, to } items is fully encoded.
      const encoded = encodeShm(items, DEFAULT_BUDGET + items.length * 8, {
        runtime: this.dispatcher.config.runtime,
      });
      payload = encoded.value;
      shm = encoded.found;
    }
    const unit = new Unit(
      this.spec.name,
      numbers ? UnitMode.MapNumbers : this.spec.mode,
      payload,
      items.length,
      this,
      call.timeout > 0 ? call.timeout * items.length : 0,
      call.retries,
      call.signal,
    );
    unit.memoryHint = call.memoryHint;
    if (shm) unit.flags |= UNIT_SHM;
    encodeChannelsIn(unit);
    this.units.set(unit, this.nextIndex++);
    this.outstanding++;
    const refusal = this.dispatcher.jobRefusal();
    if (refusal) this.dispatcher.settleFail(unit, refusal);
    else this.dispatcher.submit(unit);
  }

  ok(unit: Unit, value: unknown, itemErrors: [number, WireError][] | undefined, ms: number): void {
    const index = this.units.get(unit);
    if (index === undefined) return;
    this.units.delete(unit);
    // Later chunks aim at TARGET_CHUNK_MS of work, from the time chunks took in their worker. Items
    // weigh, not chunks: a probe of 8 tiny items mostly times the chunk's fixed cost, and must not
    // hold back the estimate once chunks of thousands have been timed. Halving the sums at each
    // result still follows a task whose cost drifts along the input.
    if (unit.size > this.largestTimed) this.largestTimed = unit.size;
    this.timedMs = this.timedMs * 0.5 + ms;
    this.timedItems = this.timedItems * 0.5 + unit.size;
    this.store(index, { results: value as ArrayLike<unknown>, itemErrors, error: undefined });
  }

  fail(unit: Unit, error: Error): void {
    const index = this.units.get(unit);
    if (index === undefined) return;
    this.units.delete(unit);
    this.store(index, { results: [], itemErrors: undefined, error });
  }

  private store(index: number, outcome: ChunkOutcome): void {
    this.ready.set(index, outcome);
    if (!this.spec.ordered) this.readyOrder.push(index);
    this.wake();
    this.fill();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve();
  }

  /** Ends the job: queued chunks are dropped, running ones finish and are ignored. */
  private end(error: Error | undefined, fromSignal = false): void {
    if (this.finished) return;
    this.finished = true;
    this.dispatcher.jobEnded(this);
    if (this.onAbort && this.spec.call.signal)
      this.spec.call.signal.removeEventListener('abort', this.onAbort);
    const mine = new Set(this.units.keys());
    const reason = error ?? new AbortError(this.spec.name, 'the consumer stopped iterating');
    if (mine.size > 0) this.dispatcher.cancelQueued((u) => mine.has(u), reason);
    if (fromSignal) {
      for (const u of mine) this.dispatcher.abort(u);
      this.sourceError = error;
    }
    this.units.clear();
    this.wake();
  }

  private takeNextChunk(): ChunkOutcome | undefined {
    let index: number | undefined;
    if (this.spec.ordered) {
      if (this.ready.has(this.emitIndex)) index = this.emitIndex++;
    } else if (this.readyOrder.length > 0) index = this.readyOrder.shift();
    if (index === undefined) return undefined;
    const outcome = this.ready.get(index)!;
    this.ready.delete(index);
    this.outstanding--;
    this.fill();
    return outcome;
  }

  /** The next chunk to hand out (in order, or as completed), waiting for it; undefined at the end. */
  private async nextChunk(): Promise<ChunkOutcome | undefined> {
    for (;;) {
      if (this.finished) {
        const error = this.sourceError;
        this.sourceError = undefined;
        if (error) throw error;
        return undefined;
      }
      const chunk = this.takeNextChunk();
      if (chunk) {
        if (chunk.error) {
          this.end(undefined);
          throw chunk.error;
        }
        return chunk;
      }
      if (this.exhausted && !this.reading && this.outstanding === 0) {
        const error = this.sourceError;
        this.end(undefined);
        this.sourceError = undefined;
        if (error) throw error;
        return undefined;
      }
      await new Promise<void>((resolve) => {
        this.waiter = { resolve };
      });
    }
  }

  private itemError(chunk: ChunkOutcome, pos: number): TaskError | undefined {
    const found = chunk.itemErrors?.find(([i]) => i === pos);
    if (!found) return undefined;
    this.end(undefined);
    return new TaskError(this.spec.name, fromWireError(found[1]));
  }

  async next(): Promise<IteratorResult<unknown>> {
    let cur = this.current;
    if (!cur || this.currentPos >= cur.results.length) {
      cur = this.current = await this.nextChunk();
      this.currentPos = 0;
      if (!cur) return { value: undefined, done: true };
    }
    const pos = this.currentPos++;
    const error = cur.itemErrors && this.itemError(cur, pos);
    if (error) throw error;
    return { value: cur.results[pos], done: false };
  }

  async return(): Promise<IteratorResult<unknown>> {
    this.end(undefined);
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** map(): every result in input order, or the first failure; whole chunks at a time. */
  async collect(): Promise<unknown[]> {
    const out: unknown[] = [];
    for (let chunk = await this.nextChunk(); chunk; chunk = await this.nextChunk()) {
      if (chunk.itemErrors) {
        const first = Math.min(...chunk.itemErrors.map(([i]) => i));
        throw this.itemError(chunk, first)!;
      }
      const { results } = chunk;
      for (let i = 0; i < results.length; i++) out.push(results[i]);
    }
    return out;
  }
}
