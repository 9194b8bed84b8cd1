/**
 * Fair queuing (issue 13): latency of single calls from one caller while another caller's 100k-item
 * map runs, against the same calls on an idle pool, and against piscina (one FIFO queue) under the
 * same load. 2 thread workers each; medians of several runs, runners taking turns.
 *
 *   node bench/fairness.mjs [--runs 5] [--calls 200] [--items 100000]
 *
 * The map's items cost ~25 µs each (square of a small spin), so the map keeps both workers busy for
 * ~1.3 s; the calls come one every 2 ms from another key and each costs ~0.1 ms.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Piscina } from 'piscina';
import { Pool } from '../dist/src/index.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    calls: { type: 'string', default: '200' },
    items: { type: 'string', default: '100000' },
  },
});
const RUNS = Number(values.runs);
const CALLS = Number(values.calls);
const ITEMS = Number(values.items);
const TASKS = new URL('./tasks.mjs', import.meta.url);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs) => pct(xs, 50);

/** One caller's stream of calls: latency of each, in ms. */
async function probe(call) {
  const lat = [];
  const pending = [];
  for (let i = 0; i < CALLS; i++) {
    const t = performance.now();
    pending.push(call(i).then(() => lat.push(performance.now() - t)));
    await sleep(2);
  }
  await Promise.all(pending);
  return lat;
}

const items = Array.from({ length: ITEMS }, (_, i) => i % 1000);

async function corral(loaded) {
  const pool = new Pool({ module: TASKS, workers: 2 });
  await pool.map('spinSquare', [1, 2, 3, 4]);
  const map = loaded ? pool.map('spinSquare', items) : Promise.resolve();
  await sleep(loaded ? 50 : 0);
  const lat = await probe((i) => pool.apply('spinSquare', [i]));
  await map;
  await pool.close();
  return lat;
}

async function piscina(loaded) {
  const pool = new Piscina({ filename: TASKS.href, minThreads: 2, maxThreads: 2 });
  const run = (x) => pool.run(x, { name: 'spinSquare' });
  await Promise.all([1, 2, 3, 4].map(run));
  // piscina has no map: the "big caller" submits its items one call each, as its users do.
  const map = loaded ? Promise.all(items.map(run)) : Promise.resolve();
  await sleep(loaded ? 50 : 0);
  const lat = await probe(run);
  await map;
  await pool.destroy();
  return lat;
}

const runners = { 'corral idle': () => corral(false), 'corral, 100k map running': () => corral(true) };
if (ITEMS <= 100_000) {
  runners['piscina idle'] = () => piscina(false);
  runners['piscina, 100k calls running'] = () => piscina(true);
}
const results = Object.fromEntries(Object.keys(runners).map((k) => [k, { p50: [], p99: [] }]));
for (let run = 0; run < RUNS; run++) {
  for (const [name, fn] of Object.entries(runners)) {
    const lat = await fn();
    results[name].p50.push(pct(lat, 50));
    results[name].p99.push(pct(lat, 99));
  }
}
console.log(
  `fairness: ${CALLS} calls one every 2 ms, ${RUNS} runs, medians (${os.cpus()[0]?.model}, ${os.cpus().length} cores, Node ${process.versions.node})`,
);
const idle = median(results['corral idle'].p99);
const idleP = results['piscina idle'] ? median(results['piscina idle'].p99) : undefined;
console.log('| runner | p50 ms | p99 ms | p99 / idle |');
console.log('|---|--:|--:|--:|');
for (const [name, r] of Object.entries(results)) {
  const base = name.startsWith('piscina') ? idleP : idle;
  console.log(
    `| ${name} | ${median(r.p50).toFixed(2)} | ${median(r.p99).toFixed(2)} | ${(median(r.p99) / base).toFixed(2)}x |`,
  );
}
