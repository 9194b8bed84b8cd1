// Closing a queue while workers still produce, and a producer's last puts as its worker ends: a put
// that resolved is delivered (found by a hostile review: a close raced with a worker's batch in
// flight, a teardown's puts died with process.exit(), flush() resolved before anything was written,
// and a consumer without its board had its items delivered twice).
import assert from 'node:assert/strict';
import { afterEach, describe } from 'node:test';
import { JoinableQueue, Pool, Queue, SharedMemory, shmStatus } from '../dist/src/index.js';
import { TEARDOWN_PUTS } from './fixtures/channel-tasks.mjs';
import { RUNTIMES, sleep, test } from './helpers.mjs';

const pools = [];
/** A pool terminated after the test (Node 20 runs no `await using` in plain JS). */
function open(options) {
  const pool = new Pool(options);
  pools.push(pool);
  return pool;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.terminate()));
});

const MODULE = new URL('./fixtures/channel-tasks.mjs', import.meta.url);

/** Drains `q` with gets that give up after `ms` of silence; returns how many it got. */
async function drainFor(q, ms) {
  let got = 0;
  for (;;) {
    try {
      await q.get({ timeout: ms });
      got++;
    } catch {
      return got;
    }
  }
}

for (const runtime of RUNTIMES) {
  describe(`closing a queue (${runtime})`, () => {
    test('a close while a worker puts: every put that resolved reaches the consumer, then iteration ends', async () => {
      const pool = open({ module: MODULE, runtime, workers: 1 });
      // The race needed a batch on its way at the close: rounds close at different moments.
      for (let round = 0; round < 5; round++) {
        const q = new Queue();
        const producing = pool.apply('produceUntilClosed', [q]);
        let got = 0;
        await q.get();
        got++;
        await sleep(3 + 2 * round);
        q.close();
        for await (const _ of q) got++;
        const { ok, code } = await producing;
        assert.equal(code, 'ERR_QUEUE_CLOSED');
        assert.equal(got, ok, `round ${round}: ${ok} puts resolved, ${got} items delivered`);
        assert.equal(q.size, 0);
      }
    });

    test('JoinableQueue: join() resolves after a close raced with a producing worker, all items done', async () => {
      const pool = open({ module: MODULE, runtime, workers: 1 });
      const q = new JoinableQueue();
      const producing = pool.apply('produceUntilClosed', [q]);
      await q.get();
      q.taskDone();
      await sleep(5);
      q.close();
      for await (const _ of q) q.taskDone();
      await producing;
      await Promise.race([q.join(), sleep(5000).then(() => assert.fail('join() never resolved'))]);
    });

    test('a teardown that puts (awaiting each) loses nothing when the pool closes', async () => {
      const pool = open({ module: MODULE, runtime, workers: 1, teardown: 'putAtTeardown' });
      const q = new Queue();
      await pool.apply('keepQueue', [q]);
      await pool.close();
      assert.equal(await drainFor(q, 500), TEARDOWN_PUTS);
    });
  });
}

describe('a process producer that exits', () => {
  test('puts, await flush(), then process.exit() while the parent is busy: every item arrives', async () => {
    const pool = open({ module: MODULE, runtime: 'process', workers: 1 });
    await pool.apply('sleep', [1]);
    const q = new Queue();
    const n = 5000;
    const task = pool.apply('putFlushExit', [q, n, 200]).catch((error) => error.code);
    await sleep(20);
    // The parent reads the link only as its event loop turns: its writes queue up in the worker.
    const end = Date.now() + 1500;
    while (Date.now() < end) {}
    assert.equal(await task, 'ERR_WORKER_CRASHED');
    assert.equal(await drainFor(q, 300), n);
  });
});

const noAddon = shmStatus().crossProcess ? false : `no shared-memory addon: ${shmStatus().reason}`;

describe('a consumer that could not map its board', { skip: noAddon }, () => {
  test('at its openFiles limit when the board came, then SIGKILLed: its items are uncertain, never delivered twice', async () => {
    const pool = open({
      module: MODULE,
      runtime: 'process',
      workers: 1,
      limits: { openFiles: 64 },
    });
    const n = 1000;
    const take = 50;
    const shm = SharedMemory.create({ size: n * 4 });
    try {
      const marks = shm.view(Int32Array);
      const q = new Queue();
      let lost;
      q.on('consumerLost', (event) => {
        lost = event;
      });
      for (let i = 0; i < n; i++) await q.put(i);
      await assert.rejects(pool.apply('consumeWithoutBoardThenDie', [q, shm, take]), {
        code: 'ERR_WORKER_CRASHED',
      });
      q.close();
      for await (const x of q) Atomics.add(marks, x, 1);
      const twice = marks.filter((m) => m > 1).length;
      assert.equal(twice, 0, `${twice} items were delivered twice`);
      assert.ok(lost, 'consumerLost was emitted');
      assert.ok(lost.uncertain.length >= take, 'what it may have handed out is reported, not re-queued');
      assert.equal(lost.redelivered.length, 0);
      const uncertain = new Set(lost.uncertain);
      for (let i = 0; i < n; i++) assert.ok(marks[i] === 1 || uncertain.has(i), `item ${i} is lost`);
    } finally {
      shm.close();
    }
  });
});
