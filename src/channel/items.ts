/**
 * A FIFO of items stored as the arrays they arrived in: a batch of 512 items from a worker is
 * appended as one chunk and, when a consumer asks for that many, handed on as the same array.
 *
 * Items a consumer gives back (queue/broker.ts: recalled, returned, or held by a worker that exited)
 * go before the rest, in the order they first left: each item leaving for the first time gets the
 * next number (its place in the queue's order), and one given back is put where that number says.
 * Put back at the front as they came, they were not: a consumer that had fetched both sentinels of a
 * queue gave the second back after another consumer gave back 255 items from before it, and the
 * other consumer then met the sentinel first and stopped with those items never read
 * (channel-workers.test.mjs under CI load).
 */
export class Items<T = unknown> {
  private chunks: T[][] = [];
  /** Items already taken from chunks[0]. */
  private head = 0;
  /** Items given back, by their place in the queue's order (`backAt`, ascending): served first. */
  private back: T[] = [];
  private backAt: number[] = [];
  /** Items that have left `chunks` so far: the place of the next one to leave. */
  private left = 0;
  length = 0;

  push(item: T): void {
    const last = this.chunks[this.chunks.length - 1];
    if (last !== undefined && last.length < 1024 && (this.chunks.length > 1 || this.head === 0))
      last.push(item);
    else this.chunks.push([item]);
    this.length++;
  }

  /** Appends an array, which the queue now owns. */
  pushAll(items: T[]): void {
    if (items.length === 0) return;
    this.chunks.push(items);
    this.length += items.length;
  }

  /**
   * Puts given-back items before the rest, each at its place in the queue's order (`at`: what
   * take() reported for it), among others given back earlier.
   */
  restore(items: T[], at: number[]): void {
    if (items.length === 0) return;
    const all = this.back.concat(items);
    const allAt = this.backAt.concat(at);
    const order = allAt.map((_, k) => k).sort((a, b) => allAt[a]! - allAt[b]!);
    this.back = order.map((k) => all[k]!);
    this.backAt = order.map((k) => allAt[k]!);
    this.length += items.length;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    this.length--;
    if (this.back.length > 0) {
      this.backAt.shift();
      return this.back.shift();
    }
    const first = this.chunks[0]!;
    const item = first[this.head]!;
    first[this.head] = undefined as T;
    if (++this.head === first.length) {
      this.chunks.shift();
      this.head = 0;
    }
    this.left++;
    return item;
  }

  /** Up to n items from the front, as one array; `at`, when given, gets each one's place. */
  take(n: number, at?: number[]): T[] {
    if (n <= 0 || this.length === 0) return [];
    if (this.back.length > 0) {
      const k = Math.min(n, this.back.length);
      const out = this.back.splice(0, k);
      const places = this.backAt.splice(0, k);
      if (at) for (const p of places) at.push(p);
      this.length -= k;
      this.appendTo(out, n - k, at);
      return out;
    }
    const first = this.chunks[0]!;
    if (this.head === 0 && first.length <= n) {
      this.chunks.shift();
      this.length -= first.length;
      if (at) for (let i = 0; i < first.length; i++) at.push(this.left + i);
      this.left += first.length;
      if (first.length === n || this.length === 0) return first;
      const out = first;
      this.appendTo(out, n - first.length, at);
      return out;
    }
    const out: T[] = [];
    this.appendTo(out, n, at);
    return out;
  }

  private appendTo(out: T[], n: number, at: number[] | undefined): void {
    while (n > 0 && this.chunks.length > 0) {
      const first = this.chunks[0]!;
      const end = Math.min(first.length, this.head + n);
      for (let i = this.head; i < end; i++) {
        out.push(first[i]!);
        if (at) at.push(this.left);
        this.left++;
      }
      const got = end - this.head;
      n -= got;
      this.length -= got;
      if (end === first.length) {
        this.chunks.shift();
        this.head = 0;
      } else this.head = end;
    }
  }

  clear(): T[] {
    return this.take(this.length);
  }
}
