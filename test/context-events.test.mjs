// What a running task tells its caller (issue 13): progress and events through corral/task's context,
// batched, delivered before the result, never after it; and streamed results of a generator task with
// back pressure, cancellation and exactly-once delivery when its worker dies mid-stream.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError } from '../dist/src/index.js';
import { lines, RUNTIMES, rejection, settles, sleep, test, usePools, useTempDir } from './helpers.mjs';

const cooperative = new URL('./fixtures/cooperative.mjs', import.meta.url);
const makePool = usePools(cooperative);
const newFile = useTempDir('corral-events-', 'log');

for (const runtime of RUNTIMES) {
  describe(`progress and events (${runtime})`, () => {
    test('progress arrives while a synchronous task runs, batched, the last value last; events all, in order', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const progress = [];
      const events = [];
      let resultAt;
      const result = await pool.apply('reports', [200], {
        onProgress: (v) => progress.push([v, resultAt === undefined]),
        onEvent: (name, data) => events.push([name, data]),
      });
      resultAt = progress.length;
      assert.equal(result, 200);
      assert.ok(progress.length > 1 && progress.length < 200, `${progress.length} progress callbacks`);
      assert.equal(progress.at(-1)[0], 199, 'the latest value is never dropped');
      assert.ok(
        progress.every(([, before]) => before),
        'all before the result',
      );
      const values = progress.map(([v]) => v);
      assert.deepEqual(
        values,
        [...values].sort((a, b) => a - b),
      );
      assert.deepEqual(events, [['half', { at: 100 }]]);
    });

    test('map items report with their index in the input', async () => {
      const { pool } = makePool({ runtime, workers: 2 });
      const seen = new Map();
      const progress = new Set();
      const out = await pool.map('itemEvents', [10, 11, 12, 13, 14, 15, 16], {
        chunksize: 3,
        onEvent: (_name, data, index) => seen.set(index, data),
        onProgress: (_v, index) => progress.add(index),
      });
      assert.deepEqual(out, [10, 11, 12, 13, 14, 15, 16]);
      assert.deepEqual(
        [...seen].sort(([a], [b]) => a - b),
        [0, 1, 2, 3, 4, 5, 6].map((i) => [i, 10 + i]),
      );
      assert.deepEqual([...progress].sort(), [0, 1, 2, 3, 4, 5, 6]);
    });

    test('what a task sent before its worker died is delivered; then the typed error', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const events = [];
      const error = await rejection(pool.apply('emitThenDie', [], { onEvent: (n) => events.push(n) }));
      assert.equal(error.code, 'ERR_WORKER_CRASHED');
      assert.deepEqual(events, ['before']);
    });

    test('nothing arrives after the call settled', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const events = [];
      assert.equal(await pool.apply('lingers', [], { onEvent: (n) => events.push(n) }), 'done');
      await sleep(100);
      assert.deepEqual(events, []);
    });

    test('a value that cannot be cloned fails in the task, at the call; bad callbacks are ConfigErrors', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      assert.equal(await pool.apply('badProgress', []), 'DataCloneError');
      await assert.rejects(pool.apply('reports', [1], { onProgress: 'yes' }), ConfigError);
    });

    test('a callback that throws is a warning; the pool and the call go on', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const warnings = [];
      const onWarning = (w) => warnings.push(w);
      process.on('warning', onWarning);
      try {
        const result = await pool.apply('reports', [5], {
          onProgress: () => {
            throw new Error('callback bug');
          },
        });
        assert.equal(result, 5);
        await sleep(10);
      } finally {
        process.off('warning', onWarning);
      }
      assert.ok(warnings.some((w) => w.code === 'CORRAL_CALLBACK_THREW'));
    });
  });

  describe(`pool.stream (${runtime})`, () => {
    test("yields a generator task's items in order; the return value ends it", async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const got = [];
      for await (const v of pool.stream('counter', [1000])) got.push(v);
      assert.deepEqual(
        got,
        Array.from({ length: 1000 }, (_, i) => i),
      );
      const it = pool.stream('letters', ['abc']);
      assert.deepEqual(await it.next(), { value: 'a', done: false });
      assert.deepEqual(await it.next(), { value: 'b', done: false });
      assert.deepEqual(await it.next(), { value: 'c', done: false });
      assert.deepEqual(await it.next(), { value: undefined, done: true });
    });

    test('back pressure: the task runs at most a window ahead of a slow consumer', async () => {
      const log = newFile();
      const { pool } = makePool({ runtime, workers: 1 });
      const it = pool.stream('counter', [500, log], { window: 8 });
      assert.equal((await it.next()).value, 0);
      await sleep(200);
      const ahead = lines(log).length;
      assert.ok(ahead <= 10, `the task yielded ${ahead} items while the consumer took 1`);
      await it.return();
    });

    test("breaking out cancels the task: its generator's finally runs, its worker lives on", async () => {
      const log = newFile();
      const { pool, events } = makePool({ runtime, workers: 1 });
      for await (const v of pool.stream('counter', [100_000, log], { window: 4 })) if (v === 5) break;
      await sleep(150);
      assert.ok(lines(log).includes('finally'));
      assert.equal(await pool.apply('sleep', [1, 'next']), 'next');
      assert.equal(events.exits.length, 0);
    });

    test('a worker dying mid-stream: every item yielded is delivered, then the typed error', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const got = [];
      const error = await rejection(
        (async () => {
          for await (const v of pool.stream('diesMidStream', [])) got.push(v);
        })(),
        'the stream',
      );
      assert.equal(error.code, 'ERR_WORKER_CRASHED');
      assert.deepEqual(got, ['a', 'b', 'c']);
    });

    test('abort and timeout end the stream with their errors', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const controller = new AbortController();
      const it = pool.stream('counter', [1e9], { signal: controller.signal, window: 2 });
      await it.next();
      controller.abort();
      let error;
      try {
        for (;;) if ((await it.next()).done) break;
      } catch (e) {
        error = e;
      }
      assert.equal(error?.code, 'ERR_TASK_ABORTED');
      const slow = pool.stream('counter', [1e9], { timeout: 100, window: 2 });
      const timedOut = await rejection(
        (async () => {
          for await (const _v of slow) await sleep(40);
        })(),
      );
      assert.equal(timedOut.code, 'ERR_TASK_TIMEOUT');
    });

    test('a task that is not a generator fails with a TaskError saying so', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const error = await rejection(settles(pool.stream('notAGenerator', []).next(), 'next()'));
      assert.equal(error.code, 'ERR_TASK_FAILED');
      assert.match(error.message, /not an iterator.*generator function/);
    });
  });
}
