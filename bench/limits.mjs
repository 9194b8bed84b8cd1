// What limits cost: the same workloads on process workers with every limit off, then all on.
// Usage: node bench/limits.mjs [--runs N]   (after `npm run build`)
import { cpus } from 'node:os';
import { Pool } from '../dist/src/index.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 5;
const module = new URL('./tasks.mjs', import.meta.url);
const ALL_LIMITS = {
  limits: { heap: '512MiB', rss: '1GiB', addressSpace: '4GiB', data: '2GiB', openFiles: 1024, cpuTime: 60 },
  recycle: { whenRssAbove: '900MiB', whenHeapAbove: '400MiB' },
  memoryBudget: '8GiB',
};

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const xs = Array.from({ length: 100_000 }, (_, i) => i);
const fibs = Array.from({ length: 64 }, () => 27);

const workloads = {
  'map 100k tiny (items/s)': async (pool) => {
    const t = performance.now();
    await pool.map('square', xs);
    return xs.length / ((performance.now() - t) / 1000);
  },
  'apply 20k tiny (tasks/s)': async (pool) => {
    const t = performance.now();
    await Promise.all(xs.slice(0, 20_000).map((x) => pool.apply('square', [x])));
    return 20_000 / ((performance.now() - t) / 1000);
  },
  '64 x fib(27) (tasks/s)': async (pool) => {
    const t = performance.now();
    await pool.map('fib', fibs, { chunksize: 1 });
    return fibs.length / ((performance.now() - t) / 1000);
  },
};

console.log(
  `machine: ${cpus()[0]?.model}, ${cpus().length} cores, node ${process.version}; medians of ${runs} runs`,
);
console.log('\n| workload | limits off | all limits on | on / off |\n|---|--:|--:|--:|');
// Both pools live side by side and their runs alternate, so the machine's noise hits both alike.
const off = new Pool({ module, runtime: 'process', workers: 2 });
const on = new Pool({ module, runtime: 'process', workers: 2, ...ALL_LIMITS });
const fmt = (n) => Math.round(n).toLocaleString('en-US');
for (const [name, run] of Object.entries(workloads)) {
  await run(off);
  await run(on);
  const samples = { off: [], on: [] };
  for (let i = 0; i < runs; i++) {
    // Alternate who goes first: the second of a pair may find caches or the CPU in another state.
    if (i % 2 === 0) {
      samples.off.push(await run(off));
      samples.on.push(await run(on));
    } else {
      samples.on.push(await run(on));
      samples.off.push(await run(off));
    }
  }
  const [a, b] = [median(samples.off), median(samples.on)];
  console.log(`| ${name} | ${fmt(a)} | ${fmt(b)} | ${(b / a).toFixed(3)} |`);
}
await Promise.all([off.close(), on.close()]);
