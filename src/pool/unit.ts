import { callBack } from '../callback.js';
import type { Deadline } from '../deadline.js';
import type { CrashRecord } from '../errors.js';
import type { TaskSpan } from '../metrics/tracing.js';
import type { TaskUsage, UnitMode, WireError } from '../runtime/protocol.js';
import { CallEvent } from '../task.js';
import type { PoolWorker } from './worker.js';

/** Where a unit's outcome goes: a promise for apply(), the owning job for map chunks. */
export interface UnitSink {
  /** `itemErrors`: as the worker sent them, or a corral error already (a breach, a remote item). */
  ok(unit: Unit, value: unknown, itemErrors: [number, WireError | Error][] | undefined, ms: number): void;
  fail(unit: Unit, error: Error): void;
  /** Whether anyone still waits for the unit (a map that already failed does not): retries only then. */
  wants(unit: Unit): boolean;
  /**
   * A chunk whose worker died under it, about to be retried: the sink may run its items one by one
   * instead (so the next death names the poison item). True when it took the unit over.
   */
  split?(unit: Unit): boolean;
  /** Progress, an event or a stream item the running task sent (`item`: its position in the chunk). */
  event?(unit: Unit, item: number, kind: number, name: string | undefined, data: unknown): void;
}

/**
 * One message-level piece of work: an apply() call or a chunk of map items. It is the unit of
 * exactly-once: it settles once, and is re-queued only if no worker ever started it.
 */
export class Unit {
  seq = 0;
  attempts = 0;
  /** 'new' until submitted: only units really in the queue count in Dispatcher.queued. */
  state: 'new' | 'queued' | 'sent' | 'settled' = 'new';
  worker: PoolWorker | undefined = undefined;
  /** Its running deadline (timeout), armed when it starts running. */
  deadline: Deadline | undefined = undefined;
  /** Set from the worker's report when the caller asked for { withUsage: true }. */
  usage: TaskUsage | undefined = undefined;
  wantUsage = false;
  /** UNIT_* bits sent with the unit. */
  flags = 0;
  /** Bytes the caller expects the task to need: memoryBudget admission control counts it. */
  memoryHint = 0;
  /** Its place on the worker's claim board: units offered there before it (its word: slot % BOARD_SLOTS). */
  slot = 0;
  /** Higher goes first (scheduler.ts); ages while it waits. */
  priority = 0;
  /** Units of one key take turns with other keys' (fair queuing): a map job's own, or the caller's. */
  key: unknown = undefined;
  /** When it was first queued (performance.now()), for aging. */
  queuedAt = 0;
  /** Workers that died while running it (poison quarantine); shared by the items of a split chunk. */
  crashes: CrashRecord[] | undefined = undefined;
  /** The position of its first item in its map's input (progress and events name items by it). */
  base = 0;
  /** broadcast(): the one worker this unit must run on (never stolen, never re-queued elsewhere). */
  pin: PoolWorker | undefined = undefined;
  /** Its OpenTelemetry span (metrics/tracing.ts): undefined until queued, null when nothing traces it. */
  trace: TaskSpan | null | undefined = undefined;
  /** The context its span's parent is taken from, when it is not the one active at submit (map chunks). */
  traceContext: unknown = undefined;
  /** What the task's context().key says (a remote job's id); undefined for local calls. */
  ctxKey: string | undefined = undefined;
  constructor(
    readonly name: string,
    readonly mode: UnitMode,
    public payload: unknown,
    readonly size: number,
    readonly sink: UnitSink,
    /** Deadline in ms from the unit's start; Infinity = none. */
    readonly timeout: number,
    readonly retries: number,
    readonly signal: AbortSignal | undefined,
  ) {}
}

/** What a call's caller hears from its running task (see corral/task). */
export interface CallListeners {
  onProgress?: ((value: unknown, index: number) => void) | undefined;
  onEvent?: ((name: string, data: unknown, index: number) => void) | undefined;
}

/** Hands a task's progress or event to the caller's callbacks. */
export function deliver(
  listeners: CallListeners,
  kind: number,
  name: string | undefined,
  data: unknown,
  index: number,
): void {
  if (kind === CallEvent.Progress && listeners.onProgress) {
    const fn = listeners.onProgress;
    callBack('onProgress callback', () => fn(data, index));
  } else if (kind === CallEvent.Event && listeners.onEvent) {
    const fn = listeners.onEvent;
    callBack('onEvent callback', () => fn(name!, data, index));
  }
}

/** apply()'s sink: the unit resolves or rejects one promise. */
export class PromiseSink implements UnitSink {
  constructor(
    private readonly resolve: (value: unknown) => void,
    private readonly reject: (error: Error) => void,
    private readonly listeners?: CallListeners,
  ) {}
  event(_unit: Unit, _item: number, kind: number, name: string | undefined, data: unknown): void {
    if (this.listeners) deliver(this.listeners, kind, name, data, 0);
  }
  ok(unit: Unit, value: unknown): void {
    this.resolve(unit.wantUsage ? { result: value, usage: unit.usage } : value);
  }
  fail(_unit: Unit, error: Error): void {
    this.reject(error);
  }
  wants(): boolean {
    return true;
  }
}
