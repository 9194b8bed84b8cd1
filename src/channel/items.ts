/**
 * A FIFO of items stored as the arrays they arrived in: a batch of 512 items from a worker is
 * appended as one chunk and, when a consumer asks for that many, handed on as the same array.
 */
export class Items<T = unknown> {
  private chunks: T[][] = [];
  /** Items already taken from chunks[0]. */
  private head = 0;
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

  /** Puts items back in front, in their order. */
  unshiftAll(items: T[]): void {
    if (items.length === 0) return;
    if (this.head > 0) {
      this.chunks[0] = this.chunks[0]!.slice(this.head);
      this.head = 0;
    }
    this.chunks.unshift(items);
    this.length += items.length;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const first = this.chunks[0]!;
    const item = first[this.head]!;
    first[this.head] = undefined as T;
    if (++this.head === first.length) {
      this.chunks.shift();
      this.head = 0;
    }
    this.length--;
    return item;
  }

  /** Up to n items from the front, as one array. */
  take(n: number): T[] {
    if (n <= 0 || this.length === 0) return [];
    const first = this.chunks[0]!;
    if (this.head === 0 && first.length <= n) {
      this.chunks.shift();
      this.length -= first.length;
      if (first.length === n || this.length === 0) return first;
      const out = first;
      this.appendTo(out, n - first.length);
      return out;
    }
    const out: T[] = [];
    this.appendTo(out, n);
    return out;
  }

  private appendTo(out: T[], n: number): void {
    while (n > 0 && this.length > 0) {
      const first = this.chunks[0]!;
      const end = Math.min(first.length, this.head + n);
      for (let i = this.head; i < end; i++) out.push(first[i]!);
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
