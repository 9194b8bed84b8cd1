#!/usr/bin/env node
// The chaos run (issue 10): many tasks in process workers, a share of them misbehaving on purpose
// (process.exit, SIGKILL, SIGSEGV, a heap bomb, a Buffer bomb, a hang, a throw), under a task
// timeout, a heap limit and an rss limit. Prints one JSON summary on stdout:
//   lost      calls that never settled
//   twice     tasks that ran more than once
//   wrong     calls that settled with another outcome than their behaviour calls for (a Buffer bomb
//             may time out: filling 300 MiB by first touch takes ~1.5 s of an idle core here, and a
//             loaded machine can take past the 2 s deadline before the rss limit is reached; a heap
//             bomb may not: the heap guard ends it once its heap is full. A heap bomb may end on the
//             rss limit instead of the heap limit: after a Buffer bomb's in-place stop its worker keeps
//             freed pages resident for the next task, 151 MiB measured, and a heap bomb there peaked at
//             273-276 MiB, so the two limits race; either way it is ERR_MEMORY_LIMIT, never a timeout
//             or a crash)
// and counts by outcome. test/chaos.test.mjs runs it and also reads its stderr for V8 dumps.
//
//   node bench/chaos.mjs [--tasks 10000] [--bad 0.05] [--workers 4] [--seed N]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from '../dist/src/index.js';
import { mulberry32 as rng } from './rng.mjs';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '10000' },
    bad: { type: 'string', default: '0.05' },
    workers: { type: 'string', default: '4' },
    seed: { type: 'string', default: String(Math.floor(Math.random() * 2 ** 31)) },
  },
});
const TASKS = Number(values.tasks);
const BAD = Number(values.bad);
const SEED = Number(values.seed);

/** What each behaviour must end as: its true cause. */
const EXPECTED = {
  ok: 'ok',
  exit: 'ERR_WORKER_CRASHED',
  kill: 'ERR_WORKER_CRASHED',
  segv: 'ERR_WORKER_CRASHED',
  heap: 'ERR_MEMORY_LIMIT:heap',
  buffer: 'ERR_MEMORY_LIMIT:rss',
  hang: 'ERR_TASK_TIMEOUT',
  throw: 'ERR_TASK_FAILED',
};
const BAD_KINDS = Object.keys(EXPECTED).filter((k) => k !== 'ok');

const r = rng(SEED);
const dir = mkdtempSync(join(tmpdir(), 'corral-chaos-'));
const log = join(dir, 'executions.log');
const plan = Array.from({ length: TASKS }, (_, i) => {
  const how = r() < BAD ? BAD_KINDS[Math.floor(r() * BAD_KINDS.length)] : 'ok';
  return [i + 1, how, how === 'ok' ? Math.floor(r() * 3) : 0, log];
});

const pool = new Pool({
  module: new URL('../test/fixtures/chaos-tasks.mjs', import.meta.url),
  runtime: 'process',
  workers: Number(values.workers),
  taskTimeout: '2s',
  cancelGrace: '200ms',
  limits: { heap: '128MiB', rss: '300MiB' },
});
const started = performance.now();
const outcomes = new Array(TASKS);
/** For a failure: how the worker ended and what the error said, so a wrongly typed one can be judged. */
const evidence = new Array(TASKS);
let settledTwice = 0;
const calls = plan.map((task, i) =>
  pool.apply('act', [task]).then(
    () => {
      if (outcomes[i] !== undefined) settledTwice++;
      outcomes[i] = 'ok';
    },
    (error) => {
      if (outcomes[i] !== undefined) settledTwice++;
      outcomes[i] =
        error?.code === 'ERR_MEMORY_LIMIT' ? `${error.code}:${error.kind}` : (error?.code ?? String(error));
      evidence[i] = {
        exitCode: error?.exitCode,
        signal: error?.signal,
        message: String(error?.message ?? error).slice(0, 600),
      };
    },
  ),
);
const deadline = new Promise((resolve) => setTimeout(resolve, 20 * 60_000).unref());
await Promise.race([Promise.all(calls), deadline]);
const elapsed = performance.now() - started;
const closed = await Promise.race([
  pool.close().then(() => true),
  new Promise((r) => setTimeout(() => r(false), 30_000)),
]);

const runs = new Map();
for (const line of readFileSync(log, 'utf8').split('\n')) {
  if (line) runs.set(Number(line), (runs.get(Number(line)) ?? 0) + 1);
}
const byOutcome = {};
const wrong = [];
let lost = 0;
let twice = 0;
plan.forEach(([id, how], i) => {
  const got = outcomes[i];
  if (got === undefined) lost++;
  else byOutcome[`${how} -> ${got}`] = (byOutcome[`${how} -> ${got}`] ?? 0) + 1;
  const alsoRight =
    (how === 'buffer' && got === 'ERR_TASK_TIMEOUT') || (how === 'heap' && got === 'ERR_MEMORY_LIMIT:rss');
  if (got !== undefined && got !== EXPECTED[how] && !alsoRight) {
    wrong.push({ id, how, got, ...evidence[i] });
  }
  if ((runs.get(id) ?? 0) > 1) twice++;
  if (how === 'ok' && got === 'ok' && runs.get(id) !== 1) twice++;
});
rmSync(dir, { recursive: true, force: true });
const stats = pool.stats();
console.log(
  JSON.stringify({
    seed: SEED,
    tasks: TASKS,
    bad: plan.filter(([, how]) => how !== 'ok').length,
    lost,
    twice,
    settledTwice,
    wrong: wrong.slice(0, 20),
    wrongCount: wrong.length,
    closed,
    elapsedMs: Math.round(elapsed),
    breaches: stats.breaches,
    byOutcome,
  }),
);
process.exit(0);
