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
}

/**
 * The worker's side of a running call, as the run loop keeps it. Shared through a global slot, not a
 * module variable: a task module may load this file by another path (CommonJS, a copy of corral in
 * its own node_modules) and must still see the worker's run loop.
 */
export interface RunningCall {
  readonly task: string;
  readonly attempt: number;
  readonly workerId: number;
  /** Made on first use: most tasks never ask for their signal. */
  controller: AbortController | undefined;
  /** Set when the pool cancelled the call; a map chunk stops between items. */
  cancelled: 'timeout' | 'abort' | undefined;
  /** Its index on the worker's claim board, where the pool can mark it cancelled without a message. */
  claimIndex: number;
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
  return { signal: controller.signal, task: call.task, attempt: call.attempt, workerId: call.workerId };
}

/** Shorthand for `context().signal`. */
export function currentSignal(): AbortSignal {
  return context().signal;
}
