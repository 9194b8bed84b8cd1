/**
 * Pipe: two connected ends, like multiprocessing.Pipe. Each direction is a Queue, so a Pipe end
 * batches, travels to workers in task arguments and survives a dead peer the same way.
 */
import { ConfigError, QueueClosedError } from '../errors.js';
import type { QueueOptions } from './check.js';
import { Queue, type WaitOptions } from './queue.js';
import { CHANNEL_BRAND, type PipeHandle } from './wire.js';

export interface PipeOptions extends QueueOptions {
  /** true (default): both ends send and receive. false: `[receiver, sender]`, as in Python. */
  duplex?: boolean;
}

/** One end of a Pipe. */
export class Connection<T = unknown> implements AsyncIterable<T> {
  readonly #tx: Queue<T> | undefined;
  readonly #rx: Queue<T> | undefined;

  /** @internal Use Pipe(). */
  constructor(tx: Queue<T> | undefined, rx: Queue<T> | undefined) {
    this.#tx = tx;
    this.#rx = rx;
  }

  get readable(): boolean {
    return this.#rx !== undefined;
  }

  get writable(): boolean {
    return this.#tx !== undefined;
  }

  /** Sends to the other end. After either end closed: QueueClosedError. */
  send(value: T, options?: WaitOptions): Promise<void> {
    if (!this.#tx) return Promise.reject(new QueueClosedError('this end of the pipe only receives'));
    return this.#tx.put(value, options);
  }

  /** The next value from the other end; once it closed and all was read: QueueClosedError. */
  recv(options?: WaitOptions): Promise<T> {
    if (!this.#rx) return Promise.reject(new QueueClosedError('this end of the pipe only sends'));
    return this.#rx.get(options);
  }

  /** Closes both directions: the other end reads what is left, then its recv() rejects and iteration ends. */
  close(): void {
    this.#tx?.close();
    this.#rx?.close();
  }

  /** `using end = ...` closes it at the end of the block. */
  [Symbol.dispose](): void {
    this.close();
  }

  get closed(): boolean {
    return (this.#tx ?? this.#rx)!.closed;
  }

  /** In a worker: sends what was batched so far now. */
  flush(): Promise<void> {
    return this.#tx ? this.#tx.flush() : Promise.resolve();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (!this.#rx) throw new ConfigError('pipe', 'this end of the pipe only sends; iterate the other end');
    return this.#rx[Symbol.asyncIterator]();
  }

  /** @internal */
  toHandle(): PipeHandle {
    return { __corralChan: 'pipe', tx: this.#tx?.toHandle() ?? null, rx: this.#rx?.toHandle() ?? null };
  }

  /** @internal */
  static fromHandle(handle: PipeHandle): Connection<unknown> {
    const q = (h: PipeHandle['tx']) => (h ? Queue.fromHandle(h) : undefined);
    return new Connection(q(handle.tx), q(handle.rx));
  }

  get [Symbol.toStringTag](): string {
    return 'Connection';
  }

  /** @internal */
  get [CHANNEL_BRAND](): boolean {
    return true;
  }
}

/** A connected pair of ends: `const [a, b] = Pipe()`; `a.send(x)` → `await b.recv()`. */
export function Pipe<T = unknown>(options: PipeOptions = {}): [Connection<T>, Connection<T>] {
  if (options === null || typeof options !== 'object')
    throw new ConfigError('options', 'expected { duplex?, batch?, maxsize? }');
  const { duplex = true, ...queueOptions } = options;
  if (typeof duplex !== 'boolean') throw new ConfigError('duplex', 'expected true or false');
  const ab = new Queue<T>(queueOptions);
  if (!duplex) return [new Connection<T>(undefined, ab), new Connection<T>(ab, undefined)];
  const ba = new Queue<T>(queueOptions);
  return [new Connection<T>(ab, ba), new Connection<T>(ba, ab)];
}
