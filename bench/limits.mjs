// What limits cost: the same workloads on process workers with every limit off, then all on.
// Usage: node bench/limits.mjs [--runs N]   (after `npm run build`)
//
// "All on" comes twice. With a V8 heap limit of 2 GiB, the row measures corral's enforcement:
// rlimits, the RSS watchdog, the budget, the per-task CPU-time probe and the recycle checks. With
// 512 MiB it adds what V8 itself does under any old-generation limit below 2 GiB: it turns off
// its short builtin calls, which costs call-heavy code several percent with or without corral
// (`node --max-old-space-size=2047` vs `=2048` on a fib loop shows it).
import { cpus, loadavg } from 'node:os';
import { Pool } from '../dist/src/index.js';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 7;
const module = new URL('./tasks.mjs', import.meta.url);
const allLimits = (heap) => ({
  limits: {
    heap,
    rss: '3GiB',
    addressSpace: '8GiB',
    data: '4GiB',
    openFiles: 1024,
    cpuTime: 60,
  },
  recycle: { whenRssAbove: '2560MiB', whenHeapAbove: '1800MiB' },
  memoryBudget: '16GiB',
});
const CONFIGS = {
  off: {},
  'all on, heap 2 GiB': allLimits('2GiB'),
  'all on, heap 512 MiB': allLimits('512MiB'),
};

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// Each run lasts a few hundred ms: on this shared host a 20 ms run's median still moves by ±10 %.
const xs = Array.from({ length: 1_000_000 }, (_, i) => i);
const fibs = Array.from({ length: 256 }, () => 27);

const workloads = {
  'map 1M tiny (items/s)': async (pool) => {
    const t = performance.now();
    await pool.map('square', xs);
    return xs.length / ((performance.now() - t) / 1000);
  },
  'apply 20k tiny (tasks/s)': async (pool) => {
    const t = performance.now();
    await Promise.all(xs.slice(0, 20_000).map((x) => pool.apply('square', [x])));
    return 20_000 / ((performance.now() - t) / 1000);
  },
  '256 x fib(27) (tasks/s)': async (pool) => {
    const t = performance.now();
    await pool.map('fib', fibs, { chunksize: 1 });
    return fibs.length / ((performance.now() - t) / 1000);
  },
};

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
console.log(
  `machine: ${cpus()[0]?.model}, ${cpus().length} cores, node ${process.version}; medians of ${runs} runs; ` +
    `load average at start ${load()}`,
);
const names = Object.keys(CONFIGS);
const on = names.slice(1);
console.log(
  `\n| workload | ${names.join(' | ')} | ${on.map((n) => `${n} / off`).join(' | ')} |\n|---|${'--:|'.repeat(names.length + on.length)}`,
);
// The pools live side by side and take turns run by run, in a rotating order, so the machine's
// noise and any advantage of going first or last hit every configuration alike.
const pools = names.map((name) => new Pool({ module, runtime: 'process', workers: 2, ...CONFIGS[name] }));
const fmt = (n) => Math.round(n).toLocaleString('en-US');
for (const [name, run] of Object.entries(workloads)) {
  for (const pool of pools) await run(pool); // warm-up: JIT of the task and of the IPC paths
  const samples = pools.map(() => []);
  for (let i = 0; i < runs; i++) {
    for (let k = 0; k < pools.length; k++) {
      const j = (i + k) % pools.length;
      samples[j].push(await run(pools[j]));
    }
  }
  const medians = samples.map(median);
  const ratios = medians.slice(1).map((m) => (m / medians[0]).toFixed(3));
  console.log(`| ${name} | ${medians.map(fmt).join(' | ')} | ${ratios.join(' | ')} |`);
}
console.log(`\nload average at end ${load()}`);
await Promise.all(pools.map((p) => p.close()));
