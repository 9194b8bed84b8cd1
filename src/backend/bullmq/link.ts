/**
 * A producer's link to Redis: its command connection (with the BullMQ Queue on it), the reader of its
 * reply list on a connection of its own, and the watch of hosts and queue (watch.ts). One owner for
 * all three: start() opens them, teardown() closes them on every path.
 *
 * Connection loss: while the command connection is down, `connected` is false (jobs wait to be
 * added); back within reconnectFor, hooks.back() lets the producer add again every job still out;
 * past reconnectFor, hooks.fail() breaks the pool with BackendUnavailableError.
 */
import { BackendUnavailableError } from '../../errors.js';
import type { Reply } from './codec.js';
import { connect, loadBullmq, type Redis } from './load.js';
import type { ResolvedBullmq } from './options.js';
import { ReplyReader } from './replies.js';
import { QueueWatch, type WatchHooks } from './watch.js';

/** What closing a live connection may take. */
const TEARDOWN_MS = 2000;

type BullQueue = import('bullmq').Queue;

export interface LinkHooks extends WatchHooks {
  reply(reply: Reply): void;
  /** The connection came back after a loss. */
  back(): void;
  /** The link failed for good (start, or lost past reconnectFor): the pool breaks. */
  fail(error: Error): void;
  /** Whether the pool still runs (a link opened after terminate() closes at once). */
  running(): boolean;
}

export class Link {
  cmd: Redis | undefined;
  queue: BullQueue | undefined;
  watch: QueueWatch | undefined;
  connected = false;
  readonly started: Promise<void>;
  private reader: ReplyReader | undefined;
  private lostTimer: NodeJS.Timeout | undefined;
  private tornDown: Promise<void> | undefined;

  constructor(
    private readonly opts: ResolvedBullmq,
    private readonly hostsKey: string,
    private readonly replyKey: string,
    private readonly address: string,
    private readonly hooks: LinkHooks,
  ) {
    this.started = this.start();
    // A failed start breaks the pool (hooks.fail); callers see it through their units.
    this.started.catch(() => {});
  }

  private async start(): Promise<void> {
    const { connection, connectTimeout, prefix, queue } = this.opts;
    let cmd: Redis | undefined;
    try {
      const { Queue } = await loadBullmq();
      cmd = await connect(connection, connectTimeout);
      cmd.on('error', () => {}); // reported through close/ready below and the calls' errors
      await withTimeout(cmd.connect(), connectTimeout, 'no answer');
      this.cmd = cmd;
      this.queue = new Queue(queue, { connection: cmd, prefix });
      this.queue.on('error', () => {});
      this.reader = new ReplyReader(await connect(connection, connectTimeout), this.replyKey, (reply) =>
        this.hooks.reply(reply),
      );
      await this.reader.start(connectTimeout);
    } catch (error) {
      cmd?.disconnect();
      const why = error instanceof Error ? error.message : String(error);
      const failure =
        (error as { code?: string }).code === 'ERR_DEPENDENCY_MISSING'
          ? (error as Error)
          : new BackendUnavailableError('bullmq', this.address, why, { cause: error });
      this.hooks.fail(failure);
      throw failure;
    }
    if (!this.hooks.running()) {
      // Terminated (or broken) while connecting: teardown() waits for this start to end.
      void this.teardown();
      return;
    }
    this.connected = true;
    cmd.on('close', () => this.onLost());
    cmd.on('ready', () => this.onBack());
    this.watch = new QueueWatch(
      cmd,
      this.queue,
      this.hostsKey,
      this.opts.maxWaiting,
      this.opts.hostWait,
      this.hooks,
    );
    await this.watch.start();
  }

  /** The connection dropped: calls wait for it up to reconnectFor, then the pool breaks. */
  private onLost(): void {
    if (!this.connected || !this.hooks.running()) return;
    this.connected = false;
    if (this.opts.reconnectFor === Infinity) return; // wait for Redis as long as it takes
    this.lostTimer ??= setTimeout(() => {
      this.hooks.fail(
        new BackendUnavailableError(
          'bullmq',
          this.address,
          `the connection was lost and did not come back within ${this.opts.reconnectFor} ms`,
        ),
      );
    }, this.opts.reconnectFor);
  }

  private onBack(): void {
    if (this.connected || !this.hooks.running()) return;
    this.connected = true;
    clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
    this.hooks.back();
  }

  /**
   * Closes the connections. Nothing here waits on a Redis that is gone: with Redis away, a command
   * would queue until it came back (BullMQ needs maxRetriesPerRequest null), so the connections are
   * dropped instead, and a live one gets TEARDOWN_MS to say goodbye.
   */
  teardown(): Promise<void> {
    this.tornDown ??= (async () => {
      await this.started.catch(() => {});
      this.watch?.stop();
      clearTimeout(this.lostTimer);
      await this.reader?.stop();
      const cmd = this.cmd;
      if (this.connected && cmd) {
        // Cancels just published reach Redis before the connection closes.
        await within(this.queue?.close(), TEARDOWN_MS);
        await within(cmd.del(this.replyKey), TEARDOWN_MS);
        await within(cmd.quit(), TEARDOWN_MS);
      }
      this.connected = false;
      cmd?.disconnect();
      if (this.queue) void this.queue.disconnect().catch(() => {});
    })();
    return this.tornDown;
  }
}

/** Waits for `promise` at most `ms`, whatever it does. */
async function within(promise: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!promise) return;
  await withTimeout(promise, ms, 'teardown').catch(() => {});
}

function withTimeout<T>(promise: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${why} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
