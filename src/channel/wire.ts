/**
 * The side channel between a queue's broker (the thread that created it) and the workers that hold
 * a handle to it. Frames ride the worker's existing link to the pool or Process that started it,
 * beside the task frames, as `{ t: 'chan', op, id, ... }`.
 *
 *   worker → broker                                 broker → worker
 *   put     items put here (one batch)               items   items this worker asked for
 *   want    ask for n more items; ack taken/done     credit  room granted for n puts (maxsize)
 *   credit  ask for room for n puts (maxsize)        recall  give back what you hold and have not taken
 *   uncredit give back unused room                   closed  the queue was closed
 *   return  give back everything not yet taken       joined  the unfinished count reached zero
 *   join    tell me when unfinished reaches zero
 *   close   close the queue                          board   where to count taken/done (once)
 *   sealed  after `closed`: every put made before it
 *           is on its way, ahead of this frame
 *   unmapped (id '') the board could not be mapped
 *
 * The board is shared memory the broker's thread makes for each consumer worker (a SharedArrayBuffer
 * for a thread, a /dev/shm segment for a process): the worker counts there the items it handed
 * to user code, so the count survives the worker. Counts (`taken`, `done`) are totals since the worker first used the queue, so a lost or late
 * frame never double-counts. `epoch` changes each time the worker gives items back: an items
 * frame of an older epoch was already put back by the broker and is dropped on arrival.
 */

/** What a Queue travels as in task arguments. */
export interface QueueHandle {
  __corralChan: 'queue';
  id: string;
  maxsize: number;
  batch: BatchConfig | false;
  joinable: boolean;
  /** Already closed when it was sent. */
  closed: boolean;
}

/** What a Pipe end travels as: the queue it sends on and the one it receives from. */
export interface PipeHandle {
  __corralChan: 'pipe';
  tx: QueueHandle | null;
  rx: QueueHandle | null;
}

export interface BatchConfig {
  /** Items per message. */
  size: number;
  /** Estimated bytes per message. */
  bytes: number;
  /** Longest an item waits in a batch, ms. */
  delay: number;
}

export type ChanUp =
  | { t: 'chan'; op: 'put'; id: string; items: unknown[] }
  | {
      t: 'chan';
      op: 'want';
      id: string;
      n: number;
      taken: number;
      done: number;
      /** Slot of this queue on the worker's board, sent with the first want. */
      slot?: number;
      /** A get({ wait: false }): answer at once, with `tok`. */
      tok?: number;
    }
  | { t: 'chan'; op: 'credit'; id: string; n: number; tok: number; nowait: boolean }
  | { t: 'chan'; op: 'uncredit'; id: string; n: number }
  | { t: 'chan'; op: 'return'; id: string; taken: number; done: number; epoch: number }
  | { t: 'chan'; op: 'join'; id: string; tok: number }
  | { t: 'chan'; op: 'close'; id: string }
  | { t: 'chan'; op: 'sealed'; id: string }
  | { t: 'chan'; op: 'unmapped'; id: '' };

export type ChanDown =
  | {
      t: 'chan';
      op: 'items';
      id: string;
      epoch: number;
      items: unknown[];
      /** Wanted items the broker will not send (a nowait want it could not fill, or the end). */
      cancel?: number;
      /** The queue is closed and drained for this worker. */
      end?: true;
      /** Answer to the want with this token (a get with { wait: false }). */
      tok?: number;
    }
  | { t: 'chan'; op: 'credit'; id: string; n: number; tok: number; closed?: true }
  | { t: 'chan'; op: 'recall'; id: string }
  | { t: 'chan'; op: 'closed'; id: string }
  | { t: 'chan'; op: 'joined'; id: string; tok: number }
  | { t: 'chan'; op: 'board'; id: ''; sab?: SharedArrayBuffer; segment?: string };

/** Board words per queue a worker uses: [taken, done]. */
export const BOARD_WORDS = 2;
/** Queues per worker that get exact counters; beyond this, a dead worker's unacknowledged items are reported as uncertain. */
export const BOARD_SLOTS = 512;

/** `a - b` for counters that wrap at 2^32 (board words are Int32). */
export function counterDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** Marks Queue and Connection objects, which travel as task arguments but never inside items. */
export const CHANNEL_BRAND = Symbol('corral.channel');
