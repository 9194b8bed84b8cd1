/**
 * The engine under Pool: the task queue, dispatch to the workers, and their results. What a worker's
 * exit means for the units it held is decided in exits.ts.
 *
 * Dispatch is pull-shaped: a worker is sent work only while it has free slots, so a worker that
 * finishes early gets the next units and one slow unit never holds back the rest. How many units a
 * worker may hold beyond the ones it runs (prefetch) follows the measured unit time: tiny units are
 * sent 64 to a message, units of milliseconds one at a time.
 *
 * Two state machines meet here: the pool's (lifecycle.ts) and each worker's (worker.ts). Every change
 * of either schedules one dispatch, and every dispatch ends by checking the progress invariant
 * (`progress()`): anything queued has a live or starting worker, or fails with a typed error. That is
 * what keeps a queued task from waiting forever whatever happens to the workers, closing or not.
 *
 * A cancelled unit (timeout, abort) is settled at once but stays in its worker's list as a zombie
 * holding its slot until the worker answers for it: see cancel.ts.
 */

import type { Backend, Job } from '../backend/types.js';
import { channelFrame } from '../channel/hub.js';
import { deadlines } from '../deadline.js';
import {
  type CpuTimeLimitError,
  type MemoryLimitError,
  ModuleLoadError,
  PoolClosedError,
  SerializationError,
  TaskError,
  UnknownTaskError,
  type WorkerExit,
  WorkerStartError,
} from '../errors.js';
import { type Breach, classifyThrown } from '../limits/classify.js';
import { Meter, type UnitRecord } from '../metrics/meter.js';
import { otelApi, UnitTracer } from '../metrics/tracing.js';
import { codecError, codecErrorFromWire, decodeResult } from '../runtime/codec.js';
import {
  type FromWorker,
  fromWireError,
  type ResultFrame,
  ResultStatus,
  UNIT_CANCELLABLE,
  type UnitFrame,
  type UnitReport,
  type WireError,
} from '../runtime/protocol.js';
import { shmStatus } from '../shm/index.js';
import { arenaFrame } from './arena.js';
import { Canceller } from './cancel.js';
import type { PoolConfig } from './config.js';
import { Exits } from './exits.js';
import { PoolLifecycle, type PoolState } from './lifecycle.js';
import { MemoryGuard } from './memory.js';
import { logUnit, metricsOf, type PoolMetrics, Sampler } from './metrics.js';
import { Scheduler } from './scheduler.js';
import { SignalWatch } from './signals.js';
import { type PoolStats, snapshot } from './stats.js';
import { Stealing } from './steal.js';
import type { Unit } from './unit.js';
import type { PoolWorker } from './worker.js';
import { WorkerSet } from './workers.js';

export interface DispatcherEvents {
  workerStart(info: { workerId: number; pid: number | undefined; threadId: number | undefined }): void;
  workerExit(info: WorkerExit & { reason: string }): void;
  workerError(error: Error): void;
  leak(info: { workerId: number; pid: number | undefined; task: string; fds: number }): void;
  breach(error: MemoryLimitError | CpuTimeLimitError): void;
}

/** Work a worker may hold beyond what it runs while callers compete, and how long that lasts after. */
const CONTENDED_AHEAD_MS = 1;
const CONTENDED_HOLD_MS = 250;
/**
 * Prefetch beyond the running units, by mean unit time in ms. Tiny units go deep to hide the round
 * trip. Long ones still get two waiting in the worker, where work stealing (`stealable`) takes back
 * a unit parked behind a slow one when another worker goes idle. Why two and not one: a worker reads
 * the units sent to it only between tasks, one turn of its event loop at a time, and when workers
 * fill every core the pool's own thread may wait milliseconds for the CPU before it sends the next.
 * With one waiting, the next unit was read in a turn of its own after every task (0.5-2 ms for a
 * process worker, traced); with two, one turn may bring two. bench/run.mjs on the 2-core VM, 5/200 ms
 * burst: thread 707 -> 698-700 ms (in-order bound 700), process 724-728 -> 713-714 ms; three waiting
 * was worse (long tasks stacked behind each other faster than stealing took them back).
 */
function prefetchFor(meanMs: number | undefined, stealable: boolean): number {
  const floor = stealable ? 2 : 0;
  if (meanMs === undefined) return floor;
  if (meanMs < 0.05) return 63;
  if (meanMs < 0.5) return 15;
  if (meanMs < 2) return 2;
  return floor;
}

export class Dispatcher implements Backend {
  readonly queue: Scheduler;
  readonly workers: WorkerSet;
  readonly life: PoolLifecycle;
  /** What a worker's exit means for its units, and whether a failed unit runs again. */
  private readonly exits: Exits;
  /** Timeouts and aborts of units in workers' hands, and the workers that ignore them. */
  private readonly cancels: Canceller;
  /** Units queued, not counting ones settled while waiting (aborted) that are skipped lazily. */
  queued = 0;
  completed = 0;
  failed = 0;
  readonly createdAt = performance.now();
  breaches = 0;
  leaks = 0;
  readonly guard: MemoryGuard | undefined;
  /** Workers have claim boards (threads always; processes with the shared-memory addon). */
  private readonly stealable: boolean;
  private seq = 0;
  /** Units in workers' hands, and the memoryHint they reserve: kept as counts, not recounted per dispatch. */
  private sent = 0;
  private hinted = 0;
  private dispatchScheduled = false;
  /** When the queue last held work of several callers (see fill). */
  private contendedAt = -Infinity;
  private meanMs: number | undefined = undefined;
  /** Taking back units not started yet, and the claim boards' room (steal.ts). */
  private readonly stealing: Stealing;
  /** close() calls waiting for the pool to reach 'closed' (or 'terminated'). */
  private readonly closeWaiters: (() => void)[] = [];
  private readonly signals = new SignalWatch((u) => this.abort(u));
  /** What the pool measures about itself (pool.metrics()). */
  readonly meter = new Meter();
  /** The once-a-second samples, from the first metrics() call on. */
  private sampler: Sampler | undefined = undefined;
  /** Map jobs with work left (input to read or chunks unsettled): close() waits for them. */
  private readonly jobs = new Set<Job>();
  /** Spans for units, once the application has registered with @opentelemetry/api (metrics/tracing.ts). */
  private tracer: UnitTracer | undefined = undefined;

  constructor(
    readonly config: PoolConfig,
    private readonly events: DispatcherEvents,
  ) {
    const { limits, recycle } = config;
    this.queue = new Scheduler(config.priorityAging);
    this.life = new PoolLifecycle(() => this.schedule());
    this.workers = new WorkerSet(config, {
      message: (w, m) => this.onMessage(w, m),
      exited: (w, exit, cause, info) => this.exits.exited(w, exit, cause, info),
      changed: () => this.schedule(),
      giveUp: (error) => this.failQueued(error),
      unrecoverable: (error) => this.breakPool(error),
      workerStart: events.workerStart,
      workerExit: events.workerExit,
      workerError: events.workerError,
    });
    this.exits = new Exits(config, this.life, this.meter, this.workers, {
      released: (u) => this.released(u),
      requeue: (u) => this.submit(u, true),
      settleFail: (u, error) => this.settleFail(u, error),
      salvaged: (w, u) => this.salvaged(w, u),
      handedOver: (u, error) => this.handedOver(u, error),
      breached: (error) => {
        this.breaches++;
        this.events.breach(error);
      },
    });
    this.cancels = new Canceller(config, this.meter, this.workers, {
      settleFail: (u, error) => this.settleFail(u, error),
      retry: (u) => this.exits.retry(u),
    });
    if (MemoryGuard.needed(limits, recycle, config.memoryBudget)) {
      this.guard = new MemoryGuard(limits, recycle, config.memoryBudget, {
        workers: () => this.workers,
        retire: (w, reason) => this.workers.retire(w, { kind: 'retired', reason }),
        kill: (w, breach) => {
          w.breach = breach;
          this.workers.stop(w, { kind: 'breach', limit: breach.kind }, true);
        },
        resumed: () => this.schedule(),
      });
    }
    this.stealing = new Stealing(
      this.workers,
      () => this.schedule(),
      (w, units) => {
        for (const u of units) {
          this.released(u);
          this.salvaged(w, u);
        }
        this.schedule();
      },
    );
    for (let i = 0; i < config.minWorkers; i++) this.workers.spawn();
    // Threads always have a claim board; processes with the shared-memory addon.
    this.stealable = config.concurrency === 1 && (config.runtime === 'thread' || shmStatus().crossProcess);
  }

  // ── submission ────────────────────────────────────────────────────────────────────────────

  get state(): PoolState {
    return this.life.state;
  }

  stats(): PoolStats {
    return snapshot(this);
  }

  metrics(): PoolMetrics {
    this.sampler ??= new Sampler(this);
    return metricsOf(this, this.meter, this.sampler);
  }

  follow(listener: (unit: UnitRecord) => void): () => void {
    return this.meter.follow(listener);
  }

  /** The error a new call gets right now, if any. */
  refusal(): Error | undefined {
    return this.life.refusal();
  }

  /** The error a chunk of a job already running gets: only terminate() or a broken pool stop it. */
  jobRefusal(): Error | undefined {
    return this.life.running ? undefined : this.life.refusal();
  }

  jobWorking(job: Job): void {
    this.jobs.add(job);
    if (this.life.state === 'closing') job.drain();
  }

  jobDone(job: Job): void {
    if (this.jobs.delete(job)) this.schedule();
  }

  get contended(): boolean {
    return performance.now() - this.contendedAt < CONTENDED_HOLD_MS;
  }

  get hasRoom(): boolean {
    return this.queued < this.config.maxQueue;
  }

  /** The unit tracer, made the first time OpenTelemetry is found registered (looked for per unit). */
  private traced(): UnitTracer | undefined {
    if (this.tracer === undefined) {
      const otel = otelApi();
      if (otel) this.tracer = new UnitTracer(otel);
    }
    return this.tracer;
  }

  submit(unit: Unit, front = false): void {
    if (front) this.queue.unshift(unit);
    else this.queue.push(unit);
    this.queued++;
    unit.state = 'queued';
    if (unit.trace === undefined) unit.trace = this.traced()?.start(unit) ?? null;
    this.signals.watch(unit);
    this.schedule();
  }

  private schedule(): void {
    if (this.dispatchScheduled) return;
    this.dispatchScheduled = true;
    queueMicrotask(() => this.dispatch());
  }

  private dispatch(): void {
    this.dispatchScheduled = false;
    for (const w of this.workers) if (w.state === 'draining') this.workers.stopIfDrained(w);
    if (!this.life.running) return;
    // An idle worker takes back what a busy one holds but has not started: anything, once the queue
    // is empty; while it is not, only what waits behind a unit running far longer than its task's
    // usual time (a long task would hold it there, while the idle worker ran the queue's newer work).
    if (this.config.concurrency === 1 && this.hasIdle()) this.steal(this.queued > 0);
    this.fill();
    if (this.config.concurrency === 1 && this.queued === 0 && this.hasIdle() && this.steal(false) > 0) {
      this.fill();
    }
    if (!this.workers.backingOff) {
      if (this.queued > 0) this.workers.spawnFor(this.queued, this.guard?.workerRoom(this.workers));
      if (
        !this.guard?.held &&
        this.life.state === 'open' &&
        (this.queued > 0 || this.sent > 0) &&
        (this.guard?.roomForSpare() ?? true)
      ) {
        this.workers.keepSpare();
      }
    }
    this.progress();
    if (this.life.state === 'closing') this.finishClosing();
  }

  /**
   * The progress invariant, checked after every change of the pool's or a worker's state: queued
   * work has a live or starting worker (or a start is scheduled after a failed one). If not, one is
   * started, whatever the memory budget says (one task may always run); if none can be, the queued
   * units fail with a typed error rather than wait forever.
   */
  private progress(): void {
    if (this.queued === 0 || this.workers.pending) return;
    this.workers.start();
    if (this.workers.pending) return;
    this.failQueued(
      this.life.refusal() ?? new WorkerStartError('no worker could be started for the queued tasks'),
    );
  }

  /**
   * broadcast(): one unit per live worker (starting ones included), each bound to its worker: it goes
   * there ahead of the shared queue, and fails if that worker ends before running it.
   */
  broadcast(make: (w: PoolWorker) => Unit): Unit[] {
    const units: Unit[] = [];
    for (const w of this.workers) {
      if (!w.live) continue;
      const u = make(w);
      u.pin = w; // not in the shared queue: it stays 'new' until it is sent
      u.queuedAt = performance.now();
      u.trace = this.traced()?.start(u) ?? null;
      this.signals.watch(u);
      w.pinned.push(u);
      units.push(u);
    }
    this.schedule();
    return units;
  }

  private sendPinned(): void {
    for (const w of this.workers) {
      if (w.pinned.length === 0 || !w.accepting) continue;
      const waiting = w.pinned.filter((u) => u.state !== 'settled');
      // As many as its claim board has room for; the rest wait for the next dispatch.
      const room = this.stealing.room(w, waiting.length);
      const batch = waiting.slice(0, room);
      w.pinned = waiting.slice(room);
      for (const u of batch) u.state = 'sent';
      if (batch.length > 0) this.send(w, batch);
    }
  }

  private fill(): void {
    this.sendPinned();
    // While several callers (keys or priorities) compete, and for a while after, a worker holds no
    // more than ~CONTENDED_AHEAD_MS of work beyond what it runs: another caller's next call then waits
    // for the unit running now, not for a queue of the first caller's units parked behind it.
    const now = performance.now();
    if (this.queue.contended) this.contendedAt = now;
    let prefetch = prefetchFor(this.meanMs, this.stealable);
    if (now - this.contendedAt < CONTENDED_HOLD_MS) {
      prefetch = Math.min(prefetch, Math.floor(CONTENDED_AHEAD_MS / Math.max(this.meanMs ?? Infinity, 1e-3)));
    }
    const c = this.config.concurrency;
    let running = this.sent;
    let reserved = this.hinted;
    while (this.queued > 0) {
      let best: PoolWorker | undefined;
      let accepting = 0;
      for (const w of this.workers) {
        // Refill at half depth, not at every free slot: one message of 32 units, not 32 messages.
        if (!w.accepting || (w.inflight.size >= c && w.inflight.size > (c + prefetch) >> 1)) continue;
        if (this.free(w, c + prefetch) <= 0) continue;
        accepting++;
        if (!best || w.inflight.size < best.inflight.size) best = w;
      }
      if (!best) break;
      // Share the queue between the workers with room, so a short queue does not land on one.
      let n = Math.min(this.free(best, c + prefetch), Math.ceil(this.queued / accepting));
      const batch: Unit[] = [];
      while (n > 0 && this.queue.length > 0) {
        const unit = this.queue.peek()!;
        if (unit.state === 'settled') {
          this.queue.shift();
          continue;
        }
        // A unit that may be aborted is never prefetched: it is either still here or running.
        if (unit.signal && best.inflight.size + batch.length >= c) break;
        if (this.guard && !this.guard.admit(running + batch.length, reserved, unit.memoryHint)) break;
        reserved += unit.memoryHint;
        this.queue.shift();
        this.queued--;
        unit.state = 'sent'; // out of the queue: a failed send must not count it out twice
        batch.push(unit);
        n--;
      }
      if (batch.length === 0) break;
      running += batch.length;
      this.send(best, batch);
    }
  }

  private hasIdle(): boolean {
    for (const w of this.workers) if (w.accepting && w.inflight.size === 0) return true;
    return false;
  }

  /** Takes back units not started yet for idle workers (see dispatch); `stuckOnly`: from stuck workers. */
  private steal(stuckOnly: boolean): number {
    const taken = this.stealing.take(stuckOnly);
    for (const u of taken) this.released(u);
    for (const u of taken) this.submit(u, true); // newest first, so the oldest ends up in front
    return taken.length;
  }

  private free(w: PoolWorker, depth: number): number {
    const free = Math.min(depth, this.config.maxTasksPerWorker - w.tasksDone) - w.inflight.size;
    return free <= 0 ? free : this.stealing.room(w, free);
  }

  private send(w: PoolWorker, batch: Unit[]): void {
    const frames: UnitFrame[] = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const u = batch[i]!;
      u.seq = ++this.seq;
      // A claim word holds the seq as 32 bits: 0 there means "taken back", and the worker claims a
      // unit by writing -seq, which must differ from seq (both 0 and -2^31 are their own negation).
      if ((u.seq | 0) === (-u.seq | 0)) u.seq = ++this.seq;
      w.board?.offer(u);
      const frame =
        arenaFrame(w, u) ??
        (u.flags ? [u.seq, u.name, u.mode, u.payload, u.flags] : [u.seq, u.name, u.mode, u.payload]);
      if (u.signal || u.timeout !== Infinity) frame[4] = (frame[4] ?? 0) | UNIT_CANCELLABLE;
      if (u.attempts > 0) {
        frame[4] ??= 0;
        frame[5] = u.attempts + 1; // a retry: the task's context says which attempt it is
      }
      if (u.trace) {
        frame[4] ??= 0;
        frame[6] = u.trace.carrier;
      }
      if (u.ctxKey !== undefined) {
        frame[4] ??= 0;
        frame[5] ??= u.attempts + 1;
        frame[7] = u.ctxKey;
      }
      frames[i] = frame;
    }
    this.workers.noteAlive(w);
    const now = performance.now();
    if (w.inflight.size === 0) w.runningSince = now;
    for (const u of batch) {
      this.meter.sent(u.name, now - u.queuedAt);
      if (u.trace) this.tracer!.sent(u.trace, u, w, now);
    }
    try {
      w.rt.send({ t: 'run', units: frames });
      for (const u of batch) this.track(w, u);
    } catch {
      // Find the units that cannot be cloned; their batch-mates still go.
      w.board?.withdraw(batch.length);
      for (let i = 0; i < batch.length; i++) {
        const u = batch[i]!;
        try {
          w.board?.offer(u);
          w.rt.send({ t: 'run', units: [frames[i]!] });
          this.track(w, u);
        } catch (error) {
          w.board?.withdraw(1);
          w.arena?.free(u.seq);
          this.settleFail(u, new SerializationError(u.name, 'arguments', error));
        }
      }
    }
    if (w.state === 'idle' && w.inflight.size > 0) w.to('busy');
    this.armRunning(w);
    if (w.board) this.stealing.watchHeld();
  }

  private track(w: PoolWorker, u: Unit): void {
    u.state = 'sent';
    u.worker = w;
    u.attempts++;
    w.inflight.set(u.seq, u);
    this.sent++;
    this.hinted += u.memoryHint;
  }

  /** Undoes track()'s counts: the unit is out of its worker's hands (answered, taken back, or its worker gone). */
  private released(u: Unit): void {
    this.sent--;
    this.hinted -= u.memoryHint;
  }

  /**
   * The first `concurrency` units a worker holds are running: their deadlines start now. (A unit with a
   * deadline never runs behind results held for a batch: the worker sends those before it starts it.)
   */
  private armRunning(w: PoolWorker): void {
    let i = 0;
    for (const u of w.inflight.values()) {
      if (i++ >= this.config.concurrency) break;
      if (u.deadline === undefined && u.state === 'sent' && u.worker === w) {
        u.deadline = deadlines.after(u.timeout, () => this.cancels.expire(u));
      }
    }
  }

  // ── outcomes ──────────────────────────────────────────────────────────────────────────────

  /**
   * A worker's frame (runtime/spawn.ts passes on only those). One that a task forged and that cannot be
   * read would throw here, in the pool's thread: the worker that sent it is stopped instead, and its
   * calls settle as its exit says.
   */
  private onMessage(w: PoolWorker, m: FromWorker): void {
    try {
      this.handle(w, m);
    } catch (error) {
      const reason = `worker ${w.id} sent a message corral could not read ('${m.t}': ${error instanceof Error ? error.message : String(error)})`;
      this.events.workerError(new Error(reason, { cause: error }));
      this.workers.stop(w, { kind: 'retired', reason }, true);
    }
  }

  private handle(w: PoolWorker, m: FromWorker): void {
    switch (m.t) {
      case 'chan':
        channelFrame(w.rt, m); // Queue / Pipe traffic (channel/hub.ts)
        return;
      case 'done':
        w.batches++;
        w.noteHeap(m.heap);
        for (const frame of m.results) this.onResult(w, frame);
        // A worker posts its results before it starts a unit that is not tiny: that one started about now.
        w.runningSince = performance.now();
        if (w.inflight.size === 0 && w.accepting) this.workers.onEmpty(w);
        else this.armRunning(w);
        if (w.board && w.inflight.size > 0) this.stealing.watchHeld();
        this.schedule();
        return;
      case 'ready':
        w.noteHeap(m.heap);
        w.rssInPlace = m.rssInPlace === true;
        // A worker whose guard ends its process (no heap addon) has no stop errors to recognise.
        if (!w.rssInPlace) w.rssStopKey = undefined;
        if (!this.workers.ready(w)) return; // stopped while it was starting
        this.workers.onEmpty(w);
        return;
      case 'cancelled':
        if (w.zombies.has(m.seq)) w.acked.add(m.seq);
        return;
      case 'events':
        // Only for calls still waited for: nothing a task sends outlives its settlement.
        for (const [seq, item, kind, name, data] of m.events) {
          const u = w.inflight.get(seq);
          if (u && u.state === 'sent' && u.worker === w && !w.zombies.has(seq)) {
            u.sink.event?.(u, item, kind, name, data);
          }
        }
        return;
      case 'fatal': {
        // A module that cannot load will not load on the next try either: fail loudly, once.
        const cause = fromWireError(m.error);
        const error =
          m.phase === 'load'
            ? new ModuleLoadError(this.config.module, cause)
            : m.phase === 'limits'
              ? new WorkerStartError(`a worker could not apply its limits: ${cause.message}`, { cause })
              : m.phase === 'teardown'
                ? new WorkerStartError(cause.message, { cause })
                : new WorkerStartError(
                    `the initializer '${this.config.initializer}' failed: ${cause.message}`,
                    { cause },
                  );
        this.breakPool(error);
        this.workers.stop(w, { kind: 'fatal' }, true);
      }
    }
  }

  private onResult(w: PoolWorker, frame: ResultFrame): void {
    const [seq, status, , ms, report] = frame;
    let value = frame[2];
    const u = w.inflight.get(seq);
    if (!u) return;
    w.inflight.delete(seq);
    if (status === ResultStatus.OkArena) value = w.arena?.take(seq);
    else w.arena?.free(seq);
    this.released(u);
    // A cancelled run that ended (or stopped at the cancel): the caller has its answer already.
    if (w.zombies.delete(seq)) {
      w.acked.delete(seq);
      return;
    }
    w.tasksDone++;
    w.busyMs += ms;
    const ok =
      status === ResultStatus.Ok || status === ResultStatus.OkNumbers || status === ResultStatus.OkArena;
    this.meter.ran(u.name, ms, u.size, ok);
    if (this.meter.following) logUnit(this.meter, w, u, performance.now() - ms, ok ? 'ok' : 'error');
    this.meanMs = this.meanMs === undefined ? ms : this.meanMs * 0.9 + ms * 0.1;
    this.stealing.ran(u.name, ms);
    if (report) this.onReport(w, u, report);
    this.guard?.unitDone();
    if (u.state === 'settled') return;
    deadlines.cancel(u.deadline);
    u.deadline = undefined;
    if (report?.shm) {
      try {
        value = decodeResult(value);
      } catch (error) {
        this.settleFail(u, codecError(u.name, 'result', error));
        return;
      }
    }
    switch (status) {
      case ResultStatus.Ok:
      case ResultStatus.OkNumbers:
        this.settleOk(u, value, undefined, ms);
        break;
      case ResultStatus.OkArena:
        if (value) this.settleOk(u, value, undefined, ms);
        else this.settleFail(u, new Error(`corral internal error: no arena place for unit ${seq}`));
        break;
      case ResultStatus.Partial: {
        const [results, errors] = value as [unknown[], [number, WireError | Error][]];
        // An item that breached a limit fails with its typed error, as it would have run alone.
        for (const entry of errors) {
          const wire = entry[1] as WireError;
          const { code, rss, key } = wire.props;
          const breach = classifyThrown(
            { name: wire.name, message: wire.message, code, rss, key },
            this.config.limits,
            w.rssStopKey,
          );
          if (breach) entry[1] = this.thrownBreach(w, u, breach, fromWireError(wire));
        }
        this.settleOk(u, results, errors, ms);
        break;
      }
      case ResultStatus.Threw: {
        const cause = fromWireError(value as WireError);
        const breach = classifyThrown(cause, this.config.limits, w.rssStopKey);
        if (breach) {
          const error = this.thrownBreach(w, u, breach, cause);
          if (!this.exits.retry(u)) this.settleFail(u, error);
        } else if (!this.exits.retry(u)) this.settleFail(u, new TaskError(u.name, cause));
        break;
      }
      case ResultStatus.UnknownTask:
        this.settleFail(u, new UnknownTaskError(u.name, value as string[]));
        break;
      case ResultStatus.Uncloneable:
        this.settleFail(u, new SerializationError(u.name, 'result', fromWireError(value as WireError)));
        break;
      case ResultStatus.CodecFailed:
        this.settleFail(u, codecErrorFromWire(u.name, value as WireError));
        break;
      case ResultStatus.Cancelled:
        // Only zombies are cancelled, and they returned above.
        this.settleFail(u, new Error(`corral internal error: unit ${seq} was cancelled unasked`));
        break;
      default: {
        const error = new Error(`unknown result status ${String(status)} for unit ${seq}`);
        this.settleFail(u, error);
        throw error; // and its worker is stopped (onMessage)
      }
    }
  }

  /**
   * A breach the worker survived to report. A task that caught the failed allocation of an rlimit
   * leaves its worker at the wall: it is replaced. A call the rss guard stopped in place left a worker
   * that freed the memory: it goes on.
   */
  private thrownBreach(w: PoolWorker, u: Unit, breach: Breach, cause: Error): Error {
    // The worker's secret stays in the pool: the error may be handed to a task again.
    delete (cause as { key?: unknown }).key;
    if (!(breach.type === 'memory' && breach.inPlace))
      this.workers.retire(w, { kind: 'retired', reason: 'memory limit reached' });
    return this.exits.breachError(u, breach, w, cause);
  }

  /** The unit settles with the result its worker kept on the claim board (exits.ts, steal.ts). */
  private salvaged(w: PoolWorker, u: Unit): void {
    this.meter.salvage(u.name, u.size);
    this.guard?.unitDone();
    w.tasksDone++;
    this.settleOk(u, w.board!.result(u), undefined, 0);
  }

  private settleOk(
    u: Unit,
    value: unknown,
    itemErrors: [number, WireError | Error][] | undefined,
    ms: number,
  ): void {
    u.state = 'settled';
    this.signals.unwatch(u);
    if (itemErrors) this.failed++;
    else this.completed++;
    if (u.trace) {
      const partial = itemErrors && new Error(`${itemErrors.length} of ${u.size} items failed`);
      this.tracer!.end(u.trace, u, u.worker, partial, ms);
    }
    u.sink.ok(u, value, itemErrors, ms);
  }

  private onReport(w: PoolWorker, u: Unit, report: UnitReport): void {
    if (report.usage) u.usage = report.usage;
    if (report.leakedFds) {
      w.leaks += report.leakedFds;
      this.leaks += report.leakedFds;
      this.events.leak({ workerId: w.id, pid: w.rt.pid, task: u.name, fds: report.leakedFds });
      if (this.config.recycle.onLeak) {
        this.workers.retire(w, {
          kind: 'retired',
          reason: `task '${u.name}' leaked ${report.leakedFds} descriptors`,
        });
      }
    }
    if (report.heapUsed !== undefined) {
      this.workers.retire(w, {
        kind: 'retired',
        reason: `heap ${report.heapUsed} above recycle.whenHeapAbove`,
      });
    }
  }

  settleFail(u: Unit, error: Error): void {
    if (u.state === 'settled') return;
    deadlines.cancel(u.deadline);
    u.deadline = undefined;
    if (u.state === 'queued') this.queued--;
    u.state = 'settled';
    this.signals.unwatch(u);
    this.failed++;
    if (u.trace) this.tracer!.end(u.trace, u, u.worker, error);
    u.sink.fail(u, error);
    // The last queued unit of a closing pool may just have been aborted. Checked in a dispatch, never
    // here: in the middle of an exit, units may be between the worker's list and the queue.
    if (this.life.state === 'closing') this.schedule();
  }

  /** Its sink took the unit over (split into new units): it is no longer this dispatcher's. */
  private handedOver(u: Unit, error: Error): void {
    if (u.trace) this.tracer!.end(u.trace, u, u.worker, error);
    deadlines.cancel(u.deadline);
    u.deadline = undefined;
    u.state = 'settled';
    this.signals.unwatch(u);
  }

  /** The unit's signal fired: a queued unit is dropped, a sent one is cancelled in its worker. */
  abort(u: Unit): void {
    this.cancels.abort(u);
  }

  /** A stream's consumer took `n` items: its task may yield that many more. */
  credit(u: Unit, n: number): void {
    const w = u.worker;
    if (!w || u.state !== 'sent') return;
    try {
      w.rt.send({ t: 'credit', seq: u.seq, n });
    } catch {
      // A dead channel: the exit settles the unit.
    }
  }

  /** Cancels units of a job that failed or was abandoned: queued ones are dropped, running ones finish. */
  cancelQueued(belongs: (u: Unit) => boolean, error: Error): void {
    for (const u of this.queue.drain()) {
      if (u.state !== 'settled' && belongs(u)) this.settleFail(u, error);
      if (u.state !== 'settled') this.queue.push(u);
    }
  }

  // ── workers ───────────────────────────────────────────────────────────────────────────────

  private failQueued(error: Error): void {
    for (const u of this.queue.drain()) if (u.state !== 'settled') this.settleFail(u, error);
    this.queued = 0;
  }

  private breakPool(error: Error): void {
    if (this.life.state !== 'open' && this.life.state !== 'closing') return;
    this.life.to('broken', error);
    this.failQueued(error);
    for (const job of [...this.jobs]) job.stop(error);
    this.workers.stopAll({ kind: 'broken' }, true);
    // A close() waiting for the work to finish: there is none left to wait for.
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }

  // ── shutdown ──────────────────────────────────────────────────────────────────────────────

  /** Work a caller waits for: queued, held by a worker (zombies aside), or a job's unread input. */
  get busy(): boolean {
    if (this.queued > 0 || this.jobs.size > 0) return true;
    for (const w of this.workers) if (w.owed > 0) return true;
    return false;
  }

  /**
   * The closing pool's step, taken in every dispatch (so only between transitions, never in the middle
   * of one): once nothing is owed, the workers are stopped; once they are gone, the pool is closed. Work
   * that comes back meanwhile (a retry after a crash) gets a worker again through `progress()`, and that
   * worker is stopped in its turn when it is done.
   */
  private finishClosing(): void {
    if (this.busy) return;
    this.guard?.stop();
    for (const w of this.workers) if (w.state !== 'stopping') this.workers.stop(w, { kind: 'closed' });
    if (this.workers.size > 0 || this.workers.backingOff) return;
    this.life.to('closed');
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }

  /**
   * Finishes what was accepted (queued units, retries, the rest of every map's input), then stops the
   * workers. New calls are refused from now on.
   */
  async close(): Promise<void> {
    const { state } = this.life;
    if (state === 'open' || state === 'broken') {
      this.life.to('closing');
      for (const job of this.jobs) job.drain();
    }
    if (this.life.state === 'closing') await new Promise<void>((resolve) => this.closeWaiters.push(resolve));
    await this.workers.whenExited();
  }

  async terminate(): Promise<void> {
    if (!this.life.terminated) {
      this.life.to('terminated');
      this.guard?.stop();
      const error = new PoolClosedError('the pool was terminated before this task ran');
      this.failQueued(error);
      for (const job of [...this.jobs]) job.stop(error);
      this.workers.stopAll({ kind: 'terminated' }, true);
    }
    await this.workers.whenExited();
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }
}
