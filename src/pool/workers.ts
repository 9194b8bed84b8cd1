/**
 * The workers' side of the pool: starting them (with their limits, heap and claim board), retiring
 * them between tasks, stopping them, backing off when they fail to start. What an exit means for the
 * units a worker held is not decided here but in exits.ts, the one place for it.
 */
import { type Deadline, deadlines } from '../deadline.js';
import { type WorkerExit, WorkerStartError } from '../errors.js';
import { classifyDeath } from '../limits/classify.js';
import { heapMbFor, rlimitsFor } from '../limits/limits.js';
import { OomWatch } from '../limits/oom.js';
import { BOARD_BYTES, type FromWorker, type WorkerLimits } from '../runtime/protocol.js';
import { startWorker } from '../runtime/spawn.js';
import type { RuntimeExit } from '../runtime/types.js';
import { SharedMemory, shmStatus } from '../shm/index.js';
import { internalSegment } from '../shm/shared-memory.js';
import type { PoolConfig } from './config.js';
import { ClaimBoard } from './steal.js';
import { describeCause, isShutdown, PoolWorker, type StopCause } from './worker.js';

/** Consecutive start failures after which waiting work is failed instead of waiting forever. */
const MAX_START_FAILURES = 5;
const MAX_BACKOFF_MS = 5000;
const OOM_READ_MS = 100;
/** After a worker dies under its task, a warm spare is kept this long (the next death is likely near). */
const SPARE_HOLD_MS = 10_000;

export interface WorkerSetHost {
  message(w: PoolWorker, m: FromWorker): void;
  /** The worker is gone; its units are the host's to settle. `cause`: why the pool stopped it, if it did. */
  exited(w: PoolWorker, exit: RuntimeExit, cause: StopCause | undefined, info: WorkerExit): void;
  /** A worker changed state: the host dispatches and checks its progress invariant. */
  changed(): void;
  /** Start failures in a row reached the limit: fail what waits with this error. */
  giveUp(error: Error): void;
  /** The runtime refused to create workers at all: no retry can help. */
  unrecoverable(error: Error): void;
  workerStart(info: { workerId: number; pid: number | undefined; threadId: number | undefined }): void;
  workerExit(info: WorkerExit & { reason: string }): void;
  workerError(error: Error): void;
}

export class WorkerSet implements Iterable<PoolWorker> {
  readonly all = new Set<PoolWorker>();
  /** Workers retired between tasks, for stats. */
  recycles = 0;
  private nextId = 1;
  private startFailures = 0;
  private respawnTimer: Deadline | undefined = undefined;
  /** Until when a spare is kept ready: SPARE_HOLD_MS after the latest death under a task. */
  private spareUntil = -Infinity;
  private readonly exitWaiters: (() => void)[] = [];
  private readonly limits: WorkerLimits;
  private readonly heapMb: number | undefined;
  private readonly oom: OomWatch | undefined;

  constructor(
    private readonly config: PoolConfig,
    private readonly host: WorkerSetHost,
  ) {
    const { limits, recycle } = config;
    this.limits = {
      rlimits: rlimitsFor(limits),
      cpuTime: limits.cpuTime,
      heapAbove: recycle.whenHeapAbove,
      detectLeaks: config.detectLeaks,
    };
    this.heapMb = heapMbFor(limits);
    // A thread taken by the OOM killer takes the whole program with it: only processes need this.
    this.oom = config.runtime === 'process' ? OomWatch.forThisProcess() : undefined;
  }

  [Symbol.iterator](): Iterator<PoolWorker> {
    return this.all[Symbol.iterator]();
  }

  get size(): number {
    return this.all.size;
  }

  /** Waiting out a back-off: no worker should be started now. */
  get backingOff(): boolean {
    return this.respawnTimer !== undefined;
  }

  /** A worker will take queued work: one is live (starting or accepting), or a start is scheduled. */
  get pending(): boolean {
    if (this.respawnTimer) return true;
    for (const w of this.all) if (w.live) return true;
    return false;
  }

  /** Starts a worker for waiting work: the spare, if there is one, else a new one. */
  start(): void {
    if (!this.promote()) this.spawn();
  }

  spawn(): PoolWorker | undefined {
    const { config } = this;
    const w = new PoolWorker(this.nextId++, config.runtime, () => this.host.changed());
    w.board = this.newBoard();
    if (config.runtime === 'process' && config.limits.rss !== undefined && !config.recycle.onBreach)
      w.rssStopKey = crypto.randomUUID();
    w.oomKillsSeen = this.oom?.kills();
    this.all.add(w);
    try {
      w.rt = startWorker(
        { runtime: config.runtime, execArgv: config.execArgv, env: config.env, heapMb: this.heapMb },
        {
          module: config.module,
          workerId: w.id,
          concurrency: config.concurrency,
          initializer: config.initializer,
          teardown: config.teardown,
          captureOutput: config.captureOutput,
          initArgs: config.initArgs,
          limits: this.limits,
          board: config.runtime === 'thread' ? w.board?.buffer : undefined,
          boardSegment: w.board?.segment?.name,
          parentPid: process.pid,
          rssGuard: config.runtime === 'process' ? config.limits.rss : undefined,
          rssStopKey: w.rssStopKey,
        },
        { message: (m) => this.host.message(w, m), exit: (e) => this.onExit(w, e) },
      );
      // A worker that never becomes ready (a module that never loads, a tiny RLIMIT_DATA that hangs
      // Node) must not hold the pool: it is stopped, and that counts as a failed start.
      const ms = config.limits.startTimeout;
      w.timer = deadlines.after(ms, () => {
        if (w.state === 'starting') this.stop(w, { kind: 'start-timeout', ms }, true);
      });
      return w;
    } catch (error) {
      this.all.delete(w);
      w.board?.segment?.close();
      w.to('exited');
      const why = error instanceof Error ? error.message : String(error);
      this.host.unrecoverable(
        new WorkerStartError(`a ${config.runtime} worker could not be created: ${why}`, { cause: error }),
      );
      return undefined;
    }
  }

  /**
   * A worker died under its task (a breach, a crash): the next death is likely near, so for a while a
   * spare is kept started and ready to take the place of the next worker that ends.
   */
  noteDeath(): void {
    this.spareUntil = performance.now() + SPARE_HOLD_MS;
  }

  /** Starts a spare if one is wanted and none is there. The caller has checked the pool has work. */
  keepSpare(): void {
    if (this.backingOff || performance.now() >= this.spareUntil) return;
    // Not beside a worker that is starting: two starts at once slow both, and that one is needed now.
    for (const w of this.all) if (w.spare || w.state === 'starting') return;
    const w = this.spawn();
    if (w) w.spare = true;
  }

  /** The spare, started or starting, takes a worker's place now. False when there is none. */
  private promote(): boolean {
    for (const w of this.all) {
      if (!w.spare || (w.state !== 'starting' && w.state !== 'idle')) continue;
      w.spare = false;
      if (w.state === 'idle') {
        deadlines.cancel(w.timer);
        w.timer = undefined;
        this.onEmpty(w);
      }
      this.host.changed();
      return true;
    }
    return false;
  }

  private newBoard(): ClaimBoard | undefined {
    if (this.config.runtime === 'thread') return new ClaimBoard();
    if (!shmStatus().crossProcess) return undefined;
    try {
      const segment = internalSegment(() => SharedMemory.create({ size: BOARD_BYTES }));
      return new ClaimBoard(segment.buffer, segment);
    } catch {
      return undefined; // /dev/shm full or unusable: this worker is simply not stolen from
    }
  }

  /** Starts workers for waiting units, up to the pool size and to `room` more (the memory budget's). */
  spawnFor(backlog: number, room = Number.POSITIVE_INFINITY): void {
    if (this.backingOff) return;
    let live = 0;
    for (const w of this.all) if (w.live) live++;
    const wanted = Math.min(this.config.workers, live + backlog);
    // The spare takes a place first: it is started already and counted in the budget's total.
    for (let i = live; i < wanted; i++) {
      if (this.promote()) continue;
      if (room-- <= 0) break;
      this.spawn();
    }
  }

  /** The worker said it is ready. False when it was stopped meanwhile. */
  ready(w: PoolWorker): boolean {
    if (w.state !== 'starting') return false;
    deadlines.cancel(w.timer);
    w.timer = undefined;
    w.readyAt = performance.now();
    this.startFailures = 0;
    w.to('idle');
    this.host.workerStart({ workerId: w.id, pid: w.rt.pid, threadId: w.rt.threadId });
    return true;
  }

  /** The worker holds nothing now: retire it if it is due, or start its idle clock. */
  onEmpty(w: PoolWorker): void {
    if (w.spare) {
      // A spare nobody needed goes once deaths have stopped coming for a while.
      deadlines.cancel(w.timer);
      w.timer = deadlines.after(Math.max(0, this.spareUntil - performance.now()), () => {
        w.timer = undefined;
        if (!w.spare || w.state !== 'idle') return;
        if (performance.now() < this.spareUntil) this.onEmpty(w);
        else this.stop(w, { kind: 'retired', reason: 'spare no longer needed' });
      });
      return;
    }
    if (w.state === 'busy') w.to('idle');
    if (w.tasksDone >= this.config.maxTasksPerWorker) {
      this.retire(w, { kind: 'retired', reason: 'maxTasksPerWorker reached' });
      return;
    }
    if (w.state === 'idle') {
      deadlines.cancel(w.timer);
      w.timer = deadlines.after(this.config.idleTimeout, () => {
        w.timer = undefined;
        if (w.state !== 'idle' || w.inflight.size > 0) return;
        // An elastic pool keeps its minimum; a fixed one lets any idle worker go (idleTimeout).
        const { minWorkers, workers } = this.config;
        if (minWorkers < workers && this.liveCount() <= minWorkers) return;
        this.retire(w, { kind: 'retired', reason: 'idle' });
      });
    }
  }

  private liveCount(): number {
    let n = 0;
    for (const w of this.all) if (w.live) n++;
    return n;
  }

  /**
   * Stop giving the worker work; it is stopped once nothing it runs is owed to a caller
   * (`stopIfDrained`, tried in every dispatch). Only the first retirement counts and keeps its cause.
   */
  retire(w: PoolWorker, cause: StopCause): void {
    if (w.spare && w.state === 'idle') {
      this.stop(w, cause);
      return;
    }
    if (!w.accepting) return;
    this.recycles++;
    w.cause = cause;
    deadlines.cancel(w.timer);
    w.timer = undefined;
    w.to('draining');
  }

  /**
   * A draining worker stops once none of its running slots holds a unit a caller waits for: the
   * zombies among them die with it, and units it holds but never started go back to the queue.
   */
  stopIfDrained(w: PoolWorker): void {
    if (w.state !== 'draining') return;
    let i = 0;
    for (const [seq] of w.inflight) {
      if (i++ >= this.config.concurrency) break;
      if (!w.zombies.has(seq)) return;
    }
    this.stop(w, w.cause ?? { kind: 'retired', reason: 'retired' }, w.inflight.size > 0);
  }

  /**
   * `kill`: now, whatever it holds (its units are then settled on exit); else ask it to exit. The cause
   * is recorded now, as a value: what the exit means is decided from it, not from the state at exit.
   * A cause already recorded stays, but a shutdown of the pool overrides a retirement.
   */
  stop(w: PoolWorker, cause: StopCause, kill = false): void {
    if (w.state === 'exited') return;
    if (!w.cause || w.cause.kind === 'retired' || (cause.kind === 'terminated' && isShutdown(w.cause))) {
      w.cause = cause;
    }
    deadlines.cancel(w.timer);
    w.timer = undefined;
    // A starting worker does not listen for 'stop' yet: it can only be killed.
    const starting = w.state === 'starting';
    w.to('stopping');
    if (kill || starting || w.inflight.size > 0) w.rt.kill();
    else {
      try {
        w.rt.send({ t: 'stop' });
        // Its teardown (or a worker that does not answer at all) gets stopTimeout, then it is killed.
        w.timer = deadlines.after(this.config.stopTimeout, () => {
          w.timer = undefined;
          w.rt.kill();
        });
      } catch {
        w.rt.kill();
      }
    }
  }

  stopAll(cause: StopCause, kill: boolean): void {
    deadlines.cancel(this.respawnTimer);
    this.respawnTimer = undefined;
    for (const w of [...this.all]) this.stop(w, cause, kill);
  }

  private onExit(w: PoolWorker, exit: RuntimeExit): void {
    const cause = w.cause;
    w.exit = exit;
    w.to('exited');
    this.all.delete(w);
    deadlines.cancel(w.timer);
    w.timer = undefined;
    w.arena?.close();
    if (!cause && exit.signal === 'SIGKILL' && !w.breach) this.checkOomKill(w);
    const info: WorkerExit = {
      workerId: w.id,
      pid: w.rt.pid,
      threadId: w.rt.threadId,
      exitCode: exit.exitCode,
      signal: exit.signal,
      detail: exit.detail,
    };
    this.host.workerExit({ ...info, reason: cause ? describeCause(cause) : this.deathReason(w, exit) });
    try {
      this.host.exited(w, exit, cause, info);
    } finally {
      // Only now: the exit side reads on the board how far the worker got, and takes results off it.
      w.board?.segment?.close();
    }
    // Never ready, and not stopped by the pool's shutdown or for a fatal error it already reported:
    // a failed start (it died, or its start timed out), which backs off and is counted.
    if (w.readyAt === undefined && !isShutdown(cause) && cause?.kind !== 'fatal') {
      const how =
        cause?.kind === 'start-timeout'
          ? `was not ready within ${cause.ms} ms and was stopped`
          : `exited before it was ready (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.exitCode}`})`;
      this.startFailed(`worker ${w.id} ${how}${exit.detail ? `: ${exit.detail}` : ''}`);
    }
    this.host.changed();
    if (this.all.size === 0) for (const resolve of this.exitWaiters.splice(0)) resolve();
  }

  /**
   * The cgroup's OOM-kill count as of now (read at most every 100 ms per worker): what a later
   * death is compared with, so only kills while it ran its latest work can be taken for its own.
   */
  noteAlive(w: PoolWorker): void {
    if (!this.oom) return;
    const now = performance.now();
    if (now - w.oomReadAt < OOM_READ_MS) return;
    w.oomReadAt = now;
    w.oomKillsSeen = this.oom.kills();
  }

  /** A SIGKILL nobody here sent, while the cgroup counted an OOM kill: the cgroup limit was hit. */
  private checkOomKill(w: PoolWorker): void {
    const before = w.oomKillsSeen;
    const now = this.oom?.kills();
    if (before !== undefined && now !== undefined && now > before) {
      w.breach = { kind: 'cgroup', limit: this.oom!.limit(), value: undefined };
    }
  }

  /** Why an unplanned exit happened, as far as the limits in force tell. */
  private deathReason(w: PoolWorker, exit: RuntimeExit): string {
    const breach = classifyDeath({ ...exit, observed: w.breach }, this.config.limits);
    if (!breach) return 'crashed';
    return breach.type === 'cpu' ? 'cpu time limit' : `${breach.kind} limit`;
  }

  /** Back off between failed starts; after several in a row, fail what waits instead of spinning. */
  private startFailed(message: string): void {
    this.startFailures++;
    const error = new WorkerStartError(message);
    this.host.workerError(error);
    if (this.startFailures >= MAX_START_FAILURES) {
      this.startFailures = 0;
      this.host.giveUp(error);
      return;
    }
    const delay = Math.min(100 * 2 ** (this.startFailures - 1), MAX_BACKOFF_MS);
    // Held (ref'd): while tasks wait for a worker, this is what keeps the process alive.
    this.respawnTimer = deadlines.after(
      delay,
      () => {
        this.respawnTimer = undefined;
        this.host.changed();
      },
      { ref: true },
    );
  }

  whenExited(): Promise<void> {
    if (this.all.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }
}
