/**
 * How a unit's items run inside a worker: a map chunk (with its numeric fast path), a stream's items,
 * and the arena chunk a process worker reads its numbers from and writes its results over. The Runner
 * (runner.ts) decides when a unit runs and where its result goes; this side runs it and builds the
 * result frame. This is the worker's hot path: nothing may be added per item (no work, closure or
 * allocation); runChunk's numeric loop stays apart from its general one (see the comment there).
 */
import type { ResultFrame, WireError } from '../runtime/protocol.js';
import { claimRevoked, packNumbers, ResultStatus, toWireError } from '../runtime/protocol.js';
import { CallEvent, type RunningCall, taskSlot } from '../task.js';
import type { EventOutbox } from './events.js';
import type { Extras, ShmModule, Task } from './runner.js';

/** Why runChunk's numeric fast path stopped before the end of its chunk. */
enum Stop {
  None,
  Value,
  Threw,
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/** Where runChunk's numeric loop stopped: its item index, why, and the value or error it met there. */
interface LoopEnd {
  done: number;
  stop: Stop;
  held: unknown;
}

/**
 * Whether a chunk's call is cancelled, checked by both loops between items. A chunk that can be
 * cancelled (`board`: it has a claim word) also reads that word, since a cancel message would not be
 * read before a chunk of synchronous items ends; a revoked word marks the call aborted.
 */
function revoked(call: RunningCall, board: Int32Array | undefined, seq: number): boolean {
  if (call.cancelled === undefined && board !== undefined && claimRevoked(board, call.claimIndex, seq))
    call.cancelled = 'abort';
  return call.cancelled !== undefined;
}

/**
 * runChunk's numeric loop as a function of its own, because V8 optimises whole functions. Inside
 * runChunk, a fresh worker's Turbofan spent ~23 ms compiling all of it (--trace-opt, 2-core VM) and
 * never replaced the running loop on the stack, so the first map of tiny items ran unoptimised; this
 * small function is replaced on the stack mid-chunk and compiled in 1-15 ms. A process pool's first
 * map of 100k squares went from 58-75 ms to 42-51 ms (medians of 7 fresh pools, three rounds).
 */
function numericLoop(
  fn: Task,
  items: Float64Array,
  out: Float64Array,
  call: RunningCall,
  board: Int32Array | undefined,
  seq: number,
  end: LoopEnd,
): void {
  let done = 0;
  try {
    for (; done < items.length && !revoked(call, board, seq); done++) {
      call.item = done;
      const value = fn(items[done]);
      if (typeof value !== 'number') {
        end.held = value;
        end.stop = Stop.Value;
        break;
      }
      out[done] = value;
    }
  } catch (error) {
    end.held = error;
    end.stop = Stop.Threw;
  }
  end.done = done;
}

export class ItemRunner {
  private readonly slot = taskSlot();
  /** The transfer arena's name as the pool sent it, and its float64 view once mapped. */
  private arenaName: string | undefined;
  private arenaView: Float64Array | undefined;
  /** captureOutput: what each running call wrote (a map chunk's current item); Runner sets it up. */
  outputs: Map<number, string> | undefined = undefined;
  /** Streamed calls: items they may still yield before the consumer takes more, and who waits for credit. */
  private readonly streams = new Map<
    number,
    { credits: number; wake: (() => void) | undefined; error: unknown }
  >();

  constructor(
    /** The claim board a cancellable chunk watches between items. */
    private readonly board: Int32Array | undefined,
    private readonly events: EventOutbox,
  ) {}

  arena(segment: string): void {
    this.arenaName = segment;
  }

  /** The arena's float64s at [at, at + length), the arena mapped on first use through `shm`. */
  arenaChunk(at: number, length: number, shm: ShmModule | Extras): Float64Array {
    if (!this.arenaView) {
      const { internalSegment, SharedMemory } = shm;
      const name = this.arenaName;
      if (name === undefined) throw new Error('corral: an arena unit arrived before its arena');
      this.arenaView = new Float64Array(internalSegment(() => SharedMemory.attach(name).buffer));
    }
    return this.arenaView.subarray(at, at + length);
  }

  /** A task's error as it travels, with what it wrote when output is captured. */
  failure(error: unknown, seq: number): WireError {
    const wire = toWireError(error);
    const output = this.outputs?.get(seq);
    if (output) wire.props.output = output;
    return wire;
  }

  /** A stream's consumer took `n` items: it may yield that many more. */
  credit(seq: number, n: number): void {
    const stream = this.streams.get(seq);
    if (!stream) return;
    stream.credits += n;
    stream.wake?.();
  }

  /** The call was cancelled: a stream waiting for credit wakes to see it. */
  wake(seq: number): void {
    this.streams.get(seq)?.wake?.();
  }

  /** An event of the call could not be sent (a stream item that cannot be cloned): its stream fails. */
  unsendable(seq: number, error: unknown): boolean {
    const stream = this.streams.get(seq);
    if (!stream) return false;
    stream.error = error;
    stream.wake?.();
    return true;
  }

  /** The call settled: what was kept for it goes. */
  release(seq: number): void {
    this.streams.delete(seq);
    this.outputs?.delete(seq);
  }

  /**
   * pool.stream: the task returns an iterator (a generator); its items go to the pool as events, no
   * more than the consumer's credit allows ahead of it; the generator's return value is the result.
   */
  stream(
    seq: number,
    name: string,
    fn: Task,
    [window, args]: [number, unknown[]],
    call: RunningCall,
  ): ResultFrame | Promise<ResultFrame> {
    let made: unknown;
    this.slot.current = call;
    try {
      made = fn(...args);
    } catch (error) {
      return [seq, ResultStatus.Threw, toWireError(error), 0];
    } finally {
      this.slot.current = undefined;
    }
    const it = made as Partial<AsyncIterator<unknown> & AsyncIterable<unknown> & Iterable<unknown>> | null;
    const iterator =
      it?.[Symbol.asyncIterator]?.() ??
      (typeof it?.[Symbol.iterator] === 'function' ? it[Symbol.iterator]!() : undefined);
    if (!iterator) {
      const error = new TypeError(
        `task '${name}' returned ${made === null ? 'null' : typeof made}, not an iterator: pool.stream() needs a generator function (function* or async function*)`,
      );
      return [seq, ResultStatus.Threw, toWireError(error), 0];
    }
    const state = {
      credits: window,
      wake: undefined as (() => void) | undefined,
      error: undefined as unknown,
    };
    this.streams.set(seq, state);
    const wait = (): Promise<void> =>
      new Promise<void>((resolve) => {
        state.wake = () => {
          state.wake = undefined;
          resolve();
        };
      });
    const drive = async (): Promise<ResultFrame> => {
      for (;;) {
        if (call.cancelled || state.error !== undefined) {
          await Promise.resolve(iterator.return?.()).catch(() => {});
          return state.error !== undefined
            ? [seq, ResultStatus.Uncloneable, toWireError(state.error), 0]
            : [seq, ResultStatus.Cancelled, 0, 0];
        }
        if (state.credits <= 0) {
          this.events.flush(); // the consumer must see what it is owed before it grants more
          await wait();
          continue;
        }
        let next: IteratorResult<unknown>;
        this.slot.current = call;
        try {
          next = await iterator.next();
        } catch (error) {
          return [seq, ResultStatus.Threw, toWireError(error), 0];
        } finally {
          this.slot.current = undefined;
        }
        if (next.done) {
          // Its last items go before its result: one that cannot travel fails the call here, while
          // the stream is still known (after the result it was dropped without a word).
          this.events.flush();
          if (state.error !== undefined) return [seq, ResultStatus.Uncloneable, toWireError(state.error), 0];
          return [seq, ResultStatus.Ok, next.value, 0];
        }
        state.credits--;
        this.events.add(seq, 0, CallEvent.Yield, undefined, next.value);
      }
    };
    return drive();
  }

  /** A chunk runs its items in order; per-item failures are reported beside the other results. */
  runChunk(
    seq: number,
    fn: Task,
    spread: boolean,
    items: ArrayLike<unknown>,
    inArena: Float64Array | undefined,
    call: RunningCall,
  ): ResultFrame | Promise<ResultFrame> {
    const slot = this.slot;
    const board = call.claimIndex >= 0 ? this.board : undefined;
    // Numbers in and, so far, numbers out, synchronously: each result goes straight into a Float64Array
    // (into the arena chunk itself, over the item just read), so a tiny item costs no boxed result, no
    // packing pass and no garbage. The first item that is not like that (a throw, a promise, another
    // type) hands the chunk to the general loop below, at that item, with what is done so far.
    let done = 0;
    let held: unknown;
    let stop = Stop.None;
    let out: Float64Array | undefined;
    if (items instanceof Float64Array && !spread && this.outputs === undefined) {
      out = inArena ?? new Float64Array(items.length);
      const end = { done: 0, stop: Stop.None, held: undefined as unknown };
      slot.current = call;
      try {
        numericLoop(fn, items, out, call, board, seq, end);
      } finally {
        slot.current = undefined;
      }
      ({ done, stop, held } = end);
      if (call.cancelled) return [seq, ResultStatus.Cancelled, 0, 0];
      if (stop === Stop.None)
        return inArena ? [seq, ResultStatus.OkArena, 0, 0] : [seq, ResultStatus.OkNumbers, out, 0];
    }
    const results = new Array<unknown>(items.length);
    const errors: [number, ReturnType<typeof toWireError>][] = [];
    const frame = (): ResultFrame => {
      if (call.cancelled) return [seq, ResultStatus.Cancelled, 0, 0];
      if (errors.length) return [seq, ResultStatus.Partial, [results, errors], 0];
      // Every item has been read: numbers go back over the chunk, anything else through the pipe.
      if (inArena && results.every((r) => typeof r === 'number')) {
        inArena.set(results as number[]);
        return [seq, ResultStatus.OkArena, 0, 0];
      }
      const numbers = packNumbers(results);
      return numbers ? [seq, ResultStatus.OkNumbers, numbers, 0] : [seq, ResultStatus.Ok, results, 0];
    };
    /** Item `at` returned `value`: a promise goes on with the items after it once it settles. */
    const settle = (at: number, value: unknown): Promise<ResultFrame> | undefined => {
      if (!isThenable(value)) {
        results[at] = value;
        return undefined;
      }
      return Promise.resolve(value).then(
        (v) => {
          results[at] = v;
          return step(at + 1) ?? frame();
        },
        (e) => {
          errors.push([at, this.failure(e, seq)]);
          return step(at + 1) ?? frame();
        },
      );
    };
    const step = (i: number): Promise<ResultFrame> | undefined => {
      slot.current = call;
      try {
        // A cancelled chunk stops between items: its remaining items would be thrown away anyway.
        for (; i < items.length && !revoked(call, board, seq); i++) {
          try {
            call.item = i;
            this.outputs?.set(seq, '');
            const later = settle(i, spread ? fn(...(items[i] as unknown[])) : fn(items[i]));
            if (later) return later;
          } catch (error) {
            errors.push([i, this.failure(error, seq)]);
          }
        }
        return undefined;
      } finally {
        slot.current = undefined;
      }
    };
    if (stop === Stop.None) return step(0) ?? frame();
    for (let k = 0; k < done; k++) results[k] = out![k];
    if (stop === Stop.Threw) errors.push([done, this.failure(held, seq)]);
    else {
      const later = settle(done, held);
      if (later) return later;
    }
    return step(done + 1) ?? frame();
  }
}
