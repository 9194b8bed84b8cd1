// Containment that does not cost the run (issue 16), provoked for real: a process worker's own rss
// guard ends it the moment it passes limits.rss (the pool's sampler is made too slow to be what
// does), and after a worker died under its task a warm spare takes the next dead worker's place.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MemoryLimitError, Pool, Queue, TaskError, WorkerCrashedError } from '../dist/src/index.js';
import { alive } from './helpers.mjs';

const limitsModule = new URL('./fixtures/limits.mjs', import.meta.url);
const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const MiB = 2 ** 20;

describe('containment', () => {
  it('rss guard: the worker ends itself just past limits.rss, as a MemoryLimitError of kind rss', async () => {
    // The pool's own sampler would look only once an hour: only the guard can stop this bomb.
    const pool = new Pool({
      module: limitsModule,
      workers: 1,
      runtime: 'process',
      limits: { rss: '256MiB', sampleInterval: '1h' },
    });
    const exits = [];
    pool.on('workerExit', (info) => exits.push(info));
    try {
      const error = await pool.apply('bufferBomb', [8, 0]).catch((e) => e);
      assert.ok(error instanceof MemoryLimitError, `${error}`);
      assert.equal(error.kind, 'rss');
      assert.equal(error.limit, 256 * MiB);
      // Stopped soon after the step that crossed: usually within it (8 MiB of Buffers, plus what the
      // heap moved meanwhile), but the guard thread must be scheduled to see it, and on a loaded 2-core
      // machine about one 0.1 ms sleep in a thousand ended 6-18 ms late: 64 MiB is ~16 ms of this bomb.
      assert.ok(
        error.observed > 256 * MiB && error.observed < 256 * MiB + 64 * MiB,
        `observed ${error.observed}`,
      );
      assert.equal(exits[0]?.exitCode, 88, 'the guard exits with its own code');
      assert.equal(exits[0]?.reason, 'rss limit');
      assert.deepEqual(await pool.apply('square', [7]), 49, 'a replacement took the work');
    } finally {
      await pool.terminate();
    }
  });

  it("exit code 88 is the rss guard's only under an rss limit; without one, a task's own exit(88) is a crash", async () => {
    const pool = new Pool({ module: misbehave, workers: 1, runtime: 'process' });
    try {
      const error = await pool.apply('exit', [88]).catch((e) => e);
      assert.ok(error instanceof WorkerCrashedError, `${error}`);
      assert.equal(error.exitCode, 88);
    } finally {
      await pool.terminate();
    }
  });

  it("a guard's exit whose report line cannot be written (the task closed its stderr) is still an rss breach", async () => {
    const pool = new Pool({
      module: limitsModule,
      workers: 1,
      runtime: 'process',
      limits: { rss: '192MiB', sampleInterval: '1h' },
    });
    const exits = [];
    pool.on('workerExit', (info) => exits.push(info));
    try {
      const error = await pool.apply('bufferBombBlind', [8, 1]).catch((e) => e);
      assert.ok(error instanceof MemoryLimitError, `${error}`);
      assert.equal(error.kind, 'rss');
      assert.equal(error.limit, 192 * MiB);
      assert.equal(error.observed, undefined, 'no line, so nothing observed');
      assert.equal(exits[0]?.exitCode, 88);
      assert.equal(exits[0]?.detail, undefined, 'the guard had nowhere to write');
    } finally {
      await pool.terminate();
    }
  });

  // CI's chaos run typed heap and Buffer bombs as ERR_WORKER_CRASHED ('Error: write EPIPE'): the pool
  // wrote a unit to a worker the guard had just ended, before it read the worker's end; the child's
  // 'error' event for that write then took the place of its stderr tail, so the guard's line was
  // never seen. Provoked here for real: the worker's other slot returns a result, the main thread is
  // busy for 100 ms (the bomb reaches its limit meanwhile), then the next unit goes to that worker.
  for (const [what, task, args, limits, kind] of [
    [
      'a Buffer bomb ended by the rss guard',
      'bufferBomb',
      [4, 1],
      { rss: '192MiB', sampleInterval: '1h' },
      'rss',
    ],
    ['a heap bomb ended by the heap guard', 'heapBombSlow', [1, 5], { heap: '96MiB' }, 'heap'],
  ]) {
    it(`${what} is typed by its limit even when a unit was written to the dead worker`, async () => {
      const pool = new Pool({ module: limitsModule, workers: 1, concurrency: 2, runtime: 'process', limits });
      const busy = (ms) => {
        const end = performance.now() + ms;
        while (performance.now() < end) {}
      };
      try {
        for (let round = 0; round < 4; round++) {
          let ended = false;
          const bomb = pool
            .apply(task, args)
            .then(
              () => 'returned',
              (e) => e,
            )
            .finally(() => {
              ended = true;
            });
          const beside = (async () => {
            while (!ended) {
              await pool.apply('square', [3]).catch(() => {});
              busy(100);
            }
          })();
          const error = await bomb;
          await beside;
          assert.ok(error instanceof MemoryLimitError, `round ${round}: ${error}`);
          assert.equal(error.kind, kind);
          assert.ok(
            error.observed > 0,
            `round ${round}: the guard's line was read (observed ${error.observed})`,
          );
        }
      } finally {
        await pool.terminate();
      }
    });
  }

  it('after a breach, a warm spare is started and takes the place of the next worker that breaches', async () => {
    const pool = new Pool({
      module: limitsModule,
      workers: 1,
      runtime: 'process',
      limits: { rss: '256MiB', sampleInterval: 20 },
    });
    const pids = new Set();
    const starts = [];
    let onStart = () => {};
    pool.on('workerStart', ({ pid }) => {
      pids.add(pid);
      starts.push(pid);
      onStart();
    });
    try {
      const first = await pool.apply('bufferBomb', [16, 0]).catch((e) => e);
      assert.ok(first instanceof MemoryLimitError, `${first}`);
      // A slow bomb: it reaches the limit after a few seconds, time enough for a spare to start.
      const second = pool.apply('bufferBomb', [16, 400]).then(
        () => 'returned',
        (e) => e,
      );
      const threeStarted = new Promise((resolve) => {
        onStart = () => starts.length >= 3 && resolve('spare started');
        onStart();
      });
      const first3 = await Promise.race([threeStarted, second.then(() => 'the bomb ended first')]);
      assert.equal(first3, 'spare started', 'a third worker (the spare) started while the second one ran');
      const spare = starts[2];
      const error = await second;
      assert.ok(error instanceof MemoryLimitError, `${error}`);
      assert.equal(error.kind, 'rss');
      // The spare took the dead worker's place: the next task runs there, and no other worker was needed.
      assert.equal(await pool.apply('pid', []), spare);
      assert.equal(pool.stats().breaches, 2);
    } finally {
      await pool.close();
    }
    for (const pid of pids) assert.equal(alive(pid), false, `worker process ${pid} outlived close()`);
  });

  it('no spare for a pool whose workers never died under a task', async () => {
    const pool = new Pool({
      module: limitsModule,
      workers: 2,
      runtime: 'process',
      limits: { rss: '256MiB' },
    });
    let started = 0;
    pool.on('workerStart', () => started++);
    try {
      await Promise.all(Array.from({ length: 50 }, (_, i) => pool.apply('square', [i])));
      assert.ok(started <= 2, `${started} workers started`);
      assert.ok(pool.stats().workers.length <= 2, `${pool.stats().workers.length} workers`);
    } finally {
      await pool.close();
    }
  });
});

describe('rss breach stopped in place', () => {
  // A breach during a call's synchronous part is stopped inside its worker (native/rss-stop.cc): the call
  // fails with the same typed error, the worker frees the memory and goes on. Everything else still
  // ends the process, by the guard's own exit (code 88): the pool's sampler looks once an hour, except
  // where it runs every 5 ms to show that it leaves an in-place stop alone.
  const stopPool = (options = {}, sampleInterval = '1h') =>
    new Pool({
      module: limitsModule,
      workers: 1,
      runtime: 'process',
      limits: { rss: '256MiB', sampleInterval },
      ...options,
    });
  const watch = (pool) => {
    const seen = { exits: [], breaches: [] };
    pool.on('workerExit', (info) => seen.exits.push(info));
    pool.on('breach', (error) => seen.breaches.push(error));
    return seen;
  };
  // The old way out: the guard ended the process (exit code 88) and the call failed typed, not in place.
  const assertEnded = (error, seen) => {
    assert.ok(error instanceof MemoryLimitError, `${error}`);
    assert.equal(error.inPlace, false, error.message);
    assert.equal(seen.exits[0]?.exitCode, 88);
  };

  // A stop in place needs the watcher thread awake while the task allocates. On a loaded 2-core
  // machine a thread that sleeps 0.1 ms was seen waking 6-18 ms late once in a thousand sleeps, and a
  // loop of Buffers in 2 MiB pages grows ~11 MiB a millisecond: then the stop cannot land before the
  // ceiling (limit + 64 MiB here) and the process ends, the fallback the README documents (CI saw it
  // once, at 324.9 MiB). So the tests of the in-place path let an attempt end that way, check that it
  // did so typed (exit 88, a new worker), and try again: three attempts, one of which must stop in place.
  const inPlaceAttempts = 3;
  const stopInPlace = async (pool, seen, attempt) => {
    const fallbacks = [];
    for (let i = 0; i < inPlaceAttempts; i++) {
      const pid = await pool.apply('pid', []);
      const exits = seen.exits.length;
      const error = await attempt().catch((e) => e);
      assert.ok(error instanceof MemoryLimitError, `${error}`);
      if (error.inPlace) {
        assert.equal(seen.exits.length, exits, 'no worker ended');
        assert.equal(await pool.apply('pid', []), pid, 'the same process runs the next task');
        return { error, fallbacks: fallbacks.length };
      }
      assert.equal(seen.exits.length, exits + 1, error.message);
      assert.equal(seen.exits.at(-1).exitCode, 88, error.message);
      assert.match(error.message, /was replaced/);
      fallbacks.push(error.message);
    }
    assert.fail(`no stop in place in ${inPlaceAttempts} attempts: ${fallbacks.join('; ')}`);
  };

  it('a synchronous Buffer bomb fails as MemoryLimitError (rss, inPlace) and the same worker goes on', async () => {
    const pool = stopPool({}, 5);
    const seen = watch(pool);
    try {
      let fallbacks = 0;
      for (let round = 0; round < 3; round++) {
        const stop = await stopInPlace(pool, seen, () => pool.apply('bufferBombSync', [8]));
        fallbacks += stop.fallbacks;
        const { error } = stop;
        assert.equal(error.code, 'ERR_MEMORY_LIMIT');
        assert.equal(error.kind, 'rss');
        assert.equal(error.limit, 256 * MiB);
        // In place, the bytes seen at the stop are past the limit and within the ceiling.
        assert.ok(
          error.observed > 256 * MiB && error.observed <= 256 * MiB + 64 * MiB,
          `observed ${error.observed}`,
        );
        assert.match(error.message, /the call was stopped, and worker \d+ freed the memory and goes on/);
      }
      assert.equal(seen.exits.length, fallbacks, 'no worker ended but for a fallback');
      assert.equal(seen.breaches.length, 3 + fallbacks);
      assert.equal(pool.stats().breaches, 3 + fallbacks);
      // The memory went back: the worker is well under its limit again.
      await new Promise((r) => setTimeout(r, 50));
      const [w] = pool.stats().workers;
      assert.ok(w.rss < 192 * MiB, `worker rss ${w.rss}`);
      assert.equal(await pool.apply('square', [9]), 81);
    } finally {
      await pool.close();
    }
  });

  it('a call that keeps what it allocated cannot be reclaimed: its worker is replaced', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const pid = await pool.apply('pid', []);
      const error = await pool.apply('bufferBombHoard', [8]).catch((e) => e);
      assert.ok(error instanceof MemoryLimitError, `${error}`);
      assert.equal(error.kind, 'rss');
      assert.equal(error.inPlace, false);
      assert.match(error.message, /was replaced/);
      assert.equal(seen.exits[0]?.exitCode, 88);
      assert.notEqual(await pool.apply('pid', []), pid);
    } finally {
      await pool.close();
    }
  });

  it('one native call that passes the ceiling (limit + 1/4) ends the process', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const error = await pool.apply('fillBomb', [400]).catch((e) => e);
      assertEnded(error, seen);
      assert.equal(await pool.apply('square', [5]), 25);
    } finally {
      await pool.close();
    }
  });

  it('a stop that cannot land within 100 ms (a blocking native call) ends the process', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const error = await pool.apply('blockedPastLimit', [256 * MiB, 4, 1500]).catch((e) => e);
      assertEnded(error, seen);
      assert.equal(await pool.apply('square', [6]), 36);
    } finally {
      await pool.close();
    }
  });

  it('a breach after an await is not in a call the guard can stop: the process ends as before', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const error = await pool.apply('bufferBomb', [8, 0]).catch((e) => e);
      assertEnded(error, seen);
    } finally {
      await pool.close();
    }
  });

  it('recycle.onBreach replaces the worker even for a breach it could have stopped in place', async () => {
    const pool = stopPool({ recycle: { onBreach: true } });
    const seen = watch(pool);
    try {
      const pid = await pool.apply('pid', []);
      const error = await pool.apply('bufferBombSync', [8]).catch((e) => e);
      assertEnded(error, seen);
      assert.notEqual(await pool.apply('pid', []), pid);
    } finally {
      await pool.close();
    }
  });

  it("the watcher thread asks the scheduler for a 0.1 ms slice; the worker's other threads keep theirs", async (t) => {
    const pool = stopPool();
    try {
      const pid = await pool.apply('pid', []);
      // /proc/<pid>/task/<tid>/sched shows a thread's slice on kernels with custom slices (6.12+) built
      // with the scheduler's debug files; elsewhere there is nothing to read.
      const slice = (tid) => {
        const m = /^se\.slice\s*:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/sched`, 'utf8'));
        return m ? Number(m[1]) : undefined;
      };
      const main = slice(pid);
      if (main === undefined) return t.skip("this kernel does not show a thread's slice");
      if (main <= 100_000) return t.skip(`this kernel's default slice is ${main} ns already`);
      const others = readdirSync(`/proc/${pid}/task`)
        .filter((tid) => Number(tid) !== pid)
        .map(slice);
      assert.equal(others.filter((n) => n === 100_000).length, 1, `main ${main}, others ${others}`);
      assert.equal(
        others.filter((n) => n === main).length,
        others.length - 1,
        `main ${main}, others ${others}`,
      );
    } finally {
      await pool.close();
    }
  });

  it('a task cannot pass its own error off as a stop: it is a TaskError, no breach', async () => {
    const pool = stopPool();
    try {
      const error = await pool.apply('forgeRssStop', []).catch((e) => e);
      assert.ok(error instanceof TaskError, `${error}`);
      assert.equal(error.cause?.message, 'not really stopped');
      assert.equal(pool.stats().breaches, 0);
    } finally {
      await pool.close();
    }
  });

  it('a stop that lands inside corral (a queue put reading its item) ends the process, as before', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    const queue = new Queue();
    try {
      const error = await pool.apply('queuePutBomb', [queue]).catch((e) => e);
      assertEnded(error, seen);
      assert.equal(queue.size, 0, 'nothing half-put arrived');
      assert.equal(await pool.apply('square', [7]), 49);
    } finally {
      queue.close();
      await pool.close();
    }
  });

  it("a breach inside Node's own JS is not stopped there: the process ends", async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const error = await pool.apply('inspectPastLimit', [256 * MiB]).catch((e) => e);
      assertEnded(error, seen);
    } finally {
      await pool.close();
    }
  });

  it('a worker that made a pool of its own is not stopped in place: its process ends', async () => {
    const pool = stopPool({ module: new URL('./fixtures/own-pool.mjs', import.meta.url) });
    const seen = watch(pool);
    try {
      const pid = await pool.apply('pid', []);
      const error = await pool.apply('ownPoolBomb', []).catch((e) => e);
      assertEnded(error, seen);
      assert.notEqual(await pool.apply('pid', []), pid);
    } finally {
      await pool.close();
    }
  });

  it('a call that returned a promise before the stop could land is not dropped: the process ends', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const error = await pool.apply('promiseAfterBreach', [256 * MiB]).catch((e) => e);
      assertEnded(error, seen);
      assert.equal(await pool.apply('square', [8]), 64);
    } finally {
      await pool.close();
    }
  });

  it('calls running beside the stopped one in the same worker finish, each settled once', async () => {
    const pool = stopPool({ concurrency: 3 }, 5);
    const seen = watch(pool);
    try {
      let before;
      let beside;
      await stopInPlace(pool, seen, async () => {
        before = pool.stats();
        beside = Promise.allSettled([pool.apply('grow', [16, 400]), pool.apply('grow', [8, 600])]);
        await new Promise((r) => setTimeout(r, 100));
        const error = await pool.apply('bufferBombSync', [8]).catch((e) => e);
        await beside; // settled, either way, before another attempt or the checks below
        throw error;
      });
      assert.deepEqual(
        (await beside).map((r) => r.value ?? r.reason),
        [16, 8],
      );
      // Since the attempt that stopped in place: the two beside it and the helper's pid call
      // completed, the bomb failed; nothing twice.
      assert.equal(pool.stats().completed - before.completed, 3);
      assert.equal(pool.stats().failed - before.failed, 1);
    } finally {
      await pool.close();
    }
  });

  it('in a map chunk, the breaching item fails typed; the worker goes on', async () => {
    const pool = stopPool();
    const seen = watch(pool);
    try {
      const { fallbacks } = await stopInPlace(pool, seen, () =>
        pool.map('squareOrBomb', [1, 2, -1, 4], { chunksize: 4 }),
      );
      const pid = await pool.apply('pid', []);
      assert.deepEqual(await pool.map('squareOrBomb', [1, 2, 3], { chunksize: 3 }), [1, 4, 9]);
      assert.equal(await pool.apply('pid', []), pid);
      assert.equal(seen.exits.length, fallbacks);
    } finally {
      await pool.close();
    }
  });
});

describe('classifying a death by both guards', () => {
  // Two threads can end a heap bomb at once: the heap guard (main thread, after a mark-compact) and
  // the rss guard (its own thread). Each writes its line and _exits; the first _exit sets the code,
  // so the code can be one guard's while the tail holds the other's line too. The lines are the
  // exact texts native/heap.cc and native/corral.c write.
  const limits = { heap: 128 * MiB, rss: 300 * MiB };
  const heapLine = 'corral-heap-guard: used=130000000 limit=134217728 by=full';
  const rssLine = `corral-rss-guard: rss=${301 * MiB} limit=${300 * MiB}`;
  const facts = (exitCode, detail) => ({
    exitCode,
    signal: null,
    code: undefined,
    detail,
    observed: undefined,
  });
  const cases = [
    ['rss code, heap line first', 88, `${heapLine}\n${rssLine}`, 'heap', 130000000],
    ['rss code, only the heap line', 88, heapLine, 'heap', 130000000],
    ['heap code, rss line first', 87, `${rssLine}\n${heapLine}`, 'heap', 130000000],
    [
      'rss code while V8 printed its heap-OOM report',
      88,
      `FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n${rssLine}`,
      'heap',
      undefined,
    ],
    ['rss code, rss line only', 88, rssLine, 'rss', 301 * MiB],
    ['rss code, no line at all', 88, undefined, 'rss', undefined],
  ];
  for (const [what, exitCode, detail, kind, observed] of cases) {
    it(`${what}: ${kind}`, async () => {
      const { classifyDeath } = await import('../dist/src/limits/classify.js');
      const breach = classifyDeath(facts(exitCode, detail), limits);
      assert.equal(breach?.kind, kind);
      assert.equal(breach.limit, limits[kind]);
      assert.equal(breach.observed, observed);
    });
  }
  it('exit code 88 without an rss limit is no breach', async () => {
    const { classifyDeath } = await import('../dist/src/limits/classify.js');
    assert.equal(classifyDeath(facts(88, rssLine), { heap: 128 * MiB }), undefined);
  });
});

describe('the warm spare', () => {
  const until = async (what, check, ms = 15_000) => {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      const value = check();
      if (value) return value;
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.fail(`timed out waiting for ${what}`);
  };
  const spareOf = (pool) => pool.stats().workers.find((w) => w.spare);
  /** A pool whose first worker died under its task, kept busy so that it wants a spare. */
  async function afterADeath(options) {
    const pool = new Pool({ module: misbehave, runtime: 'process', ...options });
    const pids = new Set();
    const starts = [];
    pool.on('workerStart', ({ pid }) => {
      pids.add(pid);
      starts.push(pid);
    });
    const died = await pool.apply('exit', [3]).catch((e) => e);
    assert.ok(died instanceof WorkerCrashedError, `${died}`);
    let busy = true;
    const work = (async () => {
      while (busy) await pool.apply('sleep', [5, 0]);
    })().catch(() => {}); // terminate() fails the unit running: the loop ends
    const stopWork = async () => {
      busy = false;
      await work;
    };
    return { pool, pids, starts, stopWork };
  }

  for (const [end, when] of [
    ['terminate', 'starting'],
    ['terminate', 'idle'],
    ['close', 'starting'],
    ['close', 'idle'],
  ]) {
    it(`${end}() while the spare is ${when} leaves no process behind`, async () => {
      const { pool, pids, stopWork } = await afterADeath({ workers: 1 });
      const spare = await until(`a spare ${when}`, () => {
        const s = spareOf(pool);
        return s?.state === when ? s : undefined;
      });
      if (spare.pid !== undefined) pids.add(spare.pid);
      // terminate() with a unit running, close() once the work is done; the work loop ends either way.
      const stopped = stopWork();
      if (end === 'close') await stopped;
      await pool[end]();
      await stopped;
      assert.deepEqual(pool.stats().workers, []);
      for (const pid of pids) assert.equal(alive(pid), false, `worker process ${pid} outlived ${end}()`);
    });
  }

  it('takes no unit before a death promotes it, and is never more than one beside the pool size', async () => {
    const { pool, stopWork } = await afterADeath({ workers: 2 });
    try {
      // The pool is one worker short after the death: whatever is started first (a replacement, or the
      // spare promoted) takes that place when work asks for it. Then the pool is full, with a spare.
      const spare = await until('two workers and an idle spare', () => {
        void pool.apply('whoami', []);
        const ws = pool.stats().workers;
        const s = spareOf(pool);
        return ws.filter((w) => !w.spare && w.state !== 'starting').length === 2 && s?.state === 'idle'
          ? s
          : undefined;
      });
      const seen = new Set();
      for (let i = 0; i < 10; i++) {
        const batch = await Promise.all(Array.from({ length: 20 }, () => pool.apply('whoami', [])));
        for (const r of batch) seen.add(r.pid);
        const ws = pool.stats().workers;
        assert.ok(ws.length <= 3, `${ws.length} workers for a pool of 2`);
        assert.deepEqual(
          ws.filter((w) => w.spare).map((w) => w.id),
          [spare.id],
          'the same one spare',
        );
      }
      assert.equal(seen.has(spare.pid), false, 'the spare ran a unit before any death');
      assert.equal(pool.stats().workers.find((w) => w.id === spare.id)?.tasksDone, 0);
      // A second death: the spare takes that worker's place (when work next wants a worker).
      const before = new Set(
        pool
          .stats()
          .workers.filter((w) => !w.spare)
          .map((w) => w.pid),
      );
      const dead = await pool.apply('exit', [3]).catch((e) => e);
      before.delete(dead.pid);
      const after = new Set();
      for (let i = 0; i < 10 && !after.has(spare.pid); i++) {
        for (const r of await Promise.all(Array.from({ length: 20 }, () => pool.apply('whoami', [])))) {
          after.add(r.pid);
        }
      }
      assert.equal(pool.stats().workers.find((w) => w.id === spare.id)?.spare, false, 'promoted');
      for (const pid of after) {
        assert.ok(before.has(pid) || pid === spare.pid, `work ran in ${pid}, a new process, not the spare`);
      }
      assert.ok(after.has(spare.pid), 'the promoted spare runs work');
    } finally {
      await stopWork();
      await pool.terminate();
    }
  });

  it('under a memoryBudget with no room for one more worker, no spare is started (it would be retired and started again)', async () => {
    // Measure this process and a worker, then set the budget so that after the death (one worker
    // runs, and a spare would be a second) one worker fits with half a worker to spare below the
    // share dispatch resumes at (0.9), and a second does not by half a worker: this process's own
    // size drifts by several MiB between pools, so a thinner margin makes the test flaky.
    const probe = new Pool({
      module: misbehave,
      runtime: 'process',
      workers: 2,
      memoryBudget: '64GiB',
      limits: { sampleInterval: 20 },
    });
    await Promise.all(Array.from({ length: 20 }, () => probe.apply('sleep', [5, 0])));
    await new Promise((r) => setTimeout(r, 100));
    const measured = probe.stats();
    await probe.terminate();
    const worker = Math.max(...measured.workers.map((w) => w.rss));
    const parent = measured.memory.total - measured.workers.reduce((sum, w) => sum + w.rss, 0);
    const budget = Math.round((parent + 1.5 * worker) / 0.9);
    const { pool, stopWork } = await afterADeath({
      workers: 2,
      memoryBudget: budget,
      limits: { sampleInterval: 20 },
    });
    let spares = 0;
    const timer = setInterval(() => {
      if (spareOf(pool)) spares++;
    }, 5);
    try {
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(spares, 0, 'a spare was started without room for it');
    } finally {
      clearInterval(timer);
      await stopWork();
      await pool.terminate();
    }
  });

  it('an elastic pool shrinks to its minimum beside the spare, and the spare goes 10 s after the last death', async () => {
    const { pool, pids, stopWork } = await afterADeath({ workers: { min: 1, max: 2 }, idleTimeout: 100 });
    try {
      await until('a spare', () => spareOf(pool)?.state === 'idle');
      const diedAt = performance.now();
      await Promise.all(Array.from({ length: 20 }, () => pool.apply('sleep', [20, 0])));
      await stopWork();
      // Idle: the workers go down to the minimum; the spare is not counted as one of them.
      await until('the minimum', () => pool.stats().workers.filter((w) => !w.spare).length === 1);
      assert.equal(pool.stats().workers.filter((w) => w.spare).length, 1, 'the spare stays meanwhile');
      const spare = spareOf(pool);
      await until('the spare to go', () => !spareOf(pool), 14_000);
      assert.ok(performance.now() - diedAt >= 9_000, 'not before deaths stopped coming for a while');
      assert.equal(alive(spare.pid), false, 'its process ended');
      assert.equal(pool.stats().workers.length, 1, 'the minimum stays');
      assert.equal(await pool.apply('square', [4]), 16);
    } finally {
      await stopWork();
      await pool.close();
    }
    for (const pid of pids) assert.equal(alive(pid), false, `worker process ${pid} outlived close()`);
  });

  it('many deaths in a row: at most one spare, and never more processes than the pool size plus one', async () => {
    const { pool, stopWork } = await afterADeath({ workers: 2 });
    let most = 0;
    let mostSpares = 0;
    const look = () => {
      const ws = pool.stats().workers;
      most = Math.max(most, ws.length);
      mostSpares = Math.max(mostSpares, ws.filter((w) => w.spare).length);
    };
    pool.on('workerStart', look);
    const timer = setInterval(look, 2);
    try {
      for (let i = 0; i < 12; i++) {
        const error = await pool.apply('exit', [3]).catch((e) => e);
        assert.ok(error instanceof WorkerCrashedError, `${error}`);
        look();
      }
      assert.ok(most <= 3, `${most} processes at once for a pool of 2`);
      // Deaths this close together may leave no time for one (it is not started beside another start).
      assert.ok(mostSpares <= 1, `${mostSpares} spares at once`);
    } finally {
      clearInterval(timer);
      await stopWork();
      await pool.terminate();
    }
  });
});
