// Containment that does not cost the run (issue 16), provoked for real: a process worker's own rss
// guard ends it the moment it passes limits.rss (the pool's sampler is made too slow to be what
// does), and after a worker died under its task a warm spare takes the next dead worker's place.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryLimitError, Pool, WorkerCrashedError } from '../dist/src/index.js';

const limitsModule = new URL('./fixtures/limits.mjs', import.meta.url);
const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const MiB = 2 ** 20;

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

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
      // Stopped within the step that crossed: 8 MiB of Buffers, plus what the heap moved meanwhile.
      assert.ok(
        error.observed > 256 * MiB && error.observed < 256 * MiB + 32 * MiB,
        `observed ${error.observed}`,
      );
      assert.equal(exits[0]?.exitCode, 88, 'the guard exits with its own code');
      assert.equal(exits[0]?.reason, 'rss limit');
      assert.deepEqual(await pool.apply('square', [7]), 49, 'a replacement took the work');
    } finally {
      await pool.terminate();
    }
  });

  it("a task's own exit with the guard's code is a crash, not a breach", async () => {
    const pool = new Pool({ module: misbehave, workers: 1, runtime: 'process', limits: { rss: '1GiB' } });
    try {
      const error = await pool.apply('exit', [88]).catch((e) => e);
      assert.ok(error instanceof WorkerCrashedError, `${error}`);
    } finally {
      await pool.terminate();
    }
  });

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
