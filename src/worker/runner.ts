/**
 * The worker's run loop: runs the units the pool sends, in order, `concurrency` at a time, posting
 * each result before starting the next unit (the exactly-once rule described in
 * runtime/protocol.ts). What few pools need (shared-memory and channel handles, usage probes) is
 * loaded on the first unit that needs it, holding the loop meanwhile.
 */
import { getHeapStatistics } from 'node:v8';
import { isMainThread } from 'node:worker_threads';
import type { ChanDown } from '../channel/wire.js';
import type {
  FromWorker,
  ResultFrame,
  ToWorker,
  UnitFrame,
  WireError,
  WorkerLimits,
} from '../runtime/protocol.js';
import {
  claim,
  claimRevoked,
  HEAP_REPORT_MS,
  packNumbers,
  probeEveryUnit,
  ResultStatus,
  toWireError,
  UNIT_ARENA,
  UNIT_CANCELLABLE,
  UNIT_CHAN,
  UNIT_SHM,
  UNIT_USAGE,
  UnitMode,
} from '../runtime/protocol.js';
import { shmEverUsed } from '../shm/used.js';
import { CallEvent, cancelReason, type RunningCall, taskSlot } from '../task.js';
import { EventOutbox } from './events.js';
import type { UnitProbe } from './limits.js';
import { inTraceContext } from './tracing.js';

export type Task = (...args: unknown[]) => unknown;

export interface Transport {
  post(message: FromWorker, transfer?: ArrayBuffer[]): void;
  listen(handler: (message: ToWorker) => void): void;
}

export type Extras = typeof import('./extras.js');
export type ShmModule = typeof import('../shm/shared-memory.js');
/** Unit flags whose handling lives in the lazily loaded extras. */
const NEEDS_EXTRAS = UNIT_SHM | UNIT_CHAN | UNIT_USAGE | UNIT_ARENA;
/** captureOutput keeps this much of what a call wrote: the end, where the failure usually shows. */
const OUTPUT_TAIL = 16 * 1024;

let extrasLoading: Promise<Extras> | undefined;
/** Loads the extras once; channels learn how to reach the pool as they arrive. */
export function loadExtras(io: Transport): Promise<Extras> {
  extrasLoading ??= import('./extras.js').then((m) => {
    m.bindChannels((frame) => io.post(frame));
    return m;
  });
  return extrasLoading;
}

/** Why runChunk's numeric fast path stopped before the end of its chunk. */
enum Stop {
  None,
  Value,
  Threw,
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

export class Runner {
  private readonly queue: UnitFrame[] = [];
  private head = 0;
  private running = 0;
  private outbox: ResultFrame[] = [];
  private pumpScheduled = false;

  private readonly probeAlways: boolean;
  /** Units taken off the queue so far: a unit's index on the claim board. */
  private dequeued = 0;
  private readonly board: Int32Array | undefined;
  private extras: Extras | undefined;
  private probe: UnitProbe | undefined;
  /** While the extras load nothing starts and nothing is posted; channel frames wait here. */
  private loading = false;
  private chanBacklog: ChanDown[] = [];
  private readonly needsExtras: number;
  private heapReportedAt = performance.now();
  /** The transfer arena's name as the pool sent it, and its float64 view once mapped. */
  private arenaName: string | undefined;
  private arenaView: Float64Array | undefined;
  /** The calls running now, by unit seq: what a cancel from the pool reaches. */
  private readonly calls = new Map<number, RunningCall>();
  /** Units cancelled before they started: skipped when their turn comes. */
  private readonly dropped = new Set<number>();
  private readonly slot = taskSlot();
  private readonly events: EventOutbox;
  /** captureOutput: what each running call wrote (a map chunk's current item). */
  private outputs: Map<number, string> | undefined = undefined;
  /** Streamed calls: items they may still yield before the consumer takes more, and who waits for credit. */
  private readonly streams = new Map<
    number,
    { credits: number; wake: (() => void) | undefined; error: unknown }
  >();

  constructor(
    private readonly workerId: number,
    private readonly tasks: Map<string, Task>,
    private readonly concurrency: number,
    private readonly io: Transport,
    private readonly limits: WorkerLimits,
    board: SharedArrayBuffer | undefined,
    extras: Extras | undefined,
    /** Loaded already for a process worker's claim board: then the arena needs no extras. */
    private readonly shm: ShmModule | undefined,
  ) {
    this.probeAlways = probeEveryUnit(limits);
    this.needsExtras = shm ? NEEDS_EXTRAS & ~UNIT_ARENA : NEEDS_EXTRAS;
    this.board = board && new Int32Array(board);
    if (extras) this.adopt(extras);
    this.events = new EventOutbox(
      (m) => io.post(m),
      (seq, error) => {
        const stream = this.streams.get(seq);
        if (stream) {
          stream.error = error;
          stream.wake?.();
        }
      },
    );
  }

  private adopt(extras: Extras): void {
    this.extras = extras;
    this.probe = new extras.UnitProbe(this.limits);
  }

  /** True when the extras are here; otherwise starts loading them and holds the pump until then. */
  private need(): boolean {
    if (this.extras) return true;
    if (!this.loading) {
      this.loading = true;
      loadExtras(this.io).then(
        (extras) => {
          this.adopt(extras);
          this.loading = false;
          for (const frame of this.chanBacklog) extras.channelDown(frame);
          this.chanBacklog = [];
          // Results held back because a task made SharedMemory before the codec was here.
          for (const frame of this.outbox) this.encodeResult(frame);
          this.pump();
        },
        (error: unknown) => {
          // Nothing can run without them, and a task's own unhandledRejection handler must not
          // leave the worker holding its units forever: end it, its units fail or are re-queued.
          process.stderr.write(
            `corral worker: could not load its shared-memory/channel support: ${String(error)}\n`,
          );
          process.exit(70);
        },
      );
    }
    return false;
  }

  accept(units: UnitFrame[]): void {
    for (const unit of units) this.queue.push(unit);
    this.pump();
  }

  arena(segment: string): void {
    this.arenaName = segment;
  }

  private arenaChunk(at: number, length: number): Float64Array {
    if (!this.arenaView) {
      const { internalSegment, SharedMemory } = this.shm ?? this.extras!;
      const name = this.arenaName;
      if (name === undefined) throw new Error('corral: an arena unit arrived before its arena');
      this.arenaView = new Float64Array(internalSegment(() => SharedMemory.attach(name).buffer));
    }
    return this.arenaView.subarray(at, at + length);
  }

  /** Told to stop in good order: the teardown export (if any) runs, then the worker exits. */
  async stop(teardown: Task | undefined): Promise<void> {
    if (teardown) {
      try {
        await teardown();
      } catch (error) {
        process.stderr.write(
          `corral worker ${this.workerId}: its teardown failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
        );
      }
    }
    this.extras?.flushChannels();
    this.events.flush();
    process.exit(0);
  }

  /**
   * From now on what the worker writes to stdout and stderr is also kept per running call (its last
   * OUTPUT_TAIL characters; a map chunk's, per item), and a failure carries it (WireError props.output).
   */
  captureOutput(): void {
    this.outputs = new Map();
    for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
      stream.write = ((chunk: unknown, ...rest: unknown[]) => {
        const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
        for (const seq of this.calls.keys()) {
          this.outputs!.set(seq, ((this.outputs!.get(seq) ?? '') + text).slice(-OUTPUT_TAIL));
        }
        return write(chunk, ...rest);
      }) as typeof stream.write;
    }
  }

  /** A task's error as it travels, with what it wrote when output is captured. */
  private failure(error: unknown, seq: number): WireError {
    const wire = toWireError(error);
    const output = this.outputs?.get(seq);
    if (output) wire.props.output = output;
    return wire;
  }

  /**
   * The pool cancelled a unit. Running: its task's signal aborts (a chunk also stops between items) and
   * the pool hears that the event loop is alive; the pool settled it already, so whatever it returns
   * later only frees its slot. Not started yet: it is dropped. Already finished: its result is on the way.
   */
  cancel(seq: number, why: 'timeout' | 'abort'): void {
    const call = this.calls.get(seq);
    if (call) {
      if (call.cancelled) return;
      call.cancelled = why;
      call.controller?.abort(cancelReason(why));
      this.streams.get(seq)?.wake?.();
      this.io.post({ t: 'cancelled', seq });
      return;
    }
    for (let i = this.head; i < this.queue.length; i++) {
      if (this.queue[i]![0] === seq) {
        this.dropped.add(seq);
        return;
      }
    }
  }

  /** A stream's consumer took `n` items: it may yield that many more. */
  credit(seq: number, n: number): void {
    const stream = this.streams.get(seq);
    if (!stream) return;
    stream.credits += n;
    stream.wake?.();
  }

  channel(frame: ChanDown): void {
    if (this.need()) this.extras!.channelDown(frame);
    else this.chanBacklog.push(frame);
  }

  /** Runs what the concurrency allows; a unit that finishes synchronously is reported at once. */
  private pump(): void {
    this.pumpScheduled = false;
    if (this.loading) return;
    this.flush();
    while (this.running < this.concurrency && this.head < this.queue.length) {
      const unit = this.queue[this.head]!;
      const flags = unit[4] ?? 0;
      if ((flags & this.needsExtras) !== 0 && !this.need()) return;
      this.queue[this.head++] = undefined as unknown as UnitFrame;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      // The pool may have taken this unit back for an idle worker: then it is not ours to run.
      if (this.board && !claim(this.board, this.dequeued++, unit[0])) continue;
      if (this.dropped.delete(unit[0])) {
        this.outbox.push([unit[0], ResultStatus.Cancelled, 0, 0]);
        continue;
      }
      this.running++;
      const want = (flags & UNIT_USAGE) !== 0;
      const probe = this.probeAlways || want ? this.probe : undefined;
      probe?.before(want);
      const call: RunningCall = {
        task: unit[1],
        attempt: unit[5] ?? 1,
        key: unit[7],
        chunk: unit[2] === UnitMode.Map || unit[2] === UnitMode.Starmap || unit[2] === UnitMode.MapNumbers,
        workerId: this.workerId,
        controller: undefined,
        cancelled: undefined,
        claimIndex: (flags & UNIT_CANCELLABLE) !== 0 && this.board ? this.dequeued - 1 : -1,
        post: undefined,
        item: 0,
      };
      call.post = this.poster(unit[0]);
      this.calls.set(unit[0], call);
      const start = performance.now();
      const outcome = unit[6] === undefined ? this.run(unit, call) : this.runTraced(unit, call);
      if (isThenable(outcome)) {
        outcome.then((frame) => {
          frame[3] = performance.now() - start;
          if (probe) this.report(probe, frame, want);
          this.finish(frame);
          if (!this.pumpScheduled) {
            this.pumpScheduled = true;
            queueMicrotask(() => this.pump());
          }
        });
      } else {
        outcome[3] = performance.now() - start;
        if (probe) this.report(probe, outcome, want);
        this.finish(outcome);
        if (this.loading) return;
        this.flush();
      }
    }
    if (this.head === this.queue.length && this.head > 0) {
      this.queue.length = 0;
      this.head = 0;
    }
  }

  /**
   * A call's event sender, made here and not inline in pump(). Inline it shared the loop body's
   * context, which holds the unit and so its arguments, and V8 allocated it straight in old space (every
   * one, checked with %InYoungGeneration on Node 20). A dead old object still counts as a root for
   * young-generation collections until the next full one, so every unit's arguments outlived their
   * call: with bench/image.mjs's 270 KB bands each thread worker held 56 MiB of buffers at the peak
   * instead of 32 (piscina's), and the process 50 to 80 MiB more RSS. Made here it is young, and it
   * holds the seq alone.
   */
  private poster(seq: number): RunningCall['post'] {
    return (kind, item, name, data) => this.events.add(seq, item, kind, name, data);
  }

  /** Apart from pump() for the same reason as poster(): no closure in pump's loop may capture the unit. */
  private runTraced(unit: UnitFrame, call: RunningCall): ResultFrame | Promise<ResultFrame> {
    return inTraceContext(unit[6]!, () => this.run(unit, call));
  }

  private report(probe: UnitProbe, frame: ResultFrame, want: boolean): void {
    const report = probe.after(want);
    if (report) frame[4] = report;
  }

  private finish(frame: ResultFrame): void {
    this.running--;
    const call = this.calls.get(frame[0]);
    if (call) call.post = undefined; // nothing it reports from now on outlives it
    this.calls.delete(frame[0]);
    this.streams.delete(frame[0]);
    this.outputs?.delete(frame[0]);
    // A result may hand back SharedMemory too (a segment the task created): send its handle.
    if (shmEverUsed() && this.need()) this.encodeResult(frame);
    this.outbox.push(frame);
  }

  private encodeResult(frame: ResultFrame): void {
    if (frame[1] !== ResultStatus.Ok && frame[1] !== ResultStatus.Partial) return;
    try {
      const encoded = this.extras!.encodeResult(frame[2], isMainThread ? 'process' : 'thread');
      if (encoded.found) {
        frame[2] = encoded.value;
        frame[4] = { ...frame[4], shm: true };
      }
    } catch (error) {
      // A SharedMemory the task closed before returning it: this result cannot travel.
      frame[1] = ResultStatus.Uncloneable;
      frame[2] = toWireError(error);
    }
  }

  private flush(): void {
    this.extras?.flushChannels(); // a task's queue puts arrive before its result
    if (this.outbox.length === 0) return;
    this.events.flush(); // and so do its progress, events and stream items
    const results = this.outbox;
    this.outbox = [];
    let transfer: ArrayBuffer[] | undefined;
    for (const frame of results) {
      if (frame[1] === ResultStatus.OkNumbers)
        (transfer ??= []).push((frame[2] as Float64Array).buffer as ArrayBuffer);
    }
    // The pool's stats() show each worker's heap; reading it costs microseconds, so not every batch.
    let heap: number | undefined;
    const now = performance.now();
    if (now - this.heapReportedAt >= HEAP_REPORT_MS) {
      this.heapReportedAt = now;
      // Not process.memoryUsage(): it opens /proc/self/status, and a task at its openFiles limit may
      // have used every descriptor (an EMFILE here would take the worker down).
      heap = getHeapStatistics().used_heap_size;
    }
    try {
      this.io.post(heap === undefined ? { t: 'done', results } : { t: 'done', results, heap }, transfer);
    } catch {
      // One uncloneable result must not take its batch-mates down: send them one by one.
      for (const frame of results) {
        try {
          this.io.post({ t: 'done', results: [frame] });
        } catch (error) {
          this.io.post({
            t: 'done',
            results: [[frame[0], ResultStatus.Uncloneable, toWireError(error), frame[3]]],
          });
        }
      }
    }
  }

  private run(unit: UnitFrame, call: RunningCall): ResultFrame | Promise<ResultFrame> {
    const [seq, name, mode] = unit;
    let payload = unit[3];
    const flags = unit[4] ?? 0;
    // pump() saw to it that the extras are loaded for a unit with these flags. A payload that cannot
    // be decoded fails this unit alone: the task never runs, the worker lives on.
    if ((flags & (UNIT_SHM | UNIT_CHAN)) !== 0) {
      try {
        payload = this.extras!.decodeArgs(payload, flags);
      } catch (error) {
        return [seq, ResultStatus.CodecFailed, toWireError(error), 0];
      }
    }
    let inArena: Float64Array | undefined;
    if ((flags & UNIT_ARENA) !== 0) {
      const [at, length] = payload as [number, number];
      payload = inArena = this.arenaChunk(at, length);
    }
    const fn = this.tasks.get(name);
    if (!fn) return [seq, ResultStatus.UnknownTask, [...this.tasks.keys()], 0];
    if (mode === UnitMode.Stream) return this.stream(seq, name, fn, payload as [number, unknown[]], call);
    if (mode === UnitMode.Apply) {
      const slot = this.slot;
      slot.current = call;
      try {
        const value = fn(...(payload as unknown[]));
        if (isThenable(value)) {
          return Promise.resolve(value).then(
            (v): ResultFrame => [seq, ResultStatus.Ok, v, 0],
            (e): ResultFrame => [seq, ResultStatus.Threw, this.failure(e, seq), 0],
          );
        }
        return [seq, ResultStatus.Ok, value, 0];
      } catch (error) {
        return [seq, ResultStatus.Threw, this.failure(error, seq), 0];
      } finally {
        slot.current = undefined;
      }
    }
    return this.runChunk(seq, fn, mode === UnitMode.Starmap, payload as ArrayLike<unknown>, inArena, call);
  }

  /**
   * pool.stream: the task returns an iterator (a generator); its items go to the pool as events, no
   * more than the consumer's credit allows ahead of it; the generator's return value is the result.
   */
  private stream(
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
        if (next.done) return [seq, ResultStatus.Ok, next.value, 0];
        state.credits--;
        this.events.add(seq, 0, CallEvent.Yield, undefined, next.value);
      }
    };
    return drive();
  }

  /** A chunk runs its items in order; per-item failures are reported beside the other results. */
  private runChunk(
    seq: number,
    fn: Task,
    spread: boolean,
    items: ArrayLike<unknown>,
    inArena: Float64Array | undefined,
    call: RunningCall,
  ): ResultFrame | Promise<ResultFrame> {
    const slot = this.slot;
    // A chunk that can be cancelled also watches its claim word between items: a cancel message would
    // not be read before a chunk of synchronous items ends.
    const board = call.claimIndex >= 0 ? this.board : undefined;
    const revoked = (): boolean => {
      if (!call.cancelled && board && claimRevoked(board, call.claimIndex, seq)) call.cancelled = 'abort';
      return call.cancelled !== undefined;
    };
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
      slot.current = call;
      try {
        for (; done < items.length && !revoked(); done++) {
          call.item = done;
          const value = fn(items[done]);
          if (typeof value !== 'number') {
            held = value;
            stop = Stop.Value;
            break;
          }
          out[done] = value;
        }
      } catch (error) {
        held = error;
        stop = Stop.Threw;
      } finally {
        slot.current = undefined;
      }
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
        for (; i < items.length && !revoked(); i++) {
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
