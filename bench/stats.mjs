// What the containment benchmarks (contain.mjs, image.mjs) share for reporting: medians of runs
// and the machine's load, printed with each round so a noisy run shows itself.
import { loadavg } from 'node:os';

/** The median of the defined, non-NaN values; undefined when there are none. */
export function median(xs) {
  const v = xs.filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** The 1, 5 and 15 minute load averages, as `uptime` prints them. */
export const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
