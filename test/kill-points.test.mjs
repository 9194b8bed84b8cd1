// Kill-point property test (issue 10): random workloads (apply, map, imap, imapUnordered, JoinableQueue)
// on random pools (threads and processes, 1-3 workers, cpu and io kinds, retries on and off,
// maxTasksPerWorker, timeouts, heap limits) whose workers die at random points (process.exit, SIGKILL,
// SIGSEGV, a throw, a heap bomb, a hang, an outside SIGKILL), ended by close(), terminate() or both racing.
// Each case asserts: every call settles, and only with a value or an error its case allows; nothing runs
// more often than its tries allow (exactly once without retries); close() and join() resolve; no worker
// process and no /dev/shm segment is left.
//
// Seeded: CORRAL_SEED=<n> replays a whole run, CORRAL_CASE=<seed> one case (the failure message prints
// both). CORRAL_KILL_CASES sets how many cases run (default 2000).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { mulberry32 as rng } from '../bench/rng.mjs';
import { JoinableQueue, Pool } from '../dist/src/index.js';
import { alive } from './helpers.mjs';

const module = new URL('./fixtures/chaos-tasks.mjs', import.meta.url);
const CASES = Number(process.env.CORRAL_KILL_CASES ?? 2000);
const SEED = Number(process.env.CORRAL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ONE = process.env.CORRAL_CASE === undefined ? undefined : Number(process.env.CORRAL_CASE);
/** Cases run at once: most of a case is waiting for workers to start and stop. */
const PARALLEL = 6;
const BATCH = 100;
const dir = mkdtempSync(join(tmpdir(), 'corral-kill-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const caseSeed = (i) => (Math.imul(SEED ^ 0x9e3779b9, 2654435761) + Math.imul(i + 1, 0x85ebca6b)) >>> 0;

const CRASHES = new Set(['exit', 'kill', 'segv', 'heap', 'buffer']);

/** A case, from its seed alone. */
function makeCase(seed) {
  const r = rng(seed);
  const int = (n) => Math.floor(r() * n);
  const pick = (xs) => xs[int(xs.length)];
  const runtime = r() < 0.7 ? 'thread' : 'process';
  const io = r() < 0.2;
  const timeout = r() < 0.25 ? 1000 : undefined;
  const heap = r() < 0.08 ? '64MiB' : undefined;
  const pool = {
    runtime,
    workers: 1 + int(3),
    retries: r() < 0.5 ? 0 : 1 + int(2),
    ...(io ? { kind: 'io', concurrency: 2 + int(3) } : {}),
    // A process start costs ~150 ms: recycling processes after every task would make a case seconds long.
    // (With chunksize 1 a map of 80 items is 80 units: recycling after each would be 80 starts.)
    ...(r() < 0.3 ? { maxTasksPerWorker: runtime === 'thread' ? 3 + int(6) : 8 + int(8) } : {}),
    ...(timeout ? { taskTimeout: timeout, cancelGrace: 100 } : {}),
    ...(heap ? { limits: { heap } } : {}),
  };
  const hows = ['throw', 'exit', 'kill'];
  if (runtime === 'process') hows.push('segv');
  if (timeout) hows.push('hang');
  if (heap) hows.push('heap');
  const bad = r() < 0.7 ? 0.03 + r() * 0.08 : 0;
  let nextId = 1;
  const item = () => {
    const how = r() < bad ? pick(hows) : r() < 0.2 ? 'sleep' : 'ok';
    return [nextId++, how, how === 'ok' ? int(4) : how === 'sleep' ? int(20) : 0];
  };
  const ops = [];
  for (let n = 1 + int(2); n > 0; n--) {
    const kind = pick(['apply', 'map', 'imap', 'imapUnordered', 'joinable']);
    if (kind === 'joinable') {
      const consumers = Array.from({ length: 1 + int(3) }, () => (r() < 0.5 ? 1 + int(5) : -1));
      ops.push({ kind, items: 5 + int(40), consumers });
    } else {
      const items = Array.from({ length: kind === 'apply' ? 1 + int(12) : 1 + int(80) }, item);
      const chunksize = pick([1, 4, 'auto']);
      const consume = kind === 'apply' || kind === 'map' ? 'all' : pick(['all', 'all', 'partial', 'none']);
      ops.push({ kind, items, chunksize, consume });
    }
  }
  return {
    seed,
    pool,
    ops,
    outsideKill: runtime === 'process' && r() < 0.3 ? int(250) : undefined,
    ending: pick(['close', 'close', 'terminate', 'close+terminate']),
    endAfter: int(300),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`'s outcome, or rejects once `ms` pass: a hang is a failure, not a stall. */
async function within(promise, ms, what) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`HANG: ${what} did not settle within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const outcome = (p) =>
  p.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error }),
  );

/** Runs one case; returns a list of broken promises (empty when it held). */
let caseRuns = 0;
async function runCase(c) {
  const log = join(dir, `case-${c.seed}-${++caseRuns}.log`);
  const problems = [];
  const pool = new Pool({ module, ...c.pool });
  const pids = new Set();
  pool.on('workerStart', (w) => w.pid && pids.add(w.pid));
  const runs = [];
  const withLog = (items) => items.map(([id, how, ms]) => [id, how, ms, log]);
  for (const op of c.ops) {
    if (op.kind === 'apply') {
      for (const it of withLog(op.items)) runs.push({ op, items: [it], p: outcome(pool.apply('act', [it])) });
    } else if (op.kind === 'map') {
      runs.push({
        op,
        items: op.items,
        p: outcome(pool.map('act', withLog(op.items), { chunksize: op.chunksize })),
      });
    } else if (op.kind === 'joinable') {
      runs.push({ op, items: [], p: outcome(joinable(pool, op)) });
    } else {
      const it = pool[op.kind]('act', withLog(op.items), { chunksize: op.chunksize });
      runs.push({ op, items: op.items, p: outcome(readImap(it, op.consume)) });
    }
  }
  if (c.outsideKill !== undefined) {
    setTimeout(() => {
      const victims = pool.stats().workers.filter((w) => w.pid);
      if (victims.length) {
        try {
          process.kill(victims[0].pid, 'SIGKILL');
        } catch {}
      }
    }, c.outsideKill);
  }
  const terminated = c.ending !== 'close';
  let ended;
  if (c.ending === 'close') ended = pool.close();
  else if (c.ending === 'terminate') ended = sleep(c.endAfter).then(() => pool.terminate());
  else ended = Promise.all([pool.close(), sleep(c.endAfter).then(() => pool.terminate())]);
  try {
    await within(ended, 60_000, `${c.ending}()`);
  } catch (error) {
    problems.push(`${error.message}; ${inside(pool)}`);
    await pool.terminate();
  }
  const results = [];
  for (const run of runs) {
    try {
      results.push(await within(run.p, 10_000, `a ${run.op.kind} call`));
    } catch (error) {
      problems.push(error.message);
      results.push(undefined);
    }
  }
  const executions = new Map();
  if (existsSync(log)) {
    for (const line of readFileSync(log, 'utf8').split('\n').filter(Boolean)) {
      executions.set(Number(line), (executions.get(Number(line)) ?? 0) + 1);
    }
  }
  checkRuns(c, runs, results, executions, terminated, problems);
  for (const pid of pids) {
    for (let i = 0; i < 50 && alive(pid); i++) await sleep(10);
    if (alive(pid)) problems.push(`worker process ${pid} outlived its pool`);
  }
  if (pool.stats().workers.length !== 0) problems.push('workers left in stats() after the pool ended');
  return problems;
}

/** What the pool is waiting for, to make a hang's report useful (white-box). */
function inside(pool) {
  const d = pool.backend;
  const workers = [...d.workers].map(
    (w) =>
      `${w.id}:${w.state}${w.cause ? `(${w.cause.kind})` : ''} inflight ${w.inflight.size} zombies ${w.zombies.size}`,
  );
  return `state ${pool.state}, queued ${d.queued}, jobs ${d.jobs.size}, busy ${d.busy}, scheduled ${d.dispatchScheduled}, backingOff ${d.workers.backingOff}, workers [${workers.join(', ')}]`;
}

/** Reads an imap as the case says: all of it, a few results then break, or nothing at all. */
async function readImap(it, consume) {
  if (consume === 'none') return 'unread';
  const out = [];
  for await (const v of it) {
    out.push(v);
    if (consume === 'partial' && out.length >= 3) break;
  }
  return out;
}

/**
 * Items go into a JoinableQueue, consumers run as tasks (some die right after a taskDone()), then the
 * main thread takes what is left; join() must resolve.
 */
async function joinable(pool, op) {
  const q = new JoinableQueue();
  // Consumers first, in the same tick as the case's other calls: before any ending refuses new calls.
  const consumers = op.consumers.map((dieAfter) =>
    pool.apply('consume', [q, op.items, dieAfter]).catch((e) => e),
  );
  await q.putMany(Array.from({ length: op.items }, (_, i) => i));
  await Promise.all(consumers);
  // The main thread consumes what is left until join() resolves: items a dead consumer held, or that a
  // consumer had prefetched when it returned, come back to the queue (recalled) a little later.
  let joined = false;
  const join = q.join().then(() => {
    joined = true;
  });
  const deadline = Date.now() + 10_000;
  while (!joined && Date.now() < deadline) {
    try {
      await q.get({ timeout: 50 });
      q.taskDone();
    } catch {}
  }
  await within(join, 1000, 'JoinableQueue.join()');
  return 'joined';
}

/** What a call may reject with in this case, for an item that behaves `how`. */
function allowedCodes(c, how, terminated) {
  const codes = new Set();
  if (terminated) codes.add('ERR_POOL_CLOSED');
  const sharing = c.pool.kind === 'io';
  const crashy = c.ops.some((op) => op.items?.some?.((it) => CRASHES.has(it[1])));
  if (c.outsideKill !== undefined || (sharing && crashy) || CRASHES.has(how)) codes.add('ERR_WORKER_CRASHED');
  // Consumers of a JoinableQueue exit on purpose: only tasks sharing their worker may go with them.
  if (sharing && c.ops.some((op) => op.kind === 'joinable')) codes.add('ERR_WORKER_CRASHED');
  if (how === 'throw') codes.add('ERR_TASK_FAILED');
  // With retries, an input whose workers died twice is quarantined: its own crash, or deaths it shared.
  if (c.pool.retries > 0 && codes.has('ERR_WORKER_CRASHED')) codes.add('ERR_POISON_TASK');
  if (c.pool.retries > 0 && (how === 'heap' || (sharing && c.pool.limits?.heap)))
    codes.add('ERR_POISON_TASK');
  // A heap bomb filling its heap under load may take longer than the timeout: then it is one.
  if (how === 'hang' || (how === 'heap' && c.pool.taskTimeout) || (sharing && c.pool.taskTimeout)) {
    codes.add('ERR_TASK_TIMEOUT');
  }
  if (c.pool.limits?.heap && (how === 'heap' || sharing)) codes.add('ERR_MEMORY_LIMIT');
  return codes;
}

function checkRuns(c, runs, results, executions, terminated, problems) {
  const tries = 1 + c.pool.retries;
  for (let i = 0; i < runs.length; i++) {
    const { op, items } = runs[i];
    const res = results[i];
    if (!res) continue;
    for (const [id, how] of items) {
      const n = executions.get(id) ?? 0;
      if (n > tries) problems.push(`item ${id} (${how}) ran ${n} times; at most ${tries} allowed`);
    }
    if (op.kind === 'joinable') {
      if (!res.ok && res.error?.code !== 'ERR_POOL_CLOSED')
        problems.push(`joinable: ${res.error?.stack ?? res.error}`);
      continue;
    }
    if (!res.ok) {
      const code = res.error?.code;
      const allowed = new Set(items.flatMap(([, how]) => [...allowedCodes(c, how, terminated)]));
      if (!allowed.has(code)) {
        problems.push(
          `${op.kind} rejected with ${code ?? res.error}: ${res.error?.message}; allowed ${[...allowed]}`,
        );
      }
      continue;
    }
    if (op.kind === 'apply') {
      const [id, how] = items[0];
      if (how !== 'ok' && how !== 'sleep') problems.push(`item ${id} (${how}) resolved with ${res.value}`);
      else if (res.value !== id * 2) problems.push(`item ${id} resolved with ${res.value}, not ${id * 2}`);
      if (c.pool.retries === 0 && !c.pool.taskTimeout && (executions.get(id) ?? 0) !== 1) {
        problems.push(`item ${id} resolved but ran ${executions.get(id) ?? 0} times without retries`);
      }
      continue;
    }
    if (op.consume === 'none') continue;
    const values = res.value;
    const expected = items.map(([id]) => id * 2);
    if (op.consume === 'all') {
      const got = op.kind === 'imapUnordered' ? [...values].sort((a, b) => a - b) : values;
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        problems.push(
          `${op.kind} of ${items.length} items resolved with ${values.length} results, not the expected ones`,
        );
      }
      if (items.some(([, how]) => how !== 'ok' && how !== 'sleep')) {
        problems.push(`${op.kind} resolved although an item misbehaves`);
      }
      if (c.pool.retries === 0 && !c.pool.taskTimeout) {
        const twice = items.filter(([id]) => (executions.get(id) ?? 0) !== 1).map(([id]) => id);
        if (twice.length) problems.push(`${op.kind} resolved but items ${twice} did not run exactly once`);
      }
    } else if (values.some((v) => !expected.includes(v))) {
      problems.push(`${op.kind} (partial) yielded a value that is no item's result`);
    }
  }
}

function shmLeftovers() {
  const mine = `corral_${process.pid}_`;
  return readdirSync('/dev/shm').filter((n) => n.startsWith(mine));
}

describe(`kill points (seed ${SEED}, ${CASES} cases)`, () => {
  // CORRAL_CASE with CORRAL_KILL_CASES=n runs that one case n times (races show up under load).
  const seeds = Array.from(
    { length: ONE === undefined ? CASES : Number(process.env.CORRAL_KILL_CASES ?? 1) },
    (_, i) => (ONE === undefined ? caseSeed(i) : ONE),
  );
  for (let b = 0; b < seeds.length; b += BATCH) {
    const batch = seeds.slice(b, b + BATCH);
    test(`cases ${b + 1}-${b + batch.length}`, { timeout: 600_000 }, async () => {
      const failures = [];
      let next = 0;
      const lane = async () => {
        while (next < batch.length) {
          const seed = batch[next++];
          const c = makeCase(seed);
          const started = performance.now();
          const problems = await runCase(c);
          if (process.env.CORRAL_KILL_STATS) {
            const hows = new Set(c.ops.flatMap((o) => o.items?.map?.((i) => i[1]) ?? ['joinable']));
            process.stderr.write(
              `STAT ${Math.round(performance.now() - started)} ${seed} ${c.pool.runtime} ${c.ending} ${[...hows].join(',')}\n`,
            );
          }
          if (problems.length) {
            failures.push(
              `case ${seed} (replay: CORRAL_CASE=${seed}; run: CORRAL_SEED=${SEED}) ${JSON.stringify({
                pool: c.pool,
                ops: c.ops.map((o) => ({ kind: o.kind, n: o.items?.length ?? o.items, consume: o.consume })),
                outsideKill: c.outsideKill,
                ending: c.ending,
              })}:\n  ${problems.join('\n  ')}`,
            );
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, lane));
      assert.deepEqual(failures, []);
      assert.deepEqual(shmLeftovers(), [], 'shared memory segments left behind');
    });
  }
});
