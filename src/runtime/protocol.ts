/**
 * The frames the pool and its workers exchange. Both runtimes speak exactly this; only the
 * transport differs (MessagePort for threads, the IPC pipe with V8 serialisation for processes).
 *
 * Units are tuples, not objects: a frame of 256 units is cloned per message, and tuples clone and
 * allocate less. The exactly-once rule lives in the worker: it marks a unit started on its claim
 * board (claim) and posts the unit's result before it starts the next unit, unless that result is a
 * number it left on the board (keepResult). When a worker dies the pool therefore knows which of its
 * units were running (they fail), which finished (they settle with the board's result) and which were
 * never started (they are re-queued and run once, elsewhere). Without a board (a process worker where
 * the shared-memory addon is missing) every result goes at once, so the first `concurrency` ran.
 */

import type { ChanDown, ChanUp } from '../channel/wire.js';

/** Side-channel frames of Queue / Pipe (`t: 'chan'`, see channel/wire.ts) ride beside these. */

/** How a unit's payload becomes calls: one call with spread args, or one call per chunk item. */
export enum UnitMode {
  Apply = 0,
  Map = 1,
  Starmap = 2,
  /** A Map chunk whose items are all numbers, sent as one Float64Array: a memcpy instead of a clone. */
  MapNumbers = 3,
  /**
   * pool.stream: payload is [window, args]; the task returns an iterator whose items go to the pool as
   * Yield events, at most `window` ahead of what the consumer took (the pool sends credit as it does).
   */
  Stream = 4,
}

/** [seq, task name, mode, payload]: payload is the args array (Apply) or the chunk's items. */
/** Bits of a unit frame's flags. */
export const UNIT_USAGE = 1;
/** The payload holds SharedMemory handles to turn back into mappings. */
export const UNIT_SHM = 2;
/** The payload holds Queue / Pipe handles (channel/handles.ts). */
export const UNIT_CHAN = 4;
/**
 * A MapNumbers chunk in the worker's transfer arena (pool/arena.ts): the payload is [offset,
 * length] in float64 items, and results that are all numbers are written back over the chunk.
 */
export const UNIT_ARENA = 8;
/**
 * The unit has a deadline or an AbortSignal: a map chunk of it looks at its claim word between items,
 * where the pool marks it cancelled (pool/steal.ts), since a chunk of synchronous items would not
 * see the cancel message before its end.
 */
export const UNIT_CANCELLABLE = 16;

/**
 * `attempt` (1-based) is sent only for a retry; the task reads it from its context. `trace` only when
 * the caller traces with OpenTelemetry: the unit's span as a W3C traceparent (and tracestate), which the
 * worker makes the active context of the task (worker/tracing.ts).
 */
export type UnitFrame = [
  seq: number,
  name: string,
  mode: UnitMode,
  payload: unknown,
  flags?: number,
  attempt?: number,
  trace?: TraceCarrier,
  /** The call's stable key (distributed backends: the job id, the same on every re-run). */
  key?: string,
];

/** [traceparent, tracestate?] of a W3C Trace Context. */
export type TraceCarrier = [traceparent: string, tracestate?: string];

export enum ResultStatus {
  Ok = 0,
  Threw = 1,
  UnknownTask = 2,
  Uncloneable = 3,
  /** A chunk in which some items threw: value is [results, [itemIndex, WireError][]]. */
  Partial = 4,
  /** All results are numbers: value is a Float64Array, transferred rather than cloned. */
  OkNumbers = 5,
  /** All results are numbers and were written over the unit's chunk in the arena: value is 0. */
  OkArena = 6,
  /**
   * The unit's arguments could not be decoded in the worker (a SharedMemory it cannot map, a channel
   * handle it cannot reach): value is the WireError. The task never ran; the worker lives on.
   */
  CodecFailed = 7,
  /** The pool cancelled the unit (timeout, abort) before or while it ran, and it stopped: value is 0. */
  Cancelled = 8,
}

/** Packs an array of numbers into a Float64Array, or returns undefined if any item is not a number. */
export function packNumbers(items: ArrayLike<unknown>): Float64Array | undefined {
  const n = items.length;
  if (n < 64 || typeof items[0] !== 'number') return undefined; // below 64 the clone is as cheap as the check
  // One pass that checks and copies: Float64Array.from() after a check loop read every item twice,
  // through the iterator protocol the second time (50 ns an item, a third of a tiny-item map's cost).
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = items[i];
    if (typeof v !== 'number') return undefined;
    out[i] = v;
  }
  return out;
}

/** [seq, status, value, elapsed ms in the worker] */
export type ResultFrame = [
  seq: number,
  status: ResultStatus,
  value: unknown,
  ms: number,
  report?: UnitReport,
];

/** What one task cost, measured inside its worker (on request: { withUsage: true }). */
export interface TaskUsage {
  wallMs: number;
  /** CPU of the worker while the task ran: the process's for process workers, the thread's where Node can tell. */
  cpuUserMs: number;
  cpuSystemMs: number;
  /** Peak resident memory of the worker process so far (VmHWM); the whole process for threads. */
  peakRss: number;
  /**
   * Descriptors open after the task minus before it (process workers; 0 for threads); undefined
   * when they could not be counted because the worker was out of descriptors.
   */
  fdsOpened: number | undefined;
}

/** Extra facts a worker attaches to a result when the pool asked for them. */
export interface UnitReport {
  usage?: TaskUsage;
  /** Descriptors the task left open (process workers with leak detection). */
  leakedFds?: number;
  /** V8 heap in use after the task, sent only when above recycle.whenHeapAbove. */
  heapUsed?: number;
  /** The result holds SharedMemory handles. */
  shm?: true;
}

export type RlimitSpec = [resource: 'as' | 'data' | 'nofile', limit: number];

export interface WorkerLimits {
  rlimits: RlimitSpec[];
  /** CPU seconds per task: the soft RLIMIT_CPU is moved before each task. */
  cpuTime: number | undefined;
  heapAbove: number | undefined;
  detectLeaks: boolean;
}

/** Limits the worker must look at around every unit, not only around units that ask for usage. */
export function probeEveryUnit(limits: WorkerLimits): boolean {
  return limits.cpuTime !== undefined || limits.heapAbove !== undefined || limits.detectLeaks;
}

export interface WorkerInit {
  module: string;
  workerId: number;
  concurrency: number;
  initializer: string | undefined;
  /** An export run when the worker is told to stop in good order (retired, idle, the pool closed). */
  teardown: string | undefined;
  /** Keep each running call's stdout/stderr and send it with its failure (WireError props.output). */
  captureOutput: boolean;
  initArgs: unknown[];
  limits: WorkerLimits;
  /** Claim words shared with the pool, for work stealing (thread workers). */
  board: SharedArrayBuffer | undefined;
  /** For a process worker: the shared segment holding its claim board. */
  boardSegment: string | undefined;
  /** The pool's process id, read before the worker started: a worker whose parent is gone must end. */
  parentPid: number;
  /** Under a V8 heap limit: arm the heap guard at this limit (MiB). */
  heapGuardMb?: number;
  /** A thread's guard reports here (HEAP_GUARD_REPORT_BYTES); a process's on stderr. */
  heapGuardReport?: SharedArrayBuffer;
  /** A process worker under limits.rss: arm the rss guard at this many bytes. */
  rssGuard?: number;
  /**
   * ...and stop a call that breaches it in place when it can (native/heap.cc), not the process; the
   * error for such a call carries this key, which no task knows (see classifyThrown).
   */
  rssStopKey?: string;
  /** Environment variables the pool set for the process's start only (runtime/process.ts): put back, null deletes. */
  envRestore?: Record<string, string | null>;
}

export type ToWorker =
  | { t: 'init'; init: WorkerInit }
  | { t: 'run'; units: UnitFrame[] }
  /** The worker's transfer arena, sent once before the first unit that uses it. */
  | { t: 'arena'; segment: string }
  | { t: 'stop' }
  /** Cancel a unit (its timeout passed or its signal fired): abort its task's signal, or drop it if not started. */
  | { t: 'cancel'; seq: number; why: 'timeout' | 'abort' }
  /** A stream's consumer took `n` more items: the worker may yield that many more. */
  | { t: 'credit'; seq: number; n: number }
  | ChanDown;

export type FromWorker =
  /** `rssInPlace`: the rss guard stops calls in place (the pool's sampler then leaves the limit to it). */
  | { t: 'ready'; exports: string[]; heap: number; rssInPlace?: true }
  /** `teardown`: the teardown option names no function export (checked at start, not at the end). */
  | { t: 'fatal'; phase: 'load' | 'init' | 'limits' | 'teardown'; error: WireError }
  /** `heap`: the worker's V8 heap in use, sent with a result batch at most every HEAP_REPORT_MS. */
  | { t: 'done'; results: ResultFrame[]; heap?: number }
  /** A cancel was received while the unit ran: the worker's event loop is alive. */
  | { t: 'cancelled'; seq: number }
  /** Progress, events and stream items of running units, in the order they were sent, before their results. */
  | { t: 'events'; events: EventFrame[] }
  /**
   * A process worker's last frame as it stops in good order: it exits once this one is written, and
   * so everything before it (a teardown's queue puts, say). The parent has nothing to do with it.
   */
  | { t: 'bye' }
  | ChanUp;

/** [seq, item (position in the chunk), kind (CallEvent), name (events), data] */
export type EventFrame = [seq: number, item: number, kind: number, name: string | undefined, data: unknown];

/** How long a worker holds progress and events before it sends them (a task's burst becomes one message). */
export const EVENT_FLUSH_MS = 10;

/** How often at most a worker reports its V8 heap (with a result batch). */
export const HEAP_REPORT_MS = 100;

/** Claim words per worker (see pool/steal.ts), reused round-robin; with what follows, 16 KiB a board. */
export const BOARD_SLOTS = 1023;
/** After the slots, one word: how many units the worker has read off its queue (claimed or skipped). */
export const BOARD_READ = BOARD_SLOTS;
/**
 * After it, a done word per slot, then (8-byte aligned) a float64 per slot: a worker holding a tiny
 * task's number result for a batch (worker/runner.ts) writes it there and the unit's seq in the done
 * word (keepResult), so a worker that dies holding results loses none: the pool reads them off the
 * board (pool/exits.ts).
 */
export const BOARD_DONE = BOARD_SLOTS + 1;
/**
 * After the done words, one word: how many result batches the worker has posted. Results it holds are
 * ones it has not posted: the pool, having received that many batches, knows none is on its way.
 */
export const BOARD_POSTED = BOARD_DONE + BOARD_SLOTS;
/** Byte offset of the float64 results. */
export const BOARD_VALUES = (BOARD_POSTED + 1) * 4;
/** The board's size in bytes. */
export const BOARD_BYTES = BOARD_VALUES + BOARD_SLOTS * 8;

/** Worker side of work stealing: may this unit start? False when the pool took it back first. */
export function claim(words: Int32Array, index: number, seq: number): boolean {
  const won = Atomics.compareExchange(words, index % BOARD_SLOTS, seq, -seq) !== 0;
  // Read past this slot: from now on the pool may give it to another unit (ClaimBoard.room()).
  Atomics.store(words, BOARD_READ, index + 1);
  return won;
}

/** Worker side: the unit claimed at `index` finished with `value`, which the pool may take from here. */
export function keepResult(
  words: Int32Array,
  values: Float64Array,
  index: number,
  seq: number,
  value: number,
): void {
  values[index % BOARD_SLOTS] = value;
  Atomics.store(words, BOARD_DONE + (index % BOARD_SLOTS), seq); // after the value: a reader sees both
}

/** Worker side: has the pool cancelled this running unit (its claim word no longer says -seq)? */
export function claimRevoked(words: Int32Array, index: number, seq: number): boolean {
  return Atomics.load(words, index % BOARD_SLOTS) !== (-seq | 0); // the word holds 32 bits of -seq
}

/** An Error flattened to plain data, so it survives both JSON-like and structured-clone transports. */
export interface WireError {
  name: string;
  message: string;
  stack: string | undefined;
  props: Record<string, unknown>;
  cause?: WireError | { value: unknown };
}

/**
 * What a task threw, as it travels. Anything may be thrown: a proxy whose traps throw, an error whose
 * getters throw or whose message is a symbol. Reading it must not throw in turn (that killed the worker,
 * and the calls it held failed as crashes), and what it sends must clone: strings for the texts.
 */
export function toWireError(error: unknown, depth = 0): WireError {
  try {
    return readError(error, depth);
  } catch (readFailure) {
    return {
      name: 'Error',
      message: `the task threw a value that could not be read (${typeof error}; reading it threw: ${failureText(readFailure)})`,
      stack: undefined,
      props: {},
    };
  }
}

/** What reading a thrown value threw, itself read with care: it may be as hostile. */
function failureText(failure: unknown): string {
  try {
    return safeText(failure instanceof Error ? failure.message : failure);
  } catch {
    return 'something unreadable';
  }
}

function safeText(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function readError(error: unknown, depth: number): WireError {
  if (!(error instanceof Error)) {
    return {
      name: 'NonError',
      message: describe(error),
      stack: undefined,
      props: { value: cloneable(error) },
    };
  }
  const fields = error as unknown as Record<string, unknown>;
  // Each field on its own: a getter that throws costs that field, not the rest.
  const field = (key: string): unknown => {
    try {
      return fields[key];
    } catch {
      return undefined;
    }
  };
  const props: Record<string, unknown> = {};
  for (const key of Object.keys(error)) {
    if (key !== 'cause') props[key] = cloneable(field(key));
  }
  const message = field('message');
  const wire: WireError = {
    name: safeText(field('name')),
    message: typeof message === 'string' ? message : safeText(message),
    stack: undefined,
    props,
  };
  const stack = field('stack'); // V8 builds it on first read, from the message: a symbol one throws
  if (typeof stack === 'string') wire.stack = stack;
  if ('cause' in error && depth < 8) {
    const cause = field('cause');
    wire.cause = cause instanceof Error ? toWireError(cause, depth + 1) : { value: cloneable(cause) };
  }
  return wire;
}

export function fromWireError(wire: WireError): Error {
  const error = new Error(wire.message);
  Object.defineProperty(error, 'name', {
    value: wire.name,
    writable: true,
    configurable: true,
    enumerable: false,
  });
  if (wire.stack !== undefined) error.stack = wire.stack;
  Object.assign(error, wire.props);
  if (wire.cause) {
    const cause = 'value' in wire.cause ? wire.cause.value : fromWireError(wire.cause);
    Object.defineProperty(error, 'cause', {
      value: cause,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  return error;
}

function describe(value: unknown): string {
  try {
    return typeof value === 'string' ? value : `${JSON.stringify(value) ?? String(value)}`;
  } catch {
    return String(value);
  }
}

/** Keeps a field when it can travel, else its string form: an error must never fail to report itself. */
function cloneable(value: unknown): unknown {
  if (value === null || ['string', 'number', 'boolean', 'undefined', 'bigint'].includes(typeof value))
    return value;
  try {
    structuredClone(value);
    return value;
  } catch {
    return describe(value);
  }
}
