/**
 * The engine under Pool: the task queue, the workers, and the one place that decides what a
 * worker's exit means for the units it held.
 *
 * Dispatch is pull-shaped: a worker is sent work only while it has free slots, so a worker that
 * finishes early gets the next units and one slow unit never holds back the rest. How many units a
 * worker may hold beyond the ones it runs (prefetch) follows the measured unit time: tiny units are
 * sent 64 to a message, units of milliseconds one at a time.
 */

import { channelFrame, channelLinkGone } from '../channel/hub.js';
import {
  AbortError,
  CpuTimeLimitError,
  MemoryLimitError,
  ModuleLoadError,
  PoolClosedError,
  SerializationError,
  TaskError,
  TaskTimeoutError,
  UnknownTaskError,
  WorkerCrashedError,
  type WorkerExit,
  WorkerStartError,
} from '../errors.js';
import { type Breach, classifyDeath, classifyThrown } from '../limits/classify.js';
import {
  type FromWorker,
  fromWireError,
  type ResultFrame,
  ResultStatus,
  type UnitFrame,
  type UnitReport,
  type WireError,
} from '../runtime/protocol.js';
import type { RuntimeExit } from '../runtime/types.js';
import { decodeShm } from '../shm/handle.js';
import { arenaFrame } from './arena.js';
import type { PoolConfig } from './config.js';
import { Deque } from './deque.js';
import { MemoryGuard } from './memory.js';
import { stealFor } from './steal.js';
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

/**
 * Prefetch beyond the running units, by mean unit time in ms. Tiny units go deep to hide the round
 * trip. Long ones still get one waiting in the worker: when workers fill every core the pool's own
 * thread may wait milliseconds for the CPU before it can send the next unit, and a unit parked
 * behind a slow one is taken back by work stealing (`stealable`) when another worker goes idle.
 */
function prefetchFor(meanMs: number | undefined, stealable: boolean): number {
  const floor = stealable ? 1 : 0;
  if (meanMs === undefined) return floor;
  if (meanMs < 0.05) return 63;
  if (meanMs < 0.5) return 15;
  if (meanMs < 2) return 2;
  return floor;
}

export class Dispatcher {
  readonly queue = new Deque<Unit>();
  readonly workers: WorkerSet;
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
  private meanMs: number | undefined = undefined;
  private broken: Error | undefined = undefined;
  private closing = false;
  private terminated = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    readonly config: PoolConfig,
    private readonly events: DispatcherEvents,
  ) {
    const { limits, recycle } = config;
    this.workers = new WorkerSet(config, {
      message: (w, m) => this.onMessage(w, m),
      exited: (w, exit, planned, info) => this.onExit(w, exit, planned, info),
      changed: () => {
        this.schedule();
        this.checkIdle();
      },
      giveUp: (error) => this.failQueued(error),
      unrecoverable: (error) => this.breakPool(error),
      workerStart: events.workerStart,
      workerExit: events.workerExit,
      workerError: events.workerError,
    });
    if (MemoryGuard.needed(limits, recycle, config.memoryBudget)) {
      this.guard = new MemoryGuard(limits, recycle, config.memoryBudget, {
        workers: () => this.workers,
        retire: (w, reason) => this.workers.retire(w, reason),
        kill: (w, breach) => {
          w.breach = breach;
          this.workers.stop(w, `${breach.kind} limit`, true);
        },
        resumed: () => this.schedule(),
      });
    }
    for (let i = 0; i < config.workers; i++) this.workers.spawn();
    this.stealable = config.concurrency === 1 && [...this.workers].every((w) => w.board !== undefined);
  }

  // ── submission ────────────────────────────────────────────────────────────────────────────

  /** The error a new submission gets right now, if any. */
  refusal(): Error | undefined {
    if (this.closing || this.terminated) return new PoolClosedError();
    return this.broken;
  }

  /**
   * Jobs (maps) started before close() go on submitting their chunks, and close() waits for them:
   * closing refuses new calls, not the rest of a call already made.
   */
  private readonly jobs = new Set<object>();
  jobStarted(job: object): void {
    this.jobs.add(job);
  }
  jobEnded(job: object): void {
    this.jobs.delete(job);
    this.checkIdle();
  }
  /** The error a chunk of a job already running gets: only terminate() or a broken pool stop it. */
  jobRefusal(): Error | undefined {
    if (this.terminated) return new PoolClosedError('the pool was terminated before this task ran');
    return this.broken;
  }

  get hasRoom(): boolean {
    return this.queued < this.config.maxQueue;
  }

  submit(unit: Unit, front = false): void {
    if (front) this.queue.unshift(unit);
    else this.queue.push(unit);
    this.queued++;
    unit.state = 'queued';
    if (unit.signal && unit.attempts === 0) {
      unit.signal.addEventListener('abort', () => this.abort(unit), { once: true });
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.dispatchScheduled) return;
    this.dispatchScheduled = true;
    queueMicrotask(() => this.dispatch());
  }

  private dispatch(): void {
    this.dispatchScheduled = false;
    this.fill();
    // With nothing left to hand out, idle workers take back what a busy one holds but has not started.
    if (this.config.concurrency === 1 && this.queued === 0 && this.steal() > 0) this.fill();
    this.spawnForBacklog();
  }

  private fill(): void {
    const prefetch = prefetchFor(this.meanMs, this.stealable);
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

  private steal(): number {
    let idle = false;
    for (const w of this.workers) if (w.accepting && w.inflight.size === 0) idle = true;
    if (!idle) return 0;
    const taken = stealFor(this.workers);
    for (const u of taken) {
      this.sent--;
      this.hinted -= u.memoryHint;
    }
    for (const u of taken) this.submit(u, true); // newest first, so the oldest ends up in front
    return taken.length;
  }

  private free(w: PoolWorker, depth: number): number {
    return Math.min(depth, this.config.maxTasksPerWorker - w.tasksDone) - w.inflight.size;
  }

  private send(w: PoolWorker, batch: Unit[]): void {
    const frames: UnitFrame[] = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const u = batch[i]!;
      u.seq = ++this.seq;
      w.board?.offer(u);
      frames[i] =
        arenaFrame(w, u) ??
        (u.flags ? [u.seq, u.name, u.mode, u.payload, u.flags] : [u.seq, u.name, u.mode, u.payload]);
    }
    this.workers.noteAlive(w);
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
  }

  private track(w: PoolWorker, u: Unit): void {
    u.state = 'sent';
    u.worker = w;
    u.attempts++;
    w.inflight.set(u.seq, u);
    this.sent++;
    this.hinted += u.memoryHint;
  }

  /** The first `concurrency` units a worker holds are running: their deadlines start now. */
  private armRunning(w: PoolWorker): void {
    let i = 0;
    for (const u of w.inflight.values()) {
      if (i++ >= this.config.concurrency) break;
      if (u.timeout > 0 && u.timer === undefined && u.state === 'sent') {
        u.timer = setTimeout(() => this.expire(u), u.timeout);
      }
    }
  }

  private isRunning(u: Unit): boolean {
    const w = u.worker;
    if (!w || u.state !== 'sent') return false;
    let i = 0;
    for (const other of w.inflight.values()) {
      if (other === u) return true;
      if (++i >= this.config.concurrency) return false;
    }
    return false;
  }

  // ── outcomes ──────────────────────────────────────────────────────────────────────────────

  private onMessage(w: PoolWorker, m: FromWorker): void {
    if (m.t === 'chan') {
      channelFrame(w.rt, m); // Queue / Pipe traffic (channel/hub.ts)
      return;
    }
    if (m.t === 'done') {
      w.noteHeap(m.heap);
      for (const frame of m.results) this.onResult(w, frame);
      if (w.inflight.size === 0) this.onEmpty(w);
      else this.armRunning(w);
      this.schedule();
    } else if (m.t === 'ready') {
      w.noteHeap(m.heap);
      if (!this.workers.ready(w)) return; // stopped while it was starting
      this.onEmpty(w);
      this.schedule();
    } else if (m.t === 'fatal') {
      // A module that cannot load will not load on the next try either: fail loudly, once.
      const cause = fromWireError(m.error);
      const error =
        m.phase === 'load'
          ? new ModuleLoadError(this.config.module, cause)
          : new WorkerStartError(`the initializer '${this.config.initializer}' failed: ${cause.message}`, {
              cause,
            });
      this.breakPool(error);
      this.workers.stop(w, 'fatal');
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
    this.sent--;
    this.hinted -= u.memoryHint;
    // A late result of a unit that timed out here and went back to the queue: that run decides.
    if (u.worker !== w) return;
    w.tasksDone++;
    w.busyMs += ms;
    this.meanMs = this.meanMs === undefined ? ms : this.meanMs * 0.9 + ms * 0.1;
    if (report) {
      this.onReport(w, u, report);
      if (report.shm) value = decodeShm(value);
    }
    this.guard?.unitDone();
    if (u.state === 'settled') return;
    if (u.timer) clearTimeout(u.timer);
    switch (status) {
      case ResultStatus.Ok:
        this.settleOk(u, value, undefined, ms);
        break;
      case ResultStatus.OkNumbers:
        this.settleOk(u, value, undefined, ms);
        break;
      case ResultStatus.OkArena:
        if (value) this.settleOk(u, value, undefined, ms);
        else this.settleFail(u, new Error(`corral internal error: no arena place for unit ${seq}`));
        break;
      case ResultStatus.Partial: {
        const [results, errors] = value as [unknown[], [number, WireError][]];
        this.settleOk(u, results, errors, ms);
        break;
      }
      case ResultStatus.Threw: {
        const cause = fromWireError(value as WireError);
        const breach = classifyThrown(cause, this.config.limits);
        if (breach) {
          // The task caught the failed allocation, but its worker is at the wall: replace it.
          this.workers.retire(w, 'memory limit reached');
          this.failWithBreach(u, breach, w, cause);
        } else if (!this.retry(u)) this.settleFail(u, new TaskError(u.name, cause));
        break;
      }
      case ResultStatus.UnknownTask:
        this.settleFail(u, new UnknownTaskError(u.name, value as string[]));
        break;
      case ResultStatus.Uncloneable:
        this.settleFail(u, new SerializationError(u.name, 'result', fromWireError(value as WireError)));
        break;
    }
  }

  private settleOk(u: Unit, value: unknown, itemErrors: [number, WireError][] | undefined, ms: number): void {
    u.state = 'settled';
    if (itemErrors) this.failed++;
    else this.completed++;
    u.sink.ok(u, value, itemErrors, ms);
  }

  private onReport(w: PoolWorker, u: Unit, report: UnitReport): void {
    if (report.usage) u.usage = report.usage;
    if (report.leakedFds) {
      w.leaks += report.leakedFds;
      this.leaks += report.leakedFds;
      this.events.leak({ workerId: w.id, pid: w.rt.pid, task: u.name, fds: report.leakedFds });
      if (this.config.recycle.onLeak)
        this.workers.retire(w, `task '${u.name}' leaked ${report.leakedFds} descriptors`);
    }
    if (report.heapUsed !== undefined) {
      this.workers.retire(w, `heap ${report.heapUsed} above recycle.whenHeapAbove`);
    }
  }

  private failWithBreach(u: Unit, breach: Breach, w: PoolWorker, cause?: unknown): void {
    const who = { workerId: w.id, pid: w.rt.pid, signal: w.exit?.signal ?? null };
    const error =
      breach.type === 'cpu'
        ? new CpuTimeLimitError(u.name, breach.limit, who)
        : new MemoryLimitError(u.name, breach.kind, breach.limit, breach.observed, who, { cause });
    this.breaches++;
    w.breaches++;
    this.events.breach(error);
    if (!this.retry(u)) this.settleFail(u, error);
  }

  settleFail(u: Unit, error: Error): void {
    if (u.state === 'settled') return;
    if (u.timer) clearTimeout(u.timer);
    if (u.state === 'queued') this.queued--;
    u.state = 'settled';
    this.failed++;
    u.sink.fail(u, error);
  }

  private retry(u: Unit): boolean {
    if (u.attempts > u.retries || this.closing || this.terminated) return false;
    if (u.timer) clearTimeout(u.timer);
    u.timer = undefined;
    u.worker = undefined;
    this.submit(u, true);
    return true;
  }

  private expire(u: Unit): void {
    u.timer = undefined;
    const w = u.worker;
    if (u.state !== 'sent' || !w) return;
    // Retried or failed here; it stays in the worker's list until the exit, where it still counts as
    // running (so the units behind it are known not to have started) but is not settled again.
    if (!this.retry(u)) this.settleFail(u, new TaskTimeoutError(u.name, u.timeout));
    this.workers.stop(w, `task '${u.name}' timed out`, true);
  }

  /** Abort before start removes the unit; abort while running stops its worker. */
  abort(u: Unit): void {
    if (u.state === 'settled') return;
    const running = u.state === 'sent' && this.isRunning(u);
    const w = u.worker;
    this.settleFail(u, new AbortError(u.name, u.signal?.reason));
    if (running && w) this.workers.stop(w, `task '${u.name}' was aborted`, true);
  }

  /** Cancels units of a job that failed or was abandoned: queued ones are dropped, running ones finish. */
  cancelQueued(belongs: (u: Unit) => boolean, error: Error): void {
    for (const u of this.queue.drain()) {
      if (u.state !== 'settled' && belongs(u)) this.settleFail(u, error);
      if (u.state !== 'settled') this.queue.push(u);
    }
  }

  // ── workers ───────────────────────────────────────────────────────────────────────────────

  /**
   * The one place that decides what an exit means. Units with results are already settled; of the
   * rest, the first `concurrency` were running (they fail, or are retried if allowed) and the others
   * never started (they go back to the front of the queue, in order).
   */
  private onExit(w: PoolWorker, exit: RuntimeExit, planned: string | undefined, info: WorkerExit): void {
    channelLinkGone(w.rt, info); // queue items it held go back (channel/broker.ts)
    const held = [...w.inflight.values()];
    w.inflight.clear();
    for (const u of held) {
      this.sent--;
      this.hinted -= u.memoryHint;
    }
    const requeue: Unit[] = [];
    held.forEach((u, i) => {
      // Settled, or already given to the queue again (a timeout's retry): decided elsewhere.
      if (u.state === 'settled' || u.worker !== w) return;
      if (u.timer) clearTimeout(u.timer);
      u.timer = undefined;
      if (i < this.config.concurrency) {
        const breach = this.terminated
          ? undefined
          : classifyDeath({ ...exit, observed: w.breach }, this.config.limits);
        if (breach) {
          this.failWithBreach(u, breach, w);
          return;
        }
        const error = this.terminated
          ? new PoolClosedError('the pool was terminated while this task was running')
          : new WorkerCrashedError(
              u.name,
              info,
              planned ? `worker ${w.id} was stopped (${planned}) while running task '${u.name}'` : undefined,
            );
        if (this.terminated || !this.retry(u)) this.settleFail(u, error);
      } else {
        u.attempts--; // never started: this try does not count
        requeue.push(u);
      }
    });
    for (let i = requeue.length - 1; i >= 0; i--) {
      if (this.terminated) this.settleFail(requeue[i]!, new PoolClosedError());
      else this.submit(requeue[i]!, true);
    }
  }

  private spawnForBacklog(): void {
    if (this.closing || this.terminated || this.broken || this.guard?.held) return;
    this.workers.spawnFor(this.queued);
  }

  private failQueued(error: Error): void {
    for (const u of this.queue.drain()) if (u.state !== 'settled') this.settleFail(u, error);
    this.queued = 0;
  }

  private breakPool(error: Error): void {
    if (this.broken) return;
    this.broken = error;
    this.failQueued(error);
    this.workers.stopAll('the pool cannot start workers', true);
  }

  // ── shutdown ──────────────────────────────────────────────────────────────────────────────

  get busy(): boolean {
    if (this.queued > 0 || this.jobs.size > 0) return true;
    for (const w of this.workers) if (w.inflight.size > 0) return true;
    return false;
  }

  private checkIdle(): void {
    if (this.busy) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Resolves when no unit is queued or running. */
  whenIdle(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onEmpty(w: PoolWorker): void {
    this.workers.onEmpty(w);
    this.checkIdle();
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.whenIdle();
    this.guard?.stop();
    this.workers.stopAll('pool closed', false);
    await this.workers.whenExited();
  }

  async terminate(): Promise<void> {
    this.terminated = true;
    this.guard?.stop();
    this.failQueued(new PoolClosedError('the pool was terminated before this task ran'));
    this.workers.stopAll('pool terminated', true);
    await this.workers.whenExited();
    this.checkIdle();
  }
}
