// The automatic chunk size (pool/chunking.ts) grows 1, 8, 64, 512, ... from timed chunks and, once it
// has settled, lets a job hold a wide window of chunks in flight. A worker's first one-item probe runs
// cold (~0.5 ms) and may answer after the other worker's 8-item chunks were timed. Counted like any
// other chunk it set the per-item estimate alone: the size settled at ~57 tiny items and the window
// opened to ~70 chunks, each a round trip, in about one fresh process pool in four (100k squares:
// 92-204 chunks and up to 92 ms, against ~30 chunks and ~45 ms). These drive the sizer with that
// order of results.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkSizer } from '../dist/src/pool/chunking.js';

function backend(workers = 2) {
  return {
    config: { workers, concurrency: 1, maxQueue: Infinity, chunkMs: undefined },
    contended: false,
  };
}

describe('automatic chunk size', () => {
  it('grows 1, 8, 64 and a late cold one-item probe does not pull it back', () => {
    const sizer = new ChunkSizer(backend(), 'auto', 100_000);
    const left = 100_000;
    assert.equal(sizer.size(left), 1);
    sizer.timed(1, 0.31); // worker 1's first call, cold
    sizer.timed(1, 0.01);
    assert.equal(sizer.size(left), 8);
    sizer.timed(8, 0.05);
    sizer.timed(8, 0.01);
    assert.equal(sizer.size(left), 64);
    sizer.timed(1, 0.48); // worker 2's first call, cold, answering last
    assert.equal(sizer.size(left), 64, 'the size still grows to 64');
    // Still growing: a few chunks in flight (workers × 2), not a window of dozens.
    assert.equal(sizer.window(left), 4);
    sizer.timed(64, 0.03);
    assert.equal(sizer.size(left), 512);
  });

  it('still follows one-item chunks when that is all it has timed (slow tasks)', () => {
    const sizer = new ChunkSizer(backend(), 'auto', 1000);
    for (const ms of [5, 200, 5, 5]) sizer.timed(1, ms);
    assert.equal(sizer.size(1000), 1, 'tasks of milliseconds stay one to a chunk');
    // Their times count: the size has settled (a wide window), it is not still probing (4 in flight).
    assert.equal(sizer.window(1000), 128);
  });

  it('keeps counting chunks a few times smaller than the largest (the shrinking tail of an array)', () => {
    const sizer = new ChunkSizer(backend(), 'auto', 100_000);
    sizer.timed(1, 0.01);
    sizer.timed(8, 0.01);
    sizer.timed(64, 0.05);
    sizer.timed(512, 0.4); // ~0.8 µs an item: 4 ms is ~5,000 items, at most 8 × 512
    assert.equal(sizer.size(100_000), 4096);
    // Items got 10× dearer; a 100-item chunk (more than 512/8) says so.
    sizer.timed(100, 0.8);
    assert.ok(
      sizer.size(100_000) < 4096,
      `the estimate follows the dearer items (size ${sizer.size(100_000)})`,
    );
  });
});
