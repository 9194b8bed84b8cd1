/**
 * What a worker's end means for the units it held: the one place that decides it. Units with results
 * are settled already, and so are zombies (cancelled units, see dispatcher.ts). Of the rest, the claim
 * board tells (without one, the first `concurrency` ran): the running ones fail, are retried, or are
 * quarantined as poison; the ones that finished with their result left on the board settle with it;
 * the others never started (they go back to the front of the queue, in order).
 *
 * The same decisions serve a unit that failed without a death: whether it may run again (`retry`),
 * and the typed error of a limit it breached (`breachError`). The queue and the units' bookkeeping
 * (counts, signals, spans) stay the dispatcher's; this side reaches them through ExitActions only.
 */
import { channelLinkGone } from '../channel/hub.js';
import { deadlines } from '../deadline.js';
import {
  CpuTimeLimitError,
  type CrashRecord,
  MemoryLimitError,
  PoisonTaskError,
  PoolClosedError,
  WorkerCrashedError,
  type WorkerExit,
} from '../errors.js';
import { type Breach, classifyDeath } from '../limits/classify.js';
import type { Meter } from '../metrics/meter.js';
import type { RuntimeExit } from '../runtime/types.js';
import type { PoolConfig } from './config.js';
import type { PoolLifecycle } from './lifecycle.js';
import { logUnit } from './metrics.js';
import type { Unit } from './unit.js';
import { describeCause, type PoolWorker, type StopCause } from './worker.js';
import type { WorkerSet } from './workers.js';

/** What the exit side asks of the dispatcher, which owns the queue and each unit's bookkeeping. */
export interface ExitActions {
  /** A dead worker no longer holds the unit: it stops counting as sent, and its memoryHint as reserved. */
  released(u: Unit): void;
  /** Queues the unit again, at the front: it was taken from the queue before. */
  requeue(u: Unit): void;
  settleFail(u: Unit, error: Error): void;
  /** The unit settles with the result its worker left on the claim board. */
  salvaged(w: PoolWorker, u: Unit): void;
  /** The unit's sink took it over (split into new units): it is no longer the dispatcher's. */
  handedOver(u: Unit, error: Error): void;
  /** A breach's typed error was made: it is counted and told to 'breach' listeners. */
  breached(error: MemoryLimitError | CpuTimeLimitError): void;
}

/** How a worker died under a unit, for the unit's crash history (PoisonTaskError). */
function crashRecord(w: PoolWorker, exit: RuntimeExit, breach: Breach | undefined): CrashRecord {
  return {
    workerId: w.id,
    pid: w.rt.pid,
    threadId: w.rt.threadId,
    exitCode: exit.exitCode,
    signal: exit.signal,
    breach: breach ? (breach.type === 'cpu' ? 'cpu-time' : breach.kind) : undefined,
    peakRss: w.peakRss || undefined,
    peakHeapUsed: w.peakHeapUsed || undefined,
    at: Date.now(),
  };
}

/** A broadcast() unit's error when its one worker ends before running it. */
function broadcastLost(w: PoolWorker, u: Unit, info: WorkerExit): WorkerCrashedError {
  return new WorkerCrashedError(
    u.name,
    info,
    `worker ${w.id} ended before it ran the broadcast of '${u.name}'`,
  );
}

export class Exits {
  constructor(
    private readonly config: PoolConfig,
    private readonly life: PoolLifecycle,
    private readonly meter: Meter,
    private readonly workers: WorkerSet,
    private readonly actions: ExitActions,
  ) {}

  /** The worker is gone (`cause`: why the pool stopped it, if it did): settles or requeues what it held. */
  exited(w: PoolWorker, exit: RuntimeExit, cause: StopCause | undefined, info: WorkerExit): void {
    channelLinkGone(w.rt, info); // queue items it held go back (channel/broker.ts)
    const held = [...w.inflight];
    w.inflight.clear();
    for (const [, u] of held) this.actions.released(u);
    const terminated = this.life.terminated;
    const requeue: Unit[] = [];
    if (!terminated && (!cause || cause.kind === 'breach')) {
      this.meter.crashes++;
      // Died under its task: more such deaths are likely, and a spare makes each cost a death only.
      if (held.length > 0 && this.life.state === 'open') this.workers.noteDeath();
    }
    held.forEach(([seq, u], i) => {
      if (w.zombies.has(seq) || u.state === 'settled' || u.worker !== w) return;
      deadlines.cancel(u.deadline);
      u.deadline = undefined;
      // The claim board says exactly how far the worker got with each unit; without one, the worker
      // posted every result before it started the next unit, so its first `concurrency` were running.
      const phase = w.board?.phase(u) ?? (i < this.config.concurrency ? 'running' : 'waiting');
      if (phase === 'waiting') {
        if (u.pin) {
          this.actions.settleFail(u, broadcastLost(w, u, info));
          return;
        }
        u.attempts--; // never started: this try does not count
        requeue.push(u);
        return;
      }
      if (phase === 'finished') {
        // It ran to its end and its result waited on the claim board for batch-mates (worker/runner.ts).
        this.actions.salvaged(w, u);
        return;
      }
      if (terminated) {
        this.actions.settleFail(
          u,
          new PoolClosedError('the pool was terminated while this task was running'),
        );
        return;
      }
      const breach = classifyDeath({ ...exit, observed: w.breach }, this.config.limits);
      if (this.meter.following) logUnit(this.meter, w, u, w.startedAt, breach ? 'breach' : 'crash');
      const error = breach
        ? this.breachError(u, breach, w)
        : new WorkerCrashedError(
            u.name,
            info,
            cause
              ? `worker ${w.id} was stopped (${describeCause(cause)}) while running task '${u.name}'`
              : undefined,
          );
      // The task's own doing (it crashed, or breached a limit), not the pool's: it counts toward
      // quarantine, and a chunk runs again item by item so that the next death names its item. A
      // stop for the memory budget is the pool's: the sum of workers was too much, not this input
      // (four growing tasks under a tight budget had one quarantined after two such stops).
      if (!cause || (cause.kind === 'breach' && cause.limit !== 'budget')) {
        (u.crashes ??= []).push(crashRecord(w, exit, breach));
        if (u.crashes.length >= this.config.poisonAfter) {
          this.actions.settleFail(u, new PoisonTaskError(u.name, u.crashes, { cause: error }));
          return;
        }
        if (this.retriable(u) && u.sink.split?.(u)) {
          this.actions.handedOver(u, error);
          return;
        }
      }
      if (!this.retry(u)) this.actions.settleFail(u, error);
    });
    w.zombies.clear();
    w.acked.clear();
    // broadcast() units meant for this worker alone, which it will now never run.
    for (const u of w.pinned.splice(0)) this.actions.settleFail(u, broadcastLost(w, u, info));
    for (let i = requeue.length - 1; i >= 0; i--) {
      if (terminated) this.actions.settleFail(requeue[i]!, new PoolClosedError());
      else this.actions.requeue(requeue[i]!);
    }
  }

  /** The typed error of a breach (counted, and told to 'breach' listeners). */
  breachError(u: Unit, breach: Breach, w: PoolWorker, cause?: unknown): Error {
    const who = { workerId: w.id, pid: w.rt.pid, signal: w.exit?.signal ?? null, detail: w.exit?.detail };
    const error =
      breach.type === 'cpu'
        ? new CpuTimeLimitError(u.name, breach.limit, who)
        : new MemoryLimitError(u.name, breach.kind, breach.limit, breach.observed, who, {
            cause,
            inPlace: breach.inPlace,
          });
    w.breaches++;
    this.actions.breached(error);
    return error;
  }

  /** Whether the unit has tries left, the pool still runs work (closing included) and someone waits for it. */
  private retriable(u: Unit): boolean {
    return u.attempts <= u.retries && this.life.running && u.sink.wants(u);
  }

  /** Runs the unit again if it may (see retriable). */
  retry(u: Unit): boolean {
    if (!this.retriable(u)) return false;
    this.meter.retries++;
    deadlines.cancel(u.deadline);
    u.deadline = undefined;
    u.worker = undefined;
    this.actions.requeue(u);
    return true;
  }
}
