/**
 * Queue throughput: a million small items ({ id, tag }) from a producer worker to the main thread
 * and to a consumer worker, through a batched Queue and through `batch: false` (one message per
 * item), under both runtimes; and Python's multiprocessing.Queue doing the same on this machine
 * (bench/python_queue.py). Both queues are bounded (maxsize 10 000) and stop on a None/null
 * sentinel. Medians of --runs runs, ratios in one table.
 *
 *   npm run build && node bench/queue.mjs                       # 3 runs of 1M items per cell
 *   node bench/queue.mjs --runs 5 --items 1000000 --unbatched-items 200000 --no-python
 *
 * Timing starts when the producer's worker is ready (Process 'start': module loaded, function
 * about to run), so worker start-up (~50 ms thread, ~100 ms process) is not counted; Python's
 * clock starts at Process.start() (a fork, a few ms). It stops when the consumer has the sentinel.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { Process, Queue } from '../dist/src/index.js';

export async function produce(queue, n) {
  for (let i = 0; i < n; i++) await queue.put({ id: i, tag: 'job' });
  await queue.put(null);
}

export async function consume(queue) {
  let n = 0;
  for (let x = await queue.get(); x !== null; x = await queue.get()) n++;
  return n;
}

const SELF = new URL(import.meta.url);
const BATCHED = { maxsize: 10_000, batch: { size: 256, delay: '2ms' } };
const UNBATCHED = { maxsize: 10_000, batch: false };

async function once(runtime, route, options, n) {
  const queue = new Queue(options);
  let consumer;
  if (route === 'worker → worker') {
    consumer = new Process({ module: SELF, fn: 'consume', args: [queue], runtime }).start();
    await new Promise((resolve) => consumer.once('start', resolve));
  }
  const producer = new Process({ module: SELF, fn: 'produce', args: [queue, n], runtime });
  const ready = new Promise((resolve) => producer.once('start', () => resolve(performance.now())));
  producer.start();
  const count = consumer ? consumer.join() : consume(queue);
  const got = await count;
  const end = performance.now();
  await producer.join();
  if (got !== n) throw new Error(`${runtime} ${route}: got ${got} of ${n}`);
  return (end - (await ready)) / 1000;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rate = (n, s) => `${(n / s / 1e6).toFixed(3)}M/s`;

async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      items: { type: 'string', default: '1000000' },
      'unbatched-items': { type: 'string' },
      'no-python': { type: 'boolean', default: false },
    },
  });
  const runs = Number(values.runs);
  const n = Number(values.items);
  const nUnbatched = Number(values['unbatched-items'] ?? n);
  const rows = [];
  for (const route of ['worker → main', 'worker → worker']) {
    for (const runtime of ['thread', 'process']) {
      const times = { batched: [], unbatched: [] };
      // Interleaved, so a noisy moment hits both columns alike.
      for (let r = 0; r < runs; r++) {
        times.batched.push(await once(runtime, route, BATCHED, n));
        times.unbatched.push(await once(runtime, route, UNBATCHED, nUnbatched));
        process.stderr.write('.');
      }
      rows.push({
        route,
        runtime,
        batched: n / median(times.batched),
        unbatched: nUnbatched / median(times.unbatched),
        bs: median(times.batched),
        us: median(times.unbatched),
      });
    }
  }
  let python;
  if (!values['no-python']) {
    const script = fileURLToPath(new URL('./python_queue.py', import.meta.url));
    const out = execFileSync('python3', [script, '--items', String(n), '--runs', String(runs)], {
      encoding: 'utf8',
    });
    python = JSON.parse(out);
  }
  process.stderr.write('\n');
  console.log(
    `\nQueue throughput, ${n.toLocaleString('en')} items of { id, tag } (unbatched: ${nUnbatched.toLocaleString('en')}), maxsize 10 000, medians of ${runs}`,
  );
  console.log('batched = { size: 256, delay: 2ms }; unbatched = batch: false (a message per item)\n');
  console.log(
    '| route | runtime | batched | batch: false | batched / unbatched | Python mp.Queue | batched / Python |',
  );
  console.log('|---|---|--:|--:|--:|--:|--:|');
  for (const row of rows) {
    const py = python?.[row.route === 'worker → main' ? 'worker_to_main' : 'worker_to_worker'];
    const pyRate = py ? n / py : undefined;
    console.log(
      `| ${row.route} | ${row.runtime} | ${rate(1, 1 / row.batched)} (${row.bs.toFixed(2)} s) | ` +
        `${rate(1, 1 / row.unbatched)} (${row.us.toFixed(2)} s) | ${(row.batched / row.unbatched).toFixed(1)}x | ` +
        `${pyRate ? `${rate(1, 1 / pyRate)} (${py.toFixed(2)} s)` : '-'} | ${pyRate ? `${(row.batched / pyRate).toFixed(1)}x` : '-'} |`,
    );
  }
}

if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) await main();
