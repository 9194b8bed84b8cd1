/**
 * corral vs piscina, tinypool, workerpool and Python's multiprocessing.Pool, 2 workers each.
 *
 *   npm run bench                       # build, then every workload (4-5.5 minutes here)
 *   node bench/run.mjs --quick          # 3 runs, smaller inputs (under 2 minutes)
 *   node bench/run.mjs --runs 7 --only map,fib --json out.json
 *
 * Workloads (--only takes names or numbers): 1 map, 2 apply, 3 fib, 4 skewed, 5 lognormal, 6 startup.
 * --plot also draws the standings as an SVG (--plot-file, default docs/bench.svg; see plot.mjs).
 * Each runner gets one warm-up run and then --runs timed runs (default 5); the median is printed.
 * Runners take turns run by run (a burst of load on this shared machine hits all alike). Every run
 * starts a fresh pool, waits until all its workers are up, times only the work and shuts the pool
 * down again, so nothing outlives a run. The CPU-bound workload (3) runs once untimed on the fresh
 * workers before the timed pass, as the inline baseline is warm too. Python runs as a subprocess
 * (bench/python_pool.py) that does its own warm-up and runs and reports milliseconds as JSON.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { Tinypool } from 'tinypool';
import workerpool from 'workerpool';
import { Pool } from '../dist/src/index.js';
import { plot } from './plot.mjs';
import { mulberry32 } from './rng.mjs';
import { fib } from './tasks.mjs';

const WORKERS = 2;
const TASKS = new URL('./tasks.mjs', import.meta.url);
const WORKERPOOL_WORKER = fileURLToPath(new URL('./workerpool_worker.mjs', import.meta.url));
const PYTHON_SCRIPT = fileURLToPath(new URL('./python_pool.py', import.meta.url));
/** A run that takes longer than this is abandoned (its pool terminated) and reported as an error. */
const RUN_TIMEOUT_MS = 60_000;
/** fib(30): 64 of them are ~0.4 s inline here, so a run is long enough that a scheduling hiccup on this shared
 * machine moves the ratios by less than the 2 % asked of the pools against the bare-thread floor. */
const FIB_N = 30;
const SKEW = { short: 34, long: 6, shortMs: 5, longMs: 200, seed: 42 };

// ---------------------------------------------------------------------------------------------
// Command line

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true },
    json: { type: 'string' },
    plot: { type: 'boolean', default: false },
    'plot-file': { type: 'string', default: 'docs/bench.svg' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  console.log(
    'usage: node bench/run.mjs [--runs N] [--quick] [--only map,apply,fib,skewed,lognormal,startup] [--json FILE] [--plot [--plot-file FILE]]',
  );
  process.exit(0);
}
const RUNS = flags.runs === undefined ? (flags.quick ? 3 : 5) : Number(flags.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`--runs expects an integer >= 1, got ${flags.runs}`);
const SIZES = flags.quick ? { tiny: 20_000, fibTasks: 32 } : { tiny: 100_000, fibTasks: 64 };

// ---------------------------------------------------------------------------------------------
// Pools behind one small interface: open() returns { raw, call(name, arg), ready(), close() }.
// ready() resolves once every worker is up: corral reports it ('workerStart'); the peers have no
// such event, so they get rounds of whoami(20 ms) calls, one per worker at once (a worker held for
// 20 ms leaves the next call to another), until every worker has answered.

const runners = {
  corralThread: corral('thread'),
  corralProcess: corral('process'),
  piscina: {
    label: `piscina ${version('piscina')}`,
    open() {
      const pool = new Piscina({ filename: TASKS.href, minThreads: WORKERS, maxThreads: WORKERS });
      return peer(
        pool,
        (name, arg) => pool.run(arg, { name }),
        () => pool.destroy(),
      );
    },
  },
  tinypool: {
    label: `tinypool ${version('tinypool')}`,
    open() {
      const pool = new Tinypool({ filename: TASKS.href, minThreads: WORKERS, maxThreads: WORKERS });
      return peer(
        pool,
        (name, arg) => pool.run(arg, { name }),
        () => pool.destroy(),
      );
    },
  },
  workerpool: {
    label: `workerpool ${version('workerpool')}`,
    open() {
      const pool = workerpool.pool(WORKERPOOL_WORKER, {
        minWorkers: WORKERS,
        maxWorkers: WORKERS,
        workerType: 'thread',
      });
      return peer(
        pool,
        (name, arg) => pool.exec(name, [arg]),
        () => pool.terminate(),
      );
    },
  },
};
const PEERS = [runners.piscina, runners.tinypool, runners.workerpool];

function corral(runtime) {
  return {
    label: `corral ${runtime}`,
    open() {
      const pool = new Pool({ module: TASKS, runtime, workers: WORKERS });
      let started = 0;
      const allStarted = new Promise((resolve, reject) => {
        pool.on('workerStart', () => {
          if (++started === WORKERS) resolve();
        });
        pool.on('workerExit', (exit) => {
          if (started < WORKERS) reject(new Error(`a worker exited while starting: ${exit.reason}`));
        });
      });
      allStarted.catch(() => {}); // reported by whoever awaits ready()
      return {
        raw: pool,
        call: (name, arg) => pool.apply(name, [arg]),
        ready: () => allStarted,
        close: () => pool.close(),
        kill: () => pool.terminate(),
      };
    },
  };
}

function peer(raw, call, close) {
  const ready = async () => {
    const seen = new Set();
    for (let round = 0; seen.size < WORKERS; round++) {
      if (round === 50) throw new Error(`only ${seen.size} of ${WORKERS} workers answered`);
      const ids = await Promise.all(Array.from({ length: WORKERS }, () => call('whoami', 20)));
      for (const id of ids) seen.add(id);
    }
  };
  return { raw, call, ready, close };
}

function version(pkg) {
  const url = new URL(`../node_modules/${pkg}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')).version;
}

// ---------------------------------------------------------------------------------------------
// Measurement

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} took over ${RUN_TIMEOUT_MS / 1000} s`)),
      RUN_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A fresh pool per run: start it, wait until all workers are up, time `work(pool)`, shut it down. */
function pooled(runner, work, { warm = false } = {}) {
  return async () => {
    const pool = runner.open();
    let ok = false;
    try {
      await withTimeout(pool.ready(), `${runner.label} start`);
      // Untimed pass first: the workers' JIT gets as warm as the inline baseline's.
      if (warm) await withTimeout(work(pool), `${runner.label} warm-up pass`);
      const t0 = performance.now();
      await withTimeout(work(pool), runner.label);
      const ms = performance.now() - t0;
      ok = true;
      return ms;
    } finally {
      await (ok || !pool.kill ? pool.close() : pool.kill());
    }
  };
}

const seconds = (t0) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

/**
 * Runs the entries round-robin, one warm-up round and then RUNS timed rounds, so that a burst of
 * load on this shared machine hits every runner alike instead of whichever ran during it. An
 * entry is [label, once]; once() resolves to milliseconds, or to { name: ms } for one row per
 * name (`label: name`). A runner that fails is reported with its error and left out of later rounds.
 *
 * Each round starts one entry later than the last: whatever an entry leaves behind falls on a
 * different next entry every round. In a fixed order, the pool started right after the 2 bare forks
 * of the startup floor took 6-10 ms longer to start than it did in any other place (piscina 70.7 ms
 * there against corral 64.5 ms next to it, where the order the other way round had given corral
 * 73.7-78.5 ms against piscina 69.5-73.1 ms).
 */
async function interleaved(entries) {
  const state = entries.map(([label, once]) => ({ label, once, runs: [], error: undefined }));
  for (let round = 0; round <= RUNS; round++) {
    const t0 = performance.now();
    process.stderr.write(`  ${round === 0 ? 'warm-up' : `run ${round}/${RUNS}`} `);
    for (let k = 0; k < state.length; k++) {
      const s = state[(k + round) % state.length];
      if (s.error) continue;
      try {
        const result = await s.once();
        if (round > 0) s.runs.push(result);
        process.stderr.write('.');
      } catch (error) {
        s.error = error.message.split('\n')[0];
        process.stderr.write(`\n  ${s.label} failed: ${s.error}\n`);
      }
    }
    process.stderr.write(` ${seconds(t0)}\n`);
  }
  return state.flatMap((s) => {
    const first = s.runs[0];
    const parts = first === undefined || typeof first === 'number' ? [undefined] : Object.keys(first);
    return parts.map((part) => {
      const runner = part === undefined ? s.label : `${s.label}: ${part}`;
      if (s.error) return { runner, error: s.error };
      const xs = s.runs.map((r) => (part === undefined ? r : r[part]));
      return { runner, samples: xs, median: median(xs) };
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Python (bench/python_pool.py): a subprocess that does its own warm-up and runs

const PYTHON_MISSING = 'python3 not found';

function python(workload, n, env = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      'python3',
      [PYTHON_SCRIPT, workload, String(n), String(RUNS)],
      { timeout: RUN_TIMEOUT_MS * 3, maxBuffer: 1 << 24, env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        if (error?.code === 'ENOENT') reject(new Error(PYTHON_MISSING));
        else if (error) reject(new Error(`python_pool.py ${workload}: ${stderr.trim() || error.message}`));
        else resolve(JSON.parse(stdout));
      },
    );
  });
}

/**
 * Rows from one python_pool.py run: `fields` maps a row label to the JSON field holding its
 * samples. Without python3, or if the script fails, the rows carry the error instead.
 */
async function pythonRows(workload, n, fields, check = () => {}, env = {}) {
  const t0 = performance.now();
  process.stderr.write(`  python_pool.py ${workload} ${n} ${RUNS} ...`);
  try {
    const out = await python(workload, n, env);
    check(out);
    process.stderr.write(` ${seconds(t0)}\n`);
    return Object.entries(fields).map(([runner, field]) => ({
      runner,
      samples: out[field],
      median: median(out[field]),
    }));
  } catch (error) {
    process.stderr.write(` failed: ${error.message}\n`);
    return Object.keys(fields).map((runner) => ({ runner, error: error.message.split('\n')[0] }));
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`);
}

// ---------------------------------------------------------------------------------------------
// Workloads. Each returns { title, unit, baseline, rows, ... }: rows hold medians in ms,
// `toValue` turns ms into the unit shown and `ratio(value, baselineValue)` fills the last column.

const perSecond = (n) => (ms) => n / (ms / 1000);
/**
 * The CPU-bound workload is timed on warmed workers: the inline baseline runs in a main thread
 * whose JIT the warm-up round has already heated, and a pool's workers live for many maps. A
 * fresh pool's first pass (each worker compiling fib) is shown in its own row.
 */
const WARM = { warm: true };
const CORRAL = [runners.corralThread, runners.corralProcess];

async function mapWorkload() {
  const n = SIZES.tiny;
  const xs = Array.from({ length: n }, (_, i) => i);
  const check = (res) => {
    expectEqual(res.length, n, 'result count');
    expectEqual(res[n - 1], (n - 1) * (n - 1), 'last result');
  };
  const rows = await interleaved(
    CORRAL.map((runner) => [
      `${runner.label} map (chunksize auto)`,
      pooled(runner, async (p) => check(await p.raw.map('square', xs))),
    ]),
  );
  const pyLabel = 'python mp Pool.map (default chunksize)';
  rows.push(...(await pythonRows('map', n, { [pyLabel]: 'samples' })));
  return {
    title: `${n.toLocaleString('en-US')} × square via map`,
    unit: 'items/s',
    direction: 'higher is better',
    baseline: pyLabel,
    toValue: perSecond(n),
    rows,
  };
}

async function applyWorkload() {
  const n = SIZES.tiny;
  const xs = Array.from({ length: n }, (_, i) => i);
  const work = async (p) => {
    const res = await Promise.all(xs.map((x) => p.call('square', x)));
    expectEqual(res[n - 1], (n - 1) * (n - 1), 'last result');
  };
  const verb = { corralThread: 'apply', corralProcess: 'apply', piscina: 'run', tinypool: 'run' };
  const rows = await interleaved(
    Object.entries(runners).map(([key, runner]) => [
      `${runner.label} ${verb[key] ?? 'exec'}`,
      pooled(runner, work),
    ]),
  );
  rows.push(...(await pythonRows('apply', n, { 'python mp apply_async': 'samples' })));
  return {
    title: `${n.toLocaleString('en-US')} × square, one call each, all submitted at once`,
    unit: 'tasks/s',
    direction: 'higher is better',
    baseline: `${runners.piscina.label} run`,
    toValue: perSecond(n),
    rows,
  };
}

/**
 * What this machine allows right now: two warm bare worker threads that take the next item from a
 * shared counter (one atomic add per item, no messages, no scheduler) and write results to shared
 * memory. No pool can beat it. A static half-and-half split is not a floor here: the two vCPUs of
 * these machines run at unequal speeds from moment to moment (the host's other guests), so the half
 * on the slower one decides the makespan while a pool's idle worker simply takes more items.
 */
function bareThreads(inputs, check) {
  const source = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(TASKS.href)}).then(({ fib }) => {
      parentPort.on('message', ({ next, inputs, out }) => {
        for (let i = Atomics.add(next, 0, 1); i < inputs.length; i = Atomics.add(next, 0, 1)) out[i] = fib(inputs[i]);
        parentPort.postMessage('done');
      });
      parentPort.postMessage('ready');
    });`;
  const pass = (threads) => {
    const next = new Int32Array(new SharedArrayBuffer(4));
    const out = new Float64Array(new SharedArrayBuffer(8 * inputs.length));
    const done = threads.map((w) => new Promise((resolve) => w.once('message', resolve)));
    for (const w of threads) w.postMessage({ next, inputs, out });
    return Promise.all(done).then(() => Array.from(out));
  };
  return async () => {
    const threads = [0, 1].map(() => new Worker(source, { eval: true }));
    try {
      await Promise.all(threads.map((w) => new Promise((resolve) => w.once('message', resolve))));
      await pass(threads); // JIT as warm as the inline baseline
      const t0 = performance.now();
      const out = await pass(threads);
      const ms = performance.now() - t0;
      check(out);
      return ms;
    } finally {
      await Promise.all(threads.map((w) => w.terminate()));
    }
  };
}

async function fibWorkload() {
  const n = SIZES.fibTasks;
  const expected = fib(FIB_N);
  const check = (res) => {
    expectEqual(res.length, n, 'result count');
    for (const r of res) expectEqual(r, expected, `fib(${FIB_N})`);
  };
  const inputs = new Array(n).fill(FIB_N);
  const inline = 'inline (serial, main thread)';
  const entries = [
    [
      inline,
      async () => {
        const t0 = performance.now();
        check(inputs.map(fib));
        return performance.now() - t0;
      },
    ],
  ];
  entries.push([
    'floor: 2 bare worker threads, next item by atomic counter, no pool',
    bareThreads(inputs, check),
  ]);
  const corralMap = (chunksize) => async (p) => check(await p.raw.map('fib', inputs, { chunksize }));
  for (const runner of CORRAL) {
    for (const chunksize of [1, 'auto']) {
      entries.push([
        `${runner.label} map (chunksize ${chunksize})`,
        pooled(runner, corralMap(chunksize), WARM),
      ]);
    }
  }
  entries.push([
    `${runners.corralThread.label} map (chunksize auto), fresh workers`,
    pooled(runners.corralThread, corralMap('auto')),
  ]);
  for (const runner of PEERS) {
    entries.push([
      `${runner.label} (one call each)`,
      pooled(runner, async (p) => check(await Promise.all(inputs.map((x) => p.call('fib', x)))), WARM),
    ]);
  }
  const rows = await interleaved(entries);
  rows.push(...(await pythonRows('fib', n, { 'python mp Pool.map (chunksize 1; CPython fib)': 'samples' })));
  return {
    title: `${n} × fib(${FIB_N}), CPU-bound`,
    unit: 'ms',
    baseline: inline,
    ratioName: 'speedup vs inline',
    ratio: (value, base) => base / value,
    rows,
  };
}

function skewedOrder() {
  const order = [...new Array(SKEW.short).fill(SKEW.shortMs), ...new Array(SKEW.long).fill(SKEW.longMs)];
  const rnd = mulberry32(SKEW.seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * The second mix: 40 durations from a log-normal distribution (median 12 ms, sigma 1.1: most tasks are
 * short, a few run 100-300 ms), seeded, capped at 400 ms.
 */
function lognormalOrder() {
  const rnd = mulberry32(7);
  const out = [];
  for (let i = 0; i < 40; i++) {
    const z = Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
    out.push(Math.min(400, Math.max(1, Math.round(12 * Math.exp(1.1 * z)))));
  }
  return out;
}

const skewedWorkload = () =>
  unevenWorkload(
    'skewed',
    skewedOrder(),
    `skewed: ${SKEW.short} × busy(${SKEW.shortMs} ms) + ${SKEW.long} × busy(${SKEW.longMs} ms), seeded shuffle, makespan`,
  );
const lognormalWorkload = () =>
  unevenWorkload(
    'lognormal',
    lognormalOrder(),
    '40 × busy(log-normal ms: median 12, sigma 1.1, seeded), makespan',
  );

/** Makespan of `order` on `workers` when each task goes, in order, to the worker that frees first. */
function greedyMakespan(order, workers) {
  const free = new Array(workers).fill(0);
  for (const ms of order) free[free.indexOf(Math.min(...free))] += ms;
  return Math.max(...free);
}

/** A burst of tasks of uneven cost: how close each pool gets to the ideal makespan (work / workers). */
async function unevenWorkload(name, order, title) {
  const total = order.reduce((a, b) => a + b, 0);
  const check = (res) => expectEqual(res.length, order.length, 'result count');
  const entries = [];
  for (const runner of CORRAL) {
    entries.push(
      [
        `${runner.label} apply burst`,
        pooled(runner, async (p) => check(await Promise.all(order.map((ms) => p.raw.apply('busy', [ms]))))),
      ],
      [
        `${runner.label} map (auto chunks)`,
        pooled(runner, async (p) => check(await p.raw.map('busy', order))),
      ],
      [
        `${runner.label} imapUnordered (chunksize 1)`,
        pooled(runner, async (p) => {
          const res = [];
          for await (const r of p.raw.imapUnordered('busy', order, { chunksize: 1 })) res.push(r);
          check(res);
        }),
      ],
    );
  }
  for (const runner of PEERS) {
    entries.push([
      `${runner.label} (one call each)`,
      pooled(runner, async (p) => check(await Promise.all(order.map((ms) => p.call('busy', ms))))),
    ]);
  }
  const ideal = `ideal (total work ${total} ms / ${WORKERS})`;
  // What the best a pool can do without knowing a task's cost before it runs: each task, in the order
  // submitted, starts on the worker that frees first. No overhead is counted, so it is a bound, and
  // the ideal above is out of reach where this is above it (only knowing costs ahead, longest first,
  // would reach it).
  const inOrder = `bound: in-order greedy on ${WORKERS} workers, no overhead (costs unknown ahead)`;
  const rows = [
    { runner: ideal, median: total / WORKERS },
    { runner: inOrder, median: greedyMakespan(order, WORKERS) },
    ...(await interleaved(entries)),
  ];
  const sameOrder = (out) => {
    if (JSON.stringify(out.order) !== JSON.stringify(order)) {
      throw new Error('python_pool.py shuffled the skewed tasks differently');
    }
  };
  rows.push(
    ...(await pythonRows(
      'skewed',
      order.length,
      { 'python mp imap_unordered (chunksize 1)': 'samples' },
      sameOrder,
      name === 'skewed' ? {} : { SKEW_ORDER: JSON.stringify(order) },
    )),
  );
  return {
    title,
    unit: 'ms',
    baseline: ideal,
    ratioName: 'ratio to ideal',
    ratio: (value, base) => value / base,
    rows,
  };
}

const START = 'start + first result';
const SHUTDOWN = 'shutdown';

/** One run of workload 5: { [START]: ms, [SHUTDOWN]: ms }. */
async function startAndStop(runner) {
  const t0 = performance.now();
  const pool = runner.open();
  let first;
  try {
    expectEqual(await withTimeout(pool.call('square', 3), `${runner.label} start`), 9, 'square(3)');
    first = performance.now() - t0;
    // Not timed: shut down only once every worker is up (see ready() above), so that shutdown
    // compares like with like rather than how each pool abandons a worker still starting.
    await withTimeout(pool.ready(), `${runner.label} start`);
  } catch (error) {
    await (pool.kill ?? pool.close)();
    throw error;
  }
  const t1 = performance.now();
  await withTimeout(pool.close(), `${runner.label} shutdown`);
  return { [START]: first, [SHUTDOWN]: performance.now() - t1 };
}

/**
 * The process runtime's floor: 2 bare Node processes forked at once, each sending one IPC message
 * (start), then killed and waited for (shutdown). No process pool of Node can start faster.
 */
async function bareForks() {
  const source = "process.send('up'); process.on('message', () => {});";
  const t0 = performance.now();
  const children = Array.from({ length: WORKERS }, () =>
    spawn(process.execPath, ['-e', source], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }),
  );
  await Promise.all(children.map((c) => new Promise((resolve) => c.once('message', resolve))));
  const t1 = performance.now();
  await Promise.all(children.map((c) => new Promise((resolve) => c.once('exit', resolve).kill())));
  return { [START]: t1 - t0, [SHUTDOWN]: performance.now() - t1 };
}

async function startupWorkload() {
  const rows = await interleaved([
    ['floor: 2 bare node processes (fork + one message; kill)', bareForks],
    ...Object.values(runners).map((runner) => [runner.label, () => startAndStop(runner)]),
  ]);
  const py = 'python mp Pool(2)';
  rows.push(
    ...(await pythonRows('startup', 0, {
      [`${py}: ${START}`]: 'samples',
      [`${py}: ${SHUTDOWN}`]: 'shutdown',
    })),
  );
  const piscina = runners.piscina.label;
  return {
    title: `pool start + first result, and shutdown (close / destroy / terminate / close+join) once all ${WORKERS} workers are up`,
    unit: 'ms',
    baseline: `${piscina} (same phase)`,
    ratioName: 'ratio vs piscina',
    baselineOf: (r) => `${piscina}: ${r.runner.endsWith(SHUTDOWN) ? SHUTDOWN : START}`,
    ratio: (value, base) => value / base,
    rows,
  };
}

const WORKLOADS = [
  ['map', mapWorkload],
  ['apply', applyWorkload],
  ['fib', fibWorkload],
  ['skewed', skewedWorkload],
  ['lognormal', lognormalWorkload],
  ['startup', startupWorkload],
];

// ---------------------------------------------------------------------------------------------
// Output

function fmt(value, unit) {
  if (value === undefined || Number.isNaN(value)) return '—';
  const digits = unit === 'ms' ? (value < 100 ? 1 : 0) : 0;
  return value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function table(index, w) {
  const toValue = w.toValue ?? ((ms) => ms);
  const ratio = w.ratio ?? ((value, base) => value / base);
  const byName = new Map(w.rows.map((r) => [r.runner, r]));
  const lines = [
    `### ${index}. ${w.title}`,
    '',
    `${w.unit}${w.direction ? `, ${w.direction}` : ''}; ratio vs ${w.baseline}`,
    '',
    `| runner | median | unit | ${w.ratioName ?? 'ratio'} |`,
    '|---|--:|---|--:|',
  ];
  for (const r of w.rows) {
    r.value = r.median === undefined ? undefined : toValue(r.median);
    const base = byName.get(w.baselineOf ? w.baselineOf(r) : w.baseline);
    const baseValue = base?.median === undefined ? undefined : toValue(base.median);
    r.ratio = r.value === undefined || baseValue === undefined ? undefined : ratio(r.value, baseValue);
    const shown = r.error ?? fmt(r.value, w.unit);
    const ratioText = r.ratio === undefined ? '—' : `${r.ratio.toFixed(2)}×`;
    lines.push(`| ${r.runner} | ${shown} | ${w.unit} | ${ratioText} |`);
  }
  return lines.join('\n');
}

/** Processes whose parent is this one (Linux /proc); an empty list when /proc is unavailable. */
function childProcesses() {
  const found = [];
  let entries = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return found;
  }
  for (const pid of entries) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      // The shared-memory tracker belongs to this process's lifetime, not to a pool: it exits with us.
      if (Number(rest[1]) === process.pid && name !== 'corral-shm-trk') found.push(`${pid} ${name}`);
    } catch {
      // the process exited while we looked
    }
  }
  return found;
}

async function main() {
  const selected = (flags.only ?? []).flatMap((s) => s.split(',')).filter(Boolean);
  const chosen = WORKLOADS.map((w, i) => [i + 1, ...w]).filter(
    ([i, name]) => selected.length === 0 || selected.includes(name) || selected.includes(String(i)),
  );
  if (chosen.length === 0)
    throw new Error(`--only matched nothing; workloads: ${WORKLOADS.map((w) => w[0]).join(', ')}`);

  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    nproc: os.availableParallelism(),
    node: process.version,
    loadavg: os.loadavg().map((l) => l.toFixed(2)),
  };
  console.log(
    `machine: ${machine.cpu}, nproc ${machine.nproc}, node ${machine.node}, load ${machine.loadavg.join(' ')}`,
  );
  console.log(
    `${WORKERS} workers everywhere; median of ${RUNS} runs after 1 warm-up${flags.quick ? ' (--quick sizes)' : ''}\n`,
  );

  const t0 = performance.now();
  const results = [];
  for (const [index, name, fn] of chosen) {
    process.stderr.write(`${index}. ${name}\n`);
    const w = await fn();
    console.log(`${table(index, w)}\n`);
    results.push({ index, name, ...w, toValue: undefined, ratio: undefined, baselineOf: undefined });
  }
  const left = childProcesses();
  const load = os.loadavg().map((l) => l.toFixed(2));
  console.log(
    `total ${((performance.now() - t0) / 1000).toFixed(0)} s; load ${load.join(' ')}; child processes left: ${left.length ? left.join(', ') : 'none'}`,
  );
  if (Math.max(...os.loadavg()) > machine.nproc) {
    console.log(
      `note: the load average exceeded ${machine.nproc} (other work on this machine); expect noise.`,
    );
  }
  if (flags.plot) {
    const file = flags['plot-file'];
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, plot(results, machine));
    console.log(`wrote ${file}`);
  }
  if (flags.json) {
    writeFileSync(
      flags.json,
      `${JSON.stringify({ machine, runs: RUNS, quick: flags.quick, workloads: results }, null, 2)}\n`,
    );
    console.log(`wrote ${flags.json}`);
  }
}

await main();
