/**
 * The pool's life, as a table: every change goes through `to()`, which refuses the moves the table
 * does not allow, and tells the dispatcher, which then checks its progress invariant (queued work
 * always has a live or starting worker, or is failed with a typed error).
 *
 *   open ─close()→ closing ─(work done, workers gone)→ closed
 *   open | closing ─(workers cannot start: module, initializer, limits)→ broken ─close()→ closing
 *   any but terminated ─terminate()→ terminated
 */
import { PoolClosedError } from '../errors.js';

export type PoolState = 'open' | 'closing' | 'closed' | 'terminated' | 'broken';

const NEXT: Record<PoolState, readonly PoolState[]> = {
  open: ['closing', 'terminated', 'broken'],
  closing: ['closed', 'terminated', 'broken'],
  broken: ['closing', 'terminated'],
  closed: ['terminated'],
  terminated: [],
};

export class PoolLifecycle {
  state: PoolState = 'open';
  /** Why the pool is broken: what queued and new work fails with. */
  brokenBy: Error | undefined = undefined;

  constructor(private readonly changed: () => void) {}

  to(next: PoolState, cause?: Error): void {
    if (next === this.state) return;
    if (!NEXT[this.state].includes(next)) {
      throw new Error(`corral internal error: the pool cannot go from ${this.state} to ${next}`);
    }
    if (next === 'broken') this.brokenBy = cause;
    this.state = next;
    this.changed();
  }

  /** The error a new call gets now, if any: closing refuses new calls, not the rest of one already made. */
  refusal(): Error | undefined {
    switch (this.state) {
      case 'open':
        return undefined;
      case 'broken':
        return this.brokenBy;
      case 'terminated':
        return new PoolClosedError('the pool was terminated; create a new Pool to submit more work');
      default:
        return new PoolClosedError();
    }
  }

  /** Work already accepted still runs: only terminate() and a broken pool stop it. */
  get running(): boolean {
    return this.state === 'open' || this.state === 'closing';
  }

  get terminated(): boolean {
    return this.state === 'terminated';
  }
}
