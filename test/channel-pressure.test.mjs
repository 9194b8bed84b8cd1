// A producer in a process worker that puts as fast as it can, each put awaited, while this process
// consumes: the worker's send queue to us must not grow without bound (the link is read no faster
// than our event loop turns), with an unbounded queue and with a bounded one; ours neither. Memory
// is measured for real: the worker's peak RSS (getrusage) and ours, sampled.
import assert from 'node:assert/strict';
import { after, test as nodeTest } from 'node:test';
import { Process, Queue } from '../dist/src/index.js';

const MODULE = new URL('./fixtures/channel-tasks.mjs', import.meta.url);
const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const MiB = 2 ** 20;
const started = [];
after(() => {
  for (const p of started) p.kill();
});

/** Floods `q` from a process worker for `ms` with `size`-character items; this process drains it. */
async function flood(q, size, ms) {
  const base = process.memoryUsage.rss();
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 10);
  // A hard ceiling, so that a worker that does grow fails the test instead of the machine.
  const p = new Process({
    module: MODULE,
    fn: 'flood',
    args: [q, size, ms],
    runtime: 'process',
    limits: { data: '3GiB' },
  }).start();
  started.push(p);
  let got = 0;
  const consumer = (async () => {
    for await (const item of q) if (item.length === size) got++;
  })();
  try {
    const result = await p.join();
    q.close();
    await consumer;
    return { ...result, got, parentGrowth: peak - base };
  } finally {
    clearInterval(sampler);
  }
}

for (const [what, options] of [
  ['an unbounded queue', undefined],
  ['a queue with maxsize 20000 (credits for 4096 items ahead)', { maxsize: 20_000 }],
]) {
  test(`an awaited put loop in a process worker stays bounded on both sides: ${what}`, async (t) => {
    // 128 KiB items for 3 s: without back pressure from the link the worker queued everything it
    // put (an unbounded queue: ~190 MiB per second; maxsize: 4096 items = 512 MiB of credits).
    const size = 128 * 1024;
    const r = await flood(new Queue(options), size, 3000);
    t.diagnostic(
      `${r.n} items of 128 KiB; worker peak RSS ${(r.peakRss / MiB).toFixed(0)} MiB, this process grew ${(r.parentGrowth / MiB).toFixed(0)} MiB`,
    );
    assert.equal(r.got, r.n, 'every item put arrived');
    assert.ok(r.n > 100, `the producer made progress (${r.n} items)`);
    assert.ok(r.peakRss < 250 * MiB, `worker peak RSS ${(r.peakRss / MiB).toFixed(0)} MiB`);
    assert.ok(r.parentGrowth < 250 * MiB, `this process grew ${(r.parentGrowth / MiB).toFixed(0)} MiB`);
  });
}
