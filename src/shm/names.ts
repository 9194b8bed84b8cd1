/**
 * Segment names, sizes and the space /dev/shm has left: the checks every entry point shares.
 */

import { statfsSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { parseSize } from '../options.js';

/** Where Linux (glibc and musl alike) keeps POSIX shared memory objects. */
export const SHM_DIR = '/dev/shm';

/** Longest name we accept: NAME_MAX (255) less room for the '/' shm_open wants. */
const MAX_NAME = 250;

/**
 * `corral_<pid>_<96 random bits>`: unguessable (another local user cannot pre-create or
 * squat it), and the pid tells a human who made it.
 */
export function randomName(): string {
  // Web Crypto's generator: the same CSPRNG as node:crypto, without loading that module into
  // every worker that merely might touch shared memory.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `corral_${process.pid}_${Buffer.from(bytes).toString('hex')}`;
}

/** A user-given name, with or without the leading '/'; returned without it (as `.name` shows it). */
export function checkName(value: unknown, option = 'name'): string {
  if (typeof value !== 'string') {
    throw new ConfigError(option, `expected a segment name (a string); got ${typeof value}`);
  }
  const name = value.startsWith('/') ? value.slice(1) : value;
  if (
    name.length === 0 ||
    // The limit is the kernel's, in bytes: '日' is one character and three bytes.
    Buffer.byteLength(name) > MAX_NAME ||
    /[/\0\n\r]/.test(name) ||
    name === '.' ||
    name === '..'
  ) {
    throw new ConfigError(
      option,
      `expected 1-${MAX_NAME} bytes (UTF-8) without '/' (except one leading '/'), NUL or line breaks; got ${JSON.stringify(value)}`,
    );
  }
  return name;
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** `100 bytes`, or `8388608 bytes (8.0 MiB)` when a unit helps. */
export function showBytes(n: number): string {
  return n < 1024 ? `${n} bytes` : `${n} bytes (${formatBytes(n)})`;
}

export interface ShmSpace {
  /** Bytes an unprivileged process can still allocate there. */
  free: number;
  size: number;
}

export function shmSpace(): ShmSpace | undefined {
  try {
    const s = statfsSync(SHM_DIR);
    return { free: s.bavail * s.bsize, size: s.blocks * s.bsize };
  } catch {
    return undefined;
  }
}

export function tooBig(size: number, space: ShmSpace): ConfigError {
  return new ConfigError(
    'size',
    `${showBytes(size)} is more than ${SHM_DIR} can hold: ${formatBytes(space.free)} free of ` +
      `${formatBytes(space.size)}. Free space there (other segments, files), ask for less, or enlarge it ` +
      `(docker run --shm-size, or mount -o remount,size=... ${SHM_DIR})`,
  );
}

/** A segment size: a positive safe integer number of bytes, or a string like '64MiB'. */
export function checkSize(value: unknown): number {
  return parseSize('size', value);
}
