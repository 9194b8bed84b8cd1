// A pool's life from start to shutdown: close() and terminate() leave no worker behind, back pressure,
// worker recycling, initializers, idle exit, and child processes that die with a SIGKILLed parent.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CorralError, PoolClosedError, QueueFullError } from '../dist/src/index.js';
import { RUNTIMES, ready, rejection, settles, sleep, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/misbehave.mjs', import.meta.url);
const ORPHAN_PARENT = fileURLToPath(new URL('./fixtures/orphan-parent.mjs', import.meta.url));

const makePool = usePools(MODULE);

/** Alive and not a zombie (an exited child nobody reaped yet is dead for our purposes). */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** OS threads of this process: a worker thread that really ended is gone from this count. */
const osThreads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);

/** Asserts that no worker of the pool is left: no process (pid probe), no thread (OS thread count). */
async function assertNoWorkersLeft(runtime, pool, events, baseThreads) {
  assert.deepEqual(pool.stats().workers, [], 'stats() lists no worker');
  assert.ok(events.starts.length > 0, 'precondition: workers had started');
  for (const s of events.starts) {
    assert.ok(
      events.exits.some((e) => e.workerId === s.workerId),
      `worker ${s.workerId} has no exit event`,
    );
  }
  if (runtime === 'process') {
    for (const { pid } of events.starts)
      assert.equal(alive(pid), false, `worker process ${pid} still exists`);
  } else {
    assert.ok(osThreads() <= baseThreads, `${osThreads()} OS threads now, ${baseThreads} before the pool`);
  }
}

for (const runtime of RUNTIMES) {
  describe(`shutdown (${runtime})`, () => {
    test('close() finishes queued work, then no worker remains', async () => {
      await readFile(fileURLToPath(MODULE)); // start libuv's thread pool before counting threads
      const baseThreads = osThreads();
      const { pool, events } = makePool({ runtime, workers: 2 });
      const settled = [];
      const tasks = Array.from({ length: 12 }, (_, i) =>
        pool.apply('spinFor', [20, i]).then((v) => {
          settled.push(v);
          return v;
        }),
      );
      await pool.close();
      assert.equal(settled.length, 12, 'every queued task had settled when close() resolved');
      assert.deepEqual(await Promise.all(tasks), [...Array(12).keys()]);
      await assertNoWorkersLeft(runtime, pool, events, baseThreads);
      assert.ok(
        events.exits.every((e) => e.reason !== 'crashed'),
        `no worker crashed: ${JSON.stringify(events.exits)}`,
      );
    });

    test('close() lets a map and an imap started before it finish, all chunks included', async () => {
      const { pool } = makePool({ runtime, workers: 2 });
      const xs = Array.from({ length: 2000 }, (_, i) => i);
      const squares = xs.map((x) => x * x);
      const mapped = Promise.allSettled([pool.map('square', xs, { chunksize: 10 })]);
      const it = pool.imap('square', xs, { chunksize: 10 });
      const first = await settles(it.next(), 'the first imap result');
      assert.deepEqual(first, { value: 0, done: false });
      const closed = pool.close();
      const rest = [];
      let failure;
      try {
        await settles(
          (async () => {
            for await (const r of it) rest.push(r);
          })(),
          'the rest of the imap',
        );
      } catch (error) {
        failure = error;
      }
      const [m] = await settles(mapped, 'the map');
      await settles(closed, 'close()');
      assert.equal(failure, undefined, `imap failed after ${rest.length + 1} results: ${failure}`);
      assert.deepEqual([0, ...rest], squares);
      assert.equal(m.status, 'fulfilled', `map rejected: ${m.reason}`);
      assert.deepEqual(m.value, squares);
    });

    test('terminate() rejects running and queued tasks with PoolClosedError and stops every worker', async () => {
      await readFile(fileURLToPath(MODULE));
      const baseThreads = osThreads();
      const { pool, events } = makePool({ runtime, workers: 2 });
      await ready(events, 2);
      const running = [pool.apply('spin', []), pool.apply('hang', [])];
      const queued = Array.from({ length: 5 }, (_, i) => pool.apply('square', [i]));
      const all = Promise.allSettled([...running, ...queued]);
      await sleep(100);
      const started = Date.now();
      await settles(pool.terminate(), 'terminate()');
      assert.ok(Date.now() - started < 2000, 'terminate() does not wait for running tasks');
      const outcomes = await settles(all, 'the pending tasks');
      // The queued squares may have run before terminate(); what did not run must reject.
      for (const [i, o] of outcomes.entries()) {
        if (i < 2) assert.equal(o.status, 'rejected', `running task ${i} was stopped`);
        if (o.status === 'fulfilled') continue;
        assert.ok(o.reason instanceof PoolClosedError, `expected PoolClosedError, got ${o.reason}`);
        assert.ok(o.reason instanceof CorralError);
        assert.equal(o.reason.code, 'ERR_POOL_CLOSED');
      }
      await assertNoWorkersLeft(runtime, pool, events, baseThreads);
    });

    test('terminate() rejects queued tasks that no worker took yet', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const queued = Promise.allSettled(Array.from({ length: 5 }, (_, i) => pool.apply('square', [i])));
      await pool.terminate();
      for (const o of await settles(queued, 'the queued tasks')) {
        assert.equal(o.status, 'rejected');
        assert.ok(o.reason instanceof PoolClosedError, `expected PoolClosedError, got ${o.reason}`);
      }
    });

    test('apply, map and starmap after close() reject with PoolClosedError', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      assert.equal(await pool.apply('square', [3]), 9);
      const closing = pool.close();
      const during = await rejection(pool.apply('square', [4]), 'apply during close()');
      assert.ok(during instanceof PoolClosedError, `expected PoolClosedError, got ${during}`);
      await closing;
      for (const [what, call] of [
        ['apply', () => pool.apply('square', [5])],
        ['map', () => pool.map('square', [1, 2])],
        ['starmap', () => pool.starmap('add', [[1, 2]])],
      ]) {
        const error = await rejection(call(), `${what} after close()`);
        assert.ok(error instanceof PoolClosedError, `${what}: expected PoolClosedError, got ${error}`);
        assert.equal(error.code, 'ERR_POOL_CLOSED');
      }
      assert.deepEqual(pool.stats().workers, []);
    });

    test('pool[Symbol.asyncDispose]() (what `await using` calls) finishes the work and stops the workers', async () => {
      await readFile(fileURLToPath(MODULE));
      const baseThreads = osThreads();
      const { pool, events } = makePool({ runtime, workers: 2 });
      assert.equal(typeof pool[Symbol.asyncDispose], 'function');
      const work = Promise.allSettled([
        pool.map('square', [1, 2, 3, 4, 5]),
        pool.apply('spinFor', [100, 'done']),
      ]);
      await pool[Symbol.asyncDispose]();
      const [mapped, applied] = await settles(work, 'the work submitted before disposal');
      assert.deepEqual(applied, { status: 'fulfilled', value: 'done' });
      assert.deepEqual(
        mapped,
        { status: 'fulfilled', value: [1, 4, 9, 16, 25] },
        'the map submitted before disposal',
      );
      await assertNoWorkersLeft(runtime, pool, events, baseThreads);
      const after = await rejection(pool.apply('square', [2]), 'apply after dispose');
      assert.ok(after instanceof PoolClosedError);
    });
  });

  describe(`limits and recycling (${runtime})`, () => {
    test('maxQueue: 2 rejects the third waiting apply with QueueFullError; the others resolve', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, maxQueue: 2 });
      await ready(events, 1);
      const order = [];
      const track = (name, p) =>
        p.then(
          (v) => {
            order.push(name);
            return v;
          },
          (e) => {
            order.push(name);
            throw e;
          },
        );
      const a = track('a', pool.apply('spinFor', [100, 'a']));
      const b = track('b', pool.apply('spinFor', [100, 'b']));
      let c;
      assert.doesNotThrow(() => {
        c = track('c', pool.apply('square', [3]));
      }, 'apply does not throw: it returns a rejected promise');
      const error = await rejection(c, 'the third apply');
      assert.ok(error instanceof QueueFullError, `expected QueueFullError, got ${error}`);
      assert.ok(error instanceof CorralError);
      assert.equal(error.code, 'ERR_QUEUE_FULL');
      assert.equal(error.maxQueue, 2);
      assert.deepEqual(order, ['c'], 'the refusal came before the queued tasks finished');
      assert.deepEqual(await Promise.all([a, b]), ['a', 'b']);
      assert.equal(await pool.apply('square', [4]), 16, 'room again once the queue drained');
    });

    test('maxTasksPerWorker: 2 replaces each worker after two tasks', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, maxTasksPerWorker: 2 });
      const key = runtime === 'process' ? 'pid' : 'threadId';
      const sequential = [];
      for (let i = 0; i < 6; i++) sequential.push((await pool.apply('whoami', []))[key]);
      const concurrent = (await Promise.all(Array.from({ length: 6 }, () => pool.apply('whoami', [])))).map(
        (w) => w[key],
      );
      for (const ids of [sequential, concurrent]) {
        const counts = new Map();
        for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
        assert.ok(counts.size >= 3, `6 tasks ran on ${counts.size} workers: ${ids}`);
        for (const [id, n] of counts) assert.ok(n <= 2, `worker ${id} ran ${n} tasks`);
      }
      if (runtime === 'process') assert.ok(!sequential.includes(process.pid));
      const retired = events.exits.filter((e) => e.reason !== 'crashed');
      assert.ok(retired.length >= 5, `workers were retired, not crashed: ${JSON.stringify(events.exits)}`);
    });

    test('initializer + initArgs run once in every worker before its tasks', async () => {
      const { pool, events } = makePool({
        runtime,
        workers: 2,
        initializer: 'init',
        initArgs: ['hello', { n: 42 }],
        maxTasksPerWorker: 5,
      });
      const states = await Promise.all(Array.from({ length: 20 }, () => pool.apply('initState', [])));
      const key = runtime === 'process' ? 'pid' : 'threadId';
      const workers = new Set(states.map((s) => s[key]));
      assert.ok(workers.size >= 4, `maxTasksPerWorker: 5 spread 20 tasks over ${workers.size} workers`);
      for (const s of states) {
        assert.deepEqual(s.initValue, ['hello', { n: 42 }]);
        assert.equal(s.initCalls, 1, `the initializer ran ${s.initCalls} times in worker ${s[key]}`);
      }
      assert.ok(events.starts.length >= 4);
    });

    test("idleTimeout: '100ms' lets idle workers exit; a later task starts a new one", async () => {
      const { pool, events } = makePool({ runtime, workers: 2, idleTimeout: '100ms' });
      assert.deepEqual(await Promise.all([1, 2, 3, 4].map((x) => pool.apply('square', [x]))), [1, 4, 9, 16]);
      await ready(events, 2);
      const first = [...events.starts];
      const deadline = Date.now() + 3000;
      while (pool.stats().workers.length > 0 && Date.now() < deadline) await sleep(25);
      assert.deepEqual(pool.stats().workers, [], 'idle workers exited');
      for (const s of first) {
        const exit = events.exits.find((e) => e.workerId === s.workerId);
        assert.ok(exit, `worker ${s.workerId} exited`);
        assert.notEqual(exit.reason, 'crashed');
        if (runtime === 'process') assert.equal(alive(s.pid), false, `pid ${s.pid} is gone`);
      }
      assert.equal(await settles(pool.apply('square', [12]), 'a task after the idle exit'), 144);
      assert.ok(events.starts.length > first.length, 'a new worker started for it');
    });
  });
}

describe('orphans (process)', () => {
  // The parent may die between a worker's fork and the moment the worker asks the kernel for a
  // signal on its parent's death; a worker must notice that too. The workers carry a marker in their
  // environment, so they can be found after their parent is gone.
  test('workers exit when their parent is SIGKILLed while they are still starting', async () => {
    const marker = `corral-orphan-${process.pid}-${Date.now()}`;
    const marked = () => {
      const found = [];
      for (const entry of readdirSync('/proc')) {
        if (!/^\d+$/.test(entry)) continue;
        try {
          if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(`CORRAL_ORPHAN_MARK=${marker}`))
            found.push(Number(entry));
        } catch {}
      }
      return found;
    };
    try {
      for (const delay of [0, 5, 10, 20, 30, 45, 60, 80, 110, 150]) {
        const parent = spawn(process.execPath, [ORPHAN_PARENT, 'die-starting', String(delay)], {
          stdio: 'ignore',
          env: { ...process.env, CORRAL_ORPHAN_MARK: marker },
        });
        await new Promise((resolve) => parent.on('exit', resolve));
      }
      const deadline = Date.now() + 5000;
      while (marked().length > 0 && Date.now() < deadline) await sleep(50);
      assert.deepEqual(
        marked(),
        [],
        'workers left alive 5 s after their parent was SIGKILLed during their start',
      );
    } finally {
      for (const pid of marked()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }
  });

  for (const [task, what] of [
    ['spin', 'stuck in a synchronous infinite loop'],
    ['hang', 'with an idle event loop'],
  ]) {
    test(`workers ${what} exit when their parent is SIGKILLed`, async () => {
      const parent = spawn(process.execPath, [ORPHAN_PARENT, task], { stdio: ['ignore', 'pipe', 'inherit'] });
      let pids = [];
      try {
        const line = await settles(
          new Promise((resolve, reject) => {
            let out = '';
            parent.stdout.on('data', (d) => {
              out += d;
              if (out.includes('\n')) resolve(out.split('\n')[0]);
            });
            parent.on('exit', (code) => reject(new Error(`the parent script exited early (${code})`)));
          }),
          'the parent script',
          10_000,
        );
        ({ pids } = JSON.parse(line));
        assert.equal(pids.length, 2);
        for (const pid of pids) assert.ok(alive(pid), `precondition: worker ${pid} runs`);
        parent.kill('SIGKILL');
        const deadline = Date.now() + 3000;
        while (pids.some(alive) && Date.now() < deadline) await sleep(50);
        assert.deepEqual(pids.filter(alive), [], 'workers still alive 3 s after their parent was SIGKILLed');
      } finally {
        parent.kill('SIGKILL');
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {}
        }
      }
    });
  }
});
