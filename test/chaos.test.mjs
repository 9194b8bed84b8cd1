// The chaos run (issue 10): bench/chaos.mjs runs CORRAL_CHAOS_TASKS tasks (default 10,000) in process
// workers, 5 % of them misbehaving (exit, SIGKILL, SIGSEGV, heap bomb, Buffer bomb, hang, throw), under
// taskTimeout 2s, heap 128MiB and rss 300MiB. Nothing may be lost or run twice, every failure must carry
// its true cause (a heap bomb is ERR_MEMORY_LIMIT, of the heap or, when its worker kept freed pages
// from an earlier stop, of the rss limit; never a timeout), and the terminal (the run's
// stderr) must hold no V8 fatal-error dump.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';

const TASKS = Number(process.env.CORRAL_CHAOS_TASKS ?? 10_000);
const SEED = Number(process.env.CORRAL_SEED ?? Math.floor(Math.random() * 2 ** 31));

test(`chaos run: ${TASKS} tasks, 5 % misbehaving, seed ${SEED}`, { timeout: 20 * 60_000 }, async () => {
  const child = spawn(
    process.execPath,
    [
      new URL('../bench/chaos.mjs', import.meta.url).pathname,
      '--tasks',
      String(TASKS),
      '--seed',
      String(SEED),
      '--workers',
      '2',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, err.slice(-2000));
  const summary = JSON.parse(out.trim().split('\n').pop());
  const replay = `replay: CORRAL_SEED=${SEED} CORRAL_CHAOS_TASKS=${TASKS}`;
  assert.equal(summary.lost, 0, `calls never settled (${replay})`);
  assert.equal(summary.twice, 0, `tasks ran twice (${replay})`);
  assert.equal(summary.settledTwice, 0);
  assert.deepEqual(summary.wrong, [], `failures not typed with their cause (${replay})`);
  assert.equal(summary.closed, true, 'close() resolved');
  assert.ok(summary.bad > 0);
  assert.doesNotMatch(
    err,
    /FATAL ERROR|Native stack trace|Last few GCs|JS stacktrace/,
    'V8 dumps reached the terminal',
  );
});
