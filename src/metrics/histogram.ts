/**
 * A latency histogram cheap enough to feed on every task: log-linear buckets (8 per doubling, so a
 * quantile is off by at most ~9 %) over 1 µs .. ~70 minutes, counted in a typed array. Recording is
 * a log2 and an increment; nothing is allocated.
 */

const PER_DOUBLING = 8;
/** 32 doublings of a microsecond: ~71 minutes. */
const BUCKETS = 32 * PER_DOUBLING;

/** Upper bounds (seconds) of the buckets Prometheus sees: its default ladder, made finer below 10 ms. */
export const EXPOSED_BOUNDS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
  300,
];

export interface HistogramSnapshot {
  /** Observations. */
  count: number;
  /** Their sum, in seconds. */
  sum: number;
  /** Quantiles and the largest observation, in seconds (0 when there is none). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Cumulative counts at EXPOSED_BOUNDS (seconds), then +Inf: the OpenMetrics histogram. */
  buckets: [le: number, count: number][];
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  sum = 0;
  max = 0;

  /** Records one observation of `seconds`. */
  record(seconds: number): void {
    if (!(seconds >= 0)) return;
    const us = seconds * 1e6;
    const i = us <= 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log2(us) * PER_DOUBLING));
    this.counts[i]!++;
    this.count++;
    this.sum += seconds;
    if (seconds > this.max) this.max = seconds;
  }

  /** Upper bound of bucket i, in seconds. */
  private static upper(i: number): number {
    return 2 ** ((i + 1) / PER_DOUBLING) / 1e6;
  }

  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = q * this.count;
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(Histogram.upper(i), this.max);
    }
    return this.max;
  }

  snapshot(): HistogramSnapshot {
    const buckets: [number, number][] = [];
    let i = 0;
    let seen = 0;
    for (const le of EXPOSED_BOUNDS) {
      // A fine bucket counts below `le` when its upper bound is: the exposed count is a lower bound
      // within one fine bucket (~9 %) of the true one.
      while (i < BUCKETS && Histogram.upper(i) <= le) seen += this.counts[i++]!;
      buckets.push([le, seen]);
    }
    buckets.push([Infinity, this.count]);
    return {
      count: this.count,
      sum: this.sum,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.max,
      buckets,
    };
  }
}
