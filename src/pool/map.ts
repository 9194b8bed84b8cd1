/**
 * map / imap / imapUnordered / starmap: input is read lazily in chunks, each chunk travels as one
 * unit, and results come back in input order (imap) or as chunks complete (imapUnordered). Memory
 * stays bounded: no more than `window` chunks are read ahead of what the consumer has taken. How
 * many items a chunk holds, and that window, are decided in chunking.ts.
 */

import type { Backend, Job } from '../backend/types.js';
import { AbortError, TaskError } from '../errors.js';
import { activeContext } from '../metrics/tracing.js';
import { codecError, encodeArgs } from '../runtime/codec.js';
import { fromWireError, packNumbers, UnitMode, type WireError } from '../runtime/protocol.js';
import { ChunkSizer } from './chunking.js';
import type { ResolvedCall } from './config.js';
import { deliver, Unit, type UnitSink } from './unit.js';

interface ChunkOutcome {
  /** An array, or a Float64Array when every result was a number. */
  results: ArrayLike<unknown>;
  /** Items that failed, by position in the chunk: a task's throw (WireError) or corral's own error. */
  itemErrors: [number, WireError | Error][] | undefined;
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

/** A chunk some of whose items run again (they threw, or their worker died): what they go back to. */
interface Rerun {
  /** The chunk's place in the input. */
  index: number;
  /** The chunk's results so far, filled in as its items succeed. */
  results: unknown[];
  /** Items that failed for good, by chunk position. */
  errors: [number, WireError | Error][];
  /** Units of the chunk still out. */
  pending: number;
  /** The position of the chunk's first item in the input. */
  base: number;
}

/** A unit that runs some of a chunk's items again. */
interface Part {
  chunk: Rerun;
  /** For each item of the unit, its position in the chunk. */
  positions: number[];
}

export class MapJob implements UnitSink, AsyncIterableIterator<unknown>, Job {
  private readonly sync: Iterator<unknown> | undefined;
  private readonly async: AsyncIterator<unknown> | undefined;
  private readonly array: readonly unknown[] | undefined;
  private arrayPos = 0;
  /** How many items go in a chunk, and how many chunks may be out. */
  private readonly sizer: ChunkSizer;
  private exhausted = false;
  private reading = false;
  private finished = false;
  private nextIndex = 0;
  /** Items read from the input so far: the next chunk's first item's position. */
  private itemsRead = 0;
  private emitIndex = 0;
  private outstanding = 0;
  private readonly ready = new Map<number, ChunkOutcome>();
  private readonly readyOrder: number[] = [];
  private current: ChunkOutcome | undefined = undefined;
  private currentPos = 0;
  /** This job's units not yet settled, with their chunk's position in the input. */
  private readonly units = new Map<Unit, number>();
  /** The caller's OpenTelemetry context: chunks are queued later, from other callbacks. */
  private readonly traceContext = activeContext();
  /** Units that run some of a chunk's items again, and where their results go. */
  private readonly parts = new Map<Unit, Part>();
  private waiter: { resolve: () => void } | undefined = undefined;
  private sourceError: Error | undefined = undefined;
  private readonly onAbort: (() => void) | undefined;
  /** Whether the dispatcher counts this job as having work left. */
  private working = true;
  /** next() calls wait for the one before them: concurrent calls each get their own item. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dispatcher: Backend,
    private readonly spec: MapSpec,
  ) {
    const { source } = spec;
    if (Array.isArray(source)) this.array = source;
    else if (Symbol.asyncIterator in Object(source))
      this.async = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    else this.sync = (source as Iterable<unknown>)[Symbol.iterator]();
    this.sizer = new ChunkSizer(dispatcher, spec.chunksize, this.array?.length);
    if (spec.call.signal) {
      const signal = spec.call.signal;
      this.onAbort = () => this.end(new AbortError(spec.name, signal.reason), true);
      if (signal.aborted) queueMicrotask(this.onAbort);
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
    dispatcher.jobWorking(this);
    this.fill();
  }

  /** The backend held this job back (Backend.heldBack) and no longer does. */
  resume(): void {
    this.fill();
  }

  stop(error: Error): void {
    if (this.finished) return;
    // Its chunks in workers' hands are the backend's to settle (it is stopping them): not aborted here.
    this.sourceError = error;
    this.end(error);
  }

  /** Pool.close(): the rest of the input is read and run now; results wait for the consumer. */
  drain(): void {
    this.sizer.unbound();
    this.fill();
  }

  /** Items of an array input not read yet; undefined for an iterable (chunks do not shrink at its end). */
  private left(): number | undefined {
    return this.array && this.array.length - this.arrayPos;
  }

  /** Reads input and submits chunks while the window and the pool's queue have room. */
  private fill(): void {
    // Called on every result: return before making a promise when there is nothing to read.
    if (this.reading || this.exhausted || this.finished) return;
    if (this.outstanding >= this.sizer.window(this.left())) return;
    void this.read();
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      while (!this.exhausted && !this.finished && this.outstanding < this.sizer.window(this.left())) {
        if (!this.dispatcher.hasRoom) {
          // maxQueue is back pressure for imap too: stop reading until the queue drains.
          if (this.outstanding === 0) setTimeout(() => void this.fill(), 5).unref();
          break;
        }
        // A shared queue is long (another producer filled it, hosts are slow): the backend calls
        // resume() once it is not.
        if (this.dispatcher.heldBack) break;
        // Arrays and sync iterables are read without a promise per chunk: small chunks stay cheap.
        const n = this.sizer.size(this.left());
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
      this.checkWork();
    }
  }

  /** Tells the dispatcher once nothing is left to read or run (unread results do not count). */
  private checkWork(): void {
    if (!this.working || (!this.finished && (!this.exhausted || this.reading || this.units.size > 0))) return;
    this.working = false;
    this.dispatcher.jobDone(this);
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
      const r = checkStep(this.sync!.next());
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
      const r = checkStep(await this.async!.next());
      if (r.done) {
        this.exhausted = true;
        break;
      }
      items.push(r.value);
    }
    return items;
  }

  private submit(items: unknown[]): void {
    const numbers = this.spec.mode === UnitMode.Map ? packNumbers(items) : undefined;
    const unit = this.newUnit(numbers ? UnitMode.MapNumbers : this.spec.mode, numbers ?? items);
    unit.base = this.itemsRead;
    this.itemsRead += items.length;
    this.units.set(unit, this.nextIndex++);
    this.outstanding++;
    this.queue(unit);
  }

  /** A unit of `payload` (chunk items), its handles encoded; one that cannot be is failed by queue(). */
  private newUnit(mode: UnitMode, payload: unknown): Unit {
    const { call } = this.spec;
    const size = (payload as ArrayLike<unknown>).length;
    let encoded: ReturnType<typeof encodeArgs> | undefined;
    let error: Error | undefined;
    if (mode === UnitMode.MapNumbers) encoded = { payload, flags: 0 };
    else {
      try {
        encoded = encodeArgs(payload, this.dispatcher.config.runtime);
      } catch (e) {
        error = codecError(this.spec.name, 'arguments', e);
      }
    }
    const unit = new Unit(
      this.spec.name,
      mode,
      encoded?.payload ?? payload,
      size,
      this,
      call.timeout * size,
      call.retries,
      call.signal,
    );
    unit.flags = encoded?.flags ?? 0;
    unit.memoryHint = call.memoryHint;
    unit.priority = call.priority;
    // A map is a key of its own unless its caller names one: fair turns with other callers' work.
    unit.key = call.key ?? this;
    unit.traceContext = this.traceContext;
    if (error) this.unencodable.set(unit, error);
    return unit;
  }

  private readonly unencodable = new Map<Unit, Error>();

  private queue(unit: Unit): void {
    const refusal = this.unencodable.get(unit) ?? this.dispatcher.jobRefusal();
    this.unencodable.delete(unit);
    if (refusal) this.dispatcher.settleFail(unit, refusal);
    else this.dispatcher.submit(unit);
  }

  ok(unit: Unit, value: unknown, itemErrors: [number, WireError | Error][] | undefined, ms: number): void {
    const index = this.units.get(unit);
    if (index === undefined) return;
    this.units.delete(unit);
    const part = this.parts.get(unit);
    if (part) {
      this.parts.delete(unit);
      const { chunk, positions } = part;
      const results = value as ArrayLike<unknown>;
      const failed = new Map<number, WireError | Error>(itemErrors ?? []);
      for (let i = 0; i < positions.length; i++) {
        if (!failed.has(i)) chunk.results[positions[i]!] = results[i];
      }
      chunk.pending--;
      this.rerun(
        unit,
        chunk,
        [...failed].map(([i, wire]) => [positions[i]!, wire]),
        positions,
      );
      return;
    }
    this.sizer.timed(unit.size, ms);
    if (!itemErrors) {
      this.store(index, { results: value as ArrayLike<unknown>, itemErrors, error: undefined });
      return;
    }
    const chunk: Rerun = { index, results: value as unknown[], errors: [], pending: 0, base: unit.base };
    this.rerun(unit, chunk, itemErrors, undefined);
  }

  /**
   * Items of `unit` failed (`failed`, by chunk position): while the call's retries allow, only they run
   * again (the others are not run twice), as one unit at the front of the queue; otherwise they fail for
   * good. The chunk is stored once none of its units is out.
   */
  private rerun(
    unit: Unit,
    chunk: Rerun,
    failed: [number, WireError | Error][],
    positions: number[] | undefined,
    retriable = true,
  ): void {
    if (failed.length > 0) {
      if (!retriable || unit.attempts > unit.retries || this.dispatcher.jobRefusal() || this.finished) {
        chunk.errors.push(...failed);
      } else {
        this.again(
          unit,
          chunk,
          failed.map(([p]) => p).sort((a, b) => a - b),
          positions,
        );
      }
    }
    if (chunk.pending > 0) return;
    this.store(chunk.index, {
      results: chunk.results,
      itemErrors: chunk.errors.length > 0 ? chunk.errors.sort((a, b) => a[0] - b[0]) : undefined,
      error: undefined,
    });
  }

  /**
   * Queues a unit of the chunk items at `picked` (chunk positions), taken from `unit`'s own payload
   * (its handles already encoded: a rerun sends the very same items). `positions`: the chunk positions
   * of `unit`'s items, or undefined when `unit` is the whole chunk.
   */
  private again(unit: Unit, chunk: Rerun, picked: number[], positions: number[] | undefined): void {
    const source = unit.payload as ArrayLike<unknown>;
    const items = picked.map((p) => source[positions ? positions.indexOf(p) : p]);
    const payload = unit.mode === UnitMode.MapNumbers ? Float64Array.from(items as number[]) : items;
    const next = new Unit(
      unit.name,
      unit.mode,
      payload,
      picked.length,
      this,
      this.spec.call.timeout * picked.length,
      unit.retries,
      unit.signal,
    );
    next.flags = unit.flags;
    next.memoryHint = unit.memoryHint;
    next.priority = unit.priority;
    next.key = unit.key;
    next.attempts = unit.attempts; // the items' tries go on counting
    next.traceContext = this.traceContext;
    if (unit.crashes) next.crashes = [...unit.crashes];
    this.units.set(next, chunk.index);
    this.parts.set(next, { chunk, positions: picked });
    chunk.pending++;
    this.queue(next);
  }

  /**
   * A chunk's worker died under it and the chunk is to run again: its items run one by one instead, so
   * that if one of them kills workers, its next death names it (and poisonAfter quarantines it alone).
   */
  split(unit: Unit): boolean {
    const index = this.units.get(unit);
    if (index === undefined || unit.size < 2) return false;
    this.units.delete(unit);
    const part = this.parts.get(unit);
    this.parts.delete(unit);
    const chunk: Rerun = part?.chunk ?? {
      index,
      results: new Array(unit.size),
      errors: [],
      pending: 0,
      base: unit.base,
    };
    if (part) chunk.pending--;
    const positions = part?.positions;
    for (let i = 0; i < unit.size; i++) this.again(unit, chunk, [positions ? positions[i]! : i], positions);
    return true;
  }

  wants(unit: Unit): boolean {
    return this.units.has(unit);
  }

  event(unit: Unit, item: number, kind: number, name: string | undefined, data: unknown): void {
    const listeners = this.spec.call.listeners;
    if (!listeners || !this.units.has(unit)) return;
    const part = this.parts.get(unit);
    const index = part ? part.chunk.base + part.positions[item]! : unit.base + item;
    deliver(listeners, kind, name, data, index);
  }

  fail(unit: Unit, error: Error): void {
    const index = this.units.get(unit);
    if (index === undefined) return;
    this.units.delete(unit);
    const part = this.parts.get(unit);
    this.parts.delete(unit);
    if (!part) {
      this.store(index, { results: [], itemErrors: undefined, error });
      return;
    }
    // A part of a chunk failed whole (its worker died, it was quarantined, aborted): its items carry
    // the error, and the chunk's other items keep their results.
    const { chunk, positions } = part;
    chunk.pending--;
    this.rerun(
      unit,
      chunk,
      positions.map((p) => [p, error]),
      positions,
      false,
    );
  }

  private store(index: number, outcome: ChunkOutcome): void {
    this.ready.set(index, outcome);
    if (!this.spec.ordered) this.readyOrder.push(index);
    this.wake();
    this.fill();
    this.checkWork();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve();
  }

  /**
   * Ends the job: queued chunks are dropped, running ones finish and are ignored, and an input not
   * read to its end is closed (a generator's `finally` runs), as a `for await` loop's break would.
   */
  private end(error: Error | undefined, fromSignal = false): void {
    if (this.finished) return;
    this.finished = true;
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
    this.parts.clear();
    if (!this.exhausted) {
      this.exhausted = true;
      this.closeInput();
    }
    this.checkWork();
    this.wake();
  }

  private closeInput(): void {
    try {
      this.sync?.return?.();
    } catch {
      // The input's own cleanup failed; the job is over either way.
    }
    const input = this.async;
    if (input?.return) {
      // After any read in progress: an async generator queues return() behind a pending next().
      Promise.resolve()
        .then(() => input.return?.())
        .catch(() => {});
    }
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

  private itemError(chunk: ChunkOutcome, pos: number): Error | undefined {
    const found = chunk.itemErrors?.find(([i]) => i === pos);
    if (!found) return undefined;
    this.end(undefined);
    return found[1] instanceof Error ? found[1] : new TaskError(this.spec.name, fromWireError(found[1]));
  }

  /** The next result; concurrent calls are served one after the other, each with its own item. */
  next(): Promise<IteratorResult<unknown>> {
    const result = this.tail.then(() => this.nextOne());
    this.tail = result.catch(() => {});
    return result;
  }

  private async nextOne(): Promise<IteratorResult<unknown>> {
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
    // The array is made once the chunks are in and its length known: pushing grew it step by step and
    // read each chunk (an Array or a Float64Array) through one megamorphic loop, 100+ ns an item.
    const chunks: ArrayLike<unknown>[] = [];
    let length = 0;
    for (let chunk = await this.nextChunk(); chunk; chunk = await this.nextChunk()) {
      if (chunk.itemErrors) {
        const first = Math.min(...chunk.itemErrors.map(([i]) => i));
        throw this.itemError(chunk, first)!;
      }
      chunks.push(chunk.results);
      length += chunk.results.length;
    }
    const out = new Array<unknown>(length);
    let at = 0;
    for (const results of chunks)
      at = results instanceof Float64Array ? copyNumbers(results, out, at) : copyItems(results, out, at);
    return out;
  }
}

/** Two copy loops, one per kind of chunk, so that each stays monomorphic (see collect). */
function copyNumbers(from: Float64Array, to: unknown[], at: number): number {
  for (let i = 0; i < from.length; i++) to[at++] = from[i];
  return at;
}

function copyItems(from: ArrayLike<unknown>, to: unknown[], at: number): number {
  for (let i = 0; i < from.length; i++) to[at++] = from[i];
  return at;
}

/**
 * An input iterator's step, as `for of` checks it: a next() that returns no object is a broken
 * iterator (read as endless `undefined` items, a map of it never ended and grew without bound).
 */
function checkStep(step: IteratorResult<unknown>): IteratorResult<unknown> {
  if (step === null || typeof step !== 'object') {
    throw new TypeError(
      `the map's input iterator returned ${step === null ? 'null' : typeof step} from next(), not an iterator result ({ value, done })`,
    );
  }
  return step;
}
