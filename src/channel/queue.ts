/**
 * Queue and JoinableQueue: multiprocessing.Queue for corral. The thread that creates a queue keeps
 * its items (broker.ts); a queue passed to a pool task or a Process arrives there as a client of
 * that broker (remote.ts), with puts and gets batched per message. The same object works in both
 * places; only `size` differs (exact here, the worker's own prefetched items there).
 */

import { EventEmitter } from 'node:events';
import { emitSafely } from '../callback.js';
import { ConfigError } from '../errors.js';
import { critical } from '../runtime/critical.js';
import { Broker, type ConsumerLost, GetMode, RESOLVED } from './broker.js';
import { itemBytes, type QueueConfig, type QueueOptions, resolveQueueOptions, waitMs } from './check.js';
import { registerBroker, retireBroker } from './hub.js';
import { channelsWritten, type Remote, remoteFor } from './remote.js';
import { CHANNEL_BRAND, type QueueHandle } from './wire.js';

export interface WaitOptions {
  /** `false`: do not wait: QueueFullError (put) or QueueEmptyError (get) at once. Default true. */
  wait?: boolean;
  /** Longest to wait: ms or '2s'. Then QueueFullError (put) or QueueEmptyError (get). Default: forever. */
  timeout?: number | string;
}

export interface QueueEvents<T> {
  /** A consumer worker exited holding items of this queue (see ConsumerLost). Emitted where the queue was created. */
  consumerLost: [event: ConsumerLost<T>];
  /** An item that passed the check at put() failed to travel after all; it was dropped. */
  error: [error: Error];
}

/** @internal */
export const CORE = Symbol('corral.queue.core');
let counter = 0;
let adopting: Remote | undefined;
let made = false;

/** Whether this thread ever made a Queue: until then, task arguments need no walk for handles. */
export function channelsEverUsed(): boolean {
  return made;
}

function newId(): string {
  return `${process.pid}.${Math.random().toString(36).slice(2, 8)}.${++counter}`;
}

export class Queue<T = unknown> implements AsyncIterable<T> {
  /** @internal */
  declare readonly [CORE]: Broker<T> | Remote;
  readonly #events = new EventEmitter<QueueEvents<T>>();
  readonly #config: QueueConfig;
  readonly #id: string;

  constructor(options?: QueueOptions) {
    const remote = adopting;
    adopting = undefined;
    made = true;
    let core: Broker<T> | Remote;
    if (remote) {
      this.#config = { maxsize: remote.handle.maxsize, batch: remote.handle.batch };
      this.#id = remote.id;
      core = remote;
    } else {
      this.#config = resolveQueueOptions(options);
      this.#id = newId();
      core = new Broker<T>(
        this.#id,
        this.#config,
        this.joinable,
        {
          consumerLost: (event) => emitSafely(this.#events, 'consumerLost', event),
          error: (error) => {
            if (this.#events.listenerCount('error') > 0) emitSafely(this.#events, 'error', error);
            else process.emitWarning(error);
          },
        },
        (broker) => retireBroker(broker as Broker<unknown>),
      );
    }
    // A symbol key: structured clone skips it, so a stray copy of a queue carries no items.
    Object.defineProperty(this, CORE, { value: core });
  }

  /** @internal Whether this is a JoinableQueue. */
  get joinable(): boolean {
    return false;
  }

  /** Most items it holds: put waits beyond it. Infinity when unbounded. */
  get maxsize(): number {
    return this.#config.maxsize;
  }

  /**
   * Items put and not yet got: exact in the thread that created the queue (counting items sent
   * ahead to workers and not yet taken there); in a worker, the items it has received ahead.
   */
  get size(): number {
    return this[CORE].size;
  }

  get closed(): boolean {
    return this[CORE].closed;
  }

  /**
   * Adds an item. Resolves at once while there is room (in a worker, the item joins a batch sent
   * within `batch.delay`); with `maxsize` reached it waits, or rejects with QueueFullError when
   * `{ wait: false }` or past `timeout`. An item that cannot be cloned rejects with
   * SerializationError and the queue goes on. After close(): QueueClosedError.
   */
  put(item: T, options?: WaitOptions): Promise<void> {
    let ms: number;
    try {
      ms = options === undefined ? -1 : waitMs(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return critical(() => this[CORE].put(item, ms));
  }

  /** Puts each item in order. Every item is checked first: one that cannot be cloned puts none. */
  async putMany(items: Iterable<T>, options?: WaitOptions): Promise<void> {
    const ms = options === undefined ? -1 : waitMs(options);
    const list = Array.isArray(items) ? items : [...items];
    for (const item of list) itemBytes(item, 'a queue');
    const core = this[CORE];
    for (const item of list) {
      const done = critical(() => core.put(item, ms));
      if (done !== RESOLVED) await done;
    }
  }

  /** The next item. Waits for one; `{ wait: false }` or a timeout: QueueEmptyError. Closed and drained: QueueClosedError. */
  get(options?: WaitOptions): Promise<T> {
    let ms: number;
    try {
      ms = options === undefined ? -1 : waitMs(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return critical(() => this[CORE].get(GetMode.One, 1, ms)) as Promise<T>;
  }

  /** Between 1 and `n` items: what is there once at least one is (waiting as get() does). */
  getMany(n: number, options?: WaitOptions): Promise<T[]> {
    let ms: number;
    try {
      if (!Number.isSafeInteger(n) || n < 1)
        throw new ConfigError('n', `expected a whole number >= 1; got ${n}`);
      ms = options === undefined ? -1 : waitMs(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return critical(() => this[CORE].get(GetMode.Many, n, ms)) as Promise<T[]>;
  }

  /** Items until the queue is closed and drained. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    const core = this[CORE];
    return {
      next: () => critical(() => core.get(GetMode.Iter, 1, -1)) as Promise<IteratorResult<T>>,
      return: (value?: unknown) => Promise.resolve({ value: value as T, done: true }),
    };
  }

  /**
   * No more puts, anywhere: waiting and later puts reject with QueueClosedError. Consumers get what
   * is left; then get() rejects with QueueClosedError and iteration ends.
   */
  close(): void {
    critical(() => this[CORE].close());
  }

  /** `using q = new Queue()` closes it at the end of the block. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * In a worker: sends the items batched so far now, and resolves once they are written to the link
   * (in a process worker, what a `process.exit()` or a kill after this can no longer lose). Elsewhere,
   * nothing to do.
   */
  flush(): Promise<void> {
    const core = this[CORE];
    if (!('flush' in core)) return RESOLVED;
    critical(() => core.flush());
    return channelsWritten();
  }

  on<E extends keyof QueueEvents<T>>(event: E, listener: (...args: QueueEvents<T>[E]) => void): this {
    this.#events.on(event, listener as never);
    return this;
  }

  once<E extends keyof QueueEvents<T>>(event: E, listener: (...args: QueueEvents<T>[E]) => void): this {
    this.#events.once(event, listener as never);
    return this;
  }

  off<E extends keyof QueueEvents<T>>(event: E, listener: (...args: QueueEvents<T>[E]) => void): this {
    this.#events.off(event, listener as never);
    return this;
  }

  /** @internal What the queue travels as to a worker; registers it with this thread's hub. */
  toHandle(): QueueHandle {
    const core = this[CORE];
    if (!(core instanceof Broker)) {
      throw new ConfigError(
        'queue',
        'a queue can be passed to workers only by the thread that created it (this one received it from its own parent)',
      );
    }
    registerBroker(core as Broker<unknown>);
    return {
      __corralChan: 'queue',
      id: this.#id,
      maxsize: this.#config.maxsize,
      batch: this.#config.batch,
      joinable: this.joinable,
      closed: core.closed,
    };
  }

  /** @internal The queue a handle stands for, in this worker: one object per queue. */
  static fromHandle(handle: QueueHandle): Queue<unknown> {
    const remote = remoteFor(handle);
    const known = instances.get(remote)?.deref();
    if (known) return known;
    adopting = remote;
    const queue = handle.joinable ? new JoinableQueue() : new Queue();
    instances.set(remote, new WeakRef(queue));
    return queue;
  }

  get [Symbol.toStringTag](): string {
    return 'Queue';
  }

  /** @internal */
  get [CHANNEL_BRAND](): boolean {
    return true;
  }
}

const instances = new WeakMap<Remote, WeakRef<Queue<unknown>>>();

/**
 * A Queue whose consumers say when each item is finished (`taskDone()`), and `join()` waits for
 * every item put to be finished, like multiprocessing.JoinableQueue.
 */
export class JoinableQueue<T = unknown> extends Queue<T> {
  override get joinable(): boolean {
    return true;
  }

  /** Marks `n` (default 1) items got here as finished. More than were got: ConfigError. */
  taskDone(n = 1): void {
    if (!Number.isSafeInteger(n) || n < 1)
      throw new ConfigError('n', `expected a whole number >= 1; got ${n}`);
    critical(() => this[CORE].taskDone(n));
  }

  /** Resolves once every item put so far has been got and marked done. */
  join(): Promise<void> {
    return critical(() => this[CORE].join());
  }
}
