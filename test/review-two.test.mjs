// Regression tests for what a second hostile review found (December): one test per finding, each
// provoking it for real. Before the fixes each of these hung, crashed the parent or a worker, lost a
// call or said something untrue.
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { describe } from 'node:test';
import { ConfigError, Pool, Queue, SharedMemory, scoped, TaskError } from '../dist/src/index.js';
import { RUNTIMES, rejection, settles, sleep, test, usePools } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const badLoad = new URL('./fixtures/bad-load.mjs', import.meta.url);
const cooperative = new URL('./fixtures/cooperative.mjs', import.meta.url);
const channelTasks = new URL('./fixtures/channel-tasks.mjs', import.meta.url);
const makePool = usePools(misbehave);

/** Warnings of `code` emitted while `fn` runs (the process's own warning output is left alone). */
async function warningsDuring(code, fn) {
  const seen = [];
  const listener = (warning) => {
    if (warning.code === code) seen.push(warning);
  };
  process.on('warning', listener);
  try {
    await fn();
    await sleep(20); // warnings are emitted on the next tick
  } finally {
    process.off('warning', listener);
  }
  return seen;
}

/** Reads a stream until it throws: the items it delivered, and the error. */
async function streamToError(pool, task, args) {
  const got = [];
  const error = await rejection(
    (async () => {
      for await (const x of pool.stream(task, args)) got.push(x);
    })(),
  );
  return { got, error };
}

for (const runtime of RUNTIMES) {
  describe(`second review (${runtime})`, () => {
    test('a task that throws something unreadable fails with TaskError; its worker and its neighbours live on', async () => {
      const { pool, events } = makePool({ runtime, workers: 1, kind: 'io' });
      const neighbour = pool.apply('sleep', [200, 'neighbour']);
      for (const kind of ['getter', 'proxy', 'symbol']) {
        const error = await rejection(pool.apply('throwUnreadable', [kind]));
        assert.ok(error instanceof TaskError, `${kind}: ${error}`);
      }
      assert.equal(await neighbour, 'neighbour');
      assert.equal(events.exits.length, 0, 'no worker died');
    });

    test('a task that posts its own messages on the worker link: ignored, or its worker is stopped; the parent lives', async () => {
      const { pool, events } = makePool({ runtime, workers: 1 });
      for (const kind of ['null', 'number', 'untyped'])
        assert.equal(await pool.apply('postRaw', [kind]), kind);
      assert.equal(events.exits.length, 0, 'messages that are not corral protocol are ignored');
      for (const kind of ['badDone', 'badDoneFrame', 'badEvents']) {
        // Claims to be protocol and cannot be read: that worker is stopped; the call settles either way.
        await settles(
          pool.apply('postRaw', [kind]).catch(() => {}),
          kind,
        );
      }
      assert.ok(events.errors.some((e) => /could not read/.test(e.message)));
      assert.equal(await pool.apply('square', [7]), 49, 'and the pool goes on');
    });

    test('close() settles when the pool breaks while closing (a module that fails to load)', async () => {
      const pool = new Pool({ module: badLoad, runtime, workers: 1 });
      const call = pool.apply('anything', []).catch((error) => error.code);
      await settles(pool.close(), 'close()');
      assert.equal(await call, 'ERR_MODULE_LOAD');
      assert.equal(pool.state, 'broken');
    });

    test('terminate() ends a map whose async input is still waiting: map() and imap() reject', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      async function* stuck() {
        yield 1;
        await new Promise(() => {});
      }
      const mapped = pool.map('square', stuck()).then(
        () => assert.fail('map() resolved'),
        (error) => error,
      );
      const it = pool.imap('square', stuck());
      assert.deepEqual(await it.next(), { value: 1, done: false });
      const next = it.next().then(
        () => assert.fail('imap next() resolved'),
        (error) => error,
      );
      await sleep(50);
      await pool.terminate();
      assert.equal((await settles(mapped, 'map()')).code, 'ERR_POOL_CLOSED');
      assert.equal((await settles(next, 'imap next()')).code, 'ERR_POOL_CLOSED');
    });

    test("a throwing workerExit listener is reported as a warning; the dead worker's calls still settle", async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      pool.on('workerExit', () => {
        throw new Error('listener bug');
      });
      let heard = 0;
      pool.on('workerExit', () => heard++); // after the one that throws: it still hears the exit
      const warnings = await warningsDuring('CORRAL_CALLBACK_THREW', async () => {
        const crashed = pool.apply('exit', [3]);
        const queued = pool.apply('square', [5]);
        assert.equal((await rejection(crashed)).code, 'ERR_WORKER_CRASHED');
        assert.equal(await settles(queued, 'the call queued behind it'), 25);
      });
      assert.ok(warnings.some((w) => /'workerExit' listener threw/.test(w.message)));
      assert.ok(heard >= 1, 'the listener after the throwing one heard the exit');
    });

    test("a throwing consumerLost listener does not leave the dead consumer's call unsettled", async () => {
      const pool = new Pool({ module: channelTasks, runtime, workers: 1 });
      try {
        const q = new Queue();
        q.on('consumerLost', () => {
          throw new Error('listener bug');
        });
        for (let i = 0; i < 20; i++) await q.put(i);
        await warningsDuring('CORRAL_CALLBACK_THREW', async () => {
          const crashed = pool.apply('consumeThenExit', [q, '/dev/null', 3]);
          const queued = pool.apply('add', [2, 3]);
          assert.equal((await rejection(crashed)).code, 'ERR_WORKER_CRASHED');
          assert.equal(await settles(queued, 'the call queued behind it'), 5);
        });
      } finally {
        await pool.terminate();
      }
    });

    test('a stream item that cannot be cloned fails the stream at that item, also as its last yield', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const { got, error } = await streamToError(pool, 'yieldUncloneable', [3]);
      assert.equal(error.code, 'ERR_SERIALIZATION');
      assert.deepEqual(got, [0, 1, 2], 'nothing after the hole');
    });

    test('every item a stream yielded before its worker exits is delivered, then the loop throws', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const { got, error } = await streamToError(pool, 'yieldThenExit', [5]);
      assert.equal(error.code, 'ERR_WORKER_CRASHED');
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
    });

    test('a missing teardown export is named as the teardown, not as an initializer', async () => {
      const pool = new Pool({ module: misbehave, runtime, workers: 1, teardown: 'nope' });
      const error = await rejection(pool.apply('square', [2]));
      await pool.terminate();
      assert.equal(error.code, 'ERR_WORKER_START');
      assert.match(error.message, /teardown 'nope' is not a function export/);
      assert.doesNotMatch(error.message, /initializer/);
    });
  });
}

describe('second review: input and messages', () => {
  test('workers: 1e9 is a ConfigError, not a V8 fatal out-of-memory in the constructor', () => {
    assert.throws(() => new Pool({ module: misbehave, workers: 1e9 }), ConfigError);
    assert.throws(() => new Pool({ module: misbehave, workers: { min: 0, max: 1e6 } }), ConfigError);
  });

  test('a timeout that the task honours keeps its worker, and the message does not claim otherwise', async () => {
    const pool = new Pool({ module: cooperative, runtime: 'thread', workers: 1 });
    try {
      const exits = [];
      pool.on('workerExit', (info) => exits.push(info));
      const error = await rejection(pool.apply('cooperative', [5000, 'late'], { timeout: 100 }));
      assert.equal(error.code, 'ERR_TASK_TIMEOUT');
      assert.doesNotMatch(error.message, /was stopped and replaced/);
      assert.equal(await pool.apply('cooperative', [1, 'next']), 'next');
      assert.equal(exits.length, 0);
    } finally {
      await pool.terminate();
    }
  });

  test('a map input whose next() returns no object rejects with TypeError instead of reading forever', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    const broken = { [Symbol.iterator]: () => ({ next: () => 42 }) };
    const error = await rejection(pool.map('square', broken));
    assert.ok(error instanceof TypeError, String(error));
  });

  test('a segment name is limited in bytes, as the kernel counts: 100 three-byte characters are a ConfigError', () => {
    assert.throws(() => SharedMemory.create({ name: '日'.repeat(100), size: 16 }), ConfigError);
  });

  test('scoped() of a number: ConfigError, and the descriptor is closed rather than leaked', () => {
    const before = readdirSync('/proc/self/fd').length;
    const fd = openSync('/dev/null', 'r');
    assert.throws(() => scoped(fd, closeSync), ConfigError);
    assert.equal(readdirSync('/proc/self/fd').length, before);
  });
});

describe('second review: a process worker out of descriptors', () => {
  test('detectLeaks reports a task that leaks every descriptor (the count reads the limit at EMFILE)', async () => {
    const { pool } = makePool({
      runtime: 'process',
      workers: 1,
      detectLeaks: true,
      limits: { openFiles: 64 },
    });
    const leaks = [];
    pool.on('leak', (info) => leaks.push(info));
    const opened = await pool.apply('leakEveryDescriptor', []);
    assert.ok(opened > 30, `it opened ${opened}`);
    await sleep(20);
    assert.equal(leaks.length, 1);
    assert.ok(leaks[0].fds >= opened - 2, `${leaks[0].fds} reported, ${opened} leaked`);
  });

  test('a numeric map chunk whose worker cannot map the arena fails typed, and that worker goes on', async () => {
    const { pool, events } = makePool({ runtime: 'process', workers: 1, limits: { openFiles: 64 } });
    await pool.apply('leakEveryDescriptor', []);
    const xs = Array.from({ length: 4096 }, (_, i) => i);
    const error = await rejection(pool.map('square', xs, { chunksize: 2048 }));
    assert.ok(error instanceof TaskError, String(error));
    assert.match(error.message, /could not map the pool's shared arena/);
    assert.equal(await pool.apply('square', [4]), 16);
    assert.equal(events.exits.length, 0, 'the worker did not die, nor did it take the next call with it');
  });
});
