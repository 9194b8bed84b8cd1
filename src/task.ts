/**
 * What a running task can know about itself, for task modules: `import { context } from 'corral/task'`.
 *
 *   export async function crawl(url: string) {
 *     const { signal } = context();            // read it before the first await
 *     const res = await fetch(url, { signal }); // a timeout or abort of this call cancels the fetch
 *     ...
 *   }
 *
 * When the call times out or its AbortSignal fires, the task's `signal` aborts; a task that returns
 * (or throws) soon after leaves its worker running, and the tasks sharing the worker are never
 * touched. Only a task that ignores it for `cancelGrace` gets its worker stopped.
 *
 * The context belongs to the call on the stack: read it synchronously when the task starts (before its
 * first `await`), and keep what you need. This module is tiny and loads nothing else, so importing it
 * costs a task module nothing; outside a task, `context()` throws.
 */
// AbortSignal and DOMException come from @types/node for a consumer whose lib has no DOM: see index.ts.
/// <reference types="node" preserve="true" />

/**
 * What progress() and emit() accept: data that can be structured-cloned to the pool's thread
 * (functions, symbols and class instances with methods cannot).
 */
export type Cloneable =
  | string
  | number
  | boolean
  | bigint
  | null
  | undefined
  | Date
  | RegExp
  | Error
  | ArrayBuffer
  | ArrayBufferView
  | readonly Cloneable[]
  | ReadonlyMap<Cloneable, Cloneable>
  | ReadonlySet<Cloneable>
  | { readonly [key: string]: Cloneable };

/** The context of the task being run. */
export interface TaskContext {
  /**
   * Aborts when the pool cancels this call: its timeout passed (`reason` is a DOMException named
   * 'TimeoutError') or the caller's AbortSignal fired ('AbortError').
   */
  readonly signal: AbortSignal;
  /** The task (export) name. */
  readonly task: string;
  /** 1 on the first run, 2 on the first retry, ... */
  readonly attempt: number;
  /** The pool's id of the worker running it. */
  readonly workerId: number;
  /**
   * A key that stays the same when the call runs again (at-least-once backends re-run a job whose
   * host was lost): the job's id, and `/<n>` after it for the n-th item of a map chunk. Use it to make
   * side effects idempotent. Undefined in a local pool.
   */
  readonly key: string | undefined;
  /**
   * Reports progress to the caller (`onProgress`). Never blocks: values are batched, and only the
   * latest one of a burst is sent. Throws a DataCloneError at once for a value that cannot travel.
   * Ignored once the call has settled.
   */
  progress(value: Cloneable): void;
  /** Sends an event to the caller (`onEvent(name, data)`); every one is delivered, in order. */
  emit(name: string, data?: Cloneable): void;
}

/** Kinds of what a running call sends besides its result (Yield: an item of pool.stream). */
export const CallEvent = { Progress: 0, Event: 1, Yield: 2 } as const;
export type CallEvent = (typeof CallEvent)[keyof typeof CallEvent];

/**
 * The worker's side of a running call, as the run loop keeps it. Shared through a global slot, not a
 * module variable: a task module may load this file by another path (CommonJS, a copy of corral in
 * its own node_modules) and must still see the worker's run loop.
 */
export interface RunningCall {
  readonly task: string;
  readonly attempt: number;
  readonly workerId: number;
  readonly key: string | undefined;
  /** A map chunk (its items' keys end in their position), not a single call. */
  readonly chunk?: boolean;
  /** Made on first use: most tasks never ask for their signal. */
  controller: AbortController | undefined;
  /** Set when the pool cancelled the call; a map chunk stops between items. */
  cancelled: 'timeout' | 'abort' | undefined;
  /** Its index on the worker's claim board, where the pool can mark it cancelled without a message. */
  claimIndex: number;
  /** The run loop's outlet for progress and events: undefined once the call settled. */
  post: ((kind: CallEvent, item: number, name: string | undefined, data: unknown) => void) | undefined;
  /** The map chunk item being run (0 for a single call). */
  item: number;
}

interface Slot {
  current: RunningCall | undefined;
}

const SLOT = Symbol.for('corral.task.current');

/** The slot the run loop writes: one per thread, whoever loaded this module. */
export function taskSlot(): Slot {
  const g = globalThis as { [SLOT]?: Slot };
  let slot = g[SLOT];
  if (!slot) {
    slot = { current: undefined };
    g[SLOT] = slot;
  }
  return slot;
}

/** The reason a cancelled call's signal carries. */
export function cancelReason(why: 'timeout' | 'abort'): DOMException {
  return why === 'timeout'
    ? new DOMException('the task timed out', 'TimeoutError')
    : new DOMException('the task was aborted', 'AbortError');
}

/** The context of the task being run. Throws outside a task, or after its first await. */
export function context(): TaskContext {
  const call = taskSlot().current;
  if (!call) {
    throw new Error(
      'corral/task: context() was called outside a running task. Call it at the start of the task, before its first await, and keep what you need (e.g. const { signal } = context()).',
    );
  }
  let controller = call.controller;
  if (!controller) {
    controller = call.controller = new AbortController();
    if (call.cancelled) controller.abort(cancelReason(call.cancelled));
  }
  const item = call.item;
  return {
    signal: controller.signal,
    task: call.task,
    attempt: call.attempt,
    workerId: call.workerId,
    key: call.key === undefined ? undefined : call.chunk ? `${call.key}/${item}` : call.key,
    progress: (value) => send(call, CallEvent.Progress, item, undefined, value),
    emit: (name, data) => {
      if (typeof name !== 'string') throw new TypeError('corral/task: emit(name, data) needs a string name');
      send(call, CallEvent.Event, item, name, data);
    },
  };
}

function send(
  call: RunningCall,
  kind: CallEvent,
  item: number,
  name: string | undefined,
  data: unknown,
): void {
  const post = call.post;
  if (!post) return; // the call has settled: nothing outlives it
  // Cloned now, so that a value that cannot travel fails here, in the task, not later in a batch.
  post(kind, item, name, data === undefined ? undefined : structuredClone(data));
}

/** Shorthand for `context().signal`. */
export function currentSignal(): AbortSignal {
  return context().signal;
}
