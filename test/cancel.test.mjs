// Cooperative cancellation: a timed-out or aborted call settles at once and its task's signal aborts
// (corral/task); the worker is stopped only if the task does not return within cancelGrace, and
// never takes other tasks with it while they can still finish.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { shmStatus } from '../dist/src/index.js';
import { lines, RUNTIMES, ready, rejection, settles, sleep, test, usePools, useTempDir } from './helpers.mjs';

const cooperative = new URL('./fixtures/cooperative.mjs', import.meta.url);
const makePool = usePools(cooperative);
const newFile = useTempDir('corral-cancel-', 'log');

/** Waits until `events.exits` has `n` entries, or fails after `ms`. */
async function exits(events, n, ms = 5000) {
  const deadline = Date.now() + ms;
  while (events.exits.length < n) {
    assert.ok(Date.now() < deadline, `${events.exits.length} of ${n} worker exits after ${ms} ms`);
    await sleep(10);
  }
  return events.exits;
}

for (const runtime of RUNTIMES) {
  describe(`cooperative cancellation (${runtime})`, () => {
    test('an aborted task that honours its signal leaves its worker running', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 10_000 });
      const controller = new AbortController();
      const call = pool.apply('cooperative', [30_000, 'late'], { signal: controller.signal });
      await sleep(150);
      const started = Date.now();
      controller.abort(new Error('user gave up'));
      const error = await rejection(call, 'the aborted call');
      assert.equal(error.code, 'ERR_TASK_ABORTED');
      assert.equal(error.cause.message, 'user gave up');
      assert.ok(Date.now() - started < 1000, 'the caller did not wait for the worker');
      assert.equal(await pool.apply('sleep', [1, 'next']), 'next');
      await sleep(100);
      assert.equal(events.exits.length, 0, 'no worker was stopped');
      assert.equal(events.starts.length, 1);
    });

    test('a timed-out task sees a TimeoutError on its signal, and its worker lives on', async () => {
      const log = newFile();
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 10_000 });
      assert.equal(
        (await rejection(pool.apply('reason', [30_000, log], { timeout: 100 }))).code,
        'ERR_TASK_TIMEOUT',
      );
      assert.equal(await pool.apply('sleep', [1, 'next']), 'next');
      assert.deepEqual(lines(log), ['TimeoutError']);
      assert.equal(events.exits.length, 0);
    });

    test('a task that ignores its signal has its worker retired after cancelGrace, then replaced', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 300 });
      const started = Date.now();
      assert.equal((await rejection(pool.apply('ignores', [], { timeout: 100 }))).code, 'ERR_TASK_TIMEOUT');
      assert.ok(Date.now() - started < 1000);
      const [exit] = await exits(events, 1);
      assert.match(exit.reason, /task 'ignores' \(timed out\) did not return within cancelGrace/);
      assert.equal(await pool.apply('sleep', [1, 'replaced']), 'replaced');
      assert.equal(events.starts.length, 2);
    });

    test('a task that blocks its event loop has its worker stopped after cancelGrace', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 300 });
      assert.equal((await rejection(pool.apply('spin', [], { timeout: 100 }))).code, 'ERR_TASK_TIMEOUT');
      const [exit] = await exits(events, 1);
      assert.match(exit.reason, /kept its event loop blocked past cancelGrace/);
      assert.equal(await pool.apply('sleep', [1, 'replaced']), 'replaced');
    });

    test('cancelGrace 0 stops the worker at once', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 0 });
      await ready(events, 1);
      const controller = new AbortController();
      const call = pool.apply('cooperative', [30_000], { signal: controller.signal });
      await sleep(150);
      controller.abort();
      await rejection(call);
      await exits(events, 1, 5000);
    });

    test("kind 'io': a blocked task's worker is stopped, and what else ran on it fails as stopped by it", async () => {
      const { pool, events } = makePool({
        runtime,
        workers: 1,
        kind: 'io',
        concurrency: 2,
        cancelGrace: 200,
      });
      const other = pool.apply('sleep', [300, 'other']);
      const blocker = pool.apply('spin', [], { timeout: 100 });
      assert.equal((await rejection(blocker)).code, 'ERR_TASK_TIMEOUT');
      const error = await rejection(other, 'the task sharing the blocked worker');
      assert.equal(error.code, 'ERR_WORKER_CRASHED');
      assert.match(error.message, /task 'spin' \(timed out\) kept its event loop blocked/);
      await exits(events, 1);
    });

    test('the context tells the attempt and the worker', async () => {
      const log = newFile();
      const { pool, events } = makePool({ runtime, workers: 1 });
      const out = await pool.apply('attempts', [log, 3], { retries: 2 });
      assert.equal(out.attempt, 3);
      assert.equal(out.task, 'attempts');
      assert.equal(out.workerId, events.starts[0].workerId);
      assert.deepEqual(lines(log), ['1', '2', '3']);
    });

    test('context() after the first await throws an error that says how to use it', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      assert.match(await pool.apply('outside', []), /outside a running task.*before its first await/);
    });

    // A process worker's claim board needs the shared-memory addon; without it a chunk of synchronous
    // items runs to its end (the cancel message is read after it).
    const board = runtime === 'thread' || shmStatus().crossProcess || 'needs the shared-memory addon';
    test('an aborted map chunk stops between items', { skip: board !== true && board }, async () => {
      const log = newFile();
      const { pool, events } = makePool({ runtime, workers: 1, cancelGrace: 10_000 });
      await ready(events, 1);
      const controller = new AbortController();
      const items = Array.from({ length: 100 }, (_, i) => [i, log]);
      const map = pool.map('slowItem', items, { chunksize: 100, signal: controller.signal });
      await sleep(300);
      controller.abort();
      assert.equal((await rejection(map)).code, 'ERR_TASK_ABORTED');
      await settles(pool.apply('sleep', [1, 'x']), 'the next call, on the same worker');
      const ran = lines(log).length;
      assert.ok(ran > 0 && ran < 60, `${ran} of 100 items ran`);
    });
  });
}
