/**
 * The two places a segment's memory can come from, behind one shape (`Segment`):
 *  - posix: a /dev/shm object mapped by the native addon; usable by name from any thread
 *    or process. Native errors (errno codes) become corral's typed errors here.
 *  - local: a plain SharedArrayBuffer, when the addon is missing. Threads only: a name
 *    resolves within this thread (the instance registry in shared-memory.ts) and in
 *    Worker threads started after the segment was created (worker_threads environment
 *    data, which Node copies into each new Worker; a SharedArrayBuffer copies as shared).
 */

import { existsSync } from 'node:fs';
import { getEnvironmentData, setEnvironmentData } from 'node:worker_threads';
import {
  ConfigError,
  NativeUnavailableError,
  SharedMemoryExistsError,
  SharedMemoryNotFoundError,
} from '../errors.js';
import { type ShmBinding, shmNativeStatus } from '../native/index.js';
import { SHM_DIR, shmSpace, showBytes, tooBig } from './names.js';
import { ensureTracker } from './tracker.js';

export interface Segment {
  name: string;
  size: number;
  /** Inode behind the name (posix); 0 for local segments. */
  id: number;
  buffer: SharedArrayBuffer;
  posix: boolean;
  /** Bytes charged to this isolate as external memory, to give back on close. */
  charged: number;
}

function errnoCode(err: unknown): string | undefined {
  return err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
}

export function posixCreate(
  binding: ShmBinding,
  name: string,
  size: number,
  persist: boolean,
  reserve: boolean,
): Segment {
  const space = shmSpace();
  if (space && size > space.free) throw tooBig(size, space);
  const { tracker } = shmNativeStatus();
  const track = !persist;
  if (track) ensureTracker(binding, tracker);
  let mapping: ReturnType<ShmBinding['create']>;
  try {
    mapping = binding.create(name, size, reserve, track);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') throw new SharedMemoryExistsError(name);
    if (code === 'ENOSPC' || code === 'EFBIG') {
      const now = shmSpace();
      if (now) throw tooBig(size, now);
    }
    if (code === 'ENAMETOOLONG') throw new ConfigError('name', `'${name}' is too long for ${SHM_DIR}`);
    throw err;
  }
  // The tracker died since the last create (its pipe broke): start another, which is told
  // about every live name again, this one included.
  if (track && !mapping.tracked) ensureTracker(binding, tracker);
  return { name, size, id: mapping.ino, buffer: mapping.buffer, posix: true, charged: size };
}

export function posixAttach(binding: ShmBinding, name: string, size: number | undefined): Segment {
  let mapping: ReturnType<ShmBinding['attach']>;
  try {
    mapping = binding.attach(name, size ?? 0);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') throw new SharedMemoryNotFoundError(name, `in ${SHM_DIR}`);
    const actual = (err as { actualSize?: unknown }).actualSize;
    if (code === 'EINVAL' && typeof actual === 'number') {
      if (actual === 0) {
        throw new ConfigError(
          'name',
          `segment '${name}' is empty (0 bytes): still being created, or not corral's`,
        );
      }
      throw new ConfigError(
        'size',
        `segment '${name}' holds ${showBytes(actual)}; cannot map ${showBytes(size ?? 0)} of it`,
      );
    }
    throw err;
  }
  return {
    name,
    size: mapping.size,
    id: mapping.ino,
    buffer: mapping.buffer,
    posix: true,
    charged: mapping.size,
  };
}

/** Removes the name while it still refers to segment `id`; false when it was already gone. */
export function posixUnlink(binding: ShmBinding, name: string, id: number): boolean {
  return binding.unlink(name, id);
}

// --- local (no addon) ------------------------------------------------------------

const envKey = (name: string): string => `corral.shm:${name}`;

export function localCreate(name: string, size: number): Segment {
  let buffer: SharedArrayBuffer;
  try {
    buffer = new SharedArrayBuffer(size);
  } catch (err) {
    throw new ConfigError(
      'size',
      `cannot allocate ${showBytes(size)}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  setEnvironmentData(envKey(name), buffer);
  return { name, size, id: 0, buffer, posix: false, charged: 0 };
}

/** Thread-only attach by name for a segment created in a parent thread; undefined if unknown. */
export function localLookup(name: string): SharedArrayBuffer | undefined {
  const value = getEnvironmentData(envKey(name));
  return value instanceof SharedArrayBuffer ? value : undefined;
}

export function localWithdraw(name: string): boolean {
  const had = getEnvironmentData(envKey(name)) !== undefined;
  if (had) setEnvironmentData(envKey(name), undefined);
  return had;
}

/** The error for a name that is not in this process' local registry. */
export function localMissing(name: string, capability: string, crossProcess = false): Error {
  // A POSIX segment by that name exists: someone with the addon made it for processes.
  if (crossProcess || existsSync(`${SHM_DIR}/${name}`)) return unavailable(capability);
  return new SharedMemoryNotFoundError(
    name,
    'in this process (without the native addon, segments are shared between threads only)',
  );
}

export function unavailable(capability: string): NativeUnavailableError {
  const status = shmNativeStatus();
  return new NativeUnavailableError(
    capability,
    `it needs corral's shared-memory addon to map /dev/shm, and ${status.reason}. Without it SharedMemory ` +
      `works between worker threads of one process only (runtime: "thread")${status.fix ? `. Fix: ${status.fix}` : ''}`,
  );
}
