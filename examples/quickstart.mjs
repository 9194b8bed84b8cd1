// corral quick start: the same CPU-bound job inline, then on every usable core with threads and
// with processes; then a failing task and a crashing worker, contained.
import { cpuCount, Pool } from 'corral';
import { countPrimes } from './tasks.mjs';

const ranges = Array.from({ length: 64 }, (_, i) => [i * 50_000, (i + 1) * 50_000]);
const total = (xs) => xs.reduce((a, b) => a + b, 0);

let t = performance.now();
const expected = total(ranges.map(countPrimes));
const inlineMs = performance.now() - t;
console.log(`inline: ${expected} primes below ${ranges.length * 50_000} in ${inlineMs.toFixed(0)} ms`);
console.log(`cpuCount() = ${cpuCount()} (affinity, cgroup quota and cores considered)`);

for (const runtime of ['thread', 'process']) {
  // In TypeScript, or on Node 24: `await using pool = new Pool(...)` closes it at the end of the block.
  const pool = new Pool({ module: new URL('./tasks.mjs', import.meta.url), runtime });
  await pool.apply('countPrimes', [[0, 10]]); // workers are warm before we time
  t = performance.now();
  const counts = await pool.map('countPrimes', ranges);
  const ms = performance.now() - t;
  if (total(counts) !== expected) throw new Error(`${runtime}: wrong total ${total(counts)}`);
  console.log(
    `${runtime.padEnd(7)}: same answer in ${ms.toFixed(0)} ms, ${(inlineMs / ms).toFixed(2)}x inline on ${pool.stats().workers.length} workers`,
  );

  const [failed, crashed, after] = await Promise.allSettled([
    pool.apply('explode', ['on purpose']),
    pool.apply('crash', []),
    pool.map('countPrimes', ranges.slice(0, 8)),
  ]);
  console.log(
    `  a throwing task  -> ${failed.reason.name} (${failed.reason.code}), cause code ${failed.reason.cause.code}`,
  );
  console.log(`  a crashing task  -> ${crashed.reason.name}: exit code ${crashed.reason.exitCode}`);
  console.log(
    `  the other work   -> ${after.status}, ${after.value.length} results; pool still has ${pool.stats().workers.length} workers`,
  );
  await pool.close();
}
