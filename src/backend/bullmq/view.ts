/**
 * What a producer pool sees of a distributed run: the hosts by their heartbeats (a hash in Redis each
 * host writes every second), and pool.stats() / pool.metrics() built from its own counts and meter.
 * It has no workers of its own: stats().workers is empty, metrics().workers lists the live hosts.
 */
import type { Meter } from '../../metrics/meter.js';
import { type PoolMetrics, taskMetrics, type WorkerMetrics } from '../../pool/metrics.js';
import type { PoolStats } from '../../pool/stats.js';
import type { Redis } from './load.js';

/** A host whose heartbeat is older than this is not counted. */
export const HOST_STALE_MS = 5000;
/** A host that died without a word left its heartbeat: gone this long, it is forgotten. */
const HOST_FORGET_MS = 60_000;

/** A host as its heartbeat says. */
export interface HostBeat {
  host: string;
  pid: number;
  slots: number;
  running: number;
  at: number;
  version: string;
}

/**
 * The live hosts; `last` while Redis cannot be read. A host's `at` is its own clock, and machines'
 * clocks differ: compared with this one, a host 7 s behind was never live (its calls failed with
 * NoHostError while it ran them) and one a minute behind was deleted. So a heartbeat counts by when
 * this producer saw it change (`seen`: host → its last `at` and when it changed, on this clock).
 */
export async function readHosts(
  cmd: Redis,
  key: string,
  last: HostBeat[],
  seen: Map<string, { at: number; changed: number }>,
): Promise<HostBeat[]> {
  try {
    const all = await cmd.hgetall(key);
    const now = performance.now();
    const beats = Object.values(all).map((v) => JSON.parse(v) as HostBeat);
    for (const h of beats) {
      const s = seen.get(h.host);
      // Seen first: live now if its clock agrees with this one; else once its beat changes (a host
      // that died long ago, its entry left behind, never is).
      if (!s) {
        const fresh = Math.abs(Date.now() - h.at) < HOST_STALE_MS;
        seen.set(h.host, { at: h.at, changed: fresh ? now : now - HOST_STALE_MS });
      } else if (s.at !== h.at) seen.set(h.host, { at: h.at, changed: now });
    }
    for (const host of seen.keys()) if (!(host in all)) seen.delete(host);
    const dead = beats.filter((h) => now - seen.get(h.host)!.changed > HOST_FORGET_MS).map((h) => h.host);
    if (dead.length > 0) await cmd.hdel(key, ...dead);
    return beats.filter((h) => now - seen.get(h.host)!.changed < HOST_STALE_MS);
  } catch {
    return last;
  }
}

/** A producer's own counts of units. */
export interface Counts {
  createdAt: number;
  queued: number;
  running: number;
  completed: number;
  failed: number;
}

export function producerStats(c: Counts): PoolStats {
  const uptimeMs = performance.now() - c.createdAt;
  const total = process.memoryUsage.rss();
  return {
    workers: [],
    queued: c.queued,
    running: c.running,
    completed: c.completed,
    failed: c.failed,
    throughput: uptimeMs > 0 ? (c.completed / uptimeMs) * 1000 : 0,
    uptimeMs,
    breaches: 0,
    recycles: 0,
    leakedFds: 0,
    memory: { budget: undefined, total, peakTotal: total, held: false, heldBackMs: 0 },
  };
}

export function producerMetrics(c: Counts, meter: Meter, hosts: readonly HostBeat[]): PoolMetrics {
  const tasks = taskMetrics(meter);
  const workers: WorkerMetrics[] = hosts.map((h, id) => ({
    id,
    pid: h.pid,
    threadId: undefined,
    state: h.running > 0 ? 'busy' : 'idle',
    spare: false, // a host's own spare lives in its local pool
    tasksDone: 0,
    utilization: h.slots > 0 ? Math.min(1, h.running / h.slots) : 0,
    rss: undefined,
    peakRss: undefined,
    heapUsed: 0,
    peakHeapUsed: 0,
    heapLimit: undefined,
    rssLimit: undefined,
  }));
  return {
    uptimeSeconds: (performance.now() - c.createdAt) / 1000,
    queued: c.queued,
    running: c.running,
    completed: c.completed,
    failed: c.failed,
    retries: meter.retries,
    timeouts: meter.timeouts,
    aborts: meter.aborts,
    crashes: meter.crashes,
    salvaged: 0, // counted by each host's own pool, where its workers run
    breaches: 0,
    recycles: 0,
    leakedFds: 0,
    tasks,
    workers,
    memory: { total: process.memoryUsage.rss(), budget: undefined },
    series: [],
  };
}
