// Queues, JoinableQueues and Pipes between the main thread and workers (pool workers and
// Processes), under both runtimes: delivery and order, batching, back pressure, timeouts, close,
// bad items, several producers and consumers.
import assert from 'node:assert/strict';
import { after, describe, test as nodeTest } from 'node:test';
import { JoinableQueue, Pipe, Pool, Process, Queue, QueueClosedError, shmStatus } from '../dist/src/index.js';

const MODULE = new URL('./fixtures/channel-tasks.mjs', import.meta.url);
const RUNTIMES = ['thread', 'process'];
const test = (name, fn, options = {}) => nodeTest(name, { timeout: 30_000, ...options }, fn);
/** A consumer that stopped early gives back what it prefetched through the shared-memory addon. */
const giveBack = (runtime) =>
  runtime === 'process' && !shmStatus().crossProcess
    ? `no shared-memory addon: ${shmStatus().reason}`
    : false;

const pools = [];
after(async () => {
  for (const pool of pools) await pool.terminate();
});

function run(runtime, fn, args) {
  return new Process({ module: MODULE, fn, args, runtime }).start();
}

/** Every `{ p, i }` of producers 0..P-1 with i < n appears exactly once. */
function assertExactlyOnce(items, producers, n) {
  const seen = new Set();
  for (const { p, i } of items) {
    const key = `${p}:${i}`;
    assert.ok(!seen.has(key), `${key} delivered twice`);
    seen.add(key);
  }
  assert.equal(seen.size, producers * n, `expected ${producers * n} distinct items, got ${seen.size}`);
}

function assertFifoPerProducer(items) {
  const last = new Map();
  for (const { p, i } of items) {
    assert.ok(i > (last.get(p) ?? -1), `producer ${p}: item ${i} after ${last.get(p)}`);
    last.set(p, i);
  }
}

for (const runtime of RUNTIMES) {
  describe(`channels across ${runtime} workers`, () => {
    const pool = new Pool({ module: MODULE, runtime, workers: 3 });
    pools.push(pool);

    test('worker → main: every item once, in order; the task result comes after its items', async () => {
      const q = new Queue({ batch: { size: 64, delay: '5ms' } });
      const done = pool.apply('produce', [q, 1000, 7]);
      const got = [];
      while (got.length < 1000) got.push(await q.get());
      assert.equal(await done, 1000);
      assertExactlyOnce(got, 1, 1000);
      assert.deepEqual(
        got.map((x) => x.i),
        Array.from({ length: 1000 }, (_, i) => i),
      );
      assert.equal(q.size, 0);
    });

    test('main → worker: a worker drains what main put, and iteration ends on close', async () => {
      const q = new Queue({ batch: { size: 16, delay: '2ms' } });
      const items = Array.from({ length: 500 }, (_, i) => ({ p: 0, i }));
      await q.putMany(items);
      const drained = pool.apply('drain', [q]);
      await new Promise((r) => setTimeout(r, 20));
      q.close();
      assert.deepEqual(await drained, items);
    });

    test('worker → worker, several producers and consumers: exactly once; one consumer sees FIFO per producer', async () => {
      const q = new Queue({ maxsize: 200, batch: { size: 32, delay: '2ms' } });
      // Both consumers wait on the queue before any item exists: a consumer that starts late
      // (processes take ~0.2 s) would otherwise find the others' 6000 items already taken.
      const hello = new Queue();
      const consumers = [
        run(runtime, 'drainAfterHello', [q, hello]),
        run(runtime, 'drainAfterHello', [q, hello]),
      ];
      await hello.get();
      await hello.get();
      const producers = [0, 1, 2].map((p) => run(runtime, 'produce', [q, 2000, p]));
      await Promise.all(producers.map((p) => p.join()));
      q.close();
      const [a, b] = await Promise.all(consumers.map((c) => c.join()));
      assertExactlyOnce([...a, ...b], 3, 2000);
      assert.ok(a.length > 0 && b.length > 0, `both consumers got items (${a.length}, ${b.length})`);
      // One consumer: strict FIFO per producer, with three producers interleaving.
      const solo = new Queue({ maxsize: 100, batch: { size: 16, delay: '1ms' } });
      const ps = [0, 1, 2].map((p) => run(runtime, 'produce', [solo, 1000, p]));
      const c = run(runtime, 'drain', [solo]);
      await Promise.all(ps.map((p) => p.join()));
      solo.close();
      const got = await c.join();
      assertExactlyOnce(got, 3, 1000);
      assertFifoPerProducer(got);
    });

    test(
      'sentinels: two consumers each stop at theirs, though one may have fetched both',
      async () => {
        const q = new Queue({ batch: { size: 256, delay: '1ms' } });
        const consumers = [run(runtime, 'consume', [q, null]), run(runtime, 'consume', [q, null])];
        await pool.apply('produceNumbers', [q, 3000, 0]);
        await q.putMany([null, null]);
        const [a, b] = await Promise.all(consumers.map((c) => c.join()));
        assert.equal(a.length + b.length, 3000);
        assert.deepEqual(
          [...a, ...b].sort((x, y) => x - y),
          Array.from({ length: 3000 }, (_, i) => i),
        );
      },
      { skip: giveBack(runtime) },
    );

    test('batching: a lone put is delivered within batch.delay, a full batch at once', async () => {
      const q = new Queue({ batch: { size: 10, delay: '150ms' } });
      const task = pool.apply('putThenGet', [q, 'lone']); // puts, then waits for our reply
      const t0 = Date.now();
      assert.equal(await q.get(), 'lone');
      const waited = Date.now() - t0;
      assert.ok(waited >= 100 && waited < 1500, `lone item arrived after ${waited} ms (delay 150)`);
      await q.put('reply');
      assert.equal(await task, 'reply');
      // Ten items fill a batch of 10: they go at once, not after the delay nor at the task's end.
      const slow = new Queue({ batch: { size: 10, delay: '10s' } });
      const items = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
      const t1 = Date.now();
      const produced = pool.apply('putThenSleep', [slow, items, 4000]);
      assert.deepEqual(await slow.getMany(10), items);
      assert.ok(Date.now() - t1 < 3000, 'a full batch does not wait');
      // batch.bytes: two ~3 KB strings fill a 4 KB batch.
      const big = new Queue({ batch: { size: 1000, bytes: 4096, delay: '10s' } });
      const x = 'x'.repeat(3000);
      const t2 = Date.now();
      const putting = pool.apply('putThenSleep', [big, [x, x], 4000]);
      assert.deepEqual(await big.getMany(2), [x, x]);
      assert.ok(Date.now() - t2 < 3000, 'a batch of batch.bytes does not wait');
      await Promise.all([produced, putting]);
    });

    test('batch: false sends every put on its own, and gets one at a time', async () => {
      const q = new Queue({ batch: false });
      const t0 = Date.now();
      const task = pool.apply('putThenGet', [q, 'now']);
      assert.equal(await q.get(), 'now');
      assert.ok(Date.now() - t0 < 2000);
      await q.put('back');
      assert.equal(await task, 'back');
      const c = pool.apply('consume', [q, null]);
      await q.putMany([1, 2, 3, null]);
      assert.deepEqual(await c, [1, 2, 3]);
    });

    test('maxsize back pressure reaches workers: put waits, { wait: false } and timeout give QueueFullError', async () => {
      const q = new Queue({ maxsize: 4, batch: { size: 2, delay: '1ms' } });
      await q.putMany([1, 2, 3, 4]);
      assert.equal(await pool.apply('putNowait', [q, 5]), 'ERR_QUEUE_FULL');
      assert.equal(
        await pool.apply('produce', [q, 1, 0, { timeout: 50 }]).catch((e) => e.cause?.code),
        'ERR_QUEUE_FULL',
      );
      // A producer of 20 items can only run ahead by maxsize: it finishes once we take 16+.
      const producing = pool.apply('produceNumbers', [q, 20, 100]);
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(q.size <= 4, `size ${q.size} within maxsize`);
      const got = [];
      while (got.length < 24) got.push(await q.get());
      await producing;
      assert.deepEqual(got.slice(0, 4), [1, 2, 3, 4]);
      assert.deepEqual(
        got.slice(4).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => 100 + i),
      );
    });

    test('get timeout and { wait: false } in a worker give QueueEmptyError', async () => {
      const q = new Queue();
      const t0 = Date.now();
      assert.equal(await pool.apply('getWithTimeout', [q, 80]), 'ERR_QUEUE_EMPTY');
      assert.ok(Date.now() - t0 >= 75);
      assert.equal(await pool.apply('getNowait', [q]), 'ERR_QUEUE_EMPTY');
      await q.put(42);
      assert.equal(await pool.apply('getWithTimeout', [q, 1000]), 42);
    });

    test('close: a worker producer gets QueueClosedError, a worker consumer drains then ends', async () => {
      const q = new Queue();
      await q.putMany([1, 2, 3]);
      q.close();
      assert.equal(await pool.apply('tryPut', [q, 4]), 'ERR_QUEUE_CLOSED');
      assert.deepEqual(await pool.apply('drain', [q]), [1, 2, 3]);
      // Closed while a worker is blocked on maxsize.
      const full = new Queue({ maxsize: 1 });
      await full.put(0);
      const blocked = pool.apply('tryPut', [full, 1]);
      await new Promise((r) => setTimeout(r, 50));
      full.close();
      assert.equal(await blocked, 'ERR_QUEUE_CLOSED');
      // Closed from a worker: main's waiting get learns it.
      const fromWorker = new Queue();
      const getting = assert.rejects(fromWorker.get(), QueueClosedError);
      assert.equal(await pool.apply('closeQueue', [fromWorker]), 'closed');
      await getting;
      assert.equal(fromWorker.closed, true);
    });

    test('an uncloneable item rejects the put in the worker; the queue goes on', async () => {
      const q = new Queue();
      const result = await pool.apply('putBad', [q]);
      assert.deepEqual(result, ['ERR_SERIALIZATION', 'ok']);
      assert.equal(await q.get(), 'after');
    });

    test('JoinableQueue: workers mark items done, join() waits for them (here and in a worker)', async () => {
      const q = new JoinableQueue({ batch: { size: 8, delay: '1ms' } });
      await q.putMany(Array.from({ length: 40 }, (_, i) => i));
      const joinedInWorker = pool.apply('joinQueue', [q]);
      const workers = [pool.apply('work', [q, 20]), pool.apply('work', [q, 20])];
      await q.join();
      const [a, b] = await Promise.all(workers);
      assert.deepEqual(
        [...a, ...b].sort((x, y) => x - y),
        Array.from({ length: 40 }, (_, i) => i),
      );
      assert.equal(await joinedInWorker, 'joined');
    });

    test('Pipe: a worker echoes what main sends until main closes its end', async () => {
      const [here, there] = Pipe({ batch: { size: 8, delay: '1ms' } });
      const echoed = pool.apply('echo', [there]);
      for (let i = 0; i < 100; i++) await here.send({ i });
      const back = [];
      while (back.length < 100) back.push(await here.recv());
      assert.deepEqual(
        back.map((x) => x.i),
        Array.from({ length: 100 }, (_, i) => i),
      );
      here.close();
      assert.equal(await echoed, 100);
    });
  });
}
