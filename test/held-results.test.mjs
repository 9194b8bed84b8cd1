// A worker holds the number results of tasks of microseconds on its claim board and sends them in
// batches (worker/runner.ts). A worker that dies holding some must lose none: the pool takes them off
// the board and settles their calls with them, runs none of them again, blames none of them for the
// death, and re-queues only what never started. Provoked for real: SIGKILL, process.exit() and a heap
// bomb, in the call after a run of held results.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { executions, settles, sleep, test, usePools, useTempDir } from './helpers.mjs';

const makePool = usePools(new URL('./fixtures/held-tasks.mjs', import.meta.url));
const newLog = useTempDir('corral-held-', 'runs');
/** Calls per burst, and the one that ends its worker: the calls before it are held, up to 32 of them. */
const BURST = 100;
const DIES = 60;
/** Calls before the long one: fewer than a batch, so no batch is posted before it starts. */
const BEFORE_LONG = 9;

const CASES = [
  { runtime: 'process', how: 'kill', code: 'ERR_WORKER_CRASHED' },
  { runtime: 'process', how: 'exit', code: 'ERR_WORKER_CRASHED' },
  { runtime: 'thread', how: 'exit', code: 'ERR_WORKER_CRASHED' },
  { runtime: 'thread', how: 'heap', code: 'ERR_MEMORY_LIMIT', limits: { heap: '64MiB' } },
];

describe('results held for a batch survive their worker', () => {
  for (const c of CASES) {
    test(`${c.runtime}: ${c.how} after a run of held results`, { timeout: 60_000 }, async () => {
      const log = newLog();
      const { pool } = makePool({
        runtime: c.runtime,
        workers: 1,
        initializer: 'openLog',
        initArgs: [log],
        ...(c.limits ? { limits: c.limits } : {}),
      });
      // Warm: the worker learns that tick takes microseconds, so its results may wait from now on.
      const warm = Array.from({ length: 300 }, (_, i) => i);
      assert.deepEqual(
        await settles(Promise.all(warm.map((id) => pool.apply('tick', [id, -1]))), 'warm-up'),
        warm,
      );
      // A burst can miss the batch (the machine preempted the worker past the 1 ms a result may wait):
      // then another burst, until the pool has salvaged results from a dead worker.
      const ids = [...warm];
      // (The warm-up may have had some taken off the board already, by a worker preempted mid-batch.)
      const before = pool.metrics().salvaged;
      for (let burst = 1; burst === 1 || (burst <= 5 && pool.metrics().salvaged === before); burst++) {
        const first = burst * 1000;
        const dieAt = first + DIES;
        const calls = Array.from({ length: BURST }, (_, i) => first + i);
        const settled = await settles(
          Promise.allSettled(calls.map((id) => pool.apply('tick', [id, dieAt, c.how]))),
          `burst ${burst}`,
          30_000,
        );
        settled.forEach((s, i) => {
          const id = calls[i];
          if (id === dieAt) {
            assert.equal(s.status, 'rejected', `call ${id} ended its worker, yet it resolved`);
            assert.equal(s.reason.code, c.code, `call ${id}: ${s.reason.message}`);
          } else {
            assert.equal(s.status, 'fulfilled', `call ${id}: ${s.reason?.message}`);
            assert.equal(s.value, id);
          }
        });
        ids.push(...calls);
      }
      assert.ok(pool.metrics().salvaged > before, 'no burst left held results on a dead worker');
      const crashes = pool.metrics().crashes;
      // Every call ran once: a salvaged result is not run again, a unit never started ran elsewhere once.
      const runs = executions(log);
      for (const id of ids)
        assert.equal(runs.get(String(id)), 1, `call ${id} ran ${runs.get(String(id)) ?? 0} times`);
      assert.equal(runs.size, ids.length);
      assert.ok(crashes >= 1);
      // The pool goes on, and a string result (never held) comes back as before.
      assert.equal(await settles(pool.apply('label', [7]), 'label after the deaths'), '#7');
      await pool.close();
    });
  }
});

describe('results held for a batch do not wait for a long unit after them', () => {
  for (const runtime of ['thread', 'process']) {
    test(`${runtime}: the calls before a 2 s unit settle while it runs`, { timeout: 60_000 }, async () => {
      const log = newLog();
      const { pool } = makePool({ runtime, workers: 1, initializer: 'openLog', initArgs: [log] });
      const ids = [];
      let before = 0;
      for (let burst = 1; burst === 1 || (burst <= 5 && pool.metrics().salvaged === before); burst++) {
        // Warm (again: the 2 s call made tick look slow), then let the pool go quiet, so that nothing
        // but the burst itself can start the pool's look at the board (the worker posts no batch
        // before the long call: the calls before it are fewer than a batch).
        const warm = Array.from({ length: 300 }, (_, i) => burst * 1000 + i);
        await settles(Promise.all(warm.map((id) => pool.apply('tick', [id, -1]))), 'warm-up');
        ids.push(...warm);
        await sleep(50);
        before = pool.metrics().salvaged;
        const first = burst * 1000 + 500;
        const blocks = first + BEFORE_LONG;
        const calls = Array.from({ length: BEFORE_LONG + 1 }, (_, i) => first + i);
        const started = performance.now();
        const settledAt = new Map();
        const promises = calls.map((id) =>
          pool.apply('tick', [id, blocks, 'block']).then((value) => {
            settledAt.set(id, performance.now() - started);
            return value;
          }),
        );
        assert.deepEqual(await settles(Promise.all(promises), `burst ${burst}`, 10_000), calls);
        const blockedFor = settledAt.get(blocks);
        assert.ok(blockedFor >= 1900, `the blocking call took ${blockedFor} ms`);
        // None of the calls before it waits for it: each settles long before it does.
        for (const id of calls.slice(0, -1)) {
          assert.ok(
            settledAt.get(id) < 1000,
            `call ${id} settled after ${settledAt.get(id)} ms, behind the 2 s one`,
          );
        }
        ids.push(...calls);
      }
      assert.ok(pool.metrics().salvaged > before, 'no burst left results waiting behind the long unit');
      const runs = executions(log);
      for (const id of ids)
        assert.equal(runs.get(String(id)), 1, `call ${id} ran ${runs.get(String(id)) ?? 0} times`);
      assert.equal(pool.metrics().tasks.tick.completed, ids.length);
      await pool.close();
    });
  }
});

describe('a call that reported progress is never held past its report', () => {
  for (const [runtime, how] of [
    ['process', 'kill'],
    ['thread', 'exit'],
  ]) {
    test(`${runtime}: ${how} after calls that reported progress`, { timeout: 60_000 }, async () => {
      const log = newLog();
      const { pool } = makePool({ runtime, workers: 1, initializer: 'openLog', initArgs: [log] });
      await settles(
        Promise.all(Array.from({ length: 300 }, (_, i) => pool.apply('tick', [i, -1]))),
        'warm-up',
      );
      const first = 1000;
      const dieAt = first + DIES;
      const reported = new Map();
      const calls = Array.from({ length: BURST }, (_, i) => first + i);
      const settled = await settles(
        Promise.allSettled(
          calls.map((id) =>
            pool
              .apply('tickReport', [id, dieAt, how], { onProgress: (v) => reported.set(id, v) })
              .then((value) => [value, reported.get(id)]),
          ),
        ),
        'the burst',
        30_000,
      );
      settled.forEach((s, i) => {
        const id = calls[i];
        if (id === dieAt) {
          assert.equal(s.status, 'rejected');
          return;
        }
        assert.equal(s.status, 'fulfilled', `call ${id}: ${s.reason?.message}`);
        // Its progress reached the caller before its result did.
        assert.deepEqual(s.value, [id, id]);
      });
      await pool.close();
    });
  }
});

describe('claim words', () => {
  // A claim word holds 32 bits of the seq, and the worker claims a unit by writing -seq there: for a
  // seq whose 32 bits are -2^31 that changes nothing, so a unit that ran looked never started (re-run
  // after its worker died under it, and never blamed). 2^31 sends take hours: the pool's counter is set.
  test('no unit gets a seq that is its own negation in 32 bits', { timeout: 60_000 }, async () => {
    const log = newLog();
    const { pool } = makePool({ runtime: 'thread', workers: 1, initializer: 'openLog', initArgs: [log] });
    assert.equal(await settles(pool.apply('tick', [1, -1]), 'first call'), 1);
    pool.backend.seq = 2 ** 31 - 1; // the next send would be seq 2^31
    const error = await settles(
      pool.apply('tick', [2, 2, 'exit']).then(
        () => assert.fail('it resolved'),
        (e) => e,
      ),
      'the call that ends its worker',
      20_000,
    );
    assert.equal(error.code, 'ERR_WORKER_CRASHED', error.message);
    assert.equal(executions(log).get('2'), 1, 'it ran once, and was blamed for the death');
    await pool.close();
  });
});
