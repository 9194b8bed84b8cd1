/**
 * Benchmark tasks. corral, piscina and tinypool load this module directly and call its named
 * exports (piscina and tinypool through their `name` run option); workerpool needs its own worker
 * script (workerpool_worker.mjs), which re-exports these. Every task takes one argument so that
 * the peers' one-argument calling convention fits too.
 */
import { threadId } from 'node:worker_threads';

export function square(x) {
  return x * x;
}

export function fib(n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/** Spins (does not sleep) for `ms` milliseconds of wall time, like a CPU-bound task would. */
export function busy(ms) {
  const end = performance.now() + ms;
  let spins = 0;
  while (performance.now() < end) spins++;
  return spins;
}

/** Holds its worker for `ms`, then says which thread it ran on: how run.mjs sees that all workers are up. */
export function whoami(ms) {
  busy(ms);
  return threadId;
}

/** About 25 µs of work, then x squared: a small CPU-bound item (bench/fairness.mjs). */
export function spinSquare(x) {
  const end = performance.now() + 0.025;
  while (performance.now() < end) {}
  return x * x;
}
