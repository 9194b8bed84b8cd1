// Worker deaths provoked for real (process.exit, a late uncaught throw, SIGKILL, SIGSEGV, heap exhaustion):
// the running task rejects with WorkerCrashedError, everything else settles exactly once, the dead worker
// is replaced and the pool goes on.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CorralError, WorkerCrashedError } from '../dist/src/index.js';
import { assertRanExactlyOnce, RUNTIMES, ready, test, usePools, useTempDir } from './helpers.mjs';

const MODULE = new URL('./fixtures/misbehave.mjs', import.meta.url);
const APPLY_ONCE = fileURLToPath(new URL('./fixtures/apply-once.mjs', import.meta.url));

const newFile = useTempDir('corral-crash-', 'log');
const makePool = usePools(MODULE);

function assertCrash(error, { runtime, task, events, exitCode, signal }) {
  assert.ok(error instanceof WorkerCrashedError, `expected WorkerCrashedError, got ${error?.stack ?? error}`);
  assert.ok(error instanceof CorralError);
  assert.equal(error.code, 'ERR_WORKER_CRASHED');
  assert.equal(error.task, task);
  assert.equal(typeof error.workerId, 'number');
  const started = events.starts.find((s) => s.workerId === error.workerId);
  assert.ok(started, `workerId ${error.workerId} is not one of the started workers`);
  if (runtime === 'process') {
    assert.equal(typeof error.pid, 'number');
    assert.equal(error.pid, started.pid, 'pid of the dead worker');
    assert.equal(error.threadId, undefined);
  } else {
    assert.equal(typeof error.threadId, 'number');
    assert.equal(error.threadId, started.threadId, 'threadId of the dead worker');
    assert.equal(error.pid, undefined);
  }
  if (exitCode !== undefined) assert.equal(error.exitCode, exitCode);
  if (signal !== undefined) assert.equal(error.signal, signal);
  return error;
}

/** The rejection reason. Not helpers.mjs's `rejection`: no time limit of its own (the test's deadline is
 * the limit), and a promise that resolves yields the AssertionError instead of throwing it. */
async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected a rejection, got ${JSON.stringify(value)}`);
  } catch (error) {
    return error;
  }
}

for (const runtime of RUNTIMES) {
  describe(`worker crashes (${runtime})`, () => {
    test('process.exit(3) rejects only that task; tasks submitted with it settle exactly once', async () => {
      const { pool, events } = makePool({ runtime, workers: 2 });
      await ready(events, 2);
      const file = newFile();
      const ids = Array.from({ length: 20 }, (_, i) => i);
      const mates = ids.slice(0, 10).map((id) => pool.apply('record', [file, id]));
      const crash = pool.apply('exit', [3]);
      mates.push(...ids.slice(10).map((id) => pool.apply('record', [file, id])));

      const error = await rejection(crash);
      assertCrash(error, { runtime, task: 'exit', events, exitCode: 3, signal: null });
      assert.deepEqual(await Promise.all(mates), ids);
      assertRanExactlyOnce(file, ids);
      const stats = pool.stats();
      assert.equal(stats.completed, 20);
      assert.equal(stats.failed, 1);
      assert.equal(stats.queued, 0);
      assert.equal(stats.running, 0);
    });

    test('after a crash the dead worker is replaced and 100 more tasks run', async () => {
      const { pool, events } = makePool({ runtime, workers: 2 });
      await ready(events, 2);
      const error = await rejection(pool.apply('exit', [3]));
      assertCrash(error, { runtime, task: 'exit', events, exitCode: 3 });
      const dead = error.workerId;
      const exit = events.exits.find((e) => e.workerId === dead);
      assert.ok(exit, 'a workerExit event names the dead worker');
      assert.equal(exit.exitCode, 3);

      const xs = Array.from({ length: 100 }, (_, i) => i);
      assert.deepEqual(
        await Promise.all(xs.map((x) => pool.apply('square', [x]))),
        xs.map((x) => x * x),
      );

      // The replacement may start after the remaining worker already ran all 100 tiny tasks.
      await ready(events, 3);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(events.starts.length, 3, 'exactly one replacement worker started');
      const replacement = events.starts[2];
      assert.notEqual(replacement.workerId, dead);
      const live = pool.stats().workers;
      assert.equal(live.length, 2, 'the pool is back to its size');
      assert.ok(!live.some((w) => w.id === dead), 'the dead worker is not listed');
      assert.ok(live.some((w) => w.id === replacement.workerId));
      if (runtime === 'process') assert.notEqual(replacement.pid, error.pid);
      else assert.notEqual(replacement.threadId, error.threadId);
    });

    test('an uncaught exception thrown later from a timer crashes the worker running the task', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      const error = await rejection(pool.apply('throwLater', [30]));
      assertCrash(error, { runtime, task: 'throwLater', events, exitCode: 1, signal: null });
      assert.match(error.message, /late boom/, 'the message says what the worker died of');
      assert.equal(await pool.apply('square', [7]), 49);
    });

    test('tasks prefetched behind a crashing task are re-queued and run exactly once', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      await ready(events, 1);
      // Tiny tasks first: the pool measures them and starts prefetching many units per worker.
      for (let round = 0; round < 5; round++) {
        await Promise.all(Array.from({ length: 100 }, (_, i) => pool.apply('square', [i])));
      }
      const file = newFile();
      const ids = Array.from({ length: 30 }, (_, i) => i);
      const gate = pool.apply('spinFor', [300, 'gate']);
      const before = ids.slice(0, 5).map((id) => pool.apply('record', [file, id]));
      const crash = pool.apply('exit', [3]);
      const behind = ids.slice(5).map((id) => pool.apply('record', [file, id]));
      await new Promise((r) => setTimeout(r, 100));
      const held = pool.stats();
      // Precondition: the crash and tasks behind it were sent to the one worker (prefetched). How
      // deep depends on how fast the squares measured: 64 units under 0.05 ms each, 16 under 0.5 ms
      // (a loaded machine), so at least the gate, the 5 before, the crash and 9 records behind it.
      assert.equal(held.queued + held.running, 32, 'every unit is queued or held by the worker');
      assert.ok(held.running >= 16, `the worker holds records behind the crash (it holds ${held.running})`);

      assert.equal(await gate, 'gate');
      assert.deepEqual(await Promise.all(before), ids.slice(0, 5));
      assertCrash(await rejection(crash), { runtime, task: 'exit', events, exitCode: 3 });
      assert.deepEqual(await Promise.all(behind), ids.slice(5));
      assertRanExactlyOnce(file, ids);
      assert.equal(events.starts.length, 2, 'one replacement worker ran the re-queued tasks');
      const stats = pool.stats();
      assert.equal(stats.failed, 1);
      assert.equal(stats.completed, 500 + 1 + 30);
    });
  });
}

describe('worker crashes by signal (process)', () => {
  for (const [task, signal] of [
    ['sigkill', 'SIGKILL'],
    ['sigsegv', 'SIGSEGV'],
  ]) {
    test(`a worker that dies of ${signal} rejects its task with signal '${signal}'`, async () => {
      const { pool, events } = makePool({ runtime: 'process', workers: 2 });
      await ready(events, 2);
      const file = newFile();
      const mates = [0, 1, 2, 3].map((id) => pool.apply('record', [file, id]));
      const error = await rejection(pool.apply(task, []));
      assertCrash(error, { runtime: 'process', task, events, exitCode: null, signal });
      assert.match(error.message, new RegExp(signal));
      assert.deepEqual(await Promise.all(mates), [0, 1, 2, 3]);
      assertRanExactlyOnce(file, [0, 1, 2, 3]);
      assert.deepEqual(await pool.map('square', [1, 2, 3]), [1, 4, 9]);
    });
  }
});

describe('out of memory', () => {
  test('process: a heap bomb under --max-old-space-size=64 crashes only its worker', async () => {
    const { pool, events } = makePool({
      runtime: 'process',
      workers: 1,
      execArgv: ['--max-old-space-size=64'],
    });
    await ready(events, 1);
    const bomb = pool.apply('heapBomb', []);
    const next = pool.apply('square', [12]);
    const error = await rejection(bomb);
    assertCrash(error, { runtime: 'process', task: 'heapBomb', events });
    assert.ok(
      error.signal !== null || (error.exitCode !== null && error.exitCode !== 0),
      `died abnormally (exitCode ${error.exitCode}, signal ${error.signal})`,
    );
    assert.match(error.message, /heap out of memory/i, 'the stderr tail says why');
    assert.equal(await next, 144);
    assert.equal(events.starts.length, 2);
  });

  test('thread: a heap bomb under limits.heap ends only its worker thread, never the process', async () => {
    const { pool, events } = makePool({ runtime: 'thread', workers: 1, limits: { heap: '64MiB' } });
    await ready(events, 1);
    const bomb = pool.apply('heapBomb', []);
    const next = pool.apply('square', [12]);
    const error = await rejection(bomb);
    assert.ok(error instanceof CorralError, `${error}`);
    assert.equal(error.code, 'ERR_MEMORY_LIMIT');
    assert.equal(error.kind, 'heap');
    assert.equal(await next, 144);
    assert.equal(events.starts.length, 2);
  });

  test('thread: a V8 heap flag worker_threads refuse surfaces as a CorralError, not a raw Error or a spawn loop', async () => {
    // Something must keep the loop alive here: the backoff timer alone does not (see the apply-once tests).
    const keepAlive = setInterval(() => {}, 1000);
    try {
      let pool;
      let events;
      try {
        ({ pool, events } = makePool({
          runtime: 'thread',
          workers: 1,
          execArgv: ['--max-old-space-size=64'],
        }));
      } catch (error) {
        assert.ok(error instanceof CorralError, `construction threw a non-CorralError: ${error}`);
        return;
      }
      const error = await rejection(pool.apply('square', [2]));
      assert.ok(
        error instanceof CorralError,
        `expected a CorralError, got ${error?.name}: ${error?.message}`,
      );
      assert.match(error.message, /max-old-space-size/);
      const n = events.errors.length;
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(events.errors.length, n, 'no more start attempts once the task was failed');
    } finally {
      clearInterval(keepAlive);
    }
  });
});

/** Runs fixtures/apply-once.mjs in a fresh node: nothing but the pool keeps that process alive. */
function applyOnce(options, task, args = []) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [APPLY_ONCE, JSON.stringify(options), task, JSON.stringify(args)],
      { timeout: 20_000 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr }),
    );
  });
}

for (const runtime of RUNTIMES) {
  describe(`workers that never start (${runtime})`, () => {
    test('a module whose worker exits while loading: the task rejects, the process does not just exit', async () => {
      const r = await applyOnce({ module: './exit-at-load.mjs', runtime, workers: 1 }, 'never');
      assert.equal(r.code, 0, `child exited with ${r.code} before the task settled (13 = unsettled await)`);
      const outcome = JSON.parse(r.stdout.trim());
      assert.equal(outcome.status, 'rejected');
      assert.equal(outcome.code, 'ERR_WORKER_START');
      assert.match(outcome.message, /exit code 9/);
    });

    test('control: the same child script settles a task of a healthy module', async () => {
      const r = await applyOnce({ module: './misbehave.mjs', runtime, workers: 1 }, 'square', [3]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual({ ...JSON.parse(r.stdout.trim()), ms: 0 }, { status: 'fulfilled', value: 9, ms: 0 });
    });
  });
}
