/**
 * mulberry32: a tiny seeded generator (the same seed gives the same sequence), shared by the
 * benchmarks and the seeded tests; bench/python_pool.py mirrors it so that both shuffle alike.
 */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
