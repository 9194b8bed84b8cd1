// Priorities, aging and fair queuing between callers (issue 13): the order in which queued calls
// reach a worker, observed in the order tasks really ran.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ConfigError } from '../dist/src/index.js';
import { Scheduler } from '../dist/src/pool/scheduler.js';
import { lines, RUNTIMES, sleep, test, usePools, useTempDir } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const makePool = usePools(misbehave);
const newFile = useTempDir('corral-priority-', 'log');

/** A stand-in unit: the scheduler reads only these fields. */
const unit = (id, priority = 0, key = undefined) => ({ id, priority, key, queuedAt: 0 });
const order = (s) => s.drain().map((u) => u.id);

describe('the scheduler', () => {
  test('higher priority first, FIFO within a priority', () => {
    const s = new Scheduler(Infinity);
    for (const [id, p] of [
      ['a', 0],
      ['b', 5],
      ['c', 0],
      ['d', 5],
      ['e', -1],
    ])
      s.push(unit(id, p));
    assert.deepEqual(order(s), ['b', 'd', 'a', 'c', 'e']);
  });

  test('keys take turns within a priority; unshift goes back to the front of its own key', () => {
    const s = new Scheduler(Infinity);
    for (let i = 0; i < 4; i++) s.push(unit(`A${i}`, 0, 'A'));
    s.push(unit('B0', 0, 'B'));
    s.push(unit('B1', 0, 'B'));
    s.unshift(unit('A-retry', 0, 'A'));
    assert.deepEqual(order(s), ['A-retry', 'B0', 'A0', 'B1', 'A1', 'A2', 'A3']);
  });

  test('peek shows what shift takes', () => {
    const s = new Scheduler(1);
    for (let i = 0; i < 50; i++) s.push(unit(i, i % 3, i % 4));
    while (s.length) {
      const seen = s.peek();
      assert.equal(s.shift(), seen);
    }
  });

  test('a waiting unit ages into the lead: low priority is never starved', async () => {
    const s = new Scheduler(20); // +1 priority per 20 ms waited
    s.push(unit('old-low', 0));
    await sleep(70);
    s.push(unit('new-high', 2));
    assert.equal(s.shift().id, 'old-low');
    assert.equal(s.shift().id, 'new-high');
  });
});

for (const runtime of RUNTIMES) {
  describe(`priorities and fairness in a pool (${runtime})`, () => {
    test('queued calls run by priority', async () => {
      const log = newFile();
      const { pool } = makePool({ runtime, workers: 1 });
      const blocker = pool.apply('spinFor', [150, 'blocker']);
      await sleep(30);
      const calls = [
        pool.apply('record', [log, 'low'], { priority: -1 }),
        pool.apply('record', [log, 'mid'], {}),
        pool.apply('record', [log, 'high'], { priority: 10 }),
        pool.apply('record', [log, 'mid2'], { priority: 0 }),
      ];
      await blocker;
      await Promise.all(calls);
      assert.deepEqual(lines(log), ['high', 'mid', 'mid2', 'low']);
    });

    test("another caller's apply is not held behind a big map", async () => {
      const log = newFile();
      const { pool } = makePool({ runtime, workers: 1 });
      const items = Array.from({ length: 30 }, (_, i) => [log, `map${i}`]);
      const map = pool.starmap('record', items, { chunksize: 1 });
      await sleep(20);
      await pool.apply('record', [log, 'apply']);
      await map;
      const ran = lines(log);
      assert.ok(ran.indexOf('apply') < 10, `the apply ran after ${ran.indexOf('apply')} map items`);
    });

    test('bad priorities and keys are ConfigErrors', async () => {
      const { pool } = makePool({ runtime, workers: 1 });
      for (const options of [{ priority: Number.NaN }, { priority: '1' }, { key: '' }, { key: {} }]) {
        await assert.rejects(pool.apply('square', [2], options), ConfigError);
      }
      assert.equal(await pool.apply('square', [3], { priority: 2, key: 'me' }), 9);
    });
  });
}
