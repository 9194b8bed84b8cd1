/**
 * Tasks of bench/contain.mjs: a realistic mix of CPU-bound items, a few of which misbehave. Every
 * task takes one argument (an object) so that piscina's calling convention fits, and says where and
 * when it started (epoch milliseconds with sub-millisecond resolution, comparable across processes),
 * which is how the benchmark sees a replacement worker take its first item after a breach.
 */
import { openSync, writeFileSync } from 'node:fs';

const MiB = 2 ** 20;
const now = () => performance.timeOrigin + performance.now();

/** Deterministic CPU work: `n` rounds of a small floating-point recurrence (calibrated by the caller). */
export function work(n) {
  let x = 0.5;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    x = 3.9 * x * (1 - x);
    acc += Math.sqrt(x + i);
  }
  return acc;
}

/** A greedy item's pace mark: the time it took to allocate and touch its first PACE_MIB. */
const PACE_MIB = 150;

/**
 * One item of the mix. kind: 'good' | 'throw' | 'leak' | 'greedy'. A greedy item allocates and
 * touches `greedyMiB` of Buffers in 10 MiB steps. With `traceDir` set it writes, in that directory,
 * `<pid>-<start>.pace`: the milliseconds its first 150 MiB took (well under any limit here: a process
 * that reuses pages it touched before is faster than a fresh one, whose every page faults in); and
 * with `rssLimit` too, `<pid>-<start>.cross`: the moment its process's RSS first passed the limit (the
 * start of a breach, as the worker itself saw it).
 */
export function item({ kind, n, greedyMiB = 320, rssLimit, traceDir }) {
  const start = now();
  if (kind === 'greedy') {
    // 10 MiB Buffers, touched a MiB at a time: the crossing is recorded just before the MiB that
    // takes the process past the limit is touched (a guard may end it within that MiB).
    const held = [];
    let crossed = rssLimit === undefined || !traceDir;
    for (let got = 0; got < greedyMiB; got += 10) {
      if (got === PACE_MIB && traceDir)
        writeFileSync(`${traceDir}/${process.pid}-${start}.pace`, String(now() - start));
      const b = Buffer.allocUnsafe(10 * MiB);
      for (let at = 0; at < b.length; at += MiB) {
        if (!crossed && process.memoryUsage.rss() + MiB > rssLimit) {
          crossed = true;
          writeFileSync(`${traceDir}/${process.pid}-${start}.cross`, String(now()));
        }
        b.fill(1, at, at + MiB);
      }
      held.push(b);
    }
    return { pid: process.pid, start, end: now(), value: held.length };
  }
  const value = work(n);
  if (kind === 'throw') throw new Error(`item failed on purpose (${value})`);
  if (kind === 'leak') openSync('/dev/null', 'r'); // never closed
  return { pid: process.pid, start, end: now(), value };
}

/** A worker that is up answers at once: what the bare start measurement waits for. */
export function hello() {
  return { pid: process.pid, start: now() };
}

// ── image blur (bench/image.mjs) ──────────────────────────────────────────────────────────────

/**
 * A 3×3 box blur of rows [y0, y1) of a w×h 8-bit image. By copy, `src` holds rows y0-1 .. y1
 * (the halo included, clamped at the edges) and the blurred rows come back as a new Uint8Array.
 * By shared memory, `src` and `dst` are the whole images over SharedArrayBuffers and the rows are
 * written in place.
 */
export function blurRows({ src, dst, w, h, y0, y1, srcY0 = 0 }) {
  const out = dst ?? new Uint8Array((y1 - y0) * w);
  const outY0 = dst ? 0 : y0;
  for (let y = y0; y < y1; y++) {
    const ya = Math.max(0, y - 1) - srcY0;
    const yb = y - srcY0;
    const yc = Math.min(h - 1, y + 1) - srcY0;
    const ra = ya * w;
    const rb = yb * w;
    const rc = yc * w;
    const o = (y - outY0) * w;
    for (let x = 0; x < w; x++) {
      const xa = x > 0 ? x - 1 : 0;
      const xc = x < w - 1 ? x + 1 : w - 1;
      const s =
        src[ra + xa] +
        src[ra + x] +
        src[ra + xc] +
        src[rb + xa] +
        src[rb + x] +
        src[rb + xc] +
        src[rc + xa] +
        src[rc + x] +
        src[rc + xc];
      out[o + x] = (s * 7282) >> 16; // s / 9
    }
  }
  return dst ? y1 - y0 : out;
}
