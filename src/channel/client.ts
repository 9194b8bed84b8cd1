/**
 * What the broker (broker.ts) keeps about one consumer worker of a queue: its request, its
 * acknowledgements, and the items sent to it that it has not acknowledged taking, which go back to
 * the queue, at their places in its order, if it gives them back or exits.
 */
import type { LinkState } from './broker.js';

export class Client {
  epoch = 0;
  want = 0;
  inDemand = false;
  /** Items sent in all (the global index of the next one). */
  sent = 0;
  ackTaken = 0;
  ackDone = 0;
  /** Items sent and still kept: held[off] has global index base. */
  held: unknown[] = [];
  /** Each held item's place in the queue's order (Items.take), for putting it back there. */
  heldAt: number[] = [];
  off = 0;
  base = 0;
  credits = 0;
  recalled = false;
  slot: number | undefined = undefined;
  /** It asked for room to put (its first put's `credit`): its puts may be on their way at any time. */
  producer = false;
  /** Its first ask came after the queue was closed: its puts, sent before it heard, are dropped (it rejected them). */
  refused = false;
  /** Told the queue closed; its puts made before it heard are not all here until it answers `sealed`. */
  sealing = false;
  constructor(readonly st: LinkState) {}

  keep(items: unknown[], at: number[]): void {
    for (let i = 0; i < items.length; i++) {
      this.held.push(items[i]);
      this.heldAt.push(at[i]!);
    }
    this.sent += items.length;
  }

  range(from: number, to: number): unknown[] {
    return this.held.slice(this.off + from - this.base, this.off + to - this.base);
  }

  rangeAt(from: number, to: number): number[] {
    return this.heldAt.slice(this.off + from - this.base, this.off + to - this.base);
  }

  /** Forgets what was sent from global index `index` on (given back). */
  truncate(index: number): void {
    this.held.length = this.off + index - this.base;
    this.heldAt.length = this.held.length;
  }

  dropBelow(index: number): void {
    const k = index - this.base;
    if (k <= 0) return;
    this.off += k;
    this.base = index;
    if (this.off >= this.held.length) {
      this.held = [];
      this.heldAt = [];
      this.off = 0;
    } else if (this.off > 1024 && this.off * 2 > this.held.length) {
      this.held = this.held.slice(this.off);
      this.heldAt = this.heldAt.slice(this.off);
      this.off = 0;
    }
  }
}
