// pool.metrics() (issue 14): histograms of queue wait and run time per task, counters, per-worker
// utilization and memory, a once-a-second series, and the task-stream log.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { Histogram } from '../dist/src/metrics/histogram.js';
import { RUNTIMES, rejection, sleep, test, usePools } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const makePool = usePools(misbehave);

describe('the histogram', () => {
  test('quantiles within one bucket (~9 %) of the truth; buckets cumulative, ending at +Inf', () => {
    const h = new Histogram();
    for (let i = 1; i <= 1000; i++) h.record(i / 1000); // 1 ms .. 1 s, uniform
    const s = h.snapshot();
    assert.equal(s.count, 1000);
    assert.ok(Math.abs(s.sum - 500.5) < 1e-6);
    for (const [q, truth] of [
      [s.p50, 0.5],
      [s.p90, 0.9],
      [s.p99, 0.99],
    ]) {
      assert.ok(Math.abs(q - truth) / truth < 0.1, `${q} vs ${truth}`);
    }
    assert.equal(s.max, 1);
    const counts = s.buckets.map(([, c]) => c);
    assert.deepEqual(
      counts,
      [...counts].sort((a, b) => a - b),
    );
    assert.deepEqual(s.buckets.at(-1), [Infinity, 1000]);
    const atTenth = s.buckets.find(([le]) => le === 0.1)[1];
    assert.ok(atTenth >= 90 && atTenth <= 100, `${atTenth} observations up to 100 ms`);
  });
});

for (const runtime of RUNTIMES) {
  describe(`pool.metrics() (${runtime})`, () => {
    test('wait and run per task, outcomes, workers, series', async () => {
      const { pool } = makePool({ runtime, workers: 2 });
      await Promise.all(Array.from({ length: 20 }, () => pool.apply('spinFor', [10, 1])));
      await pool.map(
        'square',
        Array.from({ length: 1000 }, (_, i) => i),
      );
      await rejection(pool.apply('throwCustom', ['x']));
      await rejection(pool.apply('exit', [3]));
      await rejection(pool.apply('sleep', [1000], { timeout: 50 }));
      const m = pool.metrics();
      const spin = m.tasks.spinFor;
      assert.equal(spin.run.count, 20);
      assert.ok(spin.run.p50 >= 0.009 && spin.run.p50 < 0.05, `spinFor p50 ${spin.run.p50}`);
      assert.ok(spin.wait.max > 0, 'calls waited behind each other');
      assert.equal(m.tasks.square.items, 1000);
      assert.equal(m.tasks.throwCustom.failed, 1);
      assert.equal(m.crashes, 1);
      assert.equal(m.timeouts, 1);
      assert.ok(m.workers.length >= 1);
      for (const w of m.workers) {
        assert.ok(w.utilization >= 0 && w.utilization <= 1);
        assert.ok(w.rss === undefined || w.rss > 0);
      }
      assert.equal(m.series.length, 1, 'the first call takes the first sample');
      await sleep(1100);
      assert.ok(pool.metrics().series.length >= 2);
    });
  });
}
