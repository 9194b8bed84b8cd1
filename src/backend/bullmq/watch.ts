/**
 * What a producer watches of the shared queue, on its command connection:
 *
 * - the hosts, by their heartbeats (every HOSTS_EVERY_MS, or faster for a short hostWait): their
 *   slots size map chunks and the hold-back threshold; when none has been live for hostWait, the
 *   producer fails the calls that waited that long (NoHostError) instead of waiting silently;
 * - the queue's waiting count (one getWaitingCount, every WAITING_EVERY_MS, only while a map job
 *   runs): map/imap stop reading their input while other producers' jobs waiting in the queue are
 *   above maxWaiting, and read again below it. This producer's own jobs are not counted: its maps
 *   are already bounded by their windows, and counting them would make a map of small chunks
 *   throttle itself into idle hosts.
 *
 * A stale sample (Redis away, a slow round trip) holds back: input waits rather than piling up.
 */
import type { Redis } from './load.js';
import { type HostBeat, readHosts } from './view.js';

type BullQueue = import('bullmq').Queue;

const HOSTS_EVERY_MS = 2000;
export const WAITING_EVERY_MS = 150;
/** A waiting count older than this holds map jobs back until the next one. */
const WAITING_STALE_MS = 4 * WAITING_EVERY_MS;
/** The least 'auto' maxWaiting: with no live host (slots 0), a few jobs may still wait. */
const MIN_WAITING = 16;

export interface WatchHooks {
  /** Jobs this producer has out (added or about to be, not answered). */
  ours(): number;
  /** Whether a map job runs (the waiting count is sampled only then). */
  mapping(): boolean;
  /** After each read of the hosts. */
  hostsRead(): void;
  /** A waiting count that no longer holds map jobs back. */
  clear(): void;
}

export class QueueWatch {
  hosts: HostBeat[] = [];
  /** Each host's last heartbeat and when this producer saw it change (view.ts readHosts). */
  private readonly beatsSeen = new Map<string, { at: number; changed: number }>();
  /** performance.now() when a live host was last seen (-Infinity: never). */
  lastHostAt = -Infinity;
  private othersWaiting = 0;
  private sampledAt = -Infinity;
  private sampling = false;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly cmd: Redis,
    private readonly queue: BullQueue,
    private readonly hostsKey: string,
    private readonly maxWaiting: number | undefined,
    private readonly hostWait: number,
    private readonly hooks: WatchHooks,
  ) {}

  async start(): Promise<void> {
    await this.readHosts();
    const hostsEvery = Math.min(HOSTS_EVERY_MS, Math.max(100, this.hostWait / 4));
    this.timers.push(
      setInterval(() => void this.readHosts(), hostsEvery),
      setInterval(() => {
        if (this.hooks.mapping()) void this.sample();
      }, WAITING_EVERY_MS),
    );
    for (const t of this.timers) t.unref();
    if (this.hooks.mapping()) await this.sample();
  }

  stop(): void {
    for (const t of this.timers.splice(0)) clearInterval(t);
  }

  get slots(): number {
    return this.hosts.reduce((n, h) => n + h.slots, 0);
  }

  /** Other producers' waiting jobs above which map jobs stop reading. */
  get limit(): number {
    return this.maxWaiting ?? Math.max(MIN_WAITING, 4 * this.slots);
  }

  /** Whether map jobs should stop reading input now. */
  get heldBack(): boolean {
    if (this.stale) void this.sample();
    return this.held;
  }

  private get stale(): boolean {
    return performance.now() - this.sampledAt > WAITING_STALE_MS;
  }

  private get held(): boolean {
    return this.stale || this.othersWaiting > this.limit;
  }

  /** ms since a live host was last seen. */
  get hostlessMs(): number {
    return performance.now() - this.lastHostAt;
  }

  private async readHosts(): Promise<void> {
    this.hosts = await readHosts(this.cmd, this.hostsKey, this.hosts, this.beatsSeen);
    if (this.hosts.length > 0) this.lastHostAt = performance.now();
    this.hooks.hostsRead();
  }

  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const waiting = await this.queue.getWaitingCount();
      this.othersWaiting = Math.max(0, waiting - this.hooks.ours());
      this.sampledAt = performance.now();
    } catch {
      // Redis away: the sample goes stale and map jobs wait.
    } finally {
      this.sampling = false;
    }
    if (!this.held) this.hooks.clear();
  }
}
