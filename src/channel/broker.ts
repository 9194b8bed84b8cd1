/**
 * A queue's state, kept in the thread that created it. Consumers and producers in this thread call
 * it directly; workers reach it through frames (wire.ts) that the hub routes here.
 *
 * Accounting (what `maxsize` bounds): items waiting here + items sent to workers that they have
 * not acknowledged taking + room granted to workers for puts not yet received ("credits"). A put
 * in a worker spends a credit it already holds, so it resolves at once; a worker out of credits
 * asks for more and its put waits, which is the back pressure.
 *
 * Exactly once: every item sent to a worker is kept here until the worker acknowledges taking it.
 * The worker counts the items it hands to user code in shared memory (its board), so when it dies
 * the count is exact even if its last acknowledgement never left: the items it held but never
 * handed out go back to the front of the queue for other consumers; nothing is lost, nothing is
 * seen twice. A consumer that holds items without taking them while another starves is asked to
 * give them back (recall), so a sentinel prefetched by one consumer cannot strand another.
 *
 * Closing: a worker's put resolves before its batch reaches here, so at close() puts that resolved
 * may still be on their way. Every producer worker is told the queue closed and answers `sealed`
 * behind what it put before it heard; consumers are ended only once every producer has answered or
 * exited. A worker announces itself before its first put resolves (its first `credit` ask, even for
 * an unbounded queue), so there is no producer this side does not know of: one that first asks after
 * the close is refused, and rejects the puts it made meanwhile.
 */
import { type Deadline, deadlines } from '../deadline.js';
import { ConfigError, QueueClosedError, QueueEmptyError, SerializationError } from '../errors.js';
import type { SharedMemory } from '../shm/shared-memory.js';
import { itemBytes, type QueueConfig } from './check.js';
import { Client } from './client.js';
import { Items } from './items.js';
import { armDeadline, queueFullError } from './waits.js';
import { BOARD_WORDS, type ChanDown, type ChanUp, counterDiff } from './wire.js';

export const RESOLVED: Promise<void> = Promise.resolve();

/** Where a worker's frames come from and go to: its RuntimeWorker. */
export interface Link {
  /** Set for process workers (their board is a /dev/shm segment), undefined for threads. */
  readonly pid: number | undefined;
  send(message: ChanDown): void;
}

/** A worker's link as the hub knows it, with its board of taken/done counters. */
export interface LinkState {
  link: Link;
  board: Int32Array | undefined;
  segment: SharedMemory | undefined;
  boardTried: boolean;
  brokers: Set<Broker<unknown>>;
}

export interface WorkerInfo {
  workerId: number | undefined;
  pid: number | undefined;
  threadId: number | undefined;
  exitCode: number | null;
  signal: string | null;
}

/** What became of the items a consumer worker held when it exited. */
export interface ConsumerLost<T> {
  worker: WorkerInfo;
  /** Sent to it, never handed to its code: back at the front of the queue, in order. */
  redelivered: T[];
  /**
   * JoinableQueue: handed to its code, taskDone() not called. Counted done so join() can resolve.
   * Without shared-memory counters the parent knows only what the worker acknowledged, so this also
   * holds items whose taskDone() ran but whose acknowledgement died with the worker.
   */
  unfinished: T[];
  /** Without shared-memory counters (process workers without the native addon): maybe handed out, not re-queued. */
  uncertain: T[];
}

export interface BrokerEvents<T> {
  consumerLost(event: ConsumerLost<T>): void;
  error(error: Error): void;
}

export enum GetMode {
  One = 0,
  Many = 1,
  Iter = 2,
}

interface LocalGet {
  mode: GetMode;
  max: number;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: Deadline | undefined;
}

interface LocalPut {
  item: unknown;
  resolve(): void;
  reject(error: Error): void;
  timer: Deadline | undefined;
}

interface RemoteAsk {
  client: Client;
  n: number;
  tok: number;
}

/** A consumer that was idle for this long while another starved is asked for what it holds. */
const RECALL_MS = 10;

function ended(w: LocalGet): void {
  deadlines.cancel(w.timer);
  if (w.mode === GetMode.Iter) w.resolve({ value: undefined, done: true });
  else w.reject(new QueueClosedError('the queue is closed and drained'));
}

export class Broker<T> {
  readonly items = new Items<T>();
  readonly clients = new Map<LinkState, Client>();
  private demand: (LocalGet | Client)[] = [];
  private producers: (LocalPut | RemoteAsk)[] = [];
  /** Σ (sent − ackTaken) over clients. */
  private outstanding = 0;
  private creditsOut = 0;
  /** JoinableQueue: put and not yet done. */
  unfinished = 0;
  private localTaken = 0;
  private localDone = 0;
  private joinLocal: (() => void)[] = [];
  private joinRemote: { client: Client; tok: number }[] = [];
  closed = false;
  /** Producer workers told of the close that have not answered `sealed` yet: consumers wait for them. */
  private unsealed = 0;
  private pumpScheduled = false;
  private recallTimer: NodeJS.Timeout | undefined = undefined;
  private readonly pumpFn = (): void => this.pump();

  constructor(
    readonly id: string,
    readonly config: QueueConfig,
    readonly joinable: boolean,
    private readonly events: BrokerEvents<T>,
    private readonly onIdle: (broker: Broker<T>) => void,
  ) {}

  private free(): number {
    return this.config.maxsize - this.items.length - this.outstanding - this.creditsOut;
  }

  get size(): number {
    return this.items.length + this.outstanding;
  }

  // ── this thread ───────────────────────────────────────────────────────────────────────────

  put(item: T, ms: number): Promise<void> {
    if (this.closed) return Promise.reject(new QueueClosedError('the queue is closed; put refused'));
    try {
      itemBytes(item, 'a queue');
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.producers.length === 0 && this.free() > 0) {
      this.accept(item);
      return RESOLVED;
    }
    if (ms === 0) return Promise.reject(queueFullError(this.config.maxsize));
    return new Promise<void>((resolve, reject) => {
      const w: LocalPut = { item, resolve, reject, timer: undefined };
      armDeadline(this.producers, w, ms, () => queueFullError(this.config.maxsize, ms));
      this.producers.push(w);
    });
  }

  private accept(item: T): void {
    this.items.push(item);
    if (this.joinable) this.unfinished++;
    if (this.demand.length > 0) this.schedule();
  }

  get(mode: GetMode, max: number, ms: number): Promise<unknown> {
    if (this.items.length > 0 && this.demand.length === 0) {
      const value = this.takeLocal(mode, max);
      if (this.producers.length > 0) this.schedule();
      return Promise.resolve(value);
    }
    if (this.closed && this.unsealed === 0 && this.items.length === 0 && !this.anyHolder(undefined)) {
      if (mode === GetMode.Iter) return Promise.resolve({ value: undefined, done: true });
      return Promise.reject(new QueueClosedError('the queue is closed and drained'));
    }
    if (ms === 0) return Promise.reject(new QueueEmptyError(0));
    return new Promise((resolve, reject) => {
      const w: LocalGet = { mode, max, resolve, reject, timer: undefined };
      armDeadline(this.demand, w, ms, () => new QueueEmptyError(ms));
      this.demand.push(w);
      this.schedule();
    });
  }

  private takeLocal(mode: GetMode, max: number): unknown {
    if (mode === GetMode.Many) {
      const items = this.items.take(max);
      this.localTaken += items.length;
      return items;
    }
    this.localTaken++;
    const item = this.items.shift();
    return mode === GetMode.Iter ? { value: item, done: false } : item;
  }

  taskDone(n: number): void {
    if (this.localDone + n > this.localTaken) {
      throw new ConfigError(
        'taskDone',
        `called more times than items were got from this queue in this thread (${this.localTaken} got, ${this.localDone} done)`,
      );
    }
    this.localDone += n;
    this.unfinished -= n;
    this.checkJoin();
  }

  join(): Promise<void> {
    if (this.unfinished <= 0) return RESOLVED;
    return new Promise((resolve) => this.joinLocal.push(resolve));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const error = new QueueClosedError('the queue was closed while this put waited');
    for (const p of this.producers.splice(0)) {
      if ('client' in p)
        this.send(p.client, { t: 'chan', op: 'credit', id: this.id, n: 0, tok: p.tok, closed: true });
      else {
        deadlines.cancel(p.timer);
        p.reject(error);
      }
    }
    for (const c of this.clients.values()) {
      // Under maxsize a put spends a credit that its arrival here takes back: a worker with no credit
      // left has nothing on its way, and a close need not wait for it (busy or not).
      const quiet = this.config.maxsize !== Infinity && c.credits === 0;
      if (c.producer && !c.refused && !quiet) {
        c.sealing = true;
        this.unsealed++;
      }
      this.send(c, { t: 'chan', op: 'closed', id: this.id });
    }
    this.schedule();
  }

  /** `c` answered the close, or cannot any more (it exited, or it closed the queue itself). */
  private sealed(c: Client): void {
    if (!c.sealing) return;
    c.sealing = false;
    this.unsealed--;
    this.schedule();
  }

  // ── workers ───────────────────────────────────────────────────────────────────────────────

  onFrame(st: LinkState, f: ChanUp): void {
    let c = this.clients.get(st);
    if (!c) {
      c = new Client(st);
      this.clients.set(st, c);
      st.brokers.add(this as Broker<unknown>);
      if (this.closed) this.send(c, { t: 'chan', op: 'closed', id: this.id });
    }
    switch (f.op) {
      case 'put': {
        if (c.refused) break;
        c.producer = true;
        const n = f.items.length;
        this.items.pushAll(f.items as T[]);
        if (this.config.maxsize !== Infinity) {
          const spent = Math.min(n, c.credits);
          c.credits -= spent;
          this.creditsOut -= spent;
        }
        if (this.joinable) this.unfinished += n;
        if (this.demand.length > 0) this.schedule();
        break;
      }
      case 'want':
        if (f.slot !== undefined) c.slot = f.slot;
        this.ack(c, f.taken, f.done);
        c.want += f.n;
        if (c.want > 0 && !c.inDemand) {
          c.inDemand = true;
          this.demand.push(c);
        }
        if (f.tok !== undefined) {
          // get({ wait: false }): serve what is here now, and cancel the rest of this request.
          this.pump();
          const cancel = Math.min(f.n, c.want);
          c.want -= cancel;
          if (c.want === 0 && c.inDemand) {
            c.inDemand = false;
            this.demand.splice(this.demand.indexOf(c), 1);
          }
          this.send(c, {
            t: 'chan',
            op: 'items',
            id: this.id,
            epoch: c.epoch,
            items: [],
            cancel,
            tok: f.tok,
          });
        }
        this.schedule();
        break;
      case 'credit':
        if (!c.producer) {
          c.producer = true;
          c.refused = this.closed;
        }
        if (this.closed)
          this.send(c, { t: 'chan', op: 'credit', id: this.id, n: 0, tok: f.tok, closed: true });
        else if (this.producers.length === 0 && this.free() > 0) this.grant(c, f.n, f.tok);
        else if (f.nowait) this.send(c, { t: 'chan', op: 'credit', id: this.id, n: 0, tok: f.tok });
        else this.producers.push({ client: c, n: f.n, tok: f.tok });
        break;
      case 'uncredit': {
        const n = Math.min(f.n, c.credits);
        c.credits -= n;
        this.creditsOut -= n;
        this.schedule();
        break;
      }
      case 'return':
        this.ack(c, f.taken, f.done);
        this.giveBack(c, c.ackTaken);
        c.epoch = f.epoch;
        c.recalled = false;
        this.schedule();
        break;
      case 'join':
        if (this.unfinished <= 0) this.send(c, { t: 'chan', op: 'joined', id: this.id, tok: f.tok });
        else this.joinRemote.push({ client: c, tok: f.tok });
        break;
      case 'close':
        this.close();
        this.sealed(c); // what it put came before this frame
        break;
      case 'sealed':
        this.sealed(c);
        break;
    }
  }

  private grant(c: Client, n: number, tok: number): void {
    const g = Math.max(0, Math.min(n, this.free()));
    c.credits += g;
    this.creditsOut += g;
    this.send(c, { t: 'chan', op: 'credit', id: this.id, n: g, tok });
  }

  private ack(c: Client, taken: number, done: number): void {
    if (taken > c.ackTaken) {
      this.outstanding -= taken - c.ackTaken;
      c.ackTaken = taken;
      if (this.producers.length > 0) this.schedule();
    }
    if (this.joinable && done > c.ackDone) {
      this.unfinished -= done - c.ackDone;
      c.ackDone = done;
      this.checkJoin();
    }
    c.dropBelow(this.joinable ? Math.min(c.ackDone, c.ackTaken) : c.ackTaken);
  }

  /** Puts everything sent to `c` from index `taken` on back at the front; its requests lapse. */
  private giveBack(c: Client, taken: number): T[] {
    const back = c.range(taken, c.sent) as T[];
    const at = c.rangeAt(taken, c.sent);
    this.outstanding -= c.sent - c.ackTaken;
    c.ackTaken = taken;
    c.sent = taken;
    c.truncate(taken);
    this.items.restore(back.slice(), at);
    c.want = 0;
    if (c.inDemand) {
      c.inDemand = false;
      const i = this.demand.indexOf(c);
      if (i >= 0) this.demand.splice(i, 1);
    }
    return back;
  }

  /** The worker behind `st` exited: settle what it held (see ConsumerLost). */
  detach(st: LinkState, who: WorkerInfo): void {
    const c = this.clients.get(st);
    if (!c) return;
    this.clients.delete(st);
    this.sealed(c);
    const board = st.board;
    const exact = board !== undefined && c.slot !== undefined;
    const taken = exact
      ? c.ackTaken + Math.max(0, counterDiff(board[c.slot! * BOARD_WORDS]!, c.ackTaken))
      : c.ackTaken;
    const done =
      exact && this.joinable
        ? c.ackDone + Math.max(0, counterDiff(board[c.slot! * BOARD_WORDS + 1]!, c.ackDone))
        : c.ackDone;
    const sent = c.sent;
    const unfinished = this.joinable ? (c.range(Math.min(done, taken), taken) as T[]) : [];
    let redelivered: T[] = [];
    let uncertain: T[] = [];
    if (exact) redelivered = this.giveBack(c, Math.min(taken, sent));
    else {
      uncertain = c.range(taken, sent) as T[];
      this.outstanding -= sent - c.ackTaken;
    }
    if (c.inDemand) {
      const i = this.demand.indexOf(c);
      if (i >= 0) this.demand.splice(i, 1);
    }
    this.creditsOut -= c.credits;
    c.credits = 0;
    this.producers = this.producers.filter((p) => !('client' in p) || p.client !== c);
    this.joinRemote = this.joinRemote.filter((j) => j.client !== c);
    if (redelivered.length + unfinished.length + uncertain.length > 0) {
      this.events.consumerLost({ worker: who, redelivered, unfinished, uncertain });
    }
    if (this.joinable) {
      // Not coming back: everything it was handed from its last acknowledged done on, finished
      // (the board says so, even if the acknowledgement never left) or not, and what it may have
      // been handed. Only re-delivered items still count as unfinished.
      this.unfinished -= Math.min(taken, sent) - c.ackDone + uncertain.length;
      this.checkJoin();
    }
    this.schedule();
  }

  // ── delivery ──────────────────────────────────────────────────────────────────────────────

  private schedule(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(this.pumpFn);
  }

  private pump(): void {
    this.pumpScheduled = false;
    let progress = true;
    while (progress) {
      progress = false;
      while (this.producers.length > 0 && this.free() > 0 && !this.closed) {
        const p = this.producers.shift()!;
        if ('client' in p) this.grant(p.client, p.n, p.tok);
        else {
          deadlines.cancel(p.timer);
          this.accept(p.item as T);
          p.resolve();
        }
      }
      while (this.items.length > 0 && this.demand.length > 0) {
        const d = this.demand[0]!;
        if (d instanceof Client) {
          // Unbatched queues send each item in a message of its own.
          const at: number[] = [];
          const batch = this.items.take(Math.min(d.want, this.config.batch ? this.items.length : 1), at);
          this.sendItems(d, batch, at);
          d.want -= batch.length;
          if (d.want <= 0) {
            d.want = 0;
            d.inDemand = false;
            this.demand.shift();
          }
        } else {
          this.demand.shift();
          deadlines.cancel(d.timer);
          d.resolve(this.takeLocal(d.mode, d.max));
          progress = this.producers.length > 0;
        }
      }
    }
    if (this.demand.length > 0 && this.items.length === 0) {
      if (this.closed && this.unsealed === 0) this.endDrained();
      else this.armRecall();
    }
    if (this.closed && this.items.length === 0 && this.clients.size === 0 && this.demand.length === 0) {
      this.onIdle(this);
    }
  }

  private sendItems(c: Client, items: T[], at: number[]): void {
    if (items.length === 0) return;
    try {
      c.st.link.send({ t: 'chan', op: 'items', id: this.id, epoch: c.epoch, items });
      c.keep(items, at);
      this.outstanding += items.length;
    } catch {
      // Items are checked when put, so this is a value the check let through: send the rest alone.
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        try {
          c.st.link.send({ t: 'chan', op: 'items', id: this.id, epoch: c.epoch, items: [item] });
          c.keep([item], [at[i]!]);
          this.outstanding++;
        } catch (error) {
          if (this.joinable) this.unfinished--;
          this.events.error(new SerializationError('a queue', 'item', error));
        }
      }
    }
  }

  private send(c: Client, frame: ChanDown): void {
    c.st.link.send(frame);
  }

  /** Could a worker other than `except` hold items it has not handed out? */
  private anyHolder(except: Client | undefined): boolean {
    for (const c of this.clients.values()) if (c !== except && c.sent > c.ackTaken) return true;
    return false;
  }

  /**
   * Closed and nothing here: a waiter ends once no other worker may hold items it has not handed
   * out. Those that may are asked for them (and not ended this round: an ended worker would never
   * acknowledge what it takes, and its items are better with the waiter).
   */
  private endDrained(): void {
    const holders: Client[] = [];
    for (const c of this.clients.values()) if (c.sent > c.ackTaken) holders.push(c);
    const recall = new Set<Client>();
    for (const d of this.demand) for (const h of holders) if (h !== d) recall.add(h);
    const waiting = this.demand;
    this.demand = [];
    for (const d of waiting) {
      if (d instanceof Client) {
        // Nor a waiter whose recalled items are on their way back: ended now, it would stop reading
        // before they came back, and they would be lost (a lone consumer is recalled too, when its
        // acknowledgements lag: channel-workers.test.mjs lost a producer's last items so, under load).
        if (recall.has(d) || d.recalled || holders.some((h) => h !== d)) this.demand.push(d);
        else {
          d.inDemand = false;
          this.send(d, {
            t: 'chan',
            op: 'items',
            id: this.id,
            epoch: d.epoch,
            items: [],
            cancel: d.want,
            end: true,
          });
          d.want = 0;
        }
      } else if (holders.length > 0) this.demand.push(d);
      else ended(d);
    }
    for (const h of recall) {
      if (!h.recalled) {
        h.recalled = true;
        this.send(h, { t: 'chan', op: 'recall', id: this.id });
      }
    }
  }

  /**
   * Someone starves while a worker may hold items it has not handed out: ask for them back, soon.
   * That worker may have stopped reading (a consumer that got its sentinel), or be slower: either
   * way the items are better with the one waiting. Only ever with two consumers or more.
   */
  private armRecall(): void {
    if (this.recallTimer) return;
    this.recallTimer = setTimeout(() => {
      this.recallTimer = undefined;
      if (this.demand.length === 0 || this.items.length > 0) return;
      for (const c of this.clients.values()) {
        if (!c.recalled && c.sent > c.ackTaken) {
          c.recalled = true;
          this.send(c, { t: 'chan', op: 'recall', id: this.id });
        }
      }
    }, RECALL_MS);
    this.recallTimer.unref();
  }

  private checkJoin(): void {
    if (this.unfinished > 0) return;
    for (const resolve of this.joinLocal.splice(0)) resolve();
    for (const j of this.joinRemote.splice(0))
      this.send(j.client, { t: 'chan', op: 'joined', id: this.id, tok: j.tok });
  }
}
