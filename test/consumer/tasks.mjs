// The consumer's task module (scripts/check-package.mjs copies test/consumer/ into a project that
// installed the packed tarball).
import { openSync, readFileSync } from 'node:fs';

export function square(x) {
  return x * x;
}

/** This worker's soft limits as the kernel reports them (/proc/self/limits). */
export function limits() {
  const text = readFileSync('/proc/self/limits', 'utf8');
  const soft = (label) =>
    text
      .split('\n')
      .find((l) => l.startsWith(label))
      ?.slice(26)
      .trim()
      .split(/\s+/)[0];
  return {
    pid: process.pid,
    addressSpace: soft('Max address space'),
    openFiles: soft('Max open files'),
    cpuTime: soft('Max cpu time'),
  };
}

/** Opens /dev/null until the descriptor limit says no; returns how many it got and the error code. */
export function openUntilRefused() {
  let opened = 0;
  try {
    for (; opened < 100_000; opened++) openSync('/dev/null', 'r');
  } catch (error) {
    return { opened, code: error.code };
  }
  return { opened, code: null };
}

/** Adds 1 to the segment's first Int32 `times` times; returns this worker's pid. */
export function count(shm, times) {
  const cells = shm.view(Int32Array);
  for (let i = 0; i < times; i++) Atomics.add(cells, 0, 1);
  return process.pid;
}
