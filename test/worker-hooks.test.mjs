// Per-worker lifecycle (issue 13): teardown when a worker retires in good order, broadcast to every
// live worker, elastic pool size, and per-task output captured onto errors.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError, TaskError } from '../dist/src/index.js';
import { lines, RUNTIMES, ready, rejection, settles, sleep, test, usePools, useTempDir } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const makePool = usePools(misbehave);
const newFile = useTempDir('corral-hooks-', 'log');

async function until(check, what, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await sleep(20);
  }
}

for (const runtime of RUNTIMES) {
  describe(`teardown (${runtime})`, () => {
    test('runs once in every worker that retires in good order: recycled, idle, and at close()', async () => {
      const file = newFile();
      const { pool, events } = makePool({
        runtime,
        workers: 1,
        initializer: 'hookInit',
        initArgs: [file],
        teardown: 'hookTeardown',
        maxTasksPerWorker: 3,
      });
      for (let i = 0; i < 7; i++) await pool.apply('square', [i]);
      await settles(pool.close(), 'close()', 15_000);
      assert.equal(lines(file).length, events.starts.length, 'one teardown per worker started');
      assert.ok(events.starts.length >= 3, 'recycled workers ran it too');
    });

    test('is not run by a worker that crashes', async () => {
      const file = newFile();
      const { pool, events } = makePool({
        runtime,
        workers: 1,
        initializer: 'hookInit',
        initArgs: [file],
        teardown: 'hookTeardown',
      });
      await rejection(pool.apply('exit', [3]));
      await pool.close();
      assert.equal(lines(file).length, events.starts.length - 1);
    });

    test('a teardown that hangs is killed after stopTimeout, and close() resolves', async () => {
      const { pool, events } = makePool({
        runtime,
        workers: 1,
        teardown: 'hangingTeardown',
        stopTimeout: 300,
      });
      await pool.apply('square', [2]);
      const started = Date.now();
      await settles(pool.close(), 'close()', 5000);
      assert.ok(Date.now() - started >= 250, 'it was given its stopTimeout');
      assert.equal(events.exits.length, 1);
    });

    test('a teardown that is not an export fails the pool at start, saying so', async () => {
      const { pool } = makePool({ runtime, workers: 1, teardown: 'noSuchExport' });
      const error = await rejection(pool.apply('square', [2]));
      assert.equal(error.code, 'ERR_WORKER_START');
      assert.match(error.message, /teardown 'noSuchExport' is not a function export/);
    });
  });

  describe(`broadcast (${runtime})`, () => {
    test('runs once on every live worker, one outcome each', async () => {
      const { pool, events } = makePool({ runtime, workers: 3 });
      await ready(events, 3);
      const outcomes = await settles(pool.broadcast('whoami', []), 'broadcast');
      assert.equal(outcomes.length, 3);
      assert.deepEqual(outcomes.map((o) => o.workerId).sort(), events.starts.map((s) => s.workerId).sort());
      assert.ok(outcomes.every((o) => o.status === 'fulfilled'));
      const who = outcomes.map((o) => JSON.stringify(o.value));
      assert.equal(new Set(who).size, 3, 'three different workers answered');
      assert.equal(await pool.apply('square', [5]), 25);
    });

    test('a worker that dies while running it gives a rejected outcome; the others are fulfilled', async () => {
      const { pool, events } = makePool({ runtime, workers: 2 });
      await ready(events, 2);
      const busy = pool.apply('spinFor', [300, 'busy']);
      await sleep(50);
      const outcomes = await settles(pool.broadcast('sleep', [100, 'ok']), 'broadcast');
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['fulfilled', 'fulfilled'],
      );
      assert.equal(await busy, 'busy');
      const dies = await settles(pool.broadcast('exit', [3]), 'broadcast of exit');
      assert.deepEqual(
        dies.map((o) => o.reason?.code),
        ['ERR_WORKER_CRASHED', 'ERR_WORKER_CRASHED'],
      );
      assert.equal(await pool.apply('square', [3]), 9, 'replacements serve the next call');
    });
  });

  describe(`elastic size (${runtime})`, () => {
    test('starts at min, grows while work waits, shrinks back after idleTimeout', async () => {
      const { pool, events } = makePool({ runtime, workers: { min: 1, max: 3 }, idleTimeout: 200 });
      await ready(events, 1);
      await sleep(100);
      assert.equal(events.starts.length, 1, 'only the minimum at first');
      const work = Array.from({ length: 12 }, () => pool.apply('spinFor', [60, 1]));
      await until(() => pool.stats().workers.length === 3, 'grown to 3 workers');
      await Promise.all(work);
      await until(() => pool.stats().workers.length === 1, 'shrunk back to 1 worker');
      await sleep(400);
      assert.equal(pool.stats().workers.length, 1, 'never below the minimum');
    });

    if (runtime === 'process') {
      test('the memory budget caps the growth: a budget the parent alone exceeds keeps one worker', async () => {
        const { pool, events } = makePool({
          runtime,
          workers: { min: 1, max: 4 },
          memoryBudget: '1MiB',
          limits: { sampleInterval: 20 },
        });
        let most = 0;
        const watch = setInterval(() => {
          most = Math.max(most, pool.stats().workers.length);
        }, 5);
        try {
          const work = Array.from({ length: 10 }, () => pool.apply('spinFor', [40, 1]));
          assert.equal((await Promise.all(work)).length, 10);
        } finally {
          clearInterval(watch);
        }
        assert.equal(events.starts.length, 1, 'no worker started beyond the first');
        assert.equal(most, 1);
      });
    }

    test('min 0: no worker until work comes; bad bounds are ConfigErrors', async () => {
      const { pool, events } = makePool({ runtime, workers: { min: 0, max: 2 }, idleTimeout: 100 });
      await sleep(100);
      assert.equal(events.starts.length, 0);
      assert.equal(await pool.apply('square', [4]), 16);
      await until(() => pool.stats().workers.length === 0, 'back to no worker');
      assert.throws(() => makePool({ runtime, workers: { min: 3, max: 2 } }), ConfigError);
      assert.throws(() => makePool({ runtime, workers: { min: 1 } }), ConfigError);
    });
  });

  describe(`captureOutput (${runtime})`, () => {
    test("a failed task's error carries what it wrote; successful ones are unaffected", async () => {
      const { pool } = makePool({ runtime, workers: 1, captureOutput: true });
      assert.equal(await pool.apply('chatty', ['fine']), 'fine');
      const error = await rejection(pool.apply('chatty', ['bad']));
      assert.ok(error instanceof TaskError);
      assert.match(error.output, /working on bad/);
      assert.match(error.output, /warning about bad/);
      assert.doesNotMatch(error.output, /fine/, 'only its own output');
      const mapError = await rejection(pool.map('chatty', ['a', 'bad', 'c'], { chunksize: 3 }));
      assert.match(mapError.output, /working on bad/);
      assert.doesNotMatch(mapError.output, /working on a/, 'a map item gets its own output');
    });
  });
}
