/**
 * The engine under Pool: the task queue, the workers, and the one place that decides what a
 * worker's exit means for the units it held.
 *
 * Dispatch is pull-shaped: a worker is sent work only while it has free slots, so a worker that
 * finishes early gets the next units and one slow unit never holds back the rest. How many units a
 * worker may hold beyond the ones it runs (prefetch) follows the measured unit time: tiny units are
 * sent 64 to a message, units of milliseconds one at a time.
 */
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
import { heapMbFor } from '../limits/limits.js';
import { spawnProcess } from '../runtime/process.js';
import {
  BOARD_SLOTS,
  type FromWorker,
  fromWireError,
  type ResultFrame,
  ResultStatus,
  type RlimitSpec,
  type UnitFrame,
  type UnitReport,
  type WireError,
  type WorkerLimits,
} from '../runtime/protocol.js';
import { spawnThread } from '../runtime/thread.js';
import type { RuntimeExit } from '../runtime/types.js';
import { decodeShm } from '../shm/handle.js';
import { SharedMemory, shmStatus } from '../shm/index.js';
import { internalSegment } from '../shm/shared-memory.js';
import type { PoolConfig } from './config.js';
import { Deque } from './deque.js';
import { MemoryGuard } from './memory.js';
import { ClaimBoard, pickVictim } from './steal.js';
import type { Unit } from './unit.js';
import { PoolWorker } from './worker.js';

const WORKER_ENTRY = new URL('../worker/main.js', import.meta.url);
/** Consecutive start failures after which queued work is failed instead of waiting forever. */
const MAX_START_FAILURES = 5;
const MAX_BACKOFF_MS = 5000;
const START_TIMEOUT = 'start timeout';

export interface DispatcherEvents {
  workerStart(info: { workerId: number; pid: number | undefined; threadId: number | undefined }): void;
  workerExit(info: WorkerExit & { reason: string }): void;
  workerError(error: Error): void;
  leak(info: { workerId: number; pid: number | undefined; task: string; fds: number }): void;
  breach(error: MemoryLimitError | CpuTimeLimitError): void;
}

/** Prefetch beyond the running units, by mean unit time in ms: enough to hide the round trip. */
function prefetchFor(meanMs: number | undefined): number {
  if (meanMs === undefined) return 1;
  if (meanMs < 0.05) return 63;
  if (meanMs < 0.5) return 15;
  if (meanMs < 2) return 2;
  return 0;
}

export class Dispatcher {
  readonly queue = new Deque<Unit>();
  readonly workers = new Set<PoolWorker>();
  /** Units queued, not counting ones settled while waiting (aborted) that are skipped lazily. */
  queued = 0;
  completed = 0;
  failed = 0;
  readonly createdAt = performance.now();
  breaches = 0;
  recycles = 0;
  leaks = 0;
  readonly guard: MemoryGuard | undefined;
  private readonly workerLimits: WorkerLimits;
  private readonly heapMb: number | undefined;
  private seq = 0;
  private nextWorkerId = 1;
  private dispatchScheduled = false;
  private meanMs: number | undefined = undefined;
  private startFailures = 0;
  private respawnTimer: NodeJS.Timeout | undefined = undefined;
  private broken: Error | undefined = undefined;
  private closing = false;
  private terminated = false;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly exitWaiters: (() => void)[] = [];

  constructor(
    readonly config: PoolConfig,
    private readonly events: DispatcherEvents,
  ) {
    const { limits, recycle } = config;
    this.workerLimits = {
      rlimits: (
        [
          ['as', limits.addressSpace],
          ['data', limits.data],
          ['nofile', limits.openFiles],
        ] as const
      ).flatMap(([resource, limit]): RlimitSpec[] => (limit === undefined ? [] : [[resource, limit]])),
      cpuTime: limits.cpuTime,
      heapAbove: recycle.whenHeapAbove,
      detectLeaks: config.detectLeaks,
    };
    this.heapMb = heapMbFor(limits);
    if (MemoryGuard.needed(limits, recycle, config.memoryBudget)) {
      this.guard = new MemoryGuard(limits, recycle, config.memoryBudget, {
        workers: () => this.workers,
        retire: (w, reason) => this.retire(w, reason),
        kill: (w, breach) => {
          w.breach = breach;
          this.stopWorker(w, `${breach.kind} limit`, true);
        },
        resumed: () => this.schedule(),
      });
    }
    for (let i = 0; i < config.workers; i++) this.spawn();
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
    const prefetch = prefetchFor(this.meanMs);
    const c = this.config.concurrency;
    let running = 0;
    let reserved = 0;
    if (this.guard?.budget !== undefined) {
      for (const w of this.workers) {
        running += w.inflight.size;
        for (const u of w.inflight.values()) reserved += u.memoryHint;
      }
    }
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

  private stealTimer: NodeJS.Timeout | undefined = undefined;

  private steal(): number {
    let idle = 0;
    for (const w of this.workers) if (w.accepting && w.inflight.size === 0) idle++;
    if (idle === 0) return 0;
    const now = performance.now();
    const { victim, retryInMs } = pickVictim(this.workers, this.meanMs ?? 0, now);
    if (!victim) {
      if (retryInMs !== undefined && !this.stealTimer) {
        this.stealTimer = setTimeout(() => {
          this.stealTimer = undefined;
          this.schedule();
        }, Math.ceil(retryInMs));
        this.stealTimer.unref();
      }
      return 0;
    }
    const held = [...victim.inflight.values()];
    const taken: Unit[] = [];
    // Newest first: they are the furthest from starting.
    for (let i = held.length - 1; i >= Math.max(1, held.length - Math.ceil((held.length - 1) / 2)); i--) {
      const u = held[i]!;
      if (!victim.board!.take(u)) break; // the worker got to it first: it and all before it have started
      victim.inflight.delete(u.seq);
      u.attempts--;
      u.worker = undefined;
      taken.push(u);
    }
    for (const u of taken) this.submit(u, true);
    return taken.length;
  }

  private free(w: PoolWorker, depth: number): number {
    return Math.min(depth, this.config.maxTasksPerWorker - w.tasksDone) - w.inflight.size;
  }

  private send(w: PoolWorker, batch: Unit[]): void {
    const frames: UnitFrame[] = new Array(batch.length);
    if (w.inflight.size === 0) w.headSince = performance.now();
    for (let i = 0; i < batch.length; i++) {
      const u = batch[i]!;
      u.seq = ++this.seq;
      w.board?.offer(u);
      frames[i] = u.flags ? [u.seq, u.name, u.mode, u.payload, u.flags] : [u.seq, u.name, u.mode, u.payload];
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
    if (m.t === 'done') {
      for (const frame of m.results) this.onResult(w, frame);
      // The worker posts a result before it starts the next unit: the next one started about now.
      w.headSince = performance.now();
      if (w.inflight.size === 0) this.onEmpty(w);
      else this.armRunning(w);
      this.schedule();
    } else if (m.t === 'ready') {
      if (w.state !== 'starting') return; // stopped while it was starting
      if (w.idleTimer) clearTimeout(w.idleTimer);
      this.startFailures = 0;
      w.to('idle');
      this.events.workerStart({ workerId: w.id, pid: w.rt.pid, threadId: w.rt.threadId });
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
      this.stopWorker(w, 'fatal');
    }
  }

  private onResult(w: PoolWorker, frame: ResultFrame): void {
    const [seq, status, , ms, report] = frame;
    let value = frame[2];
    const u = w.inflight.get(seq);
    if (!u) return;
    w.inflight.delete(seq);
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
          this.retire(w, 'memory limit reached');
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
        this.retire(w, `task '${u.name}' leaked ${report.leakedFds} descriptors`);
    }
    if (report.heapUsed !== undefined) this.retire(w, `heap ${report.heapUsed} above recycle.whenHeapAbove`);
  }

  private failWithBreach(u: Unit, breach: Breach, w: PoolWorker, cause?: unknown): void {
    const who = { workerId: w.id, pid: w.rt.pid, signal: w.exit?.signal ?? null };
    const error =
      breach.type === 'cpu'
        ? new CpuTimeLimitError(u.name, breach.limit, who)
        : new MemoryLimitError(u.name, breach.kind, breach.limit, breach.observed, who, { cause });
    this.breaches++;
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
    if (!this.retry(u)) this.settleFail(u, new TaskTimeoutError(u.name, u.timeout));
    this.stopWorker(w, `task '${u.name}' timed out`, true);
  }

  /** Abort before start removes the unit; abort while running stops its worker. */
  abort(u: Unit): void {
    if (u.state === 'settled') return;
    const running = u.state === 'sent' && this.isRunning(u);
    const w = u.worker;
    this.settleFail(u, new AbortError(u.name, u.signal?.reason));
    if (running && w) this.stopWorker(w, `task '${u.name}' was aborted`, true);
  }

  /** Cancels units of a job that failed or was abandoned: queued ones are dropped, running ones finish. */
  cancelQueued(belongs: (u: Unit) => boolean, error: Error): void {
    for (const u of this.queue.drain()) {
      if (u.state !== 'settled' && belongs(u)) this.settleFail(u, error);
      if (u.state !== 'settled') this.queue.push(u);
    }
  }

  // ── workers ───────────────────────────────────────────────────────────────────────────────

  private spawn(): void {
    const w = new PoolWorker(this.nextWorkerId++, this.config.runtime);
    w.board = this.newBoard();
    const spawnFn = this.config.runtime === 'thread' ? spawnThread : spawnProcess;
    this.workers.add(w);
    try {
      w.rt = spawnFn(
        {
          entry: WORKER_ENTRY,
          init: {
            module: this.config.module,
            workerId: w.id,
            concurrency: this.config.concurrency,
            initializer: this.config.initializer,
            initArgs: this.config.initArgs,
            limits: this.workerLimits,
            board: this.config.runtime === 'thread' ? w.board?.buffer : undefined,
            boardSegment: w.board?.segment?.name,
          },
          execArgv: this.config.execArgv,
          env: this.config.env,
          heapMb: this.heapMb,
        },
        { message: (m) => this.onMessage(w, m), exit: (e) => this.onExit(w, e) },
      );
      // A worker that never becomes ready (e.g. a tiny RLIMIT_DATA hangs Node) must not hold the pool.
      w.idleTimer = setTimeout(() => {
        if (w.state === 'starting') this.stopWorker(w, START_TIMEOUT, true);
      }, this.config.limits.startTimeout);
      w.idleTimer.unref();
    } catch (error) {
      // The runtime refused synchronously (e.g. a Node flag worker threads do not accept): no
      // retry can succeed, so every task is told why now.
      this.workers.delete(w);
      w.to('exited');
      const why = error instanceof Error ? error.message : String(error);
      this.breakPool(
        new WorkerStartError(`a ${this.config.runtime} worker could not be created: ${why}`, {
          cause: error,
        }),
      );
    }
  }

  private newBoard(): ClaimBoard | undefined {
    if (this.config.runtime === 'thread') return new ClaimBoard();
    if (!shmStatus().crossProcess) return undefined;
    try {
      const segment = internalSegment(() => SharedMemory.create({ size: BOARD_SLOTS * 4 }));
      return new ClaimBoard(segment.buffer, segment);
    } catch {
      return undefined; // /dev/shm full or unusable: this worker is simply not stolen from
    }
  }

  private spawnForBacklog(): void {
    if (this.closing || this.terminated || this.broken || this.respawnTimer || this.guard?.held) return;
    let live = 0;
    for (const w of this.workers) if (w.state !== 'draining' && w.state !== 'stopping') live++;
    const wanted = Math.min(this.config.workers, live + this.queued);
    for (let i = live; i < wanted; i++) this.spawn();
  }

  private onEmpty(w: PoolWorker): void {
    if (w.state === 'busy') w.to('idle');
    if (w.state === 'draining') {
      this.stopWorker(w, w.stopReason ?? 'retired');
      return;
    }
    if (w.tasksDone >= this.config.maxTasksPerWorker) {
      this.retire(w, 'maxTasksPerWorker reached');
      return;
    }
    if (w.state === 'idle' && Number.isFinite(this.config.idleTimeout)) {
      if (w.idleTimer) clearTimeout(w.idleTimer);
      w.idleTimer = setTimeout(() => {
        if (w.state === 'idle' && w.inflight.size === 0) this.retire(w, 'idle');
      }, this.config.idleTimeout);
      w.idleTimer.unref();
    }
    this.checkIdle();
  }

  /** Stop giving the worker work; it stops once what it holds is done. */
  retire(w: PoolWorker, reason: string): void {
    if (!w.accepting) return;
    this.recycles++;
    w.stopReason = reason;
    w.to('draining');
    if (w.inflight.size === 0) this.stopWorker(w, reason);
    this.schedule();
  }

  /** `kill`: now, whatever it holds (its units are then settled by onExit); else ask it to exit. */
  private stopWorker(w: PoolWorker, reason: string, kill = false): void {
    if (w.state === 'exited') return;
    if (w.stopReason === undefined || w.state !== 'stopping') w.stopReason = reason;
    if (w.idleTimer) clearTimeout(w.idleTimer);
    // A starting worker does not listen for 'stop' yet: it can only be killed.
    const starting = w.state === 'starting';
    w.to('stopping');
    if (kill || starting || w.inflight.size > 0) w.rt.kill();
    else {
      try {
        w.rt.send({ t: 'stop' });
      } catch {
        w.rt.kill();
      }
    }
  }

  /**
   * The one place that decides what an exit means. Units with results are already settled; of the
   * rest, the first `concurrency` were running (they fail, or are retried if allowed) and the others
   * never started (they go back to the front of the queue, in order).
   */
  private onExit(w: PoolWorker, exit: RuntimeExit): void {
    const wasStarting = w.state === 'starting';
    const planned = w.state === 'stopping' ? w.stopReason : undefined;
    w.exit = exit;
    w.to('exited');
    this.workers.delete(w);
    if (w.idleTimer) clearTimeout(w.idleTimer);
    w.board?.segment?.close();
    const info: WorkerExit = {
      workerId: w.id,
      pid: w.rt.pid,
      threadId: w.rt.threadId,
      exitCode: exit.exitCode,
      signal: exit.signal,
      detail: exit.detail,
    };
    this.events.workerExit({ ...info, reason: planned ?? 'crashed' });

    const held = [...w.inflight.values()];
    w.inflight.clear();
    const requeue: Unit[] = [];
    held.forEach((u, i) => {
      if (u.state === 'settled') return;
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

    if (wasStarting && (!planned || planned === START_TIMEOUT) && !this.broken) {
      this.onStartFailure(
        new WorkerStartError(
          `worker ${w.id} exited before it was ready (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.exitCode}`})` +
            (exit.detail ? `: ${exit.detail}` : ''),
        ),
      );
    }
    this.schedule();
    this.checkIdle();
    if (this.workers.size === 0) for (const resolve of this.exitWaiters.splice(0)) resolve();
  }

  /** Back off between failed starts; after several in a row, fail what waits instead of spinning. */
  private onStartFailure(error: Error): void {
    this.startFailures++;
    this.events.workerError(error);
    if (this.startFailures >= MAX_START_FAILURES) {
      for (const u of this.queue.drain()) {
        if (u.state !== 'settled') this.settleFail(u, error);
      }
      this.queued = 0;
      this.startFailures = 0;
      return;
    }
    const delay = Math.min(100 * 2 ** (this.startFailures - 1), MAX_BACKOFF_MS);
    // Not unref'd: while tasks wait for a worker, this timer is what keeps the process alive.
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = undefined;
      this.spawnForBacklog();
    }, delay);
  }

  private breakPool(error: Error): void {
    if (this.broken) return;
    this.broken = error;
    for (const u of this.queue.drain()) if (u.state !== 'settled') this.settleFail(u, error);
    this.queued = 0;
    for (const w of [...this.workers]) this.stopWorker(w, 'the task module failed to load', true);
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

  private whenExited(): Promise<void> {
    if (this.workers.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.whenIdle();
    this.guard?.stop();
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    for (const w of [...this.workers]) this.stopWorker(w, 'pool closed');
    await this.whenExited();
  }

  async terminate(): Promise<void> {
    this.terminated = true;
    this.guard?.stop();
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    const error = new PoolClosedError('the pool was terminated before this task ran');
    for (const u of this.queue.drain()) if (u.state !== 'settled') this.settleFail(u, error);
    this.queued = 0;
    for (const w of [...this.workers]) this.stopWorker(w, 'pool terminated', true);
    await this.whenExited();
    this.checkIdle();
  }
}
