/**
 * How a process worker ended by its rss guard (native/corral.c, armRssGuard) is told apart from any
 * other death: the guard writes one line with the marker below to stderr and exits with the code
 * below. Unlike the heap guard (heap-guard.ts), the parent requires only the code (see rssGuardKill).
 */

export const RSS_GUARD_EXIT = 88;
export const RSS_GUARD_MARKER = 'corral-rss-guard:';
/**
 * The code of the error a process worker throws for a call its rss stop ended in place (native/rss-stop.cc):
 * the worker freed the memory and lives on. Its props: `rss`, the bytes seen at the stop; `limit`.
 */
export const RSS_STOPPED_CODE = 'ERR_CORRAL_RSS_STOPPED';

/**
 * How far past limits.rss a worker whose guard stops calls in place may be seen while it does: the
 * guard's ceiling (the worker passes it to armRss, native/rss-stop.cc), past which it ends the
 * process anyway. Below it the pool's sampler leaves the breach to the guard, which sees it first and
 * may save the process.
 *
 * limit/4, within 32-128 MiB: fresh memory in 2 MiB pages grows ~11 MiB a millisecond on the 2-core
 * VM, and a busy machine (V8's GC threads on both cores) wakes the guard's thread late: under a
 * 256 MiB limit its first read after the crossing was up to 280 MiB, and the stop then lands after
 * the task's current allocation. At limit/16 a loop of 8 MiB Buffers passed the ceiling (272.4 MiB),
 * at limit/8 too (291.7 MiB, Node 24), and the process ended where a stop would have kept it. The
 * overshoot is a rate times a delay, not a share of the limit: at most 128 MiB past a big one.
 */
export function rssCeiling(limit: number): number {
  return limit + Math.min(Math.max(Math.floor(limit / 4), 32 * 2 ** 20), 128 * 2 ** 20);
}

const LINE = new RegExp(`${RSS_GUARD_MARKER} rss=(\\d+) limit=(\\d+)`);

/** What the guard saw when it ended the worker: resident bytes (undefined when its line did not reach us), and the limit. */
export interface RssGuardKill {
  rss: number | undefined;
  limit: number;
}

/**
 * The guard's report in a dead process worker's exit facts, if this death was the guard's: under an
 * rss limit (process workers only), exit code RSS_GUARD_EXIT is the guard, with or without its line.
 * The line only adds what the guard saw; it can fail to arrive (a task that closed or redirected its
 * fd 2, a tail cut short), and the exit code cannot. The price: a task that calls process.exit(88)
 * itself under an rss limit is reported as an rss breach (without an observed value).
 */
export function rssGuardKill(
  facts: { exitCode: number | null; detail: string | undefined },
  rssLimit: number | undefined,
): RssGuardKill | undefined {
  if (facts.exitCode !== RSS_GUARD_EXIT || rssLimit === undefined) return undefined;
  const m = LINE.exec(facts.detail ?? '');
  return m ? { rss: Number(m[1]), limit: Number(m[2]) } : { rss: undefined, limit: rssLimit };
}
