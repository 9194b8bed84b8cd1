// Errors a task, its data or its module cause, provoked for real: each rejects with its own CorralError
// subclass and stable code, and the pool keeps serving the other tasks.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe } from 'node:test';
import {
  ConfigError,
  CorralError,
  ModuleLoadError,
  Pool,
  SerializationError,
  TaskError,
  UnknownTaskError,
  WorkerStartError,
} from '../dist/src/index.js';
import { RUNTIMES, rejection as rejectionWithin, settles, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/misbehave.mjs', import.meta.url);
const BAD_LOAD = new URL('./fixtures/bad-load.mjs', import.meta.url);

const makePool = usePools(MODULE);

/** Waits until no worker is listed (the broken pool stopped the ones it had). */
async function allStopped(pool) {
  const deadline = Date.now() + 5000;
  while (pool.stats().workers.length > 0) {
    assert.ok(Date.now() < deadline, `workers still listed: ${JSON.stringify(pool.stats().workers)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Fails (instead of hanging the file) when a promise does not settle in time. */
const within = (promise, ms, what) => settles(promise, what, ms);

/** In this file a task gets 10 s to reject (helpers.mjs defaults to 5 s). */
const rejection = (promise, what) => rejectionWithin(promise, what, 10_000);

function assertCorral(error, Class, code) {
  assert.ok(error instanceof Class, `expected ${Class.name}, got ${error?.name}: ${error?.message}`);
  assert.ok(error instanceof CorralError, `${Class.name} extends CorralError`);
  assert.ok(error instanceof Error);
  assert.equal(error.code, code);
  assert.equal(error.name, Class.name);
}

for (const runtime of RUNTIMES) {
  describe(`task errors (${runtime})`, () => {
    test('an Error with a custom code and field rejects with TaskError whose cause is rebuilt', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const error = await rejection(pool.apply('throwCustom', ['bad thing']));
      assertCorral(error, TaskError, 'ERR_TASK_FAILED');
      assert.equal(error.task, 'throwCustom');
      assert.match(error.message, /throwCustom/);
      assert.match(error.message, /bad thing/);
      const cause = error.cause;
      assert.ok(cause instanceof Error, 'the cause is an Error');
      assert.equal(cause.name, 'Error');
      assert.equal(cause.message, 'bad thing');
      assert.equal(cause.code, 'E_CUSTOM');
      assert.deepEqual(cause.detail, { retryable: false, attempts: [1, 2] });
      assert.match(cause.stack, /^Error: bad thing/);
      assert.match(cause.stack, /at throwCustom \(.*fixtures\/misbehave\.mjs:\d+:\d+\)/, 'the remote stack');
      assert.equal(await pool.apply('square', [5]), 25, 'the worker is still usable');
    });

    test('an async rejection keeps the error class name and code', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const error = await rejection(pool.apply('rejectCustom', ['async bad']));
      assertCorral(error, TaskError, 'ERR_TASK_FAILED');
      assert.equal(error.task, 'rejectCustom');
      assert.equal(error.cause.name, 'RangeError');
      assert.equal(error.cause.message, 'async bad');
      assert.equal(error.cause.code, 'E_ASYNC');
      assert.match(error.cause.stack, /rejectCustom/);
    });

    test('an unknown task name rejects with UnknownTaskError listing the exports', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const error = await rejection(pool.apply('noSuchTask', [1]));
      assertCorral(error, UnknownTaskError, 'ERR_UNKNOWN_TASK');
      assert.equal(error.task, 'noSuchTask');
      for (const name of ['square', 'throwCustom', 'record', 'echo']) {
        assert.ok(error.available.includes(name), `available lists ${name}: ${error.available}`);
        assert.match(error.message, new RegExp(`\\b${name}\\b`));
      }
      assert.ok(!error.available.includes('noSuchTask'));
      assert.match(error.message, /noSuchTask/);
      assert.equal(await pool.apply('square', [6]), 36);
    });

    test('arguments that cannot be cloned reject with SerializationError; batch-mates still resolve', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      const calls = [
        pool.apply('echo', [1]),
        pool.apply('echo', [() => 'a function']),
        pool.apply('echo', [3]),
        pool.apply('echo', [4]),
      ];
      const error = await rejection(calls[1]);
      assertCorral(error, SerializationError, 'ERR_SERIALIZATION');
      assert.equal(error.direction, 'arguments');
      assert.equal(error.task, 'echo');
      const mates = await within(Promise.all([calls[0], calls[2], calls[3]]), 3000, 'the batch-mates');
      assert.deepEqual(mates, [1, 3, 4]);
    });

    test('after an uncloneable argument, the next task still runs', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      assert.equal(await pool.apply('echo', ['warm']), 'warm');
      const error = await rejection(pool.apply('echo', [Symbol('not cloneable')]));
      assertCorral(error, SerializationError, 'ERR_SERIALIZATION');
      assert.equal(error.direction, 'arguments');
      assert.equal(await within(pool.apply('echo', [3]), 3000, 'the next apply'), 3);
      const stats = pool.stats();
      assert.equal(stats.queued, 0);
      assert.equal(stats.completed, 2);
      assert.equal(stats.failed, 1);
    });

    test('a result that cannot be cloned rejects with SerializationError direction "result"', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      await pool.apply('square', [1]);
      const calls = [pool.apply('echo', ['a']), pool.apply('returnFunction', []), pool.apply('echo', ['c'])];
      const error = await rejection(calls[1]);
      assertCorral(error, SerializationError, 'ERR_SERIALIZATION');
      assert.equal(error.direction, 'result');
      assert.equal(error.task, 'returnFunction');
      assert.deepEqual(await within(Promise.all([calls[0], calls[2]]), 3000, 'the batch-mates'), ['a', 'c']);
      assert.equal(await pool.apply('square', [9]), 81);
    });
  });

  describe(`task module failures (${runtime})`, () => {
    test('a module that throws at load rejects queued and later tasks with ModuleLoadError, once', async () => {
      const { pool, events } = makePool({ runtime, workers: 2, module: BAD_LOAD });
      const queued = [pool.apply('never', []), pool.apply('never', []), pool.apply('never', [])];
      for (const p of queued) {
        const error = await rejection(p, 'a queued task');
        assertCorral(error, ModuleLoadError, 'ERR_MODULE_LOAD');
        assert.match(error.message, /bad-load\.mjs/);
        assert.match(error.message, /this module refuses to load/);
        assert.equal(error.cause?.message, 'this module refuses to load');
      }
      const later = await rejection(pool.apply('never', []), 'a later task');
      assertCorral(later, ModuleLoadError, 'ERR_MODULE_LOAD');
      // Already-settled tasks must not keep the pool spawning workers that will fail again.
      await allStopped(pool);
      const before = events.starts.length + events.errors.length + events.exits.length;
      await new Promise((r) => setTimeout(r, 1000));
      const now = events.starts.length + events.errors.length + events.exits.length;
      assert.equal(now, before, 'no worker was started, failed or exited in the last second');
      assert.equal(events.starts.length, 0, 'no worker ever reported ready');
      assert.ok(
        events.exits.length <= 2,
        `at most the 2 initial workers were spawned, saw ${events.exits.length}`,
      );
      assert.equal(pool.stats().workers.length, 0);
      const mapped = await rejection(pool.map('never', [1, 2, 3]), 'a map');
      assertCorral(mapped, ModuleLoadError, 'ERR_MODULE_LOAD');
    });

    test('an initializer that throws rejects tasks with WorkerStartError and does not respawn forever', async () => {
      const { pool, events } = makePool({ runtime, workers: 2, initializer: 'badInit' });
      const error = await rejection(pool.apply('square', [2]));
      assertCorral(error, WorkerStartError, 'ERR_WORKER_START');
      assert.match(error.message, /badInit/);
      assert.match(error.message, /initializer exploded/);
      await allStopped(pool);
      const before = events.exits.length + events.errors.length;
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(events.exits.length + events.errors.length, before, 'no respawn in the last second');
      assert.ok(
        events.exits.length <= 2,
        `at most the 2 initial workers were spawned, saw ${events.exits.length}`,
      );
      assertCorral(await rejection(pool.apply('square', [3])), WorkerStartError, 'ERR_WORKER_START');
    });
  });
}

describe('configuration errors', () => {
  test('a missing module path is a ConfigError at construction', () => {
    const missing = new URL('./fixtures/does-not-exist.mjs', import.meta.url);
    for (const module of [missing, missing.href, join(tmpdir(), 'corral-nope', 'tasks.mjs')]) {
      assert.throws(
        () => new Pool({ module, runtime: 'process', workers: 1 }),
        (error) => {
          assertCorral(error, ConfigError, 'ERR_INVALID_OPTION');
          assert.equal(error.option, 'module');
          assert.match(error.message, /^module: /);
          assert.match(error.message, /tasks\.mjs|does-not-exist\.mjs/);
          return true;
        },
      );
    }
  });

  test('a module path with an extension Node cannot load is a ConfigError', () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-errors-'));
    try {
      assert.throws(
        () => new Pool({ module: join(dir, 'tasks.txt') }),
        (error) => error instanceof ConfigError && error.option === 'module',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const invalid = [
    ['workers', { workers: 0 }, /workers/],
    ['workers', { workers: 1.5 }, /workers/],
    ['runtime', { runtime: 'x' }, /runtime.*'thread'.*'process'/],
    ['taskTimeout', { taskTimeout: 'soon' }, /taskTimeout.*"soon"/],
    ['idleTimeout', { idleTimeout: -5 }, /idleTimeout/],
    ['maxQueue', { maxQueue: 'lots' }, /maxQueue/],
    ['retries', { retries: -1 }, /retries/],
    ['kind', { kind: 'gpu' }, /kind/],
    ['options.wrokers', { wrokers: 2 }, /wrokers/],
  ];
  for (const [option, options, pattern] of invalid) {
    test(`invalid option ${JSON.stringify(options)} is a ConfigError naming ${option}`, () => {
      assert.throws(
        () => new Pool({ module: MODULE, runtime: 'process', ...options }),
        (error) => {
          assertCorral(error, ConfigError, 'ERR_INVALID_OPTION');
          assert.equal(error.option, option);
          assert.match(error.message, pattern);
          return true;
        },
      );
    });
  }

  test('invalid per-call options reject with ConfigError', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    const bad = await rejection(pool.apply('square', [2], { timeout: 'soon' }));
    assertCorral(bad, ConfigError, 'ERR_INVALID_OPTION');
    assert.equal(bad.option, 'timeout');
    const typo = await rejection(pool.apply('square', [2], { timeuot: 5 }));
    assertCorral(typo, ConfigError, 'ERR_INVALID_OPTION');
    assert.match(typo.message, /timeuot/);
    const notArray = await rejection(pool.apply('square', 2));
    assertCorral(notArray, ConfigError, 'ERR_INVALID_OPTION');
    assert.equal(await pool.apply('square', [2]), 4);
  });

  test('every error class is exported, extends CorralError and has a stable code', async () => {
    const api = await import('../dist/src/index.js');
    const expected = {
      ConfigError: 'ERR_INVALID_OPTION',
      PoolClosedError: 'ERR_POOL_CLOSED',
      QueueFullError: 'ERR_QUEUE_FULL',
      TaskError: 'ERR_TASK_FAILED',
      TaskTimeoutError: 'ERR_TASK_TIMEOUT',
      AbortError: 'ERR_TASK_ABORTED',
      WorkerCrashedError: 'ERR_WORKER_CRASHED',
      WorkerStartError: 'ERR_WORKER_START',
      ModuleLoadError: 'ERR_MODULE_LOAD',
      UnknownTaskError: 'ERR_UNKNOWN_TASK',
      SerializationError: 'ERR_SERIALIZATION',
    };
    const exit = { workerId: 1, pid: 1, threadId: undefined, exitCode: 1, signal: null };
    const samples = {
      ConfigError: new api.ConfigError('x', 'bad'),
      PoolClosedError: new api.PoolClosedError(),
      QueueFullError: new api.QueueFullError(1),
      TaskError: new api.TaskError('t', new Error('e')),
      TaskTimeoutError: new api.TaskTimeoutError('t', 5),
      AbortError: new api.AbortError('t', 'why'),
      WorkerCrashedError: new api.WorkerCrashedError('t', exit),
      WorkerStartError: new api.WorkerStartError('no'),
      ModuleLoadError: new api.ModuleLoadError('m', new Error('e')),
      UnknownTaskError: new api.UnknownTaskError('t', ['a']),
      SerializationError: new api.SerializationError('t', 'result', new Error('e')),
    };
    for (const [name, code] of Object.entries(expected)) {
      assert.equal(typeof api[name], 'function', `${name} is exported`);
      assert.ok(samples[name] instanceof api.CorralError, `${name} extends CorralError`);
      assert.equal(samples[name].code, code, `${name}.code`);
      assert.equal(samples[name].name, name);
    }
  });
});
