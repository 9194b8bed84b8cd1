/**
 * Workloads of `corral bench`, loaded both inline (imported) and by the pools (as their task module).
 * Every task takes one argument so that the same function runs unchanged in both places.
 */

/** Tiny: the cost of a task is all overhead. */
export function square(x: number): number {
  return x * x;
}

/** CPU-bound: recursive Fibonacci, ~1-10 ms per call for n = 24..28. */
export function fib(n: number): number {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/** Spins (does not sleep) for `ms` milliseconds, like a CPU-bound task of known length. */
export function busy(ms: number): number {
  const end = performance.now() + ms;
  let spins = 0;
  while (performance.now() < end) spins++;
  return spins;
}

/** Large payload: a Float64Array in, a transformed one of the same size out. */
export function scale(data: Float64Array): Float64Array {
  const out = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i]! * 2 + 1;
  return out;
}
