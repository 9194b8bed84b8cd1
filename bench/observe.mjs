/**
 * What watching the pool costs (issue 14): the same work with the pool's measurements off, on (the
 * default), on with a dashboard page connected, and with OpenTelemetry tracing every unit.
 *
 *   npm run build && node bench/observe.mjs            # 7 runs per variant, medians and ratios
 *   node bench/observe.mjs --runs 3 --only apply
 *
 * Every run is a fresh process (the "off" variant patches the meter's recording away, which must not
 * leak into the others); variants take turns run by run, so a burst of load on this shared machine hits
 * all alike. The dashboard's page is a separate process reading /events, as a browser would be.
 * Workloads, 2 thread workers: `apply`, 200k pool.apply calls of a tiny task, 1000 in flight (every call
 * is a unit: the worst case for per-unit costs); `map`, pool.map over 2M numbers (chunked units).
 * Reported: wall time and the main thread's CPU time (where the costs measured here are paid), as
 * medians and as ratios to "off".
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const VARIANTS = ['off', 'metrics', 'dashboard', 'tracing'];
const WORKLOADS = { apply: 200_000, map: 2_000_000 };

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    only: { type: 'string' },
    child: { type: 'string' },
    workload: { type: 'string' },
  },
});

/**
 * Per operation, without the noise of a whole run: a unit logged while the task stream is followed
 * (the meter's record and ring, and the dashboard's lane), and one dashboard tick (metrics, JSON).
 */
async function micro() {
  const dist = new URL('../dist/src/', import.meta.url);
  const { Pool } = await import(new URL('index.js', dist));
  const { Meter } = await import(new URL('metrics/meter.js', dist));
  const { Feed } = await import(new URL('observe/feed.js', dist));
  const pool = new Pool({ module: new URL('./tasks.mjs', import.meta.url), workers: 2, runtime: 'thread' });
  await pool.map(
    'square',
    Array.from({ length: 100_000 }, (_, i) => i),
  );
  const perUnit = (meter) => {
    const n = 1_000_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const start = i * 0.01;
      meter.log({ workerId: i & 1, task: 'square', items: 1, start, end: start + 0.005, outcome: 'ok' });
    }
    return ((performance.now() - t0) * 1e6) / n;
  };
  const bare = new Meter();
  const stopBare = bare.follow(() => {});
  const meterNs = Math.min(perUnit(bare), perUnit(bare), perUnit(bare));
  stopBare();
  const feed = new Feed(
    {
      ...pool,
      follow: (l) => bare.follow(l),
      metrics: () => pool.metrics(),
      state: 'open',
      on() {},
      off() {},
    },
    't',
    () => 1,
  );
  feed.start();
  const feedNs = Math.min(perUnit(bare), perUnit(bare), perUnit(bare));
  feed.tick();
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) JSON.stringify(feed.tick());
  const tickUs = performance.now() - t0;
  feed.close();
  await pool.close();
  console.log(
    `per unit while followed: ${meterNs.toFixed(0)} ns by the meter's log, ${feedNs.toFixed(0)} ns with the dashboard's lanes; one dashboard tick (10 a second): ${tickUs.toFixed(0)} µs`,
  );
}

async function child(variant, workload) {
  const dist = new URL('../dist/src/', import.meta.url);
  if (variant === 'off') {
    const { Meter } = await import(new URL('metrics/meter.js', dist));
    Meter.prototype.sent = () => {};
    Meter.prototype.ran = () => {};
  }
  let spans = 0;
  if (variant === 'tracing') {
    const { context, trace } = await import('@opentelemetry/api');
    const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
    const { BasicTracerProvider } = await import('@opentelemetry/sdk-trace-base');
    // Spans are counted and dropped: the cost measured is corral's, not an exporter's.
    const processor = {
      onStart() {},
      onEnd() {
        spans++;
      },
      forceFlush: async () => {},
      shutdown: async () => {},
    };
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [processor] }));
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  }
  const { Pool } = await import(new URL('index.js', dist));
  const pool = new Pool({ module: new URL('./tasks.mjs', import.meta.url), workers: 2, runtime: 'thread' });
  const started = new Promise((resolve) => {
    let n = 0;
    pool.on('workerStart', () => ++n === 2 && resolve());
  });
  await started;
  let reader;
  let dash;
  if (variant === 'dashboard') {
    dash = await pool.dashboard();
    reader = spawn(
      process.execPath,
      [
        '-e',
        "require('node:http').get(process.argv[1] + 'events', (res) => { res.resume(); process.stdout.write('open\\n'); });",
        dash.url,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((resolve) => reader.stdout.once('data', resolve));
    while (dash.clients === 0) await new Promise((r) => setTimeout(r, 10));
  }
  // A warm-up pass, then the timed one.
  const n = WORKLOADS[workload];
  await run(pool, workload, Math.floor(n / 10));
  const t0 = performance.now();
  const cpu0 = mainThreadCpuMs();
  await run(pool, workload, n);
  const ms = performance.now() - t0;
  const cpuMs = mainThreadCpuMs() - cpu0;
  reader?.kill();
  await dash?.close();
  await pool.close();
  process.stdout.write(`${JSON.stringify({ ms, cpuMs, spans })}\n`);
}

/**
 * CPU time of the main thread alone (where the pool keeps its books, the dashboard feeds and spans are
 * made), from /proc in clock ticks of 10 ms: less swayed than wall time by other load on the machine.
 */
function mainThreadCpuMs() {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function run(pool, workload, n) {
  if (workload === 'map') {
    await pool.map(
      'square',
      Array.from({ length: n }, (_, i) => i),
    );
    return;
  }
  let next = 0;
  const lane = async () => {
    while (next < n) await pool.apply('square', [next++]);
  };
  await Promise.all(Array.from({ length: 1000 }, lane));
}

function once(variant, workload) {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [fileURLToPath(import.meta.url), '--child', variant, '--workload', workload],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('close', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)))
        : reject(new Error(`${variant} ${workload}: exit ${code}`)),
    );
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function parent() {
  const runs = Number(flags.runs);
  const workloads = flags.only ? flags.only.split(',') : Object.keys(WORKLOADS);
  for (const workload of workloads) {
    const wall = Object.fromEntries(VARIANTS.map((v) => [v, []]));
    const cpu = Object.fromEntries(VARIANTS.map((v) => [v, []]));
    for (let r = 0; r < runs; r++) {
      for (const v of VARIANTS) {
        const result = await once(v, workload);
        wall[v].push(result.ms);
        cpu[v].push(result.cpuMs);
      }
    }
    const n = WORKLOADS[workload];
    console.log(`\n${workload}: ${n.toLocaleString('en-US')} items, 2 thread workers, median of ${runs}`);
    console.log('variant      wall ms    items/s  wall/off  main CPU ms  CPU/off   wall of each run (ms)');
    for (const v of VARIANTS) {
      const m = median(wall[v]);
      const c = median(cpu[v]);
      const rate = Math.round((n / m) * 1000).toLocaleString('en-US');
      const row = [
        v.padEnd(10),
        m.toFixed(0).padStart(9),
        rate.padStart(10),
        (m / median(wall.off)).toFixed(3).padStart(9),
        c.toFixed(0).padStart(12),
        (c / median(cpu.off)).toFixed(3).padStart(8),
        `  ${wall[v].map((t) => t.toFixed(0)).join(' ')}`,
      ];
      console.log(row.join(' '));
    }
  }
}

if (flags.child === 'micro') await micro();
else if (flags.child) await child(flags.child, flags.workload);
else {
  await micro();
  await parent();
}
