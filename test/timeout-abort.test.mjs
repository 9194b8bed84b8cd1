// Deadlines, AbortSignals and retries, provoked for real with tasks that spin, hang and crash: the late
// task rejects with its own error, its worker is replaced, and the rest of the pool goes on.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe } from 'node:test';
import { AbortError, CorralError, TaskTimeoutError, WorkerCrashedError } from '../dist/src/index.js';
import { lines, RUNTIMES, ready, settles, sleep, test, usePools, useTempDir } from './helpers.mjs';

const MODULE = new URL('./fixtures/misbehave.mjs', import.meta.url);

const newFile = useTempDir('corral-timeout-', 'f');
const makePool = usePools(MODULE);

/** Resolves to the rejection reason and how long it took (helpers.mjs's `rejection` gives the reason
 * alone); fails if the promise resolves or hangs. */
async function rejection(promise, limitMs = 10_000) {
  const started = Date.now();
  let timer;
  const hung = new Promise((resolve) => {
    timer = setTimeout(() => resolve(hungMarker), limitMs);
  });
  const hungMarker = Symbol('hung');
  try {
    const value = await Promise.race([promise, hung]);
    assert.notEqual(value, hungMarker, `the task did not settle within ${limitMs} ms`);
    assert.fail(`expected a rejection, got ${JSON.stringify(value)}`);
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    return { error, ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

const idOf = (runtime, info) => (runtime === 'process' ? info.pid : info.threadId);

for (const runtime of RUNTIMES) {
  describe(`timeouts (${runtime})`, () => {
    for (const task of ['spin', 'hang']) {
      test(`taskTimeout stops a ${task === 'spin' ? 'synchronous infinite loop' : 'never-settling promise'} and replaces the worker`, async () => {
        const { pool, events } = makePool({ runtime, workers: 1, taskTimeout: '150ms' });
        await ready(events, 1);
        const first = events.starts[0];
        const { error, ms } = await rejection(pool.apply(task, []));
        assert.ok(error instanceof TaskTimeoutError, `expected TaskTimeoutError, got ${error?.stack}`);
        assert.ok(error instanceof CorralError);
        assert.equal(error.code, 'ERR_TASK_TIMEOUT');
        assert.equal(error.task, task);
        assert.equal(error.timeout, 150);
        assert.ok(ms >= 140, `rejected after ${ms} ms, before the deadline`);
        assert.ok(ms < 2000, `rejected only after ${ms} ms`);
        // The pool goes on, on a new worker.
        const xs = Array.from({ length: 20 }, (_, i) => i);
        assert.deepEqual(
          await Promise.all(xs.map((x) => pool.apply('square', [x]))),
          xs.map((x) => x * x),
        );
        await ready(events, 2);
        assert.ok(
          events.exits.some((e) => e.workerId === first.workerId),
          'the stuck worker exited',
        );
        assert.notEqual(idOf(runtime, events.starts[1]), idOf(runtime, first));
        assert.ok(!pool.stats().workers.some((w) => w.id === first.workerId));
      });
    }

    test('a per-call { timeout } applies without a pool taskTimeout and overrides it', async () => {
      const { pool, events } = makePool({ runtime, workers: 2 });
      await ready(events, 2);
      const spun = await rejection(pool.apply('spin', [], { timeout: 100 }));
      assert.ok(spun.error instanceof TaskTimeoutError, `expected TaskTimeoutError, got ${spun.error}`);
      assert.equal(spun.error.timeout, 100);
      const hung = await rejection(pool.apply('hang', [], { timeout: '0.1s' }));
      assert.ok(hung.error instanceof TaskTimeoutError);
      assert.equal(hung.error.timeout, 100);
      assert.equal(await pool.apply('spinFor', [50, 'in time'], { timeout: 2000 }), 'in time');

      const { pool: strict } = makePool({ runtime, workers: 1, taskTimeout: 100 });
      assert.equal(
        await strict.apply('spinFor', [300, 'longer deadline'], { timeout: 3000 }),
        'longer deadline',
      );
      const { error } = await rejection(strict.apply('spinFor', [300, 'too slow']));
      assert.ok(error instanceof TaskTimeoutError);
    });

    test('a timeout of Infinity is no deadline, for the pool and for one call', async () => {
      // A timer armed with Infinity ms fires after 1 ms: this failed every task at once.
      const { pool } = makePool({ runtime, workers: 1, taskTimeout: Infinity });
      assert.equal(await pool.apply('sleep', [150, 'no deadline']), 'no deadline');
      const { pool: strict } = makePool({ runtime, workers: 1, taskTimeout: 50 });
      assert.deepEqual(await strict.map('sleep', [150, 150], { timeout: Infinity }), [undefined, undefined]);
      assert.equal(await strict.apply('spinFor', [150, 'lifted'], { timeout: Infinity }), 'lifted');
    });

    test('the deadline counts from when a task starts, not from when it was queued', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, taskTimeout: 400 });
      await ready(events, 1);
      // Four 150 ms tasks on one worker: 600 ms in all, each well inside 400 ms.
      const out = await Promise.all([1, 2, 3, 4].map((i) => pool.apply('spinFor', [150, i])));
      assert.deepEqual(out, [1, 2, 3, 4]);
      assert.equal(events.starts.length, 1, 'no worker was stopped');
    });

    test('a timed-out task does not fail the tasks queued behind it', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const file = newFile();
      const stuck = pool.apply('spin', [], { timeout: 150 });
      const behind = [0, 1, 2, 3, 4].map((id) => pool.apply('record', [file, id]));
      const { error } = await rejection(stuck);
      assert.ok(error instanceof TaskTimeoutError);
      assert.deepEqual(await Promise.all(behind), [0, 1, 2, 3, 4]);
      assert.deepEqual(lines(file).sort(), ['0', '1', '2', '3', '4']);
    });
  });

  describe(`abort (${runtime})`, () => {
    test('a signal aborted before the call rejects with AbortError and the task never runs', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const file = newFile();
      const reason = new Error('changed my mind');
      const { error } = await rejection(
        pool.apply('record', [file, 'aborted'], { signal: AbortSignal.abort(reason) }),
      );
      assert.ok(error instanceof AbortError, `expected AbortError, got ${error}`);
      assert.ok(error instanceof CorralError);
      assert.equal(error.code, 'ERR_TASK_ABORTED');
      assert.equal(error.task, 'record');
      assert.equal(error.cause, reason);
      assert.equal(await settles(pool.apply('record', [file, 'control']), 'the next task'), 'control');
      await sleep(100);
      assert.deepEqual(lines(file), ['control']);
    });

    test('aborting a task that waits in the queue removes it: it never runs', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const file = newFile();
      const busy = pool.apply('spinFor', [300, 'busy']);
      const controller = new AbortController();
      const queued = pool.apply('record', [file, 'aborted'], { signal: controller.signal });
      const after = pool.apply('record', [file, 'after']);
      await sleep(50);
      controller.abort();
      const { error, ms } = await rejection(queued);
      assert.ok(error instanceof AbortError, `expected AbortError, got ${error}`);
      assert.ok(ms < 200, `the queued task was rejected only after ${ms} ms`);
      assert.equal(await settles(busy, 'the running task'), 'busy');
      assert.equal(await settles(after, 'the task queued after'), 'after');
      await sleep(100);
      assert.deepEqual(lines(file), ['after']);
      assert.equal(events.starts.length, 1, 'no worker was stopped for a task that never started');
    });

    test('aborting a synchronous infinite loop rejects quickly and replaces the worker', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const first = events.starts[0];
      const controller = new AbortController();
      const running = pool.apply('spin', [], { signal: controller.signal });
      await sleep(100);
      const abortedAt = Date.now();
      controller.abort(new Error('stop spinning'));
      const { error } = await rejection(running);
      const took = Date.now() - abortedAt;
      assert.ok(error instanceof AbortError, `expected AbortError, got ${error}`);
      assert.equal(error.cause?.message, 'stop spinning');
      assert.ok(took < 500, `rejected ${took} ms after abort()`);
      assert.equal(await settles(pool.apply('square', [11]), 'the next task'), 121);
      await ready(events, 2);
      assert.ok(
        events.exits.some((e) => e.workerId === first.workerId),
        'the spinning worker was stopped',
      );
      assert.notEqual(idOf(runtime, events.starts[1]), idOf(runtime, first));
    });

    test('aborting a running task keeps the tasks its worker holds behind it: they run once', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const file = newFile();
      const controller = new AbortController();
      const running = pool.apply('spin', [], { signal: controller.signal });
      const behind = [0, 1, 2, 3].map((id) => pool.apply('record', [file, id]));
      await sleep(100);
      controller.abort();
      const { error } = await rejection(running);
      assert.ok(error instanceof AbortError);
      assert.deepEqual(await settles(Promise.all(behind), 'the tasks behind'), [0, 1, 2, 3]);
      assert.deepEqual(lines(file).sort(), ['0', '1', '2', '3']);
    });
  });

  describe(`retries (${runtime})`, () => {
    test('retries: 1 runs a task again after its worker crashed, and it resolves', async () => {
      const marker = newFile();
      const { pool, events } = makePool({ runtime, workers: 1, retries: 1 });
      assert.equal(await pool.apply('crashOnce', [marker]), 'second time lucky');
      assert.ok(existsSync(marker), 'the first attempt ran and crashed');
      assert.equal(events.exits.length, 1, 'exactly one worker died');
      assert.equal(events.exits[0].exitCode, 7);
    });

    test('retries: 1 after a timeout: the late task runs again once; the one queued behind it is not charged a try', async () => {
      const log = newFile();
      const { pool } = makePool({ runtime, workers: 1, retries: 1, taskTimeout: 300 });
      // a times out on the first worker while b waits behind it; b's own first run times out on
      // the second worker while a waits behind it. Each then succeeds on its one retry.
      const settled = await settles(
        Promise.allSettled([
          pool.apply('slowOnce', [log, 'a', 2000]),
          pool.apply('slowOnce', [log, 'b', 2000]),
        ]),
        'both tasks',
        15_000,
      );
      assert.deepEqual(
        settled.map((r) => (r.status === 'fulfilled' ? r.value : r.reason)),
        ['a', 'b'],
      );
      assert.deepEqual(
        lines(log).sort(),
        ['a', 'a', 'b', 'b'],
        'each ran twice: the timed-out run and its retry',
      );
    });

    test('retries: 0 (the default) rejects the crashed task', async () => {
      const marker = newFile();
      const { pool } = makePool({ runtime, workers: 1 });
      const { error } = await rejection(pool.apply('crashOnce', [marker]));
      assert.ok(error instanceof WorkerCrashedError, `expected WorkerCrashedError, got ${error}`);
      assert.equal(error.exitCode, 7);
      assert.ok(existsSync(marker));
      // Explicitly 0 as well, and per call: the marker now exists, so it would succeed if run again.
      const marker2 = newFile();
      const { pool: retrying } = makePool({ runtime, workers: 1, retries: 1 });
      const once = await rejection(retrying.apply('crashOnce', [marker2], { retries: 0 }));
      assert.ok(once.error instanceof WorkerCrashedError);
      const marker3 = newFile();
      assert.equal(await pool.apply('crashOnce', [marker3], { retries: 1 }), 'second time lucky');
    });
  });
}
