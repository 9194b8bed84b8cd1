/**
 * Queues and Pipe ends in task arguments: the sender replaces each by a small handle and the
 * worker turns handles back into objects talking to the sender's broker. Like SharedMemory handles
 * (shm/handle.ts), only arrays and plain objects are walked, at most `budget` values, copying
 * only the containers that change.
 */
import { UNIT_CHAN } from '../runtime/protocol.js';
import { rewrite } from '../runtime/walk.js';
import { Connection } from './pipe.js';
import { channelsEverUsed, Queue } from './queue.js';
import type { PipeHandle, QueueHandle } from './wire.js';

export { channelsEverUsed } from './queue.js';

export const CHANNEL_BUDGET = 1000;

export function encodeChannels(value: unknown, budget = CHANNEL_BUDGET): { value: unknown; found: boolean } {
  if (value === null || typeof value !== 'object') return { value, found: false };
  const walk = { left: budget, found: false };
  const out = rewrite(value, walk, (v) =>
    v instanceof Queue || v instanceof Connection ? (v as Queue | Connection).toHandle() : undefined,
  );
  return { value: out, found: walk.found };
}

/** For the pool: a unit's payload with its queues and pipe ends as handles, flagged UNIT_CHAN. Throws ConfigError. */
export function encodeChannelsIn(unit: { payload: unknown; flags: number }): void {
  if (!channelsEverUsed()) return;
  const payload = unit.payload;
  const encoded = encodeChannels(payload, CHANNEL_BUDGET + (Array.isArray(payload) ? payload.length * 8 : 0));
  if (encoded.found) {
    unit.payload = encoded.value;
    unit.flags |= UNIT_CHAN;
  }
}

export function decodeChannels(value: unknown, budget = CHANNEL_BUDGET): unknown {
  if (value === null || typeof value !== 'object') return value;
  return rewrite(value, { left: budget, found: false }, (v) => {
    const kind = (v as { __corralChan?: unknown }).__corralChan;
    if (kind === 'queue') return Queue.fromHandle(v as QueueHandle);
    if (kind === 'pipe') return Connection.fromHandle(v as PipeHandle);
    return undefined;
  });
}
