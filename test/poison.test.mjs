// Poison-input quarantine (issue 13): an input that kills poisonAfter workers (default 2) is not run
// again, whatever retries are left, and fails with PoisonTaskError carrying how each worker died.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { PoisonTaskError } from '../dist/src/index.js';
import { executions, lines, RUNTIMES, rejection, test, usePools, useTempDir } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const makePool = usePools(misbehave);
const newFile = useTempDir('corral-poison-', 'log');

for (const runtime of RUNTIMES) {
  describe(`poison quarantine (${runtime})`, () => {
    test('a task that kills its worker every time stops after two deaths, with their history', async () => {
      const file = newFile();
      const { pool, events } = makePool({ runtime, workers: 1 });
      const error = await rejection(
        pool.apply('failTimes', [file, 100], { retries: 5 }),
        'the poison task',
        15_000,
      );
      assert.ok(error instanceof PoisonTaskError, `${error?.name}: ${error?.message}`);
      assert.equal(error.code, 'ERR_POISON_TASK');
      assert.equal(error.crashes.length, 2);
      for (const c of error.crashes) {
        assert.equal(c.exitCode, 3);
        assert.equal(typeof c.workerId, 'number');
      }
      assert.equal(error.cause.code, 'ERR_WORKER_CRASHED');
      assert.equal(lines(file).length, 2, 'it ran twice, not six times');
      assert.equal(events.exits.filter((e) => e.reason === 'crashed').length, 2);
      assert.equal(await pool.apply('square', [4]), 16, 'the pool goes on');
    });

    test('poisonAfter sets the number of deaths; Infinity leaves it to retries', async () => {
      const three = newFile();
      const { pool } = makePool({ runtime, workers: 1, poisonAfter: 3 });
      const e3 = await rejection(pool.apply('failTimes', [three, 100], { retries: 5 }), 'task', 15_000);
      assert.equal(e3.crashes.length, 3);
      const never = newFile();
      const { pool: off } = makePool({ runtime, workers: 1, poisonAfter: Infinity });
      const e = await rejection(off.apply('failTimes', [never, 100], { retries: 3 }), 'task', 15_000);
      assert.equal(e.code, 'ERR_WORKER_CRASHED');
      assert.equal(lines(never).length, 4);
    });

    test('a chunk that kills its worker runs again item by item: only the poison item is quarantined', async () => {
      const log = newFile();
      const { pool } = makePool({ runtime, workers: 1 });
      const items = Array.from({ length: 40 }, (_, i) => [i, 13, log]);
      const out = [];
      let error;
      try {
        for await (const v of pool.imap('poisonItem', items, { chunksize: 10, retries: 3 })) out.push(v);
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof PoisonTaskError, `${error?.name}: ${error?.message}`);
      assert.deepEqual(
        out,
        Array.from({ length: 13 }, (_, i) => i + 1),
        'every result before the poison item',
      );
      const runs = executions(log);
      assert.equal(runs.get('13'), 2, 'the poison item killed two workers');
      for (let i = 10; i < 20; i++)
        assert.ok(runs.get(String(i)) <= 2, `item ${i} ran ${runs.get(String(i))} times`);
      for (let i = 0; i < 10; i++)
        assert.equal(runs.get(String(i)), 1, `item ${i} of an earlier chunk ran once`);
    });

    test('a heap breach counts as a death of its own doing', async () => {
      const { pool } = makePool({ runtime, workers: 1, limits: { heap: '64MiB' } });
      const error = await rejection(pool.apply('heapBomb', [], { retries: 4 }), 'the heap bomb', 20_000);
      assert.ok(error instanceof PoisonTaskError, `${error?.name}: ${error?.message}`);
      assert.deepEqual(
        error.crashes.map((c) => c.breach),
        ['heap', 'heap'],
      );
      assert.equal(error.cause.code, 'ERR_MEMORY_LIMIT');
    });
  });
}
