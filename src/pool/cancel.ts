/**
 * Cancelling a unit its worker holds (its timeout passed, its signal fired) settles it at once and
 * asks its worker to stop it (the task's signal aborts, see corral/task); the unit stays in the
 * worker's list as a zombie holding its slot. If the task has not returned after `cancelGrace`, the
 * worker takes no more work and is stopped once nothing else it runs is owed to a caller, or at once
 * if its event loop did not even acknowledge the cancel: other tasks on it are never collateral of a
 * cancel. A unit still queued is simply failed.
 */
import { deadlines } from '../deadline.js';
import { AbortError, TaskTimeoutError } from '../errors.js';
import type { Meter } from '../metrics/meter.js';
import type { PoolConfig } from './config.js';
import { logUnit } from './metrics.js';
import type { Unit } from './unit.js';
import type { PoolWorker, StopCause } from './worker.js';
import type { WorkerSet } from './workers.js';

/** What cancelling asks of the dispatcher, which owns the units' settlement and their retries. */
export interface CancelActions {
  settleFail(u: Unit, error: Error): void;
  /** Runs the unit again if it may; false if it may not (it is then the caller's to fail). */
  retry(u: Unit): boolean;
}

export class Canceller {
  constructor(
    private readonly config: PoolConfig,
    private readonly meter: Meter,
    private readonly workers: WorkerSet,
    private readonly actions: CancelActions,
  ) {}

  /** A running unit's timeout passed: it is retried or fails now, and its worker is asked to stop it. */
  expire(u: Unit): void {
    u.deadline = undefined;
    const w = u.worker;
    if (u.state !== 'sent' || !w) return;
    this.meter.timeouts++;
    if (this.meter.following) logUnit(this.meter, w, u, performance.now() - u.timeout, 'timeout');
    this.cancel(w, u, 'timeout', new TaskTimeoutError(u.name, u.timeout));
  }

  /** The unit's signal fired: a queued unit is dropped, a sent one is cancelled in its worker. */
  abort(u: Unit): void {
    if (u.state === 'settled') return;
    if (u.pin && u.state === 'new') {
      this.actions.settleFail(u, new AbortError(u.name, u.signal?.reason));
      return;
    }
    const w = u.worker;
    const error = new AbortError(u.name, u.signal?.reason);
    this.meter.aborts++;
    if (u.state === 'sent' && w) this.cancel(w, u, 'abort', error);
    else this.actions.settleFail(u, error);
  }

  /**
   * Settles a unit its worker holds (a timeout may retry it elsewhere) and tells the worker: the task's
   * signal aborts, or a unit not started yet is dropped. Until the worker answers for it, the unit is a
   * zombie holding its slot; after cancelGrace, see `graceOver`.
   */
  private cancel(w: PoolWorker, u: Unit, why: 'timeout' | 'abort', error: Error): void {
    const seq = u.seq;
    const running = this.isRunning(u);
    w.zombies.add(seq);
    if (running) w.board?.revoke(u);
    if (!(why === 'timeout' && this.actions.retry(u))) this.actions.settleFail(u, error);
    try {
      w.rt.send({ t: 'cancel', seq, why });
    } catch {
      // A dead channel: the exit comes next and frees the slot.
    }
    if (!running) return; // the worker drops it unstarted and says so
    const task = u.name;
    const over = (): void => this.graceOver(w, seq, task, why);
    if (this.config.cancelGrace === 0) over();
    else deadlines.after(this.config.cancelGrace, over);
  }

  /**
   * The cancelled task has not returned. If its worker's event loop answered the cancel, the task is
   * ignoring its signal: the worker takes no more work and stops once nothing else it runs is owed
   * (tasks sharing it finish first). If it did not answer, the loop is blocked: nothing else on the
   * worker can finish either, so it is stopped now.
   */
  private graceOver(w: PoolWorker, seq: number, task: string, why: 'timeout' | 'abort'): void {
    if (!w.zombies.has(seq) || w.state === 'stopping' || w.state === 'exited') return;
    const blocked = !w.acked.has(seq);
    const cause: StopCause = { kind: 'cancelled', task, why, blocked };
    if (blocked) this.workers.stop(w, cause, true);
    else {
      if (w.state === 'draining') w.cause = cause;
      else this.workers.retire(w, cause);
      this.workers.stopIfDrained(w);
    }
  }

  /**
   * Whether the unit is one of the first `concurrency` its worker holds, the ones it runs. Exact for a
   * unit that can be cancelled: a worker holds no result back across one (worker/runner.ts).
   */
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
}
