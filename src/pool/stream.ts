/**
 * pool.stream(name, args): one task whose export is a generator, consumed as an async iterator while
 * it runs. Items travel batched, and back pressure holds: the task may run at most `window` items
 * ahead of the consumer (it waits at its next `yield` until the consumer takes more), so a fast
 * producer never fills the pool's memory.
 *
 * Exactly once: every item the task yielded before its worker died is delivered, in order, and then
 * the iterator throws the typed error (WorkerCrashedError, MemoryLimitError, ...). A stream is never
 * retried: its consumer has seen items already. Breaking out of the loop (return()) or aborting the
 * call's signal cancels the task: its generator's `return()` runs (its `finally` blocks with it).
 */
import type { Backend } from '../backend/types.js';
import { AbortError } from '../errors.js';
import { CallEvent } from '../task.js';
import type { ResolvedCall } from './config.js';
import { Deque } from './deque.js';
import { deliver, type Unit, type UnitSink } from './unit.js';

export class StreamJob implements UnitSink, AsyncIterableIterator<unknown> {
  private readonly items = new Deque<unknown>();
  /** Items taken since the task was last granted credit for them. */
  private taken = 0;
  private settled = false;
  private error: Error | undefined = undefined;
  private returned: unknown = undefined;
  /** The consumer is done (return(), or the stream ended and was read to its end). */
  private finished = false;
  private waiter: (() => void) | undefined = undefined;
  private tail: Promise<unknown> = Promise.resolve();
  unit!: Unit;

  constructor(
    private readonly backend: Backend,
    private readonly window: number,
    private readonly call: ResolvedCall,
  ) {}

  event(_unit: Unit, item: number, kind: number, name: string | undefined, data: unknown): void {
    if (kind === CallEvent.Yield) {
      if (this.finished) return;
      this.items.push(data);
      this.wake();
    } else if (this.call.listeners) deliver(this.call.listeners, kind, name, data, item);
  }

  ok(_unit: Unit, value: unknown): void {
    this.settled = true;
    this.returned = value;
    this.wake();
  }

  fail(_unit: Unit, error: Error): void {
    this.settled = true;
    this.error = error;
    this.wake();
  }

  wants(): boolean {
    return false; // a stream is never run twice: its consumer has seen items already
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  next(): Promise<IteratorResult<unknown>> {
    const result = this.tail.then(() => this.nextOne());
    this.tail = result.catch(() => {});
    return result;
  }

  private async nextOne(): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (this.finished) return { value: undefined, done: true };
      if (this.items.length > 0) {
        const value = this.items.shift();
        // Credit back in batches of half a window: one message per many items.
        if (++this.taken * 2 >= this.window && !this.settled) {
          this.backend.credit?.(this.unit, this.taken);
          this.taken = 0;
        }
        return { value, done: false };
      }
      if (this.settled) {
        this.finished = true;
        if (this.error) throw this.error;
        return { value: this.returned, done: true };
      }
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /** The consumer stops: the task is cancelled (its generator's return() runs) and nothing more comes. */
  async return(value?: unknown): Promise<IteratorResult<unknown>> {
    if (!this.finished) {
      this.finished = true;
      this.items.drain();
      if (!this.settled) this.backend.abort(this.unit);
    }
    this.wake();
    return { value, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Called when the call's signal fired before the stream could start. */
  static aborted(name: string, signal: AbortSignal): AsyncIterableIterator<never> {
    const error = new AbortError(name, signal.reason);
    return {
      next: () => Promise.reject(error),
      return: async () => ({ value: undefined, done: true }),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
