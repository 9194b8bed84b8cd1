/**
 * SharedMemory in task arguments and results: the pool sends a small handle (name, size,
 * identity) instead of the object, and the receiving side maps the segment once and keeps
 * the mapping for later tasks.
 *
 *   parent: const { value, found } = encodeShm(args, 1000, { runtime });  // send value
 *   worker: const args = found ? decodeShm(value) : value;
 *
 * Same-process threads can carry the SharedArrayBuffer itself in the handle (`runtime:
 * 'thread'`): no mmap and no page faults on the receiving side; processes get the name and
 * map it (`runtime: 'process'`, needs the native addon).
 */

import { statSync } from 'node:fs';
import { ConfigError, SharedMemoryNotFoundError } from '../errors.js';
import { rewrite, type Walk } from '../runtime/walk.js';
import { localLookup, localMissing } from './backend.js';
import { SHM_DIR } from './names.js';
import { adopt, attachPosix, open, SharedMemory } from './shared-memory.js';

/** The key that marks a handle (and a SharedMemory's own name property). */
export const SHM_HANDLE = '__corralShm';

export interface ShmHandle {
  /** The segment's name. */
  __corralShm: string;
  size: number;
  /** The segment's identity (inode) when it is a /dev/shm segment: a re-created name is not mistaken for it. */
  id?: number;
  /** Same-process threads only: the memory itself. */
  sab?: SharedArrayBuffer;
}

/** Where a handle goes. Omitted: a name-only handle for /dev/shm segments, the buffer for thread-only ones. */
export type HandleRuntime = 'thread' | 'process';

export interface HandleOptions {
  runtime?: HandleRuntime;
}

/** Default node budget of encodeShm/decodeShm: arguments are walked this far, no further. */
export const DEFAULT_BUDGET = 1000;

/** Mappings kept for later tasks, most recently used last. */
const CACHE_MAX = 64;
const cache = new Map<string, SharedMemory>();

export function isHandle(value: unknown): value is ShmHandle {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ShmHandle).__corralShm === 'string' &&
    typeof (value as ShmHandle).size === 'number'
  );
}

export function toHandle(shm: SharedMemory, options: HandleOptions = {}): ShmHandle {
  const buffer = shm.buffer; // SharedMemoryClosedError after close()
  const runtime = options.runtime;
  if (!shm.crossProcess) {
    if (runtime === 'process') throw localMissing(shm.name, 'SharedMemory in a process worker', true);
    return { __corralShm: shm.name, size: shm.size, id: shm.id, sab: buffer };
  }
  if (runtime === 'thread') return { __corralShm: shm.name, size: shm.size, id: shm.id, sab: buffer };
  return { __corralShm: shm.name, size: shm.size, id: shm.id };
}

/**
 * The SharedMemory a handle stands for, in this thread: the instance this thread already
 * has open (cached or its own), else one over the carried buffer, else a fresh mapping by
 * name. Throws SharedMemoryNotFoundError when the name is gone or names another segment now.
 */
export function fromHandle(handle: ShmHandle): SharedMemory {
  if (!isHandle(handle)) throw new ConfigError('handle', 'expected { __corralShm: name, size }');
  const name = handle.__corralShm;
  const id = typeof handle.id === 'number' ? handle.id : 0;
  const size = handle.size;

  const usable = (shm: SharedMemory | undefined): SharedMemory | undefined =>
    shm && !shm.closed && (id === 0 || shm.id === id) && shm.size >= size ? shm : undefined;
  const known = usable(cache.get(name)) ?? usable(open(name));
  if (known) {
    touch(known);
    return known;
  }
  let shm: SharedMemory;
  if (handle.sab instanceof SharedArrayBuffer) {
    shm = adopt(name, handle.sab, id, size);
  } else {
    const mapped = attachPosix(name, size);
    if (!mapped) {
      // No addon: only a segment a parent thread created can be found (environment data).
      const buffer = localLookup(name);
      if (!buffer) throw localMissing(name, 'SharedMemory received from another process');
      return remember(adopt(name, buffer, 0, size));
    }
    if (id !== 0 && mapped.id !== id) {
      mapped.close();
      throw new SharedMemoryNotFoundError(
        name,
        `in ${SHM_DIR} (the name now belongs to a different segment)`,
      );
    }
    shm = mapped;
  }
  return remember(shm);
}

function touch(shm: SharedMemory): void {
  if (cache.get(shm.name) === shm) {
    cache.delete(shm.name);
    cache.set(shm.name, shm);
  }
}

/**
 * Keeps a new mapping for later tasks. A miss is also when stale entries go: closed ones,
 * and (for /dev/shm segments) ones whose name was unlinked or re-created, since their
 * creator is done with them. Dropped entries are not closed (a task may still hold one);
 * they are released when collected.
 */
function remember(shm: SharedMemory): SharedMemory {
  for (const [name, entry] of cache) {
    if (entry.closed || (entry.crossProcess && !sameSegment(name, entry.id))) cache.delete(name);
  }
  cache.delete(shm.name);
  cache.set(shm.name, shm);
  while (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value as string);
  return shm;
}

function sameSegment(name: string, id: number): boolean {
  try {
    // Synchronous stat of a tmpfs path: a couple of microseconds, only on a cache miss.
    return statIno(`${SHM_DIR}/${name}`) === id;
  } catch {
    return false;
  }
}

function statIno(path: string): number | undefined {
  return statSync(path, { throwIfNoEntry: false })?.ino;
}

/** Forgets the mappings kept for later tasks (they are released as they are collected). */
export function clearShmCache(): void {
  cache.clear();
}

/** Number of mappings kept for later tasks (for tests and stats). */
export function shmCacheSize(): number {
  return cache.size;
}

/**
 * Replaces each SharedMemory in `value` by its handle. Walks plain objects and arrays only
 * (not typed arrays, buffers, Maps or class instances), at most `budget` values deep in
 * total, and copies only the containers it changes; `found` says whether it replaced any,
 * so the receiver can skip decodeShm. A SharedMemory left beyond the budget still travels
 * as a plain handle object (its own properties), but is not turned back into one.
 */
export function encodeShm(
  value: unknown,
  budget = DEFAULT_BUDGET,
  options: HandleOptions = {},
): { value: unknown; found: boolean } {
  if (value === null || typeof value !== 'object') return { value, found: false };
  const walk: Walk = { left: budget, found: false };
  const out = rewrite(value, walk, (v) => (v instanceof SharedMemory ? toHandle(v, options) : undefined));
  return { value: out, found: walk.found };
}

/** The reverse of encodeShm, on the receiving side: handles become SharedMemory instances (fromHandle). */
export function decodeShm(value: unknown, budget = DEFAULT_BUDGET): unknown {
  if (value === null || typeof value !== 'object') return value;
  return rewrite(value, { left: budget, found: false }, (v) => (isHandle(v) ? fromHandle(v) : undefined));
}
