/**
 * The one codec stage for handles in task payloads. SharedMemory, Queue and Pipe objects travel as
 * small handles and become objects again on the other side; both directions pass here, with one
 * error policy: a payload that cannot be encoded or decoded fails its own unit with a typed error. It
 * never throws inside a message listener (which would take down the pool's process or the worker)
 * and never touches the unit's batch-mates.
 *
 *   pool → worker   encodeArgs (pool)      → decodeArgs (worker; failure = a CodecFailed result)
 *   worker → pool   encodeResult (worker)  → decodeResult (pool; failure = the unit's rejection)
 *
 * The worker loads this module only when a unit carries handles (worker/extras.ts).
 */
import { channelsEverUsed, decodeChannels, encodeChannels } from '../channel/handles.js';
import { ConfigError, CorralError, SerializationError, SharedMemoryNotFoundError } from '../errors.js';
import { DEFAULT_BUDGET, decodeShm, encodeShm } from '../shm/handle.js';
import { shmEverUsed } from '../shm/used.js';
import { fromWireError, UNIT_CHAN, UNIT_SHM, type WireError } from './protocol.js';
import type { RuntimeKind } from './types.js';

/** Values the walk visits: a chunk of items gets more, each item may hold a handle or two. */
function budget(payload: unknown): number {
  return DEFAULT_BUDGET + (Array.isArray(payload) ? payload.length * 8 : 0);
}

/** A unit's payload with its handles, and the UNIT_* flags that tell the worker to decode them. */
export interface Encoded {
  payload: unknown;
  flags: number;
}

/**
 * Pool side, before a unit is queued. Throws the typed error its call rejects with (a SharedMemory
 * that was closed, a queue of another thread): nothing has been sent yet.
 */
export function encodeArgs(payload: unknown, runtime: RuntimeKind | 'remote'): Encoded {
  let flags = 0;
  if (payload === null || typeof payload !== 'object') return { payload, flags };
  if (runtime === 'remote') {
    if (
      (shmEverUsed() && encodeShm(payload, budget(payload), { runtime: 'process' }).found) ||
      (channelsEverUsed() && encodeChannels(payload, budget(payload)).found)
    ) {
      throw new ConfigError(
        'args',
        "a SharedMemory, Queue or Pipe cannot travel to a worker on another machine: it lives in this machine's memory. Send its contents instead.",
      );
    }
    return { payload, flags };
  }
  if (shmEverUsed()) {
    const shm = encodeShm(payload, budget(payload), { runtime });
    if (shm.found) {
      payload = shm.value;
      flags |= UNIT_SHM;
    }
  }
  if (channelsEverUsed()) {
    const chan = encodeChannels(payload, budget(payload));
    if (chan.found) {
      payload = chan.value;
      flags |= UNIT_CHAN;
    }
  }
  return { payload, flags };
}

/** Worker side: the unit's arguments as objects again. Throws; the run loop reports CodecFailed. */
export function decodeArgs(payload: unknown, flags: number): unknown {
  const size = budget(payload);
  if ((flags & UNIT_SHM) !== 0) payload = decodeShm(payload, size);
  if ((flags & UNIT_CHAN) !== 0) payload = decodeChannels(payload, size);
  return payload;
}

/** Worker side: a result's SharedMemory (a segment the task made or was given) as handles. */
export function encodeResult(value: unknown, runtime: RuntimeKind): { value: unknown; found: boolean } {
  return encodeShm(value, DEFAULT_BUDGET, { runtime });
}

/** Pool side: a result's handles as SharedMemory. Throws; see codecError. */
export function decodeResult(value: unknown): unknown {
  return decodeShm(value, DEFAULT_BUDGET);
}

/**
 * The error policy, in one place: what a unit fails with when its payload cannot cross. corral's own
 * errors (SharedMemoryNotFoundError, a ConfigError for a misused handle) say it best; anything else is
 * a SerializationError naming the task and the direction.
 */
export function codecError(task: string, direction: 'arguments' | 'result', error: unknown): Error {
  if (error instanceof CorralError) return error;
  return new SerializationError(task, direction, error);
}

/** The typed error a worker's CodecFailed report stands for. */
export function codecErrorFromWire(task: string, wire: WireError): Error {
  const { code, segment } = wire.props;
  if (code === 'ERR_SHM_NOT_FOUND' && typeof segment === 'string') {
    return new SharedMemoryNotFoundError(segment, `(the worker running task '${task}' could not map it)`);
  }
  return codecError(task, 'arguments', fromWireError(wire));
}
