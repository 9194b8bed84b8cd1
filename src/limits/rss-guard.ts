/**
 * How a process worker ended by its rss guard (native/corral.c, armRssGuard) is told apart from any
 * other death: the guard writes one line with the marker below to stderr and exits with the code
 * below, and the parent requires both, as for the heap guard (heap-guard.ts).
 */

export const RSS_GUARD_EXIT = 88;
export const RSS_GUARD_MARKER = 'corral-rss-guard:';

const LINE = new RegExp(`${RSS_GUARD_MARKER} rss=(\\d+) limit=(\\d+)`);

/** What the guard saw when it ended the worker: resident bytes, and the limit. */
export interface RssGuardKill {
  rss: number;
  limit: number;
}

/** The guard's report in a dead process worker's exit facts, if this death was the guard's. */
export function rssGuardKill(facts: {
  exitCode: number | null;
  detail: string | undefined;
}): RssGuardKill | undefined {
  if (facts.exitCode !== RSS_GUARD_EXIT) return undefined;
  const m = LINE.exec(facts.detail ?? '');
  return m ? { rss: Number(m[1]), limit: Number(m[2]) } : undefined;
}
