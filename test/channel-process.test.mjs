// Process: one dedicated worker running one function, under both runtimes: result and exit code,
// typed errors (throw, unknown function, bad module, crash, kill, limits), lifecycle misuse, and
// the producer/consumer example end to end.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test as nodeTest } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  ConfigError,
  MemoryLimitError,
  ModuleLoadError,
  Process,
  SerializationError,
  TaskError,
  UnknownTaskError,
  WorkerCrashedError,
} from '../dist/src/index.js';

const MODULE = new URL('./fixtures/channel-tasks.mjs', import.meta.url);
const BAD_LOAD = new URL('./fixtures/bad-load.mjs', import.meta.url);
const EXAMPLE = fileURLToPath(new URL('../examples/producer-consumer.mjs', import.meta.url));
const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);
const run = promisify(execFile);

const proc = (runtime, fn, args, extra = {}) => new Process({ module: MODULE, fn, args, runtime, ...extra });

for (const runtime of ['thread', 'process']) {
  describe(`Process (${runtime})`, () => {
    test('start, join with the result, exitCode 0, events', async () => {
      const p = proc(runtime, 'add', [2, 3]);
      assert.equal(p.exitCode, null);
      assert.equal(p.alive, false);
      const events = [];
      p.on('start', (info) => events.push(['start', info]));
      p.on('exit', (info) => events.push(['exit', info]));
      assert.equal(p.start(), p);
      assert.equal(p.alive, true);
      assert.equal(await p.join(), 5);
      assert.equal(p.exitCode, 0);
      assert.equal(p.alive, false);
      assert.equal(p.runtime, runtime);
      assert.deepEqual(
        events.map(([e]) => e),
        ['start', 'exit'],
      );
      if (runtime === 'process') assert.equal(typeof events[0][1].pid, 'number');
      else assert.equal(typeof events[0][1].threadId, 'number');
      assert.equal(events[1][1].exitCode, 0);
    });

    test('a function that throws: TaskError with the remote error as cause, exitCode 1', async () => {
      const p = proc(runtime, 'boom', []).start();
      await assert.rejects(p.join(), (e) => e instanceof TaskError && e.cause.message === 'boom');
      assert.equal(p.exitCode, 1);
      assert.ok(p.error instanceof TaskError);
    });

    test('unknown function, a module that fails to load, uncloneable arguments', async () => {
      await assert.rejects(proc(runtime, 'nope', []).start().join(), UnknownTaskError);
      const bad = new Process({ module: BAD_LOAD, fn: 'x', runtime }).start();
      await assert.rejects(bad.join(), ModuleLoadError);
      assert.equal(bad.exitCode, 1);
      const p = proc(runtime, 'add', [() => 1, 2]).start();
      await assert.rejects(p.join(), (e) => e instanceof SerializationError && e.direction === 'arguments');
    });

    test('a worker that exits or is killed: WorkerCrashedError, with Python-style exit codes', async () => {
      const exited = proc(runtime, 'exitWith', [5]).start();
      await assert.rejects(exited.join(), WorkerCrashedError);
      assert.equal(exited.exitCode, 5);
      const hung = proc(runtime, 'hang', []).start();
      await new Promise((resolve) => hung.once('start', resolve));
      hung.kill();
      await assert.rejects(hung.join(), (e) => e instanceof WorkerCrashedError && /kill\(\)/.test(e.message));
      // SIGKILL of a process is -9, as Python reports it; a terminated thread exits with 1.
      assert.equal(hung.exitCode, runtime === 'process' ? -9 : 1);
      assert.equal(hung.signal, runtime === 'process' ? 'SIGKILL' : null);
    });

    test('limits: a heap bomb is a MemoryLimitError of kind heap, and a breach event', async () => {
      const p = proc(runtime, 'heapBomb', [], { limits: { heap: '64MiB' } });
      const breaches = [];
      p.on('breach', (e) => breaches.push(e));
      p.start();
      await assert.rejects(p.join(), (e) => e instanceof MemoryLimitError && e.kind === 'heap');
      assert.equal(breaches.length, 1);
      assert.notEqual(p.exitCode, 0);
    });

    test('misuse: start twice, join before start, bad options', async () => {
      const p = proc(runtime, 'add', [1, 1]);
      await assert.rejects(p.join(), ConfigError);
      p.start();
      assert.throws(() => p.start(), ConfigError);
      assert.equal(await p.join(), 2);
      assert.throws(() => new Process({ module: MODULE, fn: 'add', argz: [] }), /argz/);
      assert.throws(() => new Process({ module: MODULE }), /fn/);
      assert.throws(() => new Process({ module: MODULE, fn: 'add', args: 1 }), /args/);
      assert.throws(() => new Process({ module: MODULE, fn: 'add', runtime: 'fiber' }), ConfigError);
    });

    test('[Symbol.asyncDispose] waits for the end and never throws', async () => {
      const p = proc(runtime, 'boom', []).start();
      await p[Symbol.asyncDispose]();
      assert.equal(p.exitCode, 1);
      await proc(runtime, 'add', [1, 1])[Symbol.asyncDispose](); // never started: nothing to do
    });

    test('the producer/consumer example runs', async () => {
      const { stdout } = await run(process.execPath, [EXAMPLE, runtime, '20000']);
      assert.match(stdout, new RegExp(`^${runtime}: 20000 items in`));
    });
  });
}
