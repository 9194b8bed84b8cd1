/**
 * Queues and Pipe ends in task arguments: the sender replaces each by a small handle and the
 * worker turns handles back into objects talking to the sender's broker. Like SharedMemory handles
 * (shm/handle.ts), only arrays and plain objects are walked, at most `budget` values, copying
 * only the containers that change.
 */
import { isPlainObject } from '../options.js';
import { UNIT_CHAN } from '../runtime/protocol.js';
import { Connection } from './pipe.js';
import { channelsEverUsed, Queue } from './queue.js';
import type { PipeHandle, QueueHandle } from './wire.js';

export { channelsEverUsed } from './queue.js';

export const CHANNEL_BUDGET = 1000;

export function encodeChannels(value: unknown, budget = CHANNEL_BUDGET): { value: unknown; found: boolean } {
  if (value === null || typeof value !== 'object') return { value, found: false };
  const walk = { left: budget, found: false };
  const out = map(value, walk, (v) =>
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
  return map(value, { left: budget, found: false }, (v) => {
    const kind = (v as { __corralChan?: unknown }).__corralChan;
    if (kind === 'queue') return Queue.fromHandle(v as QueueHandle);
    if (kind === 'pipe') return Connection.fromHandle(v as PipeHandle);
    return undefined;
  });
}

function map(value: unknown, walk: { left: number; found: boolean }, swap: (v: object) => unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (walk.left-- <= 0) return value;
  const replaced = swap(value);
  if (replaced !== undefined) {
    walk.found = true;
    return replaced;
  }
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length && walk.left > 0; i++) {
      const item: unknown = value[i];
      if (item === null || typeof item !== 'object') {
        walk.left--;
        continue;
      }
      const next = map(item, walk, swap);
      if (next !== item) (copy ??= value.slice())[i] = next;
    }
    return copy ?? value;
  }
  if (isPlainObject(value)) {
    let copy: Record<string, unknown> | undefined;
    for (const key in value) {
      if (walk.left <= 0) break;
      if (!Object.hasOwn(value, key)) continue;
      const item = value[key];
      if (item === null || typeof item !== 'object') {
        walk.left--;
        continue;
      }
      const next = map(item, walk, swap);
      if (next !== item) (copy ??= { ...value })[key] = next;
    }
    return copy ?? value;
  }
  return value;
}
