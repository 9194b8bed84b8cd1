// Run by scripts/check-package.mjs inside a project that installed the packed tarball with
// production dependencies only, once per Node major. Prints one JSON line; exits 1 on a failed check.
import { Pool, SharedMemory, systemInfo } from 'corral';

const tasks = new URL('./tasks.mjs', import.meta.url);
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};
const out = { node: process.version };

const info = systemInfo();
out.native = info.native;
out.sharedMemory = { crossProcess: info.sharedMemory.crossProcess, reason: info.sharedMemory.reason };

// rlimits, enforced by the kernel in each process worker
{
  const pool = new Pool({
    module: tasks,
    runtime: 'process',
    workers: 2,
    limits: { addressSpace: '4GiB', openFiles: 256, cpuTime: 60 },
  });
  try {
    const seen = await pool.map('limits', [0, 1], { chunksize: 1 });
    out.limits = seen;
    for (const l of seen) {
      check(l.addressSpace === String(4 * 1024 ** 3), `addressSpace in force: ${JSON.stringify(l)}`);
      check(l.openFiles === '256', `openFiles in force: ${JSON.stringify(l)}`);
      // Re-armed before each task at (CPU seconds used so far) + cpuTime + 1: see src/worker/limits.ts.
      const cpu = Number(l.cpuTime);
      check(cpu >= 60 && cpu <= 63, `cpuTime in force: ${JSON.stringify(l)}`);
    }
    const refused = await pool.apply('openUntilRefused', []);
    out.openUntilRefused = refused;
    check(
      refused.code === 'EMFILE' && refused.opened < 256,
      `EMFILE before 256 descriptors: ${JSON.stringify(refused)}`,
    );
  } finally {
    await pool.close();
  }
}

// SharedMemory across two process workers: the same bytes, exact Atomics totals
{
  const pool = new Pool({ module: tasks, runtime: 'process', workers: 2 });
  const shm = SharedMemory.create({ size: 64 });
  try {
    const pids = await Promise.all([pool.apply('count', [shm, 50_000]), pool.apply('count', [shm, 50_000])]);
    out.shm = { total: Atomics.load(shm.view(Int32Array), 0), pids };
    check(out.shm.total === 100_000, `SharedMemory total ${out.shm.total}, expected 100000`);
    check(pids[0] !== process.pid && pids[1] !== process.pid, 'tasks ran in other processes');
  } finally {
    await pool.close();
    shm.close();
    shm.unlink();
  }
}

out.failures = failures;
console.log(JSON.stringify(out));
process.exitCode = failures.length > 0 ? 1 : 0;
