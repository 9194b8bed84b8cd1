/**
 * The one deadline service: every timer corral keeps for a user-given duration (task timeouts,
 * start timeouts, cancel grace periods, idle timeouts, back-off) comes from here, so no user value
 * ever reaches `setTimeout` directly. Node's timers overflow past 2^31-1 ms (~24.8 days) and then fire
 * after 1 ms, and `Infinity` fires at once: here a duration is a number of ms where `Infinity` (or
 * anything not finite) means "never", and long ones are waited out in steps of at most 2^31-1 ms.
 *
 * Deadlines sit in a binary heap behind a single timer armed for the earliest one. Cancelling does
 * not re-arm: the timer may wake once for nothing and then re-arms for the next deadline, which keeps
 * the per-task cost at a heap push and a heap removal (no clearTimeout/setTimeout pair per task).
 */

/** The longest delay Node's timers take without overflowing to 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface Deadline {
  /** When it is due, on the `performance.now()` clock; Infinity once cancelled or fired. */
  readonly at: number;
}

interface Entry extends Deadline {
  at: number;
  fn: () => void;
  ref: boolean;
  index: number;
}

export interface DeadlineOptions {
  /** Keep the process alive while this deadline is pending (default false: it never holds the process). */
  ref?: boolean;
}

export class Deadlines {
  private readonly heap: Entry[] = [];
  private timer: NodeJS.Timeout | undefined = undefined;
  private armedFor = Infinity;
  private refs = 0;

  /** Calls `fn` once, `ms` from now; undefined (nothing scheduled) when `ms` is not finite. */
  after(ms: number, fn: () => void, options?: DeadlineOptions): Deadline | undefined {
    if (!Number.isFinite(ms)) return undefined;
    const entry: Entry = {
      at: performance.now() + Math.max(0, ms),
      fn,
      ref: options?.ref === true,
      index: this.heap.length,
    };
    this.heap.push(entry);
    this.up(entry.index);
    if (entry.ref && this.refs++ === 0) this.timer?.ref();
    if (entry.at < this.armedFor) this.arm();
    return entry;
  }

  /** Cancels a pending deadline; a fired or already cancelled one (or undefined) is ignored. */
  cancel(deadline: Deadline | undefined): void {
    const entry = deadline as Entry | undefined;
    if (!entry || entry.index < 0) return;
    this.remove(entry);
    if (entry.ref && --this.refs === 0) this.timer?.unref();
    if (this.heap.length === 0) this.disarm();
  }

  /** Deadlines pending (for tests and stats). */
  get size(): number {
    return this.heap.length;
  }

  private fire(): void {
    this.timer = undefined;
    this.armedFor = Infinity;
    const now = performance.now();
    // 1 ms of slack: Node may wake a timer a fraction of a millisecond early.
    while (this.heap.length > 0 && this.heap[0]!.at <= now + 1) {
      const entry = this.heap[0]!;
      this.remove(entry);
      if (entry.ref) this.refs--;
      try {
        entry.fn();
      } catch (error) {
        // A failing callback must not hold back the deadlines after it; its error still surfaces.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    if (this.heap.length > 0) this.arm();
  }

  private arm(): void {
    const first = this.heap[0];
    if (!first) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, first.at - performance.now()));
    this.armedFor = first.at;
    this.timer = setTimeout(() => this.fire(), delay);
    if (this.refs === 0) this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
  }

  private remove(entry: Entry): void {
    const i = entry.index;
    const last = this.heap.pop()!;
    entry.index = -1;
    entry.at = Infinity;
    if (last !== entry) {
      this.heap[i] = last;
      last.index = i;
      this.down(i);
      this.up(last.index);
    }
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.at <= h[i]!.at) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const h = this.heap;
    const x = h[a]!;
    const y = h[b]!;
    h[a] = y;
    h[b] = x;
    x.index = b;
    y.index = a;
  }
}

/** The service of this thread: one timer for all of corral's deadlines. */
export const deadlines = new Deadlines();
