// map / starmap / imap / imapUnordered: results equal the serial ones whatever the chunking, input is
// read lazily, a slow item holds back nothing in imapUnordered, and failures name the item's error.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe } from 'node:test';
import { ConfigError, CorralError, shmStatus, TaskError } from '../dist/src/index.js';
import { RUNTIMES, settles as settlesWithin, sleep, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/misbehave.mjs', import.meta.url);

const makeTrackedPool = usePools(MODULE);
const makePool = (options) => makeTrackedPool(options).pool;

/** In this file a promise gets 10 s to settle (helpers.mjs defaults to 5 s). */
const settles = (promise, what, limitMs = 10_000) => settlesWithin(promise, what, limitMs);

async function collect(iterable, what = 'the iteration') {
  return settles(
    (async () => {
      const out = [];
      for await (const r of iterable) out.push(r);
      return out;
    })(),
    what,
  );
}

const square = (x) => x * x;
const N = 10_000;
const xs = Array.from({ length: N }, (_, i) => i - 5000);

for (const runtime of RUNTIMES) {
  describe(`map (${runtime})`, () => {
    for (const chunksize of ['auto', 1, 7, 1000]) {
      test(`map of ${N} items with chunksize ${chunksize} equals the serial result, in order`, async () => {
        const pool = makePool({ runtime, workers: 2 });
        const out = await settles(pool.map('square', xs, { chunksize }), 'map');
        assert.equal(out.length, N);
        assert.deepEqual(out, xs.map(square));
        const labels = await settles(pool.map('label', xs.slice(0, 1000), { chunksize }), 'map');
        assert.deepEqual(
          labels,
          xs.slice(0, 1000).map((x) => `#${x}`),
        );
      });
    }

    test('map keeps every kind of value intact, numbers included', async () => {
      const pool = makePool({ runtime, workers: 2 });
      const odd = [0, -0, 1.5, -1e308, Number.MAX_SAFE_INTEGER + 2, Number.NaN, Number.POSITIVE_INFINITY];
      const numbers = await pool.map('echo', odd);
      assert.equal(numbers.length, odd.length);
      for (const [i, v] of odd.entries())
        assert.ok(Object.is(numbers[i], v), `item ${i}: ${numbers[i]} != ${v}`);
      const mixed = [1, 'two', null, { three: [3] }, [4], true, 5n, new Map([[6, 6]]), undefined];
      assert.deepEqual(await pool.map('echo', mixed, { chunksize: 4 }), mixed);
    });

    test('map accepts any iterable: a generator, a Set', async () => {
      const pool = makePool({ runtime, workers: 2 });
      function* gen() {
        for (let i = 0; i < 500; i++) yield i;
      }
      assert.deepEqual(await settles(pool.map('square', gen()), 'map'), [...gen()].map(square));
      assert.deepEqual(await settles(pool.map('square', new Set([3, 1, 2])), 'map'), [9, 1, 4]);
    });

    test('starmap spreads each item as the arguments', async () => {
      const pool = makePool({ runtime, workers: 2 });
      assert.deepEqual(
        await pool.starmap('add', [
          [1, 2],
          [3, 4],
        ]),
        [3, 7],
      );
      const pairs = Array.from({ length: 1000 }, (_, i) => [i, 2 * i]);
      assert.deepEqual(
        await settles(pool.starmap('add', pairs, { chunksize: 7 }), 'starmap'),
        pairs.map(([a, b]) => a + b),
      );
      const strings = Array.from({ length: 50 }, (_, i) => [`a${i}`, `b${i}`]);
      assert.deepEqual(
        await pool.starmap('add', strings),
        strings.map(([a, b]) => a + b),
      );
    });

    test('empty input gives empty results', async () => {
      const pool = makePool({ runtime, workers: 1 });
      assert.deepEqual(await settles(pool.map('square', []), 'map([])'), []);
      assert.deepEqual(await settles(pool.starmap('add', []), 'starmap([])'), []);
      assert.deepEqual(await collect(pool.imap('square', [])), []);
      assert.deepEqual(await collect(pool.imapUnordered('square', (function* () {})())), []);
      assert.deepEqual(await settles(pool.map('square', (async function* () {})()), 'map(empty async)'), []);
      assert.equal(await pool.apply('square', [2]), 4, 'the pool is fine afterwards');
    });

    test('items that are not iterable are a ConfigError', async () => {
      const pool = makePool({ runtime, workers: 1 });
      for (const bad of [5, null, undefined, { length: 2 }]) {
        await assert.rejects(pool.map('square', bad), (e) => {
          assert.ok(e instanceof ConfigError, `map(${bad}): expected ConfigError, got ${e}`);
          assert.ok(e instanceof CorralError);
          assert.equal(e.code, 'ERR_INVALID_OPTION');
          assert.equal(e.option, 'items');
          return true;
        });
      }
      await assert.rejects(pool.starmap('add', 42), ConfigError);
      await assert.rejects(async () => {
        for await (const _ of pool.imap('square', 5));
      }, ConfigError);
      await assert.rejects(async () => {
        for await (const _ of pool.imapUnordered('square', 5));
      }, ConfigError);
      await assert.rejects(
        pool.map('square', [1], { chunksize: 0 }),
        (e) => e instanceof ConfigError && e.option === 'chunksize',
      );
    });

    test('a throwing item rejects map with a TaskError for that item', async () => {
      const pool = makePool({ runtime, workers: 2 });
      const items = Array.from({ length: 100 }, (_, i) => i);
      for (const chunksize of [1, 10, 'auto']) {
        const error = await settles(
          pool.map('failOn', items, { chunksize }).then(
            (v) => assert.fail(`map resolved: ${v.length} results`),
            (e) => e,
          ),
          'map',
        );
        assert.ok(error instanceof TaskError, `chunksize ${chunksize}: expected TaskError, got ${error}`);
        assert.equal(error.code, 'ERR_TASK_FAILED');
        assert.equal(error.task, 'failOn');
        assert.equal(error.cause?.name, 'TypeError');
        assert.equal(error.cause?.message, 'unlucky 13');
      }
      // imap yields what comes before the failing item, then throws.
      const got = [];
      const error = await settles(
        (async () => {
          try {
            for await (const r of pool.imap('failOn', items, { chunksize: 4 })) got.push(r);
          } catch (e) {
            return e;
          }
        })(),
        'imap',
      );
      assert.ok(error instanceof TaskError, `imap: expected TaskError, got ${error}`);
      assert.deepEqual(
        got,
        items.slice(0, 13).map((x) => x * 2),
      );
      assert.deepEqual(await pool.map('failOn', [1, 2, 3]), [2, 4, 6], 'the pool goes on');
    });
  });

  describe(`imap (${runtime})`, () => {
    test('imap over a 10-million-item generator reads lazily and stops reading on break', async () => {
      const pool = makePool({ runtime, workers: 2 });
      let pulls = 0;
      function* huge() {
        for (let i = 0; i < 10_000_000; i++) {
          pulls++;
          yield i;
        }
      }
      const got = [];
      await settles(
        (async () => {
          for await (const r of pool.imap('square', huge())) {
            got.push(r);
            if (got.length === 1000) break;
          }
        })(),
        'imap',
      );
      assert.deepEqual(
        got,
        Array.from({ length: 1000 }, (_, i) => i * i),
      );
      const atBreak = pulls;
      assert.ok(atBreak >= 1000);
      assert.ok(atBreak < 200_000, `the generator was pulled ${atBreak} times for 1000 results`);
      await sleep(300);
      assert.equal(pulls, atBreak, 'no pulls after break');
      assert.equal(await pool.apply('square', [3]), 9, 'the pool is usable after the break');
      const stats = pool.stats();
      assert.equal(stats.queued, 0, 'the abandoned chunks left the queue');
    });

    test('imap over an async generator yields the results in order', async () => {
      const pool = makePool({ runtime, workers: 2 });
      let pulls = 0;
      async function* source() {
        for (let i = 0; i < 300; i++) {
          pulls++;
          if (i % 50 === 0) await sleep(5);
          yield i;
        }
      }
      assert.deepEqual(
        await collect(pool.imap('square', source())),
        Array.from({ length: 300 }, (_, i) => i * i),
      );
      assert.equal(pulls, 300);
      const unordered = await collect(pool.imapUnordered('square', source()));
      assert.deepEqual(
        unordered.sort((a, b) => a - b),
        Array.from({ length: 300 }, (_, i) => i * i),
      );
    });

    /** A pool of 2 workers, both started and warmed up on tiny tasks (as a long-lived pool would be). */
    async function warmPool() {
      const pool = makePool({ runtime, workers: 2 });
      let started = 0;
      pool.on('workerStart', () => started++);
      const deadline = Date.now() + 10_000;
      while (started < 2 && Date.now() < deadline) await sleep(10);
      assert.equal(started, 2, 'precondition: both workers started');
      await pool.map(
        'square',
        Array.from({ length: 400 }, (_, i) => i),
      );
      return pool;
    }

    async function arrivals(pool, options) {
      const items = Array.from({ length: 20 }, (_, i) => i);
      const out = [];
      const started = Date.now();
      await settles(
        (async () => {
          for await (const r of pool.imapUnordered('slowItem', items, options))
            out.push([r, Date.now() - started]);
        })(),
        'imapUnordered',
      );
      assert.deepEqual(
        out.map(([r]) => r).sort((a, b) => a - b),
        items,
        'every item exactly once',
      );
      return out;
    }

    test('imapUnordered: the first results arrive before a slow (300 ms) item', async () => {
      const pool = await warmPool();
      for (const chunksize of [1, 'auto']) {
        const out = await arrivals(pool, { chunksize });
        assert.notEqual(
          out[0][0],
          0,
          `chunksize ${chunksize}: the slow item came first: ${JSON.stringify(out)}`,
        );
        assert.ok(out[0][1] < 200, `chunksize ${chunksize}: the first result took ${out[0][1]} ms`);
      }
    });

    test('imapUnordered: a slow item holds back none of the other items (chunksize 1)', async () => {
      const pool = await warmPool();
      const out = await arrivals(pool, { chunksize: 1 });
      const held = out.filter(([r, ms]) => r !== 0 && ms >= 250).map(([r]) => r);
      assert.deepEqual(held, [], `fast items that waited for the slow one: ${JSON.stringify(out)}`);
      assert.equal(out.at(-1)[0], 0, 'the slow item arrives last');
    });

    test('imap with maxQueue reads input only as fast as the queue drains (no QueueFullError)', async () => {
      const pool = makePool({ runtime, workers: 2, maxQueue: 2 });
      const items = Array.from({ length: 300 }, (_, i) => i);
      let pulls = 0;
      let maxQueued = 0;
      let maxAhead = 0;
      function* source() {
        for (const x of items) {
          pulls++;
          maxQueued = Math.max(maxQueued, pool.stats().queued);
          yield x;
        }
      }
      const out = [];
      await settles(
        (async () => {
          for await (const r of pool.imap('square', source(), { chunksize: 1 })) {
            out.push(r);
            maxAhead = Math.max(maxAhead, pulls - out.length);
          }
        })(),
        'imap',
      );
      assert.deepEqual(out, items.map(square));
      assert.ok(maxQueued <= 2, `the queue held ${maxQueued} units with maxQueue 2`);
      assert.ok(maxAhead < 100, `input was read ${maxAhead} items ahead of the consumer`);
      assert.deepEqual(await settles(pool.map('square', items, { chunksize: 3 }), 'map'), items.map(square));
    });
  });
}

const squareMostly = (x) => {
  const r = ((x % 1000) + 1000) % 1000;
  return r === 500 ? `#${x}` : x * x;
};

for (const runtime of RUNTIMES) {
  describe(`numeric chunks whose results change kind mid-chunk (${runtime})`, () => {
    // 3,000-item chunks: numbers in (a Float64Array, the process arena), the worker's fast path writing
    // numbers out until an item returns a string, a promise or throws.
    const items = Array.from({ length: 12_000 }, (_, i) => i - 3000).filter((x) => x !== 4321);

    test('strings and promises among number results land at their own positions', async () => {
      const pool = makePool({ runtime, workers: 2 });
      const out = await settles(pool.map('squareMostly', items, { chunksize: 3000 }), 'map');
      assert.deepEqual(out, items.map(squareMostly));
      // The same pool goes on with all-number chunks (the fast path to the end).
      assert.deepEqual(
        await settles(pool.map('square', items, { chunksize: 3000 }), 'map'),
        items.map(square),
      );
    });

    test('a throw mid-chunk names its item; the items around it ran', async () => {
      const pool = makePool({ runtime, workers: 2 });
      const withBad = Array.from({ length: 6000 }, (_, i) => i);
      const seen = new Map();
      await assert.rejects(
        (async () => {
          for await (const r of pool.imap('squareMostly', withBad, { chunksize: 3000 }))
            seen.set(seen.size, r);
        })(),
        (e) => e instanceof TaskError && /no square for 4321/.test(e.message),
      );
      // imap yields in order up to the failing item: everything before 4321 came back right.
      assert.equal(seen.size, 4321);
      for (const [i, r] of seen) assert.deepEqual(r, squareMostly(i));
      assert.deepEqual(await settles(pool.map('square', [2, 3]), 'map'), [4, 9]);
    });
  });
}

/** Shared segments this test process created that still exist (claim boards and arenas). */
const ownSegments = () =>
  readdirSync('/dev/shm').filter((n) => n.startsWith(`corral_${process.pid}_`)).length;

describe("big number chunks travel through a process worker's arena", {
  skip: shmStatus().crossProcess ? false : `no shared-memory addon: ${shmStatus().reason}`,
}, () => {
  const big = Array.from({ length: 200_000 }, (_, i) => i - 100_000);

  test('results equal the serial ones, through the arena, the pipe fallbacks and item errors', async () => {
    const pool = makePool({ runtime: 'process', workers: 2 });
    // Both workers up, so that both take chunks.
    while (pool.stats().workers.some((w) => w.state === 'starting')) await sleep(10);
    const boards = ownSegments();
    assert.deepEqual(await settles(pool.map('square', big, { chunksize: 5000 }), 'map'), big.map(square));
    assert.equal(ownSegments(), boards + 2, 'each worker got an arena beside its claim board');
    // Strings back for numbers in: the results take the pipe.
    const labels = await settles(pool.map('label', big.slice(0, 20_000), { chunksize: 5000 }), 'map');
    assert.equal(labels[19_999], `#${big[19_999]}`);
    // Chunks bigger than the arena (4 MiB = 524,288 numbers) go through the pipe whole.
    const huge = Array.from({ length: 1_200_000 }, (_, i) => i);
    const out = await settles(pool.map('square', huge, { chunksize: 600_000 }), 'map', 30_000);
    assert.equal(out.length, huge.length);
    assert.equal(out[1_199_999], 1_199_999 ** 2);
    // An item that throws: the chunk comes back as a partial result, the error names the item.
    await assert.rejects(pool.map('failOn', big, { chunksize: 5000 }), (e) => e instanceof TaskError);
    assert.deepEqual(await settles(pool.map('square', big, { chunksize: 4096 }), 'map'), big.map(square));
    await pool.close();
    assert.equal(ownSegments(), 0, 'close() removed the arenas and boards');
  });

  test('a worker that dies mid-map: its arena goes with it, every item is answered once', async () => {
    const marker = join(tmpdir(), `corral-arena-${process.pid}-${Date.now()}`);
    const pool = makePool({
      runtime: 'process',
      workers: 2,
      retries: 1,
      env: { ...process.env, CORRAL_TEST_MARKER: marker, CORRAL_TEST_DIE_AT: String(big[30_000]) },
    });
    try {
      const xs = big.slice(0, 50_000);
      const out = await settles(pool.map('squareOrDieAt', xs, { chunksize: 2500 }), 'map');
      assert.deepEqual(out, xs.map(square));
      assert.ok(existsSync(marker), 'a worker died on the way');
      const numbers = await settles(pool.map('square', xs, { chunksize: 2500 }), 'map');
      assert.deepEqual(numbers, xs.map(square));
    } finally {
      rmSync(marker, { force: true });
      await pool.close();
    }
    assert.equal(ownSegments(), 0, 'no segment outlived the dead worker or the pool');
  });
});
