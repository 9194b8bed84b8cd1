// The same payload through a corral Pool: a Float64Array argument (copied: structured clone for
// threads, V8 serialisation over the pipe for processes) against a SharedMemory argument (a handle;
// the worker maps the segment once). 2 workers, medians of 5 runs after a warm-up.
// Usage: node bench/shm-pool.mjs   (after `npm run build` and `npm run build:native`)
import { cpus } from 'node:os';
import { Pool, SharedMemory, shmStatus } from '../dist/src/index.js';

const module = new URL('./shm-tasks.mjs', import.meta.url);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const MiB = 2 ** 20;

console.log(`machine: ${cpus()[0]?.model}, ${cpus().length} cores, node ${process.version}`);
console.log(
  '\n| runtime | payload | tasks | argument | median ms | MiB/s | x copy |\n|---|---|--:|---|--:|--:|--:|',
);
for (const runtime of ['thread', 'process']) {
  if (runtime === 'process' && !shmStatus().crossProcess) {
    console.log(`| process | - | - | - | shared memory unavailable: ${shmStatus().reason} | | |`);
    continue;
  }
  for (const [mib, tasks] of [
    [8, 32],
    [128, 8],
  ]) {
    const pool = new Pool({ module, runtime, workers: 2 });
    const data = new Float64Array((mib * MiB) / 8).map((_, i) => i % 7);
    const shm = SharedMemory.from(data);
    const runs = { copy: [], shared: [] };
    for (let r = 0; r < 6; r++) {
      let t = performance.now();
      await Promise.all(Array.from({ length: tasks }, () => pool.apply('sumArray', [data])));
      const copy = performance.now() - t;
      t = performance.now();
      await Promise.all(Array.from({ length: tasks }, () => pool.apply('sumShared', [shm])));
      const shared = performance.now() - t;
      if (r > 0) {
        runs.copy.push(copy);
        runs.shared.push(shared);
      }
    }
    const [copy, shared] = [median(runs.copy), median(runs.shared)];
    const rate = (ms) => Math.round((mib * tasks) / (ms / 1000)).toLocaleString('en-US');
    console.log(
      `| ${runtime} | ${mib} MiB | ${tasks} | Float64Array (copied) | ${copy.toFixed(1)} | ${rate(copy)} | 1.0x |`,
    );
    console.log(
      `| ${runtime} | ${mib} MiB | ${tasks} | SharedMemory | ${shared.toFixed(1)} | ${rate(shared)} | ${(copy / shared).toFixed(1)}x |`,
    );
    shm.close();
    await pool.close();
  }
}
