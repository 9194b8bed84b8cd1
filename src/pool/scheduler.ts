/**
 * The pool's queue: which waiting unit goes to a worker next.
 *
 * - Priority: a unit with a higher `priority` goes first; equal priorities keep their order (FIFO).
 * - Aging: a unit's priority rises by one for every `agingMs` it has waited, so a steady stream of
 *   high-priority work delays low-priority work but never starves it.
 * - Fairness: within a priority, units are taken round-robin between their keys (each map job is a
 *   key of its own unless the call names one; single calls share one), so one caller's million-item
 *   map does not hold back another caller's apply behind all of its chunks.
 *
 * The common case (one priority, one key) is a single deque: the fast path costs what the plain FIFO
 * did. `peek()` and `shift()` agree: shift() takes what peek() showed.
 */
import { Deque } from './deque.js';
import type { Unit } from './unit.js';

/** Units of one key at one priority, oldest first. */
interface Lane {
  readonly key: unknown;
  readonly units: Deque<Unit>;
}

/** All units of one priority: a lane per key, taken in turn. */
class Level {
  readonly lanes = new Map<unknown, Lane>();
  /** Keys with units, in turn order; `turn` is the next to serve. */
  private ring: Lane[] = [];
  private turn = 0;
  length = 0;

  constructor(readonly priority: number) {}

  push(u: Unit, front: boolean): void {
    let lane = this.lanes.get(u.key);
    if (!lane) {
      lane = { key: u.key, units: new Deque<Unit>() };
      this.lanes.set(u.key, lane);
    }
    if (lane.units.length === 0) this.ring.push(lane);
    if (front) lane.units.unshift(u);
    else lane.units.push(u);
    this.length++;
  }

  /** The lane whose turn it is. */
  current(): Lane {
    if (this.turn >= this.ring.length) this.turn = 0;
    return this.ring[this.turn]!;
  }

  /** Takes the head of the current lane and passes the turn on. */
  shift(): Unit {
    const lane = this.current();
    const u = lane.units.shift()!;
    this.length--;
    if (lane.units.length === 0) {
      this.ring.splice(this.turn, 1);
      this.lanes.delete(lane.key);
    } else this.turn++;
    return u;
  }

  /** The longest a unit here has waited, by its oldest head. */
  oldest(): number {
    let at = Infinity;
    for (const lane of this.ring) {
      const q = lane.units.peek()!.queuedAt;
      if (q < at) at = q;
    }
    return at;
  }
}

export class Scheduler {
  /** Levels by priority, highest first. */
  private levels: Level[] = [];
  private count = 0;
  /** The level peek() chose, kept until the queue changes so that shift() takes the same unit. */
  private chosen: Level | undefined = undefined;

  constructor(private readonly agingMs: number) {}

  get length(): number {
    return this.count;
  }

  /** More than one key or priority is waiting: callers compete, and each turn counts. */
  get contended(): boolean {
    return this.levels.length > 1 || (this.levels.length === 1 && this.levels[0]!.lanes.size > 1);
  }

  push(u: Unit): void {
    this.add(u, false);
  }

  /** Back to the front of its lane (a retry, or a unit whose worker died before starting it). */
  unshift(u: Unit): void {
    this.add(u, true);
  }

  private add(u: Unit, front: boolean): void {
    if (u.queuedAt === 0) u.queuedAt = performance.now();
    let level: Level | undefined;
    let i = 0;
    for (; i < this.levels.length; i++) {
      const l = this.levels[i]!;
      if (l.priority === u.priority) {
        level = l;
        break;
      }
      if (l.priority < u.priority) break;
    }
    if (!level) {
      level = new Level(u.priority);
      this.levels.splice(i, 0, level);
    }
    level.push(u, front);
    this.count++;
    this.chosen = undefined;
  }

  peek(): Unit | undefined {
    if (this.count === 0) return undefined;
    this.chosen ??= this.choose();
    return this.chosen.current().units.peek();
  }

  shift(): Unit | undefined {
    if (this.count === 0) return undefined;
    const level = this.chosen ?? this.choose();
    this.chosen = undefined;
    const u = level.shift();
    this.count--;
    if (level.length === 0) this.levels.splice(this.levels.indexOf(level), 1);
    return u;
  }

  /** Removes and returns every unit, in the order they would have been taken. */
  drain(): Unit[] {
    const out: Unit[] = [];
    for (let u = this.shift(); u !== undefined; u = this.shift()) out.push(u);
    return out;
  }

  /**
   * The level to serve: the highest priority once aged. With one level there is nothing to weigh;
   * else each level's oldest unit lifts it by one per agingMs waited.
   */
  private choose(): Level {
    const levels = this.levels;
    if (levels.length === 1 || !Number.isFinite(this.agingMs)) return levels[0]!;
    const now = performance.now();
    let best = levels[0]!;
    let bestScore = -Infinity;
    for (const level of levels) {
      const score = level.priority + (now - level.oldest()) / this.agingMs;
      if (score > bestScore) {
        best = level;
        bestScore = score;
      }
    }
    return best;
  }
}
