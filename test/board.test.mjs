// Work stealing's claim board (pool/steal.ts) has a word per slot, reused round-robin. A worker held up
// (a long synchronous task, a starved process) has its waiting units taken back and run elsewhere, wave
// after wave, and every unit taken back stays in its queue until it reads past it. The pool must not give
// a slot to a new unit before the worker has read past the old one: a reused slot made a unit taken back
// look like the worker's own (it ran twice) and, once the new unit was taken back in turn, made a unit
// still waiting look taken (skipped: its call never settled). Found with a 100k-call burst on a busy
// machine, where one call in 100,000 never settled; this file provokes it on purpose.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Pool, SharedMemory } from '../dist/src/index.js';

const TASKS = new URL('./fixtures/board-tasks.mjs', import.meta.url);
const WAVES = 1000;
const PER_WAVE = 64;

/** Rejects once `ms` passed without the promise settling. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Calls countOnce in waves of PER_WAVE, each awaited: the worker not held is idle after each one. */
async function waves(pool, counts, count) {
  const calls = [];
  for (let wave = 0; wave < count; wave++) {
    const batch = [];
    for (let i = wave * PER_WAVE; i < (wave + 1) * PER_WAVE; i++)
      batch.push(pool.apply('countOnce', [counts, i]));
    calls.push(...batch);
    await within(Promise.all(batch), 20_000, `wave ${wave}`);
  }
  return within(Promise.all(calls), 20_000, `${calls.length} calls`);
}

/** The first index of counts that is not exactly 1, and how many times it ran. */
function notOnce(counts, n) {
  const ran = counts.view(Int32Array);
  const wrong = [];
  for (let i = 0; i < n && wrong.length < 5; i++) if (ran[i] !== 1) wrong.push(`#${i} ran ${ran[i]} times`);
  return wrong;
}

for (const runtime of ['thread', 'process']) {
  describe(`claim board (${runtime}): a worker held up while its units are taken back wave after wave`, () => {
    it('every call settles with its own result, and each ran exactly once', async () => {
      const n = WAVES * PER_WAVE;
      const counts = SharedMemory.create({ size: n * 4 });
      const pool = new Pool({ module: TASKS, workers: 2, runtime });
      try {
        // block's usual time becomes ~0 ms, so a worker it holds for 500 ms counts as stuck after 5 ms
        // and the other worker, idle after each wave, takes back what waits behind it. The waves go on
        // after the block ends, while the held worker reads its backlog.
        for (let i = 0; i < 6; i++) await pool.apply('block', [0]);
        const held = pool.apply('block', [500]);
        const results = await waves(pool, counts, WAVES);
        assert.equal(await held, 500);
        for (let i = 0; i < n; i++) assert.equal(results[i], i);
        assert.deepEqual(notOnce(counts, n), [], 'each call ran exactly once');
      } finally {
        await pool.terminate();
        counts.close();
      }
    });

    it('a cancellable map chunk running on the held worker is not taken for cancelled', async () => {
      // The chunk watches its claim word between items (it can be cancelled: it has a timeout). More
      // than a board's worth of units offered to its worker while it runs must not reuse that word.
      const n = 300 * PER_WAVE;
      const counts = SharedMemory.create({ size: n * 4 });
      const pool = new Pool({ module: TASKS, workers: 2, runtime });
      try {
        await pool.map('block', [0, 0, 0, 0, 0, 0], { chunksize: 1 });
        const long = pool.map('block', new Array(250).fill(2), { chunksize: 250, timeout: 60_000 });
        await waves(pool, counts, 300);
        assert.deepEqual(await within(long, 20_000, 'the long chunk'), new Array(250).fill(2));
        assert.deepEqual(notOnce(counts, n), [], 'each call ran exactly once');
      } finally {
        await pool.terminate();
        counts.close();
      }
    });

    it('an aborted chunk of numbers stops between items: the numeric loop watches its claim word', async () => {
      // cancelGrace keeps the pool from stopping the worker: only the loop's own check can end the chunk.
      const pool = new Pool({ module: TASKS, workers: 1, runtime, cancelGrace: 60_000 });
      try {
        assert.equal(await pool.apply('block', [0]), 0);
        const controller = new AbortController();
        // 100 numbers of 50 ms in one chunk: numbers in and out, the worker's numeric fast path.
        const map = pool.map('block', new Array(100).fill(50), { chunksize: 100, signal: controller.signal });
        await new Promise((resolve) => setTimeout(resolve, 300));
        controller.abort();
        await assert.rejects(map, (e) => e.code === 'ERR_TASK_ABORTED');
        // Run to its end, the chunk would hold the one worker ~4.7 s more.
        assert.equal(await within(pool.apply('block', [0]), 2000, 'the next call on the same worker'), 0);
      } finally {
        await pool.terminate();
      }
    });

    it('more broadcasts waiting for a starting worker than its board has slots all arrive', async () => {
      // broadcast() units are bound to their worker and wait for it; they go out as the board has room.
      const counts1500 = SharedMemory.create({ size: 1500 * 4 });
      const pool = new Pool({ module: TASKS, workers: 2, runtime });
      try {
        const outcomes = await within(
          Promise.all(Array.from({ length: 1500 }, (_, i) => pool.broadcast('countOnce', [counts1500, i]))),
          20_000,
          '1,500 broadcasts',
        );
        for (const perWorker of outcomes) {
          assert.equal(perWorker.length, 2);
          for (const o of perWorker) assert.equal(o.status, 'fulfilled', o.reason?.message);
        }
        const ran = counts1500.view(Int32Array);
        for (let i = 0; i < 1500; i++) assert.equal(ran[i], 2, `broadcast ${i} ran once on each worker`);
      } finally {
        await pool.terminate();
        counts1500.close();
      }
    });

    it('past 2^31 and 2^32 units: taking back, claiming and cancel checks still agree', async () => {
      // A claim word holds a unit's seq as 32 bits. A pool that has sent 2^31 units (hours of tiny
      // calls) must still compare right: a take that won must say so (else the unit is lost), a
      // running chunk must still find its own claim (else it stops itself), and no seq may read as
      // the 0 of "taken back". The pool's unit counter is set near each edge here (white-box: the
      // dispatcher's own field), and the storm above runs across it.
      for (const edge of [2 ** 31, 2 ** 32]) {
        const n = 100 * PER_WAVE;
        const counts = SharedMemory.create({ size: n * 4 });
        const pool = new Pool({ module: TASKS, workers: 2, runtime });
        try {
          await pool.map('block', [0, 0, 0, 0, 0, 0], { chunksize: 1 });
          pool.backend.seq = edge - 40;
          const long = pool.map('block', new Array(150).fill(2), { chunksize: 150, timeout: 60_000 });
          await waves(pool, counts, 100);
          assert.deepEqual(await within(long, 20_000, `the long chunk near ${edge}`), new Array(150).fill(2));
          assert.deepEqual(notOnce(counts, n), [], `each call ran exactly once near ${edge}`);
          assert.ok(pool.backend.seq > edge, `the storm crossed ${edge}`);
        } finally {
          await pool.terminate();
          counts.close();
        }
      }
    });
  });
}
