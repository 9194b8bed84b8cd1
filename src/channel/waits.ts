/**
 * What the queue's two ends (broker.ts in the creating thread, remote.ts in a worker) share about a
 * put or get that waits: its deadline, and the error a full queue gives.
 */
import { type Deadline, deadlines } from '../deadline.js';
import { QueueFullError } from '../errors.js';

interface Waiter {
  reject(error: Error): void;
  timer: Deadline | undefined;
}

/**
 * A waiter that gives up after `ms` (none for ms < 0 or Infinity): it leaves `list` and rejects with
 * `error()`. Held (ref'd): a pending put or get with a timeout keeps the process alive, as a timer would.
 */
export function armDeadline(list: unknown[], w: Waiter, ms: number, error: () => Error): void {
  if (ms <= 0) return;
  w.timer = deadlines.after(
    ms,
    () => {
      const i = list.indexOf(w);
      if (i >= 0) list.splice(i, 1);
      w.reject(error());
    },
    { ref: true },
  );
}

export function queueFullError(maxsize: number, ms = 0): QueueFullError {
  return new QueueFullError(
    maxsize,
    ms > 0
      ? `the queue stayed full (maxsize = ${maxsize}) for ${ms} ms; put refused`
      : `the queue is full (maxsize = ${maxsize}); put refused`,
  );
}
