// What a dead process worker wrote last reaches its typed error as stderrTail (issue 10).
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { WorkerCrashedError } from '../dist/src/index.js';
import { ready, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/heap-breach.mjs', import.meta.url);

const makePool = usePools(MODULE);

/** The rejection reason; a promise that resolves fails the test. */
async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected a rejection, got ${JSON.stringify(value)}`);
  } catch (error) {
    return error;
  }
}

describe('stderrTail on the error of a dead worker', () => {
  test('process: a worker that wrote to stderr and then exited carries that text on its WorkerCrashedError', async () => {
    const { pool, events } = makePool({ runtime: 'process', workers: 1 });
    await ready(events, 1);
    const error = await rejection(pool.apply('sayThenExit', ['last words before exit', 3]));
    assert.ok(error instanceof WorkerCrashedError, `${error?.stack ?? error}`);
    assert.equal(error.exitCode, 3);
    assert.equal(error.stderrTail, 'last words before exit');
  });

  test("thread: stderrTail is undefined, a thread writes to the pool's own stderr", async () => {
    const { pool, events } = makePool({ runtime: 'thread', workers: 1 });
    await ready(events, 1);
    const error = await rejection(pool.apply('exit', [3]));
    assert.ok(error instanceof WorkerCrashedError, `${error?.stack ?? error}`);
    assert.equal(error.stderrTail, undefined);
  });
});
