/**
 * What a worker loads only when a unit needs it: the codec for SharedMemory and Queue/Pipe handles,
 * the transfer arena (pool/arena.ts), and the per-unit probe. Most pools never use them, and loading
 * them (the addon loader, the shared-memory tracker's spawner, the channel client) costs a thread
 * worker about a third of its start-up.
 */
export { bindChannels, channelDown, channelsPending, flushChannels } from '../channel/worker.js';
export { decodeArgs, encodeResult } from '../runtime/codec.js';
export { internalSegment, SharedMemory } from '../shm/shared-memory.js';
export { UnitProbe } from './limits.js';
