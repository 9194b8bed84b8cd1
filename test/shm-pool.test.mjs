// SharedMemory through the pool: handles travel in task arguments and results under both runtimes,
// the workers map the same bytes (no copy), and Atomics counters add up exactly.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Pool, SharedMemory, shmStatus } from '../dist/src/index.js';
import { leftoverSegments } from './shm-leftovers.mjs';

const module = new URL('./fixtures/shm-tasks.mjs', import.meta.url);
const crossProcess = shmStatus().crossProcess;

for (const runtime of ['thread', 'process']) {
  const skip =
    runtime === 'process' && !crossProcess ? `no shared-memory addon: ${shmStatus().reason}` : false;
  describe(`SharedMemory in a ${runtime} pool`, { skip }, () => {
    it('workers read and write the parent segment in place', async () => {
      const pool = new Pool({ module, runtime, workers: 2 });
      const shm = SharedMemory.create({ size: 1_000_000 * 8 });
      const a = shm.view(Float64Array);
      for (let i = 0; i < a.length; i++) a[i] = i % 10;
      const slices = Array.from({ length: 10 }, (_, k) => ({
        shm,
        from: k * 100_000,
        to: (k + 1) * 100_000,
      }));
      try {
        const sums = await pool.map('sumSlice', slices);
        assert.deepEqual(sums, Array(10).fill(450_000));
        assert.equal(await pool.apply('isShared', [shm]), true);
        await pool.map('doubleSlice', slices, { chunksize: 1 });
        assert.equal(a[9], 18, 'the parent sees what the workers wrote');
        assert.equal(a[999_999], 18);
      } finally {
        await pool.close();
        shm.close();
      }
    });

    it('an Atomics counter incremented from 4 workers reaches the exact total', async () => {
      const pool = new Pool({ module, runtime, workers: 4 });
      const shm = SharedMemory.create({ size: 64 });
      try {
        await Promise.all(Array.from({ length: 8 }, () => pool.apply('count', [shm, 25_000])));
        assert.equal(Atomics.load(shm.view(Int32Array), 0), 200_000);
      } finally {
        await pool.close();
        shm.close();
      }
    });

    it('a segment created in a worker comes back as a SharedMemory over the same bytes', async () => {
      const pool = new Pool({ module, runtime, workers: 1 });
      try {
        const shm = await pool.apply('makeSegment', [16]);
        assert.ok(shm instanceof SharedMemory);
        assert.deepEqual([...shm.view(Float64Array)], Array(16).fill(7));
        shm.unlink();
        shm.close();
      } finally {
        await pool.close();
      }
    });
  });
}

it('nothing of corral is left in /dev/shm', async () => {
  // A test file that ran just before may have ended a moment ago: its tracker unlinks within ms.
  const left = leftoverSegments;
  for (let i = 0; i < 40 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(left(), []);
});
