/**
 * corral vs piscina, tinypool, workerpool and Python's multiprocessing.Pool, 2 workers each.
 *
 *   npm run bench                       # build, then every workload (about 4-5 minutes here)
 *   node bench/run.mjs --quick          # 3 runs, smaller inputs (under 2 minutes)
 *   node bench/run.mjs --runs 7 --only map,fib --json out.json
 *
 * Workloads (--only takes names or numbers): 1 map, 2 apply, 3 fib, 4 skewed, 5 startup.
 * Each runner gets one warm-up run and then --runs timed runs (default 5); the median is printed.
 * Every run starts a fresh pool, waits until both workers have answered once, times only the work
 * and shuts the pool down again, so nothing outlives a run. Python runs as a subprocess
 * (bench/python_pool.py) that does its own warm-up and runs and reports milliseconds as JSON.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Piscina } from 'piscina';
import { Tinypool } from 'tinypool';
import workerpool from 'workerpool';
import { Pool } from '../dist/src/index.js';
import { fib } from './tasks.mjs';

const WORKERS = 2;
const TASKS = new URL('./tasks.mjs', import.meta.url);
const WORKERPOOL_WORKER = fileURLToPath(new URL('./workerpool_worker.mjs', import.meta.url));
const PYTHON_SCRIPT = fileURLToPath(new URL('./python_pool.py', import.meta.url));
/** A run that takes longer than this is abandoned (its pool terminated) and reported as an error. */
const RUN_TIMEOUT_MS = 120_000;
const FIB_N = 27;
const SKEW = { short: 34, long: 6, shortMs: 5, longMs: 200, seed: 42 };

// ---------------------------------------------------------------------------------------------
// Command line

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  console.log(
    'usage: node bench/run.mjs [--runs N] [--quick] [--only map,apply,fib,skewed,startup] [--json FILE]',
  );
  process.exit(0);
}
const RUNS = flags.runs === undefined ? (flags.quick ? 3 : 5) : Number(flags.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`--runs expects an integer >= 1, got ${flags.runs}`);
const SIZES = flags.quick ? { tiny: 20_000, fibTasks: 32 } : { tiny: 100_000, fibTasks: 64 };

// ---------------------------------------------------------------------------------------------
// Pools behind one small interface: open() returns { raw, call(name, arg), ready(), close() }.
// ready() resolves once every worker is up: corral reports it ('workerStart'); for the peers, which
// have no such event, both workers answer a busy(30 ms) call each (a worker busy for 30 ms leaves
// the second call to the other one).

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
      const allStarted = new Promise((resolve) => {
        pool.on('workerStart', () => {
          if (++started === WORKERS) resolve();
        });
      });
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
  const ready = () => Promise.all(Array.from({ length: WORKERS }, () => call('busy', 30)));
  return { raw, call, ready, close };
}

function version(pkg) {
  const url = new URL(`../node_modules/${pkg}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')).version;
}

// ---------------------------------------------------------------------------------------------
// Measurement

/** One warm-up run, then RUNS timed ones; each run returns milliseconds. */
async function samples(once) {
  const out = [];
  for (let i = 0; i <= RUNS; i++) {
    const ms = await once();
    if (i > 0) out.push(ms);
  }
  return out;
}

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

/** A fresh pool per run: start it and wait until all workers are up, time `work(pool)`, shut it down (also on failure). */
function pooled(runner, work) {
  return async () => {
    const pool = runner.open();
    let ok = false;
    try {
      await withTimeout(pool.ready(), `${runner.label} start`);
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

/** Times `measure` (resolving to sample arrays) into a row; a failure becomes an error row. */
async function row(label, measure, extra = {}) {
  process.stderr.write(`  ${label} ...`);
  const t0 = performance.now();
  try {
    const xs = await measure();
    process.stderr.write(` ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return { runner: label, samples: xs, median: median(xs), ...extra };
  } catch (error) {
    process.stderr.write(` failed: ${error.message}\n`);
    return { runner: label, error: error.message.split('\n')[0], ...extra };
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`);
}

// ---------------------------------------------------------------------------------------------
// Python (bench/python_pool.py)

const PYTHON_MISSING = 'python3 not found';

function python(workload, n) {
  return new Promise((resolve, reject) => {
    execFile(
      'python3',
      [PYTHON_SCRIPT, workload, String(n), String(RUNS)],
      { timeout: RUN_TIMEOUT_MS * 3, maxBuffer: 1 << 24 },
      (error, stdout, stderr) => {
        if (error?.code === 'ENOENT') reject(new Error(PYTHON_MISSING));
        else if (error) reject(new Error(`python_pool.py ${workload}: ${stderr.trim() || error.message}`));
        else resolve(JSON.parse(stdout));
      },
    );
  });
}

async function pythonRows(label, workload, n, toRows) {
  process.stderr.write(`  ${label} ...`);
  const t0 = performance.now();
  try {
    const out = await python(workload, n);
    process.stderr.write(` ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return toRows(out);
  } catch (error) {
    process.stderr.write(` failed: ${error.message}\n`);
    return toRows(null).map((r) => ({ runner: r.runner, error: error.message.split('\n')[0] }));
  }
}

/** One Python row from `samples` (or the named field); `out` null only asks for the labels. */
function pythonRow(label, out, field = 'samples', extra = {}) {
  if (!out) return { runner: label };
  return { runner: label, samples: out[field], median: median(out[field]), ...extra };
}

// ---------------------------------------------------------------------------------------------
// Workloads. Each returns { title, unit, rows, ratio(row, rows) }; rows carry ms medians and
// `toValue` converts ms to the unit shown.

const perSecond = (n) => (ms) => n / (ms / 1000);

async function mapWorkload() {
  const n = SIZES.tiny;
  const xs = Array.from({ length: n }, (_, i) => i);
  const check = (res) => {
    expectEqual(res.length, n, 'result count');
    expectEqual(res[n - 1], (n - 1) * (n - 1), 'last result');
  };
  const rows = [];
  for (const runtime of ['Thread', 'Process']) {
    const runner = runners[`corral${runtime}`];
    rows.push(
      await row(`${runner.label} map (chunksize auto)`, () =>
        samples(pooled(runner, async (p) => check(await p.raw.map('square', xs)))),
      ),
    );
  }
  const pyLabel = 'python mp Pool.map (default chunksize)';
  rows.push(...(await pythonRows(pyLabel, 'map', n, (out) => [pythonRow(pyLabel, out)])));
  return {
    title: `${n.toLocaleString('en-US')} × square via map`,
    unit: 'items/s',
    baseline: pyLabel,
    direction: 'higher is better',
    toValue: perSecond(n),
    rows,
  };
}

async function applyWorkload() {
  const n = SIZES.tiny;
  const xs = Array.from({ length: n }, (_, i) => i);
  const verb = { corralThread: 'apply', corralProcess: 'apply', piscina: 'run', tinypool: 'run' };
  const rows = [];
  for (const [key, runner] of Object.entries(runners)) {
    const work = async (p) => {
      const res = await Promise.all(xs.map((x) => p.call('square', x)));
      expectEqual(res[n - 1], (n - 1) * (n - 1), 'last result');
    };
    rows.push(await row(`${runner.label} ${verb[key] ?? 'exec'}`, () => samples(pooled(runner, work))));
  }
  const pyLabel = 'python mp apply_async';
  rows.push(...(await pythonRows(pyLabel, 'apply', n, (out) => [pythonRow(pyLabel, out)])));
  return {
    title: `${n.toLocaleString('en-US')} × square, one call each, all submitted at once`,
    unit: 'tasks/s',
    baseline: rows[2].runner,
    direction: 'higher is better',
    toValue: perSecond(n),
    rows,
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
  const rows = [];
  rows.push(
    await row('inline (serial, main thread)', () =>
      samples(async () => {
        const t0 = performance.now();
        check(inputs.map(fib));
        return performance.now() - t0;
      }),
    ),
  );
  for (const runtime of ['Thread', 'Process']) {
    const runner = runners[`corral${runtime}`];
    for (const chunksize of [1, 'auto']) {
      rows.push(
        await row(`${runner.label} map (chunksize ${chunksize})`, () =>
          samples(pooled(runner, async (p) => check(await p.raw.map('fib', inputs, { chunksize })))),
        ),
      );
    }
  }
  for (const runner of PEERS) {
    rows.push(
      await row(`${runner.label} (one call each)`, () =>
        samples(pooled(runner, async (p) => check(await Promise.all(inputs.map((x) => p.call('fib', x)))))),
      ),
    );
  }
  const pyLabel = 'python mp Pool.map (chunksize 1; CPython fib)';
  rows.push(...(await pythonRows(pyLabel, 'fib', n, (out) => [pythonRow(pyLabel, out)])));
  return {
    title: `${n} × fib(${FIB_N}), CPU-bound`,
    unit: 'ms',
    baseline: rows[0].runner,
    ratioName: 'speedup vs inline',
    ratio: (value, base) => base / value,
    rows,
  };
}

/** mulberry32: a tiny seeded generator, mirrored in python_pool.py so both shuffle alike. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
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

async function skewedWorkload() {
  const order = skewedOrder();
  const ideal = order.reduce((a, b) => a + b, 0) / WORKERS;
  const check = (res) => expectEqual(res.length, order.length, 'result count');
  const rows = [{ runner: `ideal (total work ${ideal * WORKERS} ms / ${WORKERS})`, median: ideal }];
  for (const runtime of ['Thread', 'Process']) {
    const runner = runners[`corral${runtime}`];
    rows.push(
      await row(`${runner.label} imapUnordered (chunksize 1)`, () =>
        samples(
          pooled(runner, async (p) => {
            const res = [];
            for await (const r of p.raw.imapUnordered('busy', order, { chunksize: 1 })) res.push(r);
            check(res);
          }),
        ),
      ),
    );
  }
  for (const runner of PEERS) {
    rows.push(
      await row(`${runner.label} (one call each)`, () =>
        samples(pooled(runner, async (p) => check(await Promise.all(order.map((ms) => p.call('busy', ms)))))),
      ),
    );
  }
  const pyLabel = 'python mp imap_unordered (chunksize 1)';
  rows.push(
    ...(await pythonRows(pyLabel, 'skewed', order.length, (out) => {
      if (out && JSON.stringify(out.order) !== JSON.stringify(order)) {
        throw new Error('python_pool.py shuffled the skewed tasks differently');
      }
      return [pythonRow(pyLabel, out)];
    })),
  );
  return {
    title: `skewed: ${SKEW.short} × busy(${SKEW.shortMs} ms) + ${SKEW.long} × busy(${SKEW.longMs} ms), seeded shuffle, makespan`,
    unit: 'ms',
    baseline: rows[0].runner,
    ratioName: 'ratio to ideal',
    ratio: (value, base) => value / base,
    rows,
  };
}

async function startupWorkload() {
  const rows = [];
  for (const runner of Object.values(runners)) {
    const shutdown = [];
    const start = await row(`${runner.label}: start + first result`, () =>
      samples(async () => {
        const t0 = performance.now();
        const pool = runner.open();
        try {
          expectEqual(await withTimeout(pool.call('square', 3), `${runner.label} start`), 9, 'square(3)');
        } catch (error) {
          await (pool.kill ?? pool.close)();
          throw error;
        }
        const first = performance.now() - t0;
        // Not timed: shut down only once every worker is up (see ready() above). Closing a corral
        // pool while a worker is still starting currently crashes it ("cannot go from stopping
        // to idle"), and a half-started pool would not compare like with like anyway.
        await withTimeout(pool.ready(), `${runner.label} start`);
        const t1 = performance.now();
        await withTimeout(pool.close(), `${runner.label} shutdown`);
        shutdown.push(performance.now() - t1);
        return first;
      }),
    );
    rows.push(start, { ...start, runner: `${runner.label}: shutdown`, samples: shutdown.slice(1) });
    rows.at(-1).median = start.error ? undefined : median(shutdown.slice(1));
  }
  const label = 'python mp Pool(2)';
  rows.push(
    ...(await pythonRows(label, 'startup', 0, (out) => [
      pythonRow(`${label}: start + first result`, out),
      pythonRow(`${label}: shutdown (close + join)`, out, 'shutdown'),
    ])),
  );
  for (const r of rows) r.vs = r.runner.includes('shutdown') ? 'shutdown' : 'start + first result';
  const piscina = runners.piscina.label;
  return {
    title: `pool start + first result, and shutdown (close / destroy / terminate) once all ${WORKERS} workers are up`,
    unit: 'ms',
    baseline: `${piscina} (same phase)`,
    ratioName: 'ratio vs piscina',
    baselineOf: (r) => `${piscina}: ${r.vs}`,
    ratio: (value, base) => value / base,
    rows,
  };
}

const WORKLOADS = [
  ['map', mapWorkload],
  ['apply', applyWorkload],
  ['fib', fibWorkload],
  ['skewed', skewedWorkload],
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
      if (Number(rest[1]) === process.pid)
        found.push(`${pid} ${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}`);
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
  console.log(
    `total ${((performance.now() - t0) / 1000).toFixed(0)} s; child processes left: ${left.length ? left.join(', ') : 'none'}`,
  );
  if (flags.json) {
    writeFileSync(
      flags.json,
      `${JSON.stringify({ machine, runs: RUNS, quick: flags.quick, workloads: results }, null, 2)}\n`,
    );
    console.log(`wrote ${flags.json}`);
  }
}

await main();
