/**
 * What a worker sends about its running calls besides their results: progress, events and the items
 * of streamed tasks. Batched: what arrives within EVENT_FLUSH_MS goes as one message, and of a burst
 * of progress reports for the same item only the latest travels. A synchronous task that reports as it
 * goes still reaches the pool live: the clock is read at each report, not left to a timer that cannot
 * fire while the task holds the event loop. Everything here is sent before the result of its call.
 */

import { critical } from '../runtime/critical.js';
import { EVENT_FLUSH_MS, type EventFrame, type FromWorker } from '../runtime/protocol.js';
import { CallEvent } from '../task.js';

export class EventOutbox {
  private events: EventFrame[] = [];
  /** Where the pending progress of each call item sits in `events`, to replace it. */
  private progressAt = new Map<string, number>();
  private sentAt = -Infinity;
  private timer: NodeJS.Timeout | undefined = undefined;

  constructor(
    private readonly post: (message: FromWorker) => void,
    /**
     * An event that could not be sent. True when its call fails for it (a stream whose item cannot be
     * cloned); false when only that event is lost (progress or an event of another call).
     */
    private readonly unsendable: (seq: number, error: unknown) => boolean,
  ) {}

  /** Whether events wait to be sent. */
  get pending(): boolean {
    return this.events.length > 0;
  }

  add(seq: number, item: number, kind: CallEvent, name: string | undefined, data: unknown): void {
    critical(() => this.queue(seq, item, kind, name, data));
  }

  private queue(seq: number, item: number, kind: CallEvent, name: string | undefined, data: unknown): void {
    if (kind === CallEvent.Progress) {
      const key = `${seq}:${item}`;
      const at = this.progressAt.get(key);
      if (at !== undefined) {
        this.events[at]![4] = data;
        return;
      }
      this.progressAt.set(key, this.events.length);
    }
    this.events.push([seq, item, kind, name, data]);
    if (performance.now() - this.sentAt >= EVENT_FLUSH_MS) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, EVENT_FLUSH_MS);
    }
  }

  flush(): void {
    if (this.events.length === 0) return;
    const events = this.events;
    this.events = [];
    this.progressAt.clear();
    this.sentAt = performance.now();
    try {
      this.post({ t: 'events', events });
    } catch {
      // One item that cannot travel must not take the batch down: send them one by one. A stream
      // fails there, and its later items are not sent (they would arrive around the hole).
      let failed: Set<number> | undefined;
      for (const event of events) {
        if (failed?.has(event[0])) continue;
        try {
          this.post({ t: 'events', events: [event] });
        } catch (error) {
          if (this.unsendable(event[0], error)) (failed ??= new Set()).add(event[0]);
        }
      }
    }
  }
}
