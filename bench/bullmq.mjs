/**
 * The BullMQ backend beside the local pool, in one run: items/s of a map of tiny items (square) and of
 * CPU-bound ones (fib) through Redis with 1, 2 and 3 `corral worker` hosts (separate processes on
 * this machine, one local worker each) against a local pool of as many workers; the round trip of one
 * apply (p50/p99); and the time from a host's SIGKILL to its last lost job finishing on another host.
 * Medians of --runs runs. Starts its own redis-server (a free port, no persistence).
 *
 *   npm run build && node bench/bullmq.mjs                 # 3 runs
 *   node bench/bullmq.mjs --runs 1 --tiny 100000 --fib 27 --fib-items 400
 */
import { parseArgs } from 'node:util';
import { Pool } from '../dist/src/index.js';
import { sleep, startHost, startRedis, TASKS } from '../test/bullmq-helpers.mjs';

const { values: o } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    tiny: { type: 'string', default: '200000' },
    fib: { type: 'string', default: '25' },
    'fib-items': { type: 'string', default: '600' },
  },
});
const RUNS = Number(o.runs);
const TINY = Number(o.tiny);
const FIB = Number(o.fib);
const FIB_ITEMS = Number(o['fib-items']);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function itemsPerSecond(pool, task, items) {
  const out = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const results = await pool.map(task, items);
    const s = (performance.now() - t0) / 1000;
    if (results.length !== items.length) throw new Error('lost results');
    out.push(items.length / s);
  }
  return median(out);
}

const tiny = Array.from({ length: TINY }, (_, i) => i);
const fibs = Array.from({ length: FIB_ITEMS }, () => FIB);
const rows = [];
const fmt = (n) => Math.round(n).toLocaleString('en-US');

const redis = await startRedis();
const hosts = [];
try {
  for (const n of [1, 2, 3]) {
    const local = new Pool({ module: TASKS, workers: n });
    await local.apply('square', [1]);
    rows.push([
      `local pool, ${n} worker(s)`,
      fmt(await itemsPerSecond(local, 'square', tiny)),
      fmt(await itemsPerSecond(local, 'fib', fibs)),
    ]);
    await local.close();
    while (hosts.length < n) hosts.push(await startHost(redis.url, 'bench', ['--workers', '1']));
    const remote = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue: 'bench' } },
    });
    await remote.apply('square', [1]);
    await sleep(2100); // the producer reads the hosts' heartbeats every 2 s: chunks are sized by them
    rows.push([
      `BullMQ, ${n} host(s)`,
      fmt(await itemsPerSecond(remote, 'square', tiny)),
      fmt(await itemsPerSecond(remote, 'fib', fibs)),
    ]);
    await remote.close();
  }

  const remote = new Pool({ module: TASKS, backend: { bullmq: { connection: redis.url, queue: 'bench' } } });
  const lat = [];
  for (let i = 0; i < 50; i++) await remote.apply('square', [i]);
  for (let i = 0; i < 500; i++) {
    const t0 = performance.now();
    await remote.apply('square', [i]);
    lat.push(performance.now() - t0);
  }
  lat.sort((a, b) => a - b);
  const p50 = lat[Math.floor(lat.length * 0.5)];
  const p99 = lat[Math.floor(lat.length * 0.99)];
  await remote.close();
  for (const h of hosts.splice(0)) await h.kill('SIGTERM');

  // A host SIGKILLed mid-map: time from the kill to the last re-run item (hosts: lock 1 s, check 0.5 s).
  const recoveries = [];
  for (let r = 0; r < RUNS; r++) {
    const args = ['--workers', '1', '--lock-duration', '1000', '--stalled-interval', '500'];
    const [a, b] = [
      await startHost(redis.url, `kill${r}`, args),
      await startHost(redis.url, `kill${r}`, args),
    ];
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue: `kill${r}` } },
    });
    let killedAt;
    let last = 0;
    let seen = 0;
    for await (const [, , attempt] of pool.imapUnordered(
      'tag',
      Array.from({ length: 400 }, (_, i) => i),
    )) {
      seen++;
      if (attempt > 1) last = performance.now();
      if (killedAt === undefined && seen >= 120) {
        await a.kill('SIGKILL');
        killedAt = performance.now();
      }
    }
    recoveries.push(last - killedAt);
    await pool.close();
    await b.kill('SIGTERM');
  }

  const w = [28, 16, 16];
  console.log(
    `${'backend'.padEnd(w[0])}${'tiny items/s'.padStart(w[1])}${`fib(${FIB}) items/s`.padStart(w[2])}`,
  );
  for (const row of rows)
    console.log(`${row[0].padEnd(w[0])}${row[1].padStart(w[1])}${row[2].padStart(w[2])}`);
  console.log(
    `\napply round trip through Redis (1 host): p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`,
  );
  console.log(
    `host SIGKILL to its last lost job done elsewhere (lock 1000 ms + check 500 ms): median ${median(recoveries).toFixed(0)} ms` +
      ` (${recoveries.map((x) => x.toFixed(0)).join(', ')})`,
  );
  console.log(
    `tiny map: ${TINY.toLocaleString('en-US')} items; fib map: ${FIB_ITEMS} items; medians of ${RUNS} runs`,
  );
} finally {
  for (const h of hosts) await h.kill('SIGKILL');
  await redis.stop();
}
