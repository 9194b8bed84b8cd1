/**
 * The worker's run loop: runs the units the pool sends, in order, `concurrency` at a time, posting
 * each result before starting the next unit (the exactly-once rule described in
 * runtime/protocol.ts), except that tiny tasks' results wait for batch-mates (see HOLD_BELOW_MS).
 * What few pools need (shared-memory and channel handles, usage probes) is
 * loaded on the first unit that needs it, holding the loop meanwhile. How a unit's items run (map
 * chunks and their numeric fast path, streams, the arena) is chunk.ts's.
 */
import { isMainThread } from 'node:worker_threads';
import type { ChanDown } from '../channel/wire.js';
import { builtin } from '../lazy.js';
import type { FromWorker, ResultFrame, ToWorker, UnitFrame, WorkerLimits } from '../runtime/protocol.js';
import {
  BOARD_POSTED,
  BOARD_SLOTS,
  BOARD_VALUES,
  claim,
  HEAP_REPORT_MS,
  keepResult,
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
import { cancelReason, type RunningCall, taskSlot } from '../task.js';
import { ItemRunner, isThenable } from './chunk.js';
import { EventOutbox } from './events.js';
import type { UnitProbe } from './limits.js';
import { inTraceContext } from './tracing.js';

export type Task = (...args: unknown[]) => unknown;

export interface Transport {
  post(message: FromWorker, transfer?: ArrayBuffer[]): void;
  listen(handler: (message: ToWorker) => void): void;
  /** Exits once everything posted has left: a process's link may still hold unwritten frames. */
  exit(): void;
}

export type Extras = typeof import('./extras.js');
export type ShmModule = typeof import('../shm/shared-memory.js');
/** Unit flags whose handling lives in the lazily loaded extras. */
const NEEDS_EXTRAS = UNIT_SHM | UNIT_CHAN | UNIT_USAGE | UNIT_ARENA;
/**
 * A result may wait for batch-mates while the next unit is of a task that usually takes less than
 * this (ms): one message then carries many results, where posting and receiving each one costs the
 * pool more than such a task. Only a number result waits, and only once it is on the claim board
 * (keepResult): a worker that dies holding results loses none, the pool reads them there
 * (pool/exits.ts). Never around a unit that can be cancelled: its deadline starts when the results
 * before it arrive (pool/cancel.ts).
 */
const HOLD_BELOW_MS = 0.05;
/** Nor longer than this (ms) since the first result held, nor more than HOLD_MAX results. */
const HOLD_MS = 1;
const HOLD_MAX = 32;
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

export class Runner {
  private readonly queue: UnitFrame[] = [];
  private head = 0;
  private running = 0;
  private outbox: ResultFrame[] = [];
  private pumpScheduled = false;
  /** When the oldest result in the outbox was put there (performance.now()). */
  private heldSince = 0;
  /** Each task's usual time for a unit (ms, a moving average): which results may wait (HOLD_BELOW_MS). */
  private readonly costs = new Map<string, number>();

  private readonly probeAlways: boolean;
  /** Units taken off the queue so far: a unit's index on the claim board. */
  private dequeued = 0;
  private readonly board: Int32Array | undefined;
  /** The claim board's results: where a held result waits, safe from its worker's death. */
  private readonly values: Float64Array | undefined;
  private extras: Extras | undefined;
  private probe: UnitProbe | undefined;
  /** While the extras load nothing starts and nothing is posted; channel frames wait here. */
  private loading = false;
  private chanBacklog: ChanDown[] = [];
  private readonly needsExtras: number;
  private heapReportedAt = performance.now();
  /** The calls running now, by unit seq: what a cancel from the pool reaches. */
  private readonly calls = new Map<number, RunningCall>();
  /** Units cancelled before they started: skipped when their turn comes. */
  private readonly dropped = new Set<number>();
  private readonly slot = taskSlot();
  private readonly events: EventOutbox;
  /** Runs a unit's items (map chunks, streams) and keeps the arena's view and captured output. */
  private readonly items: ItemRunner;

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
    this.board = board && new Int32Array(board, 0, BOARD_VALUES / 4);
    this.values = board && new Float64Array(board, BOARD_VALUES, BOARD_SLOTS);
    if (extras) this.adopt(extras);
    this.events = new EventOutbox(
      (m) => io.post(m),
      (seq, error) => this.items.unsendable(seq, error),
    );
    this.items = new ItemRunner(this.board, this.events);
    // A task that calls process.exit() (or throws past everything) ends the worker at once: what it
    // sent and is still batched (stream items, progress, queue puts) is posted first, so that the
    // items a stream yielded before it reach the consumer. (Not for a worker stopped from outside,
    // terminated or killed, and a process's post can still be cut off if its link is backed up.)
    process.on('exit', () => {
      try {
        this.extras?.flushChannels();
        this.events.flush();
      } catch {
        // The link is gone already.
      }
    });
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
    this.items.arena(segment);
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
    this.io.exit();
  }

  /**
   * From now on what the worker writes to stdout and stderr is also kept per running call (its last
   * OUTPUT_TAIL characters; a map chunk's, per item), and a failure carries it (WireError props.output).
   */
  captureOutput(): void {
    this.items.outputs = new Map();
    for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
      stream.write = ((chunk: unknown, ...rest: unknown[]) => {
        const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
        for (const seq of this.calls.keys()) {
          const outputs = this.items.outputs!;
          outputs.set(seq, ((outputs.get(seq) ?? '') + text).slice(-OUTPUT_TAIL));
        }
        return write(chunk, ...rest);
      }) as typeof stream.write;
    }
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
      this.items.wake(seq);
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
    this.items.credit(seq, n);
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
        this.hold([unit[0], ResultStatus.Cancelled, 0, 0], performance.now());
        if (!this.nextMayHold()) this.flush();
        continue;
      }
      const index = this.board ? this.dequeued - 1 : -1;
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
        claimIndex: (flags & UNIT_CANCELLABLE) !== 0 ? index : -1,
        post: undefined,
        item: 0,
      };
      call.post = this.poster(unit[0]);
      this.calls.set(unit[0], call);
      const start = performance.now();
      const outcome = unit[6] === undefined ? this.run(unit, call) : this.runTraced(unit, call);
      if (isThenable(outcome)) {
        outcome.then((frame) => {
          const end = performance.now();
          frame[3] = end - start;
          if (probe) this.report(probe, frame, want);
          this.finish(frame, end);
          if (!this.pumpScheduled) {
            this.pumpScheduled = true;
            queueMicrotask(() => this.pump());
          }
        });
      } else {
        const end = performance.now();
        const ms = end - start;
        outcome[3] = ms;
        if (probe) this.report(probe, outcome, want);
        if (index >= 0) {
          // Only a worker with a board may hold results (nextMayHold): only it needs the task's cost.
          const cost = this.costs.get(unit[1]);
          this.costs.set(unit[1], cost === undefined ? ms : cost * 0.8 + ms * 0.2);
        }
        this.finish(outcome, end);
        if (this.loading) return;
        // It waits for batch-mates only if the next unit may run with results held, and then only once
        // kept on the claim board; otherwise it goes now, with those that wait. (Kept and then sent at
        // once, a 10 ms task's result was open to the pool's look for held results, which took it.)
        if (!(this.nextMayHold() && this.keep(outcome, index, flags))) this.flush();
      }
    }
    // Results held for batch-mates go now (not a running task's queue puts: they keep their batch.delay).
    if (this.outbox.length > 0) this.flush();
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

  /**
   * Whether results in the outbox may wait while the next unit runs: there is one, it is a plain unit
   * (nothing to cancel, no extras) of a task that usually takes microseconds, and they have not waited long.
   */
  private nextMayHold(): boolean {
    const next = this.queue[this.head];
    if (next === undefined || (next[4] ?? 0) !== 0 || this.board === undefined) return false;
    if (this.outbox.length >= HOLD_MAX) return false;
    const cost = this.costs.get(next[1]);
    return cost !== undefined && cost < HOLD_BELOW_MS && performance.now() - this.heldSince < HOLD_MS;
  }

  private hold(frame: ResultFrame, now: number): void {
    if (this.outbox.length === 0) this.heldSince = now;
    this.outbox.push(frame);
  }

  /**
   * Keeps the number result of a plain unit (the same rule as nextMayHold's) on the claim board (see
   * HOLD_BELOW_MS); false for any other, and while progress, events or queue puts wait to be sent: they
   * go before their call's result, and a result the pool took off the board would leave them behind
   * (or lost, with their worker).
   */
  private keep(frame: ResultFrame, index: number, flags: number): boolean {
    const value = frame[2];
    if (flags !== 0 || index < 0 || frame[1] !== ResultStatus.Ok || typeof value !== 'number') return false;
    if (frame[4] !== undefined) return false; // a usage or leak report travels with its result
    if (this.events.pending || this.extras?.channelsPending()) return false;
    keepResult(this.board!, this.values!, index, frame[0], value);
    return true;
  }

  private finish(frame: ResultFrame, now: number): void {
    this.running--;
    const call = this.calls.get(frame[0]);
    if (call) call.post = undefined; // nothing it reports from now on outlives it
    this.calls.delete(frame[0]);
    this.items.release(frame[0]);
    // A result may hand back SharedMemory too (a segment the task created): send its handle.
    if (shmEverUsed() && this.need()) this.encodeResult(frame);
    this.hold(frame, now);
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
      // have used every descriptor (an EMFILE here would take the worker down). node:v8 loads here, at
      // the first report, not with the entry: it took ~3 ms of a fresh worker's start on Node 20 (0.8
      // ms on Node 22). A worker under limits has it from the start (worker/limits.ts); should loading
      // it fail here, the report waits.
      try {
        heap = builtin('node:v8').getHeapStatistics().used_heap_size;
      } catch {
        heap = undefined;
      }
    }
    try {
      this.countBatch();
      this.io.post(heap === undefined ? { t: 'done', results } : { t: 'done', results, heap }, transfer);
    } catch {
      // One uncloneable result must not take its batch-mates down: send them one by one.
      this.countBatch(-1);
      for (const frame of results) {
        this.countBatch();
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

  /** Counts a batch about to be posted (-1: one that could not be), before it goes (BOARD_POSTED). */
  private countBatch(n = 1): void {
    if (this.board) Atomics.add(this.board, BOARD_POSTED, n);
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
      try {
        payload = inArena = this.items.arenaChunk(at, length, this.shm ?? this.extras!);
      } catch (error) {
        // Mapping the pool's arena takes a descriptor (a task may have used them all): this chunk
        // fails, and the worker lives on; it threw out of the runner before, and the worker died.
        const reason = error instanceof Error ? error.message : String(error);
        const cause = new Error(
          `worker ${this.workerId} could not map the pool's shared arena for this chunk of numbers (${reason}); a task that leaks descriptors leaves none (detectLeaks finds it)`,
          { cause: error },
        );
        return [seq, ResultStatus.Threw, toWireError(cause), 0];
      }
    }
    const fn = this.tasks.get(name);
    if (!fn) return [seq, ResultStatus.UnknownTask, [...this.tasks.keys()], 0];
    if (mode === UnitMode.Stream)
      return this.items.stream(seq, name, fn, payload as [number, unknown[]], call);
    if (mode === UnitMode.Apply) {
      const slot = this.slot;
      slot.current = call;
      try {
        const value = fn(...(payload as unknown[]));
        if (isThenable(value)) {
          return Promise.resolve(value).then(
            (v): ResultFrame => [seq, ResultStatus.Ok, v, 0],
            (e): ResultFrame => [seq, ResultStatus.Threw, this.items.failure(e, seq), 0],
          );
        }
        return [seq, ResultStatus.Ok, value, 0];
      } catch (error) {
        return [seq, ResultStatus.Threw, this.items.failure(error, seq), 0];
      } finally {
        slot.current = undefined;
      }
    }
    return this.items.runChunk(
      seq,
      fn,
      mode === UnitMode.Starmap,
      payload as ArrayLike<unknown>,
      inArena,
      call,
    );
  }
}
