/**
 * The memory side of the pool: samples worker RSS on one timer, enforces limits.rss, retires workers
 * over recycle.whenRssAbove, and keeps the pool (parent + workers) under memoryBudget: dispatch and
 * spawning pause when near it, idle workers go first, and if running tasks still push the total over,
 * the largest worker is stopped. One task may always run, so a tight budget slows work but never
 * deadlocks it.
 */
import type { ResolvedLimits, ResolvedRecycle } from '../limits/limits.js';
import { readRss } from '../limits/memory.js';
import { rssCeiling } from '../limits/rss-guard.js';
import type { PoolWorker } from './worker.js';

/** Dispatch resumes below this share of the budget, so it does not flap at the edge. */
const RESUME_AT = 0.9;

export interface MemoryActions {
  workers(): Iterable<PoolWorker>;
  retire(w: PoolWorker, reason: string): void;
  kill(w: PoolWorker, breach: { kind: 'rss' | 'budget'; limit: number; value: number }): void;
  resumed(): void;
}

export class MemoryGuard {
  total = 0;
  peakTotal = 0;
  held = false;
  heldMs = 0;
  /**
   * Most tasks allowed to run at once under the budget. Stopping a worker for the budget lowers it
   * (its task would only grow again next to the others); quiet completions raise it one at a time.
   */
  cap = Infinity;
  private heldSince = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limits: ResolvedLimits,
    private readonly recycle: ResolvedRecycle,
    readonly budget: number | undefined,
    private readonly actions: MemoryActions,
  ) {
    this.timer = setInterval(() => this.sample(), limits.sampleInterval);
    this.timer.unref();
  }

  static needed(limits: ResolvedLimits, recycle: ResolvedRecycle, budget: number | undefined): boolean {
    return limits.rss !== undefined || recycle.whenRssAbove !== undefined || budget !== undefined;
  }

  sample(): void {
    let total = process.memoryUsage.rss();
    const busy: PoolWorker[] = [];
    for (const w of this.actions.workers()) {
      if (w.rt.pid === undefined || w.state === 'exited') continue;
      const rss = readRss(w.rt.pid);
      if (rss === undefined) continue;
      w.rss = rss;
      if (rss > w.peakRss) w.peakRss = rss;
      total += rss;
      const rssLimit = this.limits.rss;
      if (
        rssLimit !== undefined &&
        rss > (w.rssInPlace ? rssCeiling(rssLimit) : rssLimit) &&
        w.state !== 'stopping'
      ) {
        this.actions.kill(w, { kind: 'rss', limit: rssLimit, value: rss });
        continue;
      }
      if (this.recycle.whenRssAbove !== undefined && rss > this.recycle.whenRssAbove) {
        this.actions.retire(w, `rss ${rss} above recycle.whenRssAbove`);
      }
      if (w.inflight.size > 0) busy.push(w);
    }
    this.total = total;
    if (total > this.peakTotal) this.peakTotal = total;
    if (this.budget !== undefined) this.enforceBudget(total, busy);
  }

  private enforceBudget(total: number, busy: PoolWorker[]): void {
    const budget = this.budget!;
    if (total > budget) {
      if (!this.held) {
        this.held = true;
        this.heldSince = performance.now();
      }
      let over = total - budget;
      // The warm spare first: it runs nothing, so it goes before any worker that does.
      for (const spare of [true, false]) {
        for (const w of this.actions.workers()) {
          if (over <= 0) break;
          if (w.spare === spare && w.state === 'idle' && w.inflight.size === 0) {
            this.actions.retire(w, 'memory budget');
            over -= w.rss;
          }
        }
      }
      if (over > 0 && busy.length > 1) {
        const largest = busy.reduce((a, b) => (b.rss > a.rss ? b : a));
        this.cap = Math.max(1, busy.length - 1);
        this.actions.kill(largest, { kind: 'budget', limit: budget, value: total });
      }
    } else if (this.held && total < budget * RESUME_AT) {
      this.held = false;
      this.heldMs += performance.now() - this.heldSince;
      this.actions.resumed();
    }
  }

  /**
   * Is there room under the budget for one more worker that runs nothing (the warm spare)? Judged by
   * the smallest worker measured, a fresh one being about that size, against the share of the budget
   * dispatch resumes at: a spare must not be what holds the pool back (it would be retired at once
   * for the budget, and started again, over and over). No spare before a worker was measured, and
   * none in a pool of threads under a budget (their memory is the pool's process's). A worker still
   * starting is not a measure: sampled before its module loaded, it reads far below its size.
   */
  roomForSpare(): boolean {
    const budget = this.budget;
    if (budget === undefined) return true;
    if (this.held) return false;
    let smallest = Infinity;
    for (const w of this.actions.workers()) {
      if (w.state !== 'starting' && w.rss > 0 && w.rss < smallest) smallest = w.rss;
    }
    return this.total + smallest <= budget * RESUME_AT;
  }

  /**
   * May another unit start now? Always yes when nothing runs: one task must make progress. `reserved`
   * is the memoryHint of the units running now, counted in full as they may not have grown yet.
   */
  admit(running: number, reserved: number, hint: number): boolean {
    if (this.budget === undefined || running === 0) return true;
    if (this.held || running >= this.cap) return false;
    return this.total + reserved + hint <= this.budget;
  }

  /**
   * How many more workers the budget has room for, by the last sample: the room left divided by the
   * largest worker measured, less the workers not measured yet (starting, or started since the last
   * sample). Until one has been measured, one start at a time. Elastic growth and respawns ask this; the progress invariant does
   * not (one worker may always run).
   */
  workerRoom(workers: Iterable<PoolWorker>): number {
    if (this.budget === undefined) return Number.POSITIVE_INFINITY;
    if (this.held) return 0;
    let each = 0;
    let unmeasured = 0;
    for (const w of workers) {
      if (w.state === 'exited') continue;
      // A thread has no RSS of its own (it is in the parent's): it never counts as unmeasured.
      if (w.state === 'starting' || (w.rss === 0 && w.rt.pid !== undefined)) unmeasured++;
      else if (w.rss > each) each = w.rss;
    }
    if (each === 0) return unmeasured > 0 ? 0 : 1;
    return Math.max(0, Math.floor((this.budget - this.total) / each) - unmeasured);
  }

  /** A unit finished: with room to spare, let one more run at once than before. */
  unitDone(): void {
    if (this.cap !== Infinity && this.budget !== undefined && this.total < this.budget * 0.75) this.cap++;
  }

  heldBackMs(): number {
    return this.heldMs + (this.held ? performance.now() - this.heldSince : 0);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
