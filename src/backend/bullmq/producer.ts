/**
 * The producer side of the BullMQ backend: `new Pool({ backend: { bullmq: { connection, queue } } })`.
 * Units (an apply call, a map chunk) become BullMQ jobs with deterministic ids (this pool's id and
 * the unit's number), run by `corral worker` hosts; each host pushes the outcome onto this pool's
 * reply list (replies.ts), never through the job hash or QueueEvents, so an outcome waits in Redis
 * for as long as this process is busy. A reply for a job no longer out (a duplicate after a re-run,
 * or a job already aborted) is dropped: at-least-once runs, at-most-once delivery.
 *
 * Connection loss: while Redis is away, calls wait (up to reconnectFor); when it comes back every job
 * still out is added again under its id (a no-op for one Redis still holds; a re-run for one a
 * restarted Redis lost), so nothing is silently lost. Past reconnectFor the pool breaks with
 * BackendUnavailableError and every waiting call fails with it. The connections are link.ts's; the
 * hosts and the queue's length are watched by watch.ts, and this file keeps the units' bookkeeping.
 */
import {
  AbortError,
  BackendUnavailableError,
  NoHostError,
  PayloadTooLargeError,
  PoolClosedError,
  TaskError,
} from '../../errors.js';
import { builtin } from '../../lazy.js';
import { Meter, type UnitOutcome, type UnitRecord } from '../../metrics/meter.js';
import type { PoolConfig } from '../../pool/config.js';
import { PoolLifecycle, type PoolState } from '../../pool/lifecycle.js';
import type { PoolMetrics } from '../../pool/metrics.js';
import { SignalWatch } from '../../pool/signals.js';
import type { PoolStats } from '../../pool/stats.js';
import type { Unit } from '../../pool/unit.js';
import { fromWireError, UNIT_USAGE } from '../../runtime/protocol.js';
import type { Backend, BackendConfig, Job as MapJobHandle } from '../types.js';
import { encodePayload, type JobData, keys, moduleVersionOf, type Reply, reviveError } from './codec.js';
import { Link } from './link.js';
import { describeConnection, type ResolvedBullmq } from './options.js';
import { type Counts, type HostBeat, producerMetrics, producerStats } from './view.js';

/** Work per job: a job costs ~0.4 ms of CPU and ~3 ms of latency, so ~20 ms keeps that under 15%. */
export const REMOTE_CHUNK_MS = 20;

interface Sent {
  unit: Unit;
  name: string;
  data: JobData;
  /** performance.now() when it was sent, for the task stream. */
  at: number;
}

export class BullmqBackend implements Backend {
  readonly config: BackendConfig;
  private readonly life = new PoolLifecycle(() => this.changed());
  private readonly poolId = builtin('node:crypto').randomBytes(6).toString('hex');
  private readonly version: string;
  private readonly keys: ReturnType<typeof keys>;
  private readonly address: string;
  private seq = 0;
  /** Jobs out (added, or about to be) and not answered, by id. */
  private readonly out = new Map<string, Sent>();
  private readonly idOf = new Map<Unit, string>();
  /** Jobs not yet handed to Redis (batched into one addBulk). */
  private pending: string[] = [];
  private flushing = false;
  /** The connections, and the watch of hosts and queue (link.ts, watch.ts). */
  private readonly link: Link;
  private readonly signals = new SignalWatch((u) => this.abort(u));
  private readonly jobs = new Set<MapJobHandle>();
  private readonly closeWaiters: (() => void)[] = [];
  private readonly meter = new Meter();
  private readonly createdAt = performance.now();
  completed = 0;
  failed = 0;
  /** Replies dropped: for jobs no longer out (re-runs after a lost host, aborted jobs). */
  duplicates = 0;

  constructor(
    pool: PoolConfig,
    private readonly opts: ResolvedBullmq,
  ) {
    this.version = moduleVersionOf(pool.module, opts.moduleVersion);
    this.keys = keys(opts.prefix, opts.queue);
    this.address = describeConnection(opts.connection);
    // Chunks and windows are sized by the hosts' capacity, read from their heartbeats.
    const self = this;
    this.config = {
      get workers() {
        return Math.max(1, self.link?.watch?.slots ?? 0);
      },
      concurrency: 1,
      maxQueue: pool.maxQueue,
      runtime: 'remote',
      taskTimeout: pool.taskTimeout,
      retries: pool.retries,
      chunkMs: REMOTE_CHUNK_MS,
    };
    this.link = new Link(opts, this.keys.hosts, this.keys.reply(this.poolId), this.address, {
      reply: (reply) => this.onReply(reply),
      back: () => this.onBack(),
      fail: (error) => this.break(error),
      running: () => this.life.running,
      ours: () => this.out.size,
      mapping: () => this.jobs.size > 0,
      hostsRead: () => this.checkHosts(),
      clear: () => {
        for (const job of this.jobs) job.resume?.();
      },
    });
    // Jobs submitted while connecting leave once connected.
    this.link.started.then(
      () => this.flush(),
      () => {},
    );
  }

  /**
   * No live host for hostWait: the calls that waited that long fail (NoHostError) rather than wait
   * silently; a host that comes back later serves the calls made since.
   */
  private checkHosts(): void {
    const watch = this.link.watch;
    if (!watch || !this.life.running || this.out.size === 0) return;
    const wait = this.opts.hostWait;
    if (watch.hostlessMs < wait) return;
    const now = performance.now();
    for (const sent of [...this.out.values()]) {
      if (now - sent.at >= wait)
        this.settleFail(sent.unit, new NoHostError(this.address, this.opts.queue, now - sent.at));
    }
  }

  /** Back: every job still out is added again (a restarted Redis lost them; a live one ignores it). */
  private onBack(): void {
    const queued = new Set(this.pending);
    for (const id of this.out.keys()) if (!queued.has(id)) this.pending.push(id);
    this.flush();
  }

  private break(error: Error): void {
    if (this.life.state === 'terminated' || this.life.state === 'closed' || this.life.state === 'broken') {
      return;
    }
    this.life.to('broken', error);
    for (const sent of [...this.out.values()]) this.settleFail(sent.unit, error);
    for (const job of [...this.jobs]) job.stop(error);
    this.pending = [];
    void this.teardown();
  }

  // ── the Backend interface ────────────────────────────────────────────────────────────────

  get state(): PoolState {
    return this.life.state;
  }

  refusal(): Error | undefined {
    return this.life.refusal();
  }

  jobRefusal(): Error | undefined {
    return this.life.running ? undefined : this.life.refusal();
  }

  get hasRoom(): boolean {
    return this.out.size < this.config.maxQueue;
  }

  /** Other producers' jobs wait in the queue past maxWaiting (or Redis is away): maps stop reading. */
  get heldBack(): boolean {
    if (!this.life.running) return false; // what a map reads now fails at once
    return this.link.watch?.heldBack ?? true;
  }

  /** Chunks are already large (REMOTE_CHUNK_MS); shrinking them for fairness would only add jobs. */
  get contended(): boolean {
    return false;
  }

  submit(unit: Unit): void {
    const refusal = this.life.running ? undefined : this.life.refusal();
    if (refusal) {
      this.settleFail(unit, refusal);
      return;
    }
    let data: JobData;
    try {
      data = {
        v: this.version,
        n: unit.name,
        m: unit.mode,
        f: unit.flags & UNIT_USAGE,
        s: unit.size,
        p: encodePayload(unit.name, unit.payload, this.opts.maxPayload),
        r: this.keys.reply(this.poolId),
        t: Number.isFinite(unit.timeout) ? unit.timeout : -1,
        y: unit.retries,
        a: unit.attempts,
      };
      if (this.opts.stallBudget !== undefined) data.b = this.opts.stallBudget;
    } catch (error) {
      // A map chunk over maxPayload whose items would each fit (auto chunks are sized by time, not
      // bytes): its items go as jobs of their own, and only an item over the limit itself fails.
      if (error instanceof PayloadTooLargeError && unit.size > 1 && unit.sink.split?.(unit)) {
        unit.state = 'settled';
        return;
      }
      this.settleFail(unit, error as Error);
      return;
    }
    const id = `${this.poolId}-${++this.seq}`;
    unit.state = 'sent';
    unit.attempts++;
    this.out.set(id, { unit, name: unit.name, data, at: performance.now() });
    this.idOf.set(unit, id);
    this.signals.watch(unit);
    this.pending.push(id);
    if (this.pending.length === 1) setImmediate(() => this.flush());
  }

  /** Hands pending jobs to Redis in one addBulk; only while connected (they wait otherwise). */
  private flush(): void {
    const { queue } = this.link;
    if (this.flushing || !this.link.connected || !queue || this.pending.length === 0) return;
    const ids = this.pending;
    this.pending = [];
    const jobs: {
      name: string;
      data: JobData;
      opts: { jobId: string; removeOnComplete: true; removeOnFail: true; attempts: 1 };
    }[] = [];
    for (const id of ids) {
      const sent = this.out.get(id);
      if (!sent) continue; // aborted before it left
      jobs.push({
        name: sent.name,
        data: sent.data,
        opts: { jobId: id, removeOnComplete: true, removeOnFail: true, attempts: 1 },
      });
    }
    if (jobs.length === 0) return;
    this.flushing = true;
    queue
      .addBulk(jobs)
      .then(
        () => {},
        (error: Error) => {
          // Redis went away mid-call: onBack() adds every job still out again. But a command Redis
          // answered with an error (OOM under maxmemory, READONLY, EXECABORT) added nothing, and no
          // reconnect will come to add them: those calls fail now (they waited forever).
          if (
            error?.name !== 'ReplyError' &&
            !/^(EXECABORT|OOM|READONLY|NOSCRIPT)/.test(error?.message ?? '')
          ) {
            return;
          }
          const refusal = new BackendUnavailableError(
            'bullmq',
            this.address,
            `Redis refused to queue the call (${error.message})`,
            { cause: error },
          );
          for (const job of jobs) {
            const sent = this.out.get(job.opts.jobId);
            if (sent) this.settleFail(sent.unit, refusal);
          }
        },
      )
      .finally(() => {
        this.flushing = false;
        this.flush();
      });
  }

  private onReply(reply: Reply): void {
    const sent = this.out.get(reply.id);
    if (!sent) {
      this.duplicates++;
      return;
    }
    const { unit } = sent;
    this.forget(unit);
    if (!reply.ok) {
      this.settleFail(unit, reviveError(reply.error, reply.host));
      return;
    }
    unit.state = 'settled';
    unit.usage = reply.usage;
    const itemErrors = reply.itemErrors?.map(
      ([i, wire]) =>
        [i, Object.assign(new TaskError(unit.name, fromWireError(wire)), { host: reply.host })] as [
          number,
          Error,
        ],
    );
    if (itemErrors) this.failed++;
    else this.completed++;
    this.meter.ran(unit.name, reply.ms, unit.size, !itemErrors);
    this.record(sent, itemErrors ? 'error' : 'ok', reply.host);
    unit.sink.ok(unit, reply.value, itemErrors, reply.ms);
    this.changed();
  }

  private record(sent: Sent, outcome: UnitOutcome, host: string | undefined): void {
    if (!this.meter.following) return;
    const index = this.hosts.findIndex((h) => h.host === host);
    this.meter.log({
      workerId: index,
      task: sent.name,
      items: sent.unit.size,
      start: sent.at,
      end: performance.now(),
      outcome,
    });
  }

  private forget(unit: Unit): string | undefined {
    const id = this.idOf.get(unit);
    if (id === undefined) return undefined;
    this.idOf.delete(unit);
    this.out.delete(id);
    this.signals.unwatch(unit);
    return id;
  }

  abort(unit: Unit): void {
    if (unit.state === 'settled') return;
    this.meter.aborts++;
    this.settleFail(unit, new AbortError(unit.name, unit.signal?.reason));
  }

  /** Settles the unit; a job still out is removed from the queue, or cancelled on its host. */
  settleFail(unit: Unit, error: Error): void {
    if (unit.state === 'settled') return;
    const id = this.forget(unit);
    if (id !== undefined) this.cancelRemote(id);
    const sent = id !== undefined;
    unit.state = 'settled';
    this.failed++;
    this.meter.ran(unit.name, 0, unit.size, false);
    if (sent && this.meter.following) {
      this.meter.log({
        workerId: -1,
        task: unit.name,
        items: unit.size,
        start: performance.now(),
        end: performance.now(),
        outcome: error instanceof AbortError ? 'aborted' : 'error',
      });
    }
    unit.sink.fail(unit, error);
    this.changed();
  }

  /** A job nobody waits for: out of the queue if it waits there, else its host is told to stop it. */
  private cancelRemote(id: string): void {
    const { cmd, queue } = this.link;
    if (!this.link.connected || !cmd) return;
    queue?.remove(id).catch(() => {});
    cmd.publish(this.keys.cancel, id).catch(() => {});
  }

  cancelQueued(belongs: (u: Unit) => boolean, error: Error): void {
    for (const sent of [...this.out.values()]) if (belongs(sent.unit)) this.settleFail(sent.unit, error);
  }

  jobWorking(job: MapJobHandle): void {
    this.jobs.add(job);
    if (this.life.state === 'closing') job.drain();
  }

  jobDone(job: MapJobHandle): void {
    if (this.jobs.delete(job)) this.changed();
  }

  // ── lifecycle ────────────────────────────────────────────────────────────────────────────

  /** After any settlement or state change: a closing pool with nothing left is closed. */
  private changed(): void {
    if (this.life.state === 'closing' && this.out.size === 0 && this.jobs.size === 0) {
      this.life.to('closed');
      void this.teardown();
    }
    if (!this.life.running && this.closeWaiters.length > 0 && this.life.state !== 'closing') {
      for (const w of this.closeWaiters.splice(0)) w();
    }
  }

  /** Waits for the work accepted, then closes this pool's connections. Remote workers keep running. */
  async close(): Promise<void> {
    if (this.life.state === 'open') {
      this.life.to('closing');
      for (const job of this.jobs) job.drain();
    } else if (this.life.state === 'broken') {
      this.life.to('closing');
    }
    await new Promise<void>((resolve) => {
      this.closeWaiters.push(resolve);
      this.changed();
    });
    await this.teardown();
  }

  async terminate(): Promise<void> {
    if (this.life.state !== 'terminated') {
      this.life.to('terminated');
      const error = new PoolClosedError('the pool was terminated; its remote jobs were cancelled');
      for (const sent of [...this.out.values()]) this.settleFail(sent.unit, error);
      for (const job of [...this.jobs]) job.stop(error);
      this.pending = [];
    }
    await this.teardown();
  }

  private teardown(): Promise<void> {
    return this.link.teardown();
  }

  // ── what the producer sees (view.ts) ─────────────────────────────────────────────────────

  private counts(): Counts {
    return {
      createdAt: this.createdAt,
      queued: this.pending.length,
      running: this.out.size - this.pending.length,
      completed: this.completed,
      failed: this.failed,
    };
  }

  stats(): PoolStats {
    return producerStats(this.counts());
  }

  /** The hosts (one "worker" each, by their heartbeats), and what this producer measured. */
  metrics(): PoolMetrics {
    return producerMetrics(this.counts(), this.meter, this.hosts);
  }

  private get hosts(): readonly HostBeat[] {
    return this.link.watch?.hosts ?? [];
  }

  follow(listener: (unit: UnitRecord) => void): () => void {
    return this.meter.follow(listener);
  }

  /** The live hosts, as their last heartbeats say (read every 2 s). */
  liveHosts(): readonly HostBeat[] {
    return this.hosts;
  }
}
