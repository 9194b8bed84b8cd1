/**
 * The workers' side of the pool: starting them (with their limits, heap and claim board), retiring
 * them between tasks, stopping them, backing off when they fail to start. What an exit means for the
 * units a worker held is not decided here but in Dispatcher.onExit, the one place for it.
 */
import { type WorkerExit, WorkerStartError } from '../errors.js';
import { classifyDeath } from '../limits/classify.js';
import { heapMbFor, rlimitsFor } from '../limits/limits.js';
import { OomWatch } from '../limits/oom.js';
import { BOARD_SLOTS, type FromWorker, type WorkerLimits } from '../runtime/protocol.js';
import { startWorker } from '../runtime/spawn.js';
import type { RuntimeExit } from '../runtime/types.js';
import { SharedMemory, shmStatus } from '../shm/index.js';
import { internalSegment } from '../shm/shared-memory.js';
import type { PoolConfig } from './config.js';
import { ClaimBoard } from './steal.js';
import { PoolWorker } from './worker.js';

/** Consecutive start failures after which waiting work is failed instead of waiting forever. */
const MAX_START_FAILURES = 5;
const MAX_BACKOFF_MS = 5000;
export const START_TIMEOUT = 'start timeout';
const OOM_READ_MS = 100;

export interface WorkerSetHost {
  message(w: PoolWorker, m: FromWorker): void;
  /** The worker is gone; its units are the host's to settle. */
  exited(w: PoolWorker, exit: RuntimeExit, planned: string | undefined, info: WorkerExit): void;
  /** A worker was idle or done: the host may dispatch, and check whether the pool is idle. */
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
  private respawnTimer: NodeJS.Timeout | undefined = undefined;
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

  spawn(): void {
    const { config } = this;
    const w = new PoolWorker(this.nextId++, config.runtime);
    w.board = this.newBoard();
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
          initArgs: config.initArgs,
          limits: this.limits,
          board: config.runtime === 'thread' ? w.board?.buffer : undefined,
          boardSegment: w.board?.segment?.name,
        },
        { message: (m) => this.host.message(w, m), exit: (e) => this.onExit(w, e) },
      );
      // A worker that never becomes ready (e.g. a tiny RLIMIT_DATA hangs Node) must not hold the pool.
      w.idleTimer = setTimeout(() => {
        if (w.state === 'starting') this.stop(w, START_TIMEOUT, true);
      }, config.limits.startTimeout);
      w.idleTimer.unref();
    } catch (error) {
      this.all.delete(w);
      w.board?.segment?.close();
      w.to('exited');
      const why = error instanceof Error ? error.message : String(error);
      this.host.unrecoverable(
        new WorkerStartError(`a ${config.runtime} worker could not be created: ${why}`, { cause: error }),
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

  /** Starts workers for waiting units, up to the pool size. */
  spawnFor(backlog: number): void {
    if (this.backingOff) return;
    let live = 0;
    for (const w of this.all) if (w.state !== 'draining' && w.state !== 'stopping') live++;
    const wanted = Math.min(this.config.workers, live + backlog);
    for (let i = live; i < wanted; i++) this.spawn();
  }

  /** The worker said it is ready. False when it was stopped meanwhile. */
  ready(w: PoolWorker): boolean {
    if (w.state !== 'starting') return false;
    if (w.idleTimer) clearTimeout(w.idleTimer);
    this.startFailures = 0;
    w.to('idle');
    this.host.workerStart({ workerId: w.id, pid: w.rt.pid, threadId: w.rt.threadId });
    return true;
  }

  /** The worker holds nothing now: retire it if it is due, or start its idle clock. */
  onEmpty(w: PoolWorker): void {
    if (w.state === 'busy') w.to('idle');
    if (w.state === 'draining') {
      this.stop(w, w.stopReason ?? 'retired');
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
  }

  /** Stop giving the worker work; it stops once what it holds is done. */
  retire(w: PoolWorker, reason: string): void {
    if (!w.accepting) return;
    this.recycles++;
    w.stopReason = reason;
    w.to('draining');
    if (w.inflight.size === 0) this.stop(w, reason);
    this.host.changed();
  }

  /** `kill`: now, whatever it holds (its units are then settled on exit); else ask it to exit. */
  stop(w: PoolWorker, reason: string, kill = false): void {
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

  stopAll(reason: string, kill: boolean): void {
    if (this.respawnTimer) clearTimeout(this.respawnTimer);
    this.respawnTimer = undefined;
    for (const w of [...this.all]) this.stop(w, reason, kill);
  }

  private onExit(w: PoolWorker, exit: RuntimeExit): void {
    const wasStarting = w.state === 'starting';
    const planned = w.state === 'stopping' ? w.stopReason : undefined;
    w.exit = exit;
    w.to('exited');
    this.all.delete(w);
    if (w.idleTimer) clearTimeout(w.idleTimer);
    w.board?.segment?.close();
    w.arena?.close();
    if (!planned && exit.signal === 'SIGKILL' && !w.breach) this.checkOomKill(w);
    const info: WorkerExit = {
      workerId: w.id,
      pid: w.rt.pid,
      threadId: w.rt.threadId,
      exitCode: exit.exitCode,
      signal: exit.signal,
      detail: exit.detail,
    };
    this.host.workerExit({ ...info, reason: planned ?? this.deathReason(w, exit) });
    this.host.exited(w, exit, planned, info);
    if (wasStarting && (!planned || planned === START_TIMEOUT)) {
      const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.exitCode}`;
      this.startFailed(
        `worker ${w.id} exited before it was ready (${how})${exit.detail ? `: ${exit.detail}` : ''}`,
      );
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
    // Not unref'd: while tasks wait for a worker, this timer is what keeps the process alive.
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = undefined;
      this.host.changed();
    }, delay);
  }

  whenExited(): Promise<void> {
    if (this.all.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }
}
