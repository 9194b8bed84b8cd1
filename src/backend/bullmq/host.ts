/**
 * A worker host (`corral worker`): one local Dispatcher (the limit-enforcing pool of this machine:
 * recycling, crash classification, timeouts) and one BullMQ Worker whose processor only forwards
 * each job to it as one unit and pushes the outcome onto the job's reply list. The CPU work runs in
 * the local pool's workers, so this process's event loop stays free to renew job locks.
 *
 * A job runs at least once: a host that dies (or is cut off) stops renewing its locks, and another
 * host's stalled-job check re-queues the job within lockDuration + stalledInterval. A job found
 * stalled more than stallBudget times is answered with WorkerLostError instead of being run again.
 * Jobs built for another module version are refused with ModuleVersionError.
 */
import { hostname } from 'node:os';
import { ModuleVersionError, WorkerLostError } from '../../errors.js';
import { type PoolConfig, type PoolOptions, resolvePoolOptions } from '../../pool/config.js';
import { Dispatcher, type DispatcherEvents } from '../../pool/dispatcher.js';
import { Unit, type UnitSink } from '../../pool/unit.js';
import { toWireError, UNIT_USAGE } from '../../runtime/protocol.js';
import {
  decodePayload,
  encodeReply,
  errorReply,
  type JobData,
  keys,
  moduleVersionOf,
  type Reply,
} from './codec.js';
import { connect, loadBullmq, type Redis } from './load.js';
import { type BullmqOptions, describeConnection, type ResolvedBullmq, resolveBullmq } from './options.js';
import type { HostBeat } from './view.js';

/** How long a cancel of a job not (yet) running here is remembered. */
const CANCEL_MEMORY_MS = 60_000;
/** Jobs a host takes beyond its slots, so its workers do not wait a round trip between jobs. */
const PREFETCH_FACTOR = 2;
const HEARTBEAT_MS = 1000;
/** Replies left unread (their producer gone) expire after a day. */
const REPLY_TTL_S = 86_400;

export interface WorkerHostOptions {
  bullmq: BullmqOptions;
  /** The local pool's options (module, workers, limits, ...). */
  pool: PoolOptions;
  /** This host's name in errors and heartbeats. Default: hostname:pid. */
  name?: string;
  /** The local pool's events (worker starts and exits, breaches), for a log. */
  events?: Partial<DispatcherEvents>;
}

type BullWorker = import('bullmq').Worker;
type BullJob = import('bullmq').Job;

export class WorkerHost {
  readonly name: string;
  readonly version: string;
  readonly slots: number;
  private readonly opts: ResolvedBullmq;
  private readonly config: PoolConfig;
  /** The local pool: started once Redis answers, so a host that cannot reach it starts no workers. */
  private local!: Dispatcher;
  private readonly events: Partial<DispatcherEvents>;
  private readonly keys: ReturnType<typeof keys>;
  private cmd: Redis | undefined;
  private sub: Redis | undefined;
  private worker: BullWorker | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Jobs running here, by id: what a cancel message aborts. */
  private readonly running = new Map<string, AbortController>();
  /**
   * Cancels of jobs not running here when they came, with when: a producer's cancel can overtake its
   * job (the job moves to this host while the producer's remove fails on it), so the job is skipped
   * when it arrives. Forgotten after CANCEL_MEMORY_MS.
   */
  private readonly cancels = new Map<string, number>();
  /** Cancel (second signal): outcomes are not replied, the jobs go back to the queue as stalled. */
  private cancelled = false;
  private stopping: Promise<void> | undefined;
  /** Jobs this host answered. */
  done = 0;

  private constructor(options: WorkerHostOptions) {
    this.opts = resolveBullmq(options.bullmq);
    this.config = resolvePoolOptions(options.pool);
    this.version = moduleVersionOf(this.config.module, this.opts.moduleVersion);
    this.name = options.name ?? `${hostname()}:${process.pid}`;
    this.keys = keys(this.opts.prefix, this.opts.queue);
    this.slots = this.config.workers * this.config.concurrency;
    this.events = options.events ?? {};
  }

  /** Connects to Redis and starts taking jobs. Throws BackendUnavailableError when Redis is not there. */
  static async start(options: WorkerHostOptions): Promise<WorkerHost> {
    const host = new WorkerHost(options);
    try {
      await host.connect();
    } catch (error) {
      await host.local?.terminate();
      throw error;
    }
    return host;
  }

  private async connect(): Promise<void> {
    const { connection, connectTimeout, prefix, queue, lockDuration, stalledInterval } = this.opts;
    const { BackendUnavailableError } = await import('../../errors.js');
    const { Worker } = await loadBullmq();
    try {
      this.cmd = await connect(connection, connectTimeout);
      this.cmd.on('error', () => {});
      await timed(this.cmd.connect(), connectTimeout);
      this.sub = await connect(connection, connectTimeout);
      this.sub.on('error', () => {});
      await timed(this.sub.connect(), connectTimeout);
    } catch (error) {
      this.cmd?.disconnect();
      this.sub?.disconnect();
      throw new BackendUnavailableError('bullmq', describeConnection(connection), (error as Error).message, {
        cause: error,
      });
    }
    const noop = (): void => {};
    const events = this.events;
    this.local = new Dispatcher(this.config, {
      workerStart: events.workerStart ?? noop,
      workerExit: events.workerExit ?? noop,
      workerError: events.workerError ?? noop,
      leak: events.leak ?? noop,
      breach: events.breach ?? noop,
    });
    await this.sub.subscribe(this.keys.cancel);
    this.sub.on('message', (_channel: string, id: string) => this.onCancel(id));
    this.worker = new Worker(queue, (job) => this.process(job), {
      connection: this.cmd,
      prefix,
      concurrency: this.slots * PREFETCH_FACTOR,
      lockDuration,
      stalledInterval,
      // The stall budget is ours (process()): BullMQ would fail the job with no word to its producer.
      maxStalledCount: 1_000_000,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
    });
    this.worker.on('error', () => {});
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat(), HEARTBEAT_MS);
  }

  private async beat(): Promise<void> {
    const beat: HostBeat = {
      host: this.name,
      pid: process.pid,
      slots: this.slots,
      running: this.running.size,
      at: Date.now(),
      version: this.version,
    };
    await this.cmd?.hset(this.keys.hosts, this.name, JSON.stringify(beat)).catch(() => {});
  }

  private onCancel(id: string): void {
    const running = this.running.get(id);
    if (running) {
      running.abort();
      return;
    }
    const now = Date.now();
    if (this.cancels.size >= 1000) {
      for (const [old, at] of this.cancels) if (now - at > CANCEL_MEMORY_MS) this.cancels.delete(old);
    }
    this.cancels.set(id, now);
  }

  /** One job: checked, run as one unit of the local pool, its outcome pushed onto its reply list. */
  private async process(job: BullJob): Promise<void> {
    const d = job.data as JobData;
    const id = job.id!;
    let reply: Reply;
    if (this.cancels.delete(id)) return; // its producer no longer waits for it
    if (d.v !== '' && this.version !== '' && d.v !== this.version) {
      reply = errorReply(id, this.name, new ModuleVersionError(d.n, d.v, this.version, this.name));
    } else if (job.stalledCounter > (d.b ?? this.opts.stallBudget ?? 1)) {
      reply = errorReply(id, this.name, new WorkerLostError(d.n, id, job.stalledCounter));
    } else {
      const outcome = await this.run(job, d, id);
      // Cancelled: no reply, and the job is left active so that its lock lapses and it runs elsewhere.
      if (outcome === undefined) return new Promise(() => {});
      reply = outcome;
    }
    const bytes = encodeReply(reply, d.n, this.opts.maxPayload);
    await this.cmd!.multi().rpush(d.r, bytes).expire(d.r, REPLY_TTL_S).exec();
    this.done++;
  }

  private run(job: BullJob, d: JobData, id: string): Promise<Reply | undefined> {
    return new Promise((resolve) => {
      const controller = new AbortController();
      const settle = (reply: Reply | undefined): void => {
        this.running.delete(id);
        resolve(this.cancelled ? undefined : reply);
      };
      const sink: UnitSink = {
        ok: (u, value, itemErrors, ms) =>
          settle({
            id,
            ok: true,
            value,
            // A breached item's typed error travels as any item's does: as a WireError.
            itemErrors: itemErrors?.map(([i, e]) => [i, e instanceof Error ? toWireError(e) : e]),
            ms,
            usage: u.usage,
            host: this.name,
          }),
        fail: (_u, error) => settle(errorReply(id, this.name, error)),
        wants: () => true,
      };
      let payload: unknown;
      try {
        payload = decodePayload(d.p);
      } catch (error) {
        settle(errorReply(id, this.name, error));
        return;
      }
      // Re-deliveries (a lost host) count as attempts, not against the call's retries.
      const reruns = Math.max(0, (job.attemptsStarted ?? 1) - 1);
      // The caller's timeout, capped by this host's own (--timeout: per item, as in a local pool).
      const timeout = Math.min(d.t < 0 ? Infinity : d.t, this.config.taskTimeout * d.s);
      const unit = new Unit(d.n, d.m, payload, d.s, sink, timeout, d.y + reruns, controller.signal);
      unit.flags = d.f & UNIT_USAGE;
      unit.wantUsage = unit.flags !== 0;
      unit.attempts = d.a + reruns;
      unit.ctxKey = id;
      this.running.set(id, controller);
      const refusal = this.local.refusal();
      if (refusal) sink.fail(unit, refusal);
      else this.local.submit(unit);
    });
  }

  /** SIGTERM: take no more jobs, finish the ones running (their replies go out), then stop. */
  drain(): Promise<void> {
    this.stopping ??= this.stop();
    return this.stopping;
  }

  /**
   * A second signal: stop now. Running jobs are abandoned without a reply: the local pool is terminated,
   * the connections are dropped (a drain in progress is not waited for), their locks lapse and other
   * hosts run them again (this counts against their stall budget).
   */
  async cancel(): Promise<void> {
    this.cancelled = true;
    clearInterval(this.heartbeat);
    await timed(this.cmd?.hdel(this.keys.hosts, this.name) ?? Promise.resolve(0), 500).catch(() => {});
    await this.local.terminate();
    void this.worker?.close(true).catch(() => {});
    this.sub?.disconnect();
    this.cmd?.disconnect();
  }

  private async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.cmd?.hdel(this.keys.hosts, this.name).catch(() => {});
    await this.worker?.close().catch(() => {});
    await this.local.close();
    this.sub?.disconnect();
    await this.cmd?.quit().catch(() => this.cmd?.disconnect());
  }

  /** Live numbers for the supervisor's log. */
  get busy(): number {
    return this.running.size;
  }
}

function timed<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
