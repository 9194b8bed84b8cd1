/**
 * A queue as a worker sees it: a client of the broker in the thread that created the queue,
 * reached over the worker's link to its pool or Process (see wire.ts).
 *
 * Producing: puts are checked, then gathered into a batch sent when it holds `batch.size` items,
 * about `batch.bytes`, or `batch.delay` after its first item. Under `maxsize` a put spends a
 * credit (room the broker granted ahead); out of credits it waits for more. Without `maxsize` the
 * first put still waits for one answer (a `credit` ask for no room): the broker then knows this
 * worker as a producer, and a close waits for what it put (broker.ts). When told of a close, it
 * sends what it batched and answers `sealed`.
 *
 * Consuming: the worker asks for up to `batch.size` items ahead and hands them out one get at a
 * time, counting each on its board before the caller sees it; it asks again at half. A recall
 * from the broker gives back whatever is not handed out yet.
 */

import { isMainThread } from 'node:worker_threads';
import { type Deadline, deadlines } from '../deadline.js';
import { ConfigError, QueueClosedError, QueueEmptyError, SerializationError } from '../errors.js';
import { internalSegment, SharedMemory } from '../shm/shared-memory.js';
import { GetMode, RESOLVED } from './broker.js';
import { itemBytes } from './check.js';
import { Items } from './items.js';
import { armDeadline, queueFullError } from './waits.js';
import { BOARD_SLOTS, BOARD_WORDS, type ChanDown, type ChanUp, type QueueHandle } from './wire.js';

type Post = (frame: ChanUp) => void;
type Send = (
  frame: ChanUp,
  handle: undefined,
  options: undefined,
  done: (error: Error | null) => void,
) => boolean;

let post: Post | undefined;
/**
 * In a process worker: process.send itself. The post above is that too, but it drops what
 * process.send offers for flow control (its callback), and the parent reads the link no faster than
 * its event loop turns: a producer that puts faster grew the send queue here without bound. Frames
 * go out through this instead, counting the bytes not yet written, and puts wait while there are
 * more than LINK_HIGH of them. Both paths are process.send on one channel, so frames keep their
 * order relative to the results the runner posts.
 */
let send: Send | undefined;
/** Bytes (estimated) handed to process.send and not yet written to the link. */
let unsent = 0;
/** Totals of the same, for written(): the link writes in order, so a total reached means all before it. */
let queuedTotal = 0;
let writtenTotal = 0;
const writeWaiters: { at: number; resolve(): void }[] = [];
const roomWaiters: (() => void)[] = [];
const LINK_HIGH = 1 << 20;
const LINK_LOW = LINK_HIGH >> 1;
/** What a frame without items is counted as. */
const FRAME_BYTES = 64;
const remotes = new Map<string, Remote>();
/** Remotes with a batch or acknowledgement not yet sent. */
const dirty = new Set<Remote>();
let board: Int32Array | undefined;
let boardSegment: SharedMemory | undefined;
let nextSlot = 0;

/** The worker entry tells us how to reach the pool or Process that started this worker. */
export function bindChannels(fn: Post): void {
  post = fn;
  if (isMainThread && typeof process.send === 'function') send = process.send.bind(process) as Send;
}

function up(frame: ChanUp, bytes = 0): void {
  if (!post) throw new Error('corral: a queue handle was used outside a corral worker');
  if (!send) {
    post(frame);
    return;
  }
  const n = bytes + FRAME_BYTES;
  unsent += n;
  queuedTotal += n;
  try {
    // A closed link reports to the callback too: the count comes back either way.
    send(frame, undefined, undefined, () => written(n));
  } catch (error) {
    unsent -= n; // nothing was queued: neither count may wait for it
    queuedTotal -= n;
    throw error;
  }
}

function written(n: number): void {
  unsent -= n;
  writtenTotal += n;
  while (writeWaiters.length > 0 && writeWaiters[0]!.at <= writtenTotal) writeWaiters.shift()!.resolve();
  if (unsent <= LINK_LOW && roomWaiters.length > 0) for (const wake of roomWaiters.splice(0)) wake();
}

/**
 * Resolves once every frame sent so far has been written to the link (a process worker's; a thread's
 * postMessage has nothing in between): what it sent survives the process exiting or being killed.
 */
export function channelsWritten(): Promise<void> {
  if (unsent === 0) return RESOLVED;
  const at = queuedTotal;
  return new Promise((resolve) => writeWaiters.push({ at, resolve }));
}

/** A put's answer once its item is taken: at once, or when the link has room again. */
function paced(): Promise<void> {
  if (unsent <= LINK_HIGH) return RESOLVED;
  return new Promise((resolve) => roomWaiters.push(resolve));
}

function settle(resolve: () => void): void {
  if (unsent <= LINK_HIGH) resolve();
  else roomWaiters.push(resolve);
}

/** A frame from the broker side. */
export function channelDown(frame: ChanDown): void {
  if (frame.op === 'board') {
    if (frame.sab) board = new Int32Array(frame.sab);
    else if (frame.segment) {
      const name = frame.segment;
      try {
        boardSegment = internalSegment(() => SharedMemory.attach(name));
        board = new Int32Array(boardSegment.buffer);
      } catch {
        // (A process at its openFiles limit.) Its counts will not be there: the broker must not read
        // the board's zeros as "handed out nothing" when this worker dies, or what it handed out is
        // delivered again. Told before any item arrives: the board comes ahead of them.
        board = undefined;
        up({ t: 'chan', op: 'unmapped', id: '' });
      }
    }
    return;
  }
  remotes.get(frame.id)?.onFrame(frame);
}

/** Sends every pending batch and acknowledgement: before a task's result, so its puts arrive first. */
/** Whether puts or other frames wait for flushChannels(). */
export function channelsPending(): boolean {
  return dirty.size > 0;
}

export function flushChannels(): void {
  if (dirty.size === 0) return;
  for (const r of dirty) r.flush();
}

/** This worker's client for a queue, made on first use: the same object for the same queue. */
export function remoteFor(handle: QueueHandle): Remote {
  let r = remotes.get(handle.id);
  if (!r) {
    r = new Remote(handle);
    remotes.set(handle.id, r);
  }
  if (handle.closed) r.closed = true;
  return r;
}

interface GetWait {
  mode: GetMode;
  max: number;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: Deadline | undefined;
  tok: number | undefined;
}

interface PutWait {
  item: unknown;
  bytes: number;
  resolve(): void;
  reject(error: Error): void;
  timer: Deadline | undefined;
}

function endOf(w: GetWait): void {
  deadlines.cancel(w.timer);
  if (w.mode === GetMode.Iter) w.resolve({ value: undefined, done: true });
  else w.reject(new QueueClosedError('the queue is closed and drained'));
}

export class Remote {
  readonly id: string;
  closed = false;
  private tok = 0;
  // ── producing ──
  private batch: unknown[] = [];
  private bytes = 0;
  private flushTimer: NodeJS.Timeout | undefined = undefined;
  private readonly flushFn = (): void => this.flush();
  private credits = 0;
  private askTok = 0;
  /** Unbounded queues: the broker has answered this worker's first ask (see put). */
  private attached = false;
  private attachTok = 0;
  private attachWaiters: { resolve(): void; reject(error: Error): void }[] = [];
  private putWaiters: PutWait[] = [];
  private readonly nowaitPuts = new Map<number, PutWait>();
  private puts = 0;
  private idleTimer: NodeJS.Timeout | undefined = undefined;
  private readonly creditChunk: number;
  // ── consuming ──
  private readonly buf = new Items<unknown>();
  private taken = 0;
  private done = 0;
  private ackedTaken = 0;
  private ackedDone = 0;
  private ackPending = false;
  private epoch = 0;
  private requested = 0;
  private ended = false;
  private getWaiters: GetWait[] = [];
  private slot: number | undefined = undefined;
  private slotSent = false;
  private readonly prefetch: number;
  private readonly low: number;
  private readonly ackStep: number;
  private readonly joins = new Map<number, () => void>();

  constructor(readonly handle: QueueHandle) {
    this.id = handle.id;
    const b = handle.batch;
    const max = handle.maxsize;
    // Up to 4 batches asked for ahead, another asked for as each is used up: the stream never waits
    // a round trip. (A consumer holding items it does not take is recalled when another starves.)
    // Unbatched (batch: false) keeps a window of 64 too, each item its own message: what it measures
    // is the cost of a message per item, not a round trip per get.
    this.prefetch = Math.max(1, Math.min(b ? 4 * b.size : 64, Math.ceil(max / 2)));
    this.low = b && this.prefetch > b.size ? this.prefetch - b.size : this.prefetch >> 1;
    // Under maxsize the broker learns of freed room only from acknowledgements: send them often enough.
    this.ackStep = max === Infinity ? Infinity : Math.max(1, Math.min(this.low || 1, Math.ceil(max / 4)));
    // Room asked for ahead: several batches, so a bounded queue streams without waiting on each grant.
    this.creditChunk = Math.max(1, Math.min(b ? 8 * b.size : 256, Math.ceil(max / 4)));
  }

  get size(): number {
    return this.buf.length;
  }

  // ── producing ─────────────────────────────────────────────────────────────────────────────

  put(item: unknown, ms: number): Promise<void> {
    if (this.closed) return Promise.reject(new QueueClosedError('the queue is closed; put refused'));
    let bytes: number;
    try {
      bytes = itemBytes(item, 'a queue');
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.handle.maxsize === Infinity) {
      if (this.attached) {
        this.add(item, bytes);
        return paced();
      }
      const answer = this.attach(); // the ask goes ahead of the item
      this.add(item, bytes);
      return answer;
    }
    if (this.credits > 0 && this.putWaiters.length === 0) {
      this.credits--;
      this.add(item, bytes);
      if (this.credits <= this.creditChunk >> 1) this.askCredits();
      return paced();
    }
    if (ms === 0) {
      if (this.putWaiters.length > 0) return Promise.reject(queueFullError(this.handle.maxsize));
      return new Promise((resolve, reject) => {
        const tok = ++this.tok;
        this.nowaitPuts.set(tok, { item, bytes, resolve, reject, timer: undefined });
        up({ t: 'chan', op: 'credit', id: this.id, n: this.creditChunk, tok, nowait: true });
      });
    }
    return new Promise((resolve, reject) => {
      const w: PutWait = { item, bytes, resolve, reject, timer: undefined };
      armDeadline(this.putWaiters, w, ms, () => queueFullError(this.handle.maxsize, ms));
      this.putWaiters.push(w);
      this.askCredits();
    });
  }

  /** An unbounded queue's first puts: they resolve once the broker answers (and reject if it was closed). */
  private attach(): Promise<void> {
    if (this.attachTok === 0) {
      this.attachTok = ++this.tok;
      up({ t: 'chan', op: 'credit', id: this.id, n: 0, tok: this.attachTok, nowait: false });
    }
    return new Promise((resolve, reject) => this.attachWaiters.push({ resolve, reject }));
  }

  /** The broker refused this worker's first ask (the queue was closed): it drops what was sent since. */
  private refused(): void {
    this.attachTok = 0;
    this.batch = [];
    this.bytes = 0;
    const error = new QueueClosedError('the queue was closed before this put reached it');
    for (const w of this.attachWaiters.splice(0)) w.reject(error);
  }

  private askCredits(): void {
    if (this.askTok !== 0 || this.closed) return;
    this.askTok = ++this.tok;
    const n = Math.max(1, this.creditChunk - this.credits);
    up({ t: 'chan', op: 'credit', id: this.id, n, tok: this.askTok, nowait: false });
  }

  private add(item: unknown, bytes: number): void {
    this.batch.push(item);
    this.bytes += bytes;
    this.puts++;
    const b = this.handle.batch;
    if (!b || this.batch.length >= b.size || this.bytes >= b.bytes) this.flush();
    else if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(this.flushFn, b.delay);
      dirty.add(this);
    }
  }

  flush(): void {
    dirty.delete(this);
    if (this.flushTimer !== undefined) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.batch.length > 0) {
      const items = this.batch;
      const bytes = this.bytes;
      this.batch = [];
      this.bytes = 0;
      try {
        up({ t: 'chan', op: 'put', id: this.id, items }, bytes);
      } catch {
        // Items are checked when put; one that slipped through must not take its batch-mates down.
        for (const item of items) {
          try {
            up({ t: 'chan', op: 'put', id: this.id, items: [item] });
          } catch (error) {
            process.emitWarning(new SerializationError('a queue', 'item', error));
          }
        }
      }
      if (this.credits > 0) this.armIdle();
    }
    if (this.ackPending) this.want(0);
  }

  /** Room granted and not used for a while goes back, so an idle producer does not hold it. */
  private armIdle(): void {
    if (this.idleTimer !== undefined) return;
    const mark = this.puts;
    const delay = this.handle.batch ? this.handle.batch.delay : 0;
    this.idleTimer = setTimeout(
      () => {
        this.idleTimer = undefined;
        if (this.credits === 0) return;
        if (this.puts !== mark || this.batch.length > 0 || this.putWaiters.length > 0) {
          this.armIdle();
          return;
        }
        up({ t: 'chan', op: 'uncredit', id: this.id, n: this.credits });
        this.credits = 0;
      },
      Math.max(10, 4 * delay),
    );
    this.idleTimer.unref();
  }

  close(): void {
    this.flush();
    if (!this.closed) up({ t: 'chan', op: 'close', id: this.id });
    this.onClosed();
  }

  private onClosed(): void {
    this.closed = true;
    const error = new QueueClosedError('the queue was closed while this put waited');
    for (const w of this.putWaiters.splice(0)) {
      deadlines.cancel(w.timer);
      w.reject(error);
    }
    for (const w of this.nowaitPuts.values()) w.reject(error);
    this.nowaitPuts.clear();
  }

  // ── consuming ─────────────────────────────────────────────────────────────────────────────

  get(mode: GetMode, max: number, ms: number): Promise<unknown> {
    if (this.buf.length > 0) {
      const value = this.take(mode, max);
      this.refill();
      return Promise.resolve(value);
    }
    if (this.ended) {
      if (mode === GetMode.Iter) return Promise.resolve({ value: undefined, done: true });
      return Promise.reject(new QueueClosedError('the queue is closed and drained'));
    }
    return new Promise((resolve, reject) => {
      const w: GetWait = { mode, max, resolve, reject, timer: undefined, tok: undefined };
      this.getWaiters.push(w);
      if (ms === 0) {
        w.tok = ++this.tok;
        this.want(1, w.tok);
        return;
      }
      armDeadline(this.getWaiters, w, ms, () => new QueueEmptyError(ms));
      if (this.requested === 0) this.want(this.prefetch);
      else if (this.taken > this.ackedTaken || this.done > this.ackedDone) this.want(0);
    });
  }

  private take(mode: GetMode, max: number): unknown {
    if (mode === GetMode.Many) {
      const items = this.buf.take(max);
      this.taken += items.length;
      this.count();
      return items;
    }
    const item = this.buf.shift();
    this.taken++;
    this.count();
    return mode === GetMode.Iter ? { value: item, done: false } : item;
  }

  /** Taken and done, on the board, before the caller sees the item. */
  private count(): void {
    if (board !== undefined && this.slot !== undefined) {
      Atomics.store(board, this.slot * BOARD_WORDS, this.taken | 0);
      Atomics.store(board, this.slot * BOARD_WORDS + 1, this.done | 0);
    }
  }

  private refill(): void {
    if (this.ended) return;
    if (this.buf.length + this.requested <= this.low)
      this.want(this.prefetch - this.buf.length - this.requested);
    else if (this.taken - this.ackedTaken >= this.ackStep) this.want(0);
  }

  private want(n: number, tok?: number): void {
    const frame: Extract<ChanUp, { op: 'want' }> = {
      t: 'chan',
      op: 'want',
      id: this.id,
      n,
      taken: this.taken,
      done: this.done,
    };
    if (!this.slotSent) {
      this.slotSent = true;
      if (nextSlot < BOARD_SLOTS) this.slot = nextSlot++;
      if (this.slot !== undefined) frame.slot = this.slot;
    }
    if (tok !== undefined) frame.tok = tok;
    this.requested += n;
    this.ackedTaken = this.taken;
    this.ackedDone = this.done;
    this.ackPending = false;
    up(frame);
  }

  onFrame(f: ChanDown): void {
    switch (f.op) {
      case 'items':
        this.onItems(f);
        break;
      case 'credit':
        this.onCredit(f);
        break;
      case 'recall':
        this.giveBack();
        break;
      case 'closed':
        // Puts that resolved before this news go now, and `sealed` behind them. A worker whose first
        // ask is still unanswered was refused: the close reached the broker before that ask did.
        if (this.attachTok !== 0) this.refused();
        this.flush();
        this.onClosed();
        up({ t: 'chan', op: 'sealed', id: this.id });
        break;
      case 'joined': {
        const resolve = this.joins.get(f.tok);
        this.joins.delete(f.tok);
        resolve?.();
        break;
      }
    }
  }

  private onItems(f: Extract<ChanDown, { op: 'items' }>): void {
    if (f.end) this.ended = true;
    if (f.epoch === this.epoch) {
      this.requested = Math.max(0, this.requested - f.items.length - (f.cancel ?? 0));
      if (f.items.length > 0) this.buf.pushAll(f.items);
    } else if (f.epoch === -1) this.requested = 0;
    // Items of an older epoch were given back: the broker has them again.
    let served = false;
    while (this.getWaiters.length > 0 && this.buf.length > 0) {
      const w = this.getWaiters.shift()!;
      deadlines.cancel(w.timer);
      w.resolve(this.take(w.mode, w.max));
      served = true;
    }
    if (f.tok !== undefined) {
      const i = this.getWaiters.findIndex((w) => w.tok === f.tok);
      if (i >= 0) {
        const [w] = this.getWaiters.splice(i, 1);
        if (this.ended) endOf(w!);
        else w!.reject(new QueueEmptyError(0));
      }
    }
    if (this.ended && this.buf.length === 0) for (const w of this.getWaiters.splice(0)) endOf(w);
    if (served) this.refill();
    else if (this.getWaiters.length > 0 && this.requested === 0 && !this.ended) this.want(this.prefetch);
  }

  private onCredit(f: Extract<ChanDown, { op: 'credit' }>): void {
    if (f.tok === this.attachTok) {
      if (f.closed) this.refused();
      else {
        this.attachTok = 0;
        this.attached = true;
        for (const w of this.attachWaiters.splice(0)) settle(w.resolve);
      }
      return;
    }
    if (f.tok === this.askTok) this.askTok = 0;
    if (f.closed) {
      this.onClosed();
      return;
    }
    this.credits += f.n;
    const nowait = this.nowaitPuts.get(f.tok);
    if (nowait) {
      this.nowaitPuts.delete(f.tok);
      if (this.credits > 0) {
        this.credits--;
        this.add(nowait.item, nowait.bytes);
        settle(nowait.resolve);
      } else nowait.reject(queueFullError(this.handle.maxsize));
    }
    while (this.putWaiters.length > 0 && this.credits > 0) {
      const w = this.putWaiters.shift()!;
      deadlines.cancel(w.timer);
      this.credits--;
      this.add(w.item, w.bytes);
      settle(w.resolve);
    }
    if (this.putWaiters.length > 0 || this.credits <= this.creditChunk >> 1) this.askCredits();
    if (this.credits > 0) this.armIdle();
  }

  /** Recall: everything received and not handed out goes back to the broker. */
  private giveBack(): void {
    this.epoch++;
    up({ t: 'chan', op: 'return', id: this.id, taken: this.taken, done: this.done, epoch: this.epoch });
    this.buf.clear();
    this.requested = 0;
    this.ackedTaken = this.taken;
    this.ackedDone = this.done;
    this.ackPending = false;
    if (this.getWaiters.length > 0 && !this.ended) this.want(this.prefetch);
  }

  taskDone(n: number): void {
    if (this.done + n > this.taken) {
      throw new ConfigError(
        'taskDone',
        `called more times than items were got from this queue in this worker (${this.taken} got, ${this.done} done)`,
      );
    }
    this.done += n;
    this.count();
    if (this.ackPending) return;
    this.ackPending = true;
    const b = this.handle.batch;
    if (b && b.delay > 0) {
      dirty.add(this);
      if (this.flushTimer === undefined) this.flushTimer = setTimeout(this.flushFn, b.delay);
    } else queueMicrotask(this.flushFn);
  }

  join(): Promise<void> {
    this.flush();
    return new Promise((resolve) => {
      const tok = ++this.tok;
      this.joins.set(tok, resolve);
      up({ t: 'chan', op: 'join', id: this.id, tok });
    });
  }
}
