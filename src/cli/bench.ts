/**
 * `corral bench`: the built-in workloads (tiny tasks, CPU-bound, skewed, large payload) inline vs corral
 * threads vs corral processes, on this machine, in one run. Each pool is started once (its start-up time is
 * its own row), every workload is warmed up (3 runs, at least 300 ms), then the median of the timed runs is printed with its
 * ratio to inline (above 1 = faster than inline).
 */
import { cpuCount, Pool, type PoolOptions } from '../index.js';
import { type FlagSpec, formatHelp, parseFlags, parseIntFlag } from './args.js';
import * as tasks from './bench-tasks.js';
import { formatCount, table } from './format.js';
import { paint, useColor } from './progress.js';

const FLAGS: FlagSpec[] = [
  { name: 'quick', type: 'boolean', default: 'off', help: 'smaller inputs and fewer runs: under 30 s' },
  {
    name: 'runs',
    type: 'string',
    value: 'N',
    default: '5 (3 with --quick)',
    help: 'timed runs per workload and runner (the median is shown)',
  },
  {
    name: 'workers',
    short: 'w',
    type: 'string',
    value: 'N',
    default: `${cpuCount()} (usable CPUs)`,
    help: 'workers of each pool',
  },
  { name: 'json', type: 'boolean', default: 'off', help: 'print JSON for machines instead of the table' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

type Runtime = 'thread' | 'process';
type BenchPool = Pool<typeof tasks>;

interface Workload {
  name: string;
  label: string;
  items: string;
  inline(): unknown;
  pool(pool: BenchPool): Promise<unknown>;
}

function workloads(quick: boolean): Workload[] {
  const tinyN = quick ? 20_000 : 200_000;
  const tiny = Array.from({ length: tinyN }, (_, i) => i);
  const fibN = quick ? 29 : 30;
  const fibCount = quick ? 48 : 96;
  const fibs = new Array<number>(fibCount).fill(fibN);
  // Skewed: most tasks short, a few long, in a fixed pseudo-random order.
  const skewCount = quick ? 40 : 120;
  const skew = Array.from({ length: skewCount }, (_, i) =>
    (Math.imul(i + 1, 2654435761) >>> 0) % 10 === 0 ? 60 : 3,
  );
  const payloadCount = quick ? 16 : 48;
  const arrays = Array.from({ length: payloadCount }, (_, i) => new Float64Array(131_072).fill(i));
  return [
    {
      name: 'tiny',
      label: 'tiny tasks (x*x)',
      items: formatCount(tinyN),
      inline: () => tiny.map(tasks.square),
      pool: (p) => p.map('square', tiny),
    },
    {
      name: 'cpu',
      label: `CPU-bound (fib ${fibN})`,
      items: formatCount(fibCount),
      inline: () => fibs.map(tasks.fib),
      pool: (p) => p.map('fib', fibs, { chunksize: 1 }),
    },
    {
      name: 'skewed',
      label: 'skewed (3 ms, 1 in 10: 60 ms)',
      items: formatCount(skewCount),
      inline: () => skew.map(tasks.busy),
      pool: (p) => p.map('busy', skew, { chunksize: 1 }),
    },
    {
      name: 'payload',
      label: 'large payload (1 MiB in and out)',
      items: formatCount(payloadCount),
      inline: () => arrays.map(tasks.scale),
      pool: (p) => p.map('scale', arrays, { chunksize: 1 }),
    },
  ];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Until the JIT has settled: three runs and at least 300 ms. */
async function warmUp(fn: () => unknown): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < 3 || performance.now() - start < 300; i++) {
    await fn();
    if (i >= 20) break;
  }
}

async function time(fn: () => unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function openPool(runtime: Runtime, workers: number): Promise<{ pool: BenchPool; startupMs: number }> {
  const t = performance.now();
  const pool = new Pool<typeof tasks>({
    module: new URL('./bench-tasks.js', import.meta.url),
    runtime,
    workers,
  } as PoolOptions<typeof tasks>);
  let up = 0;
  await new Promise<void>((resolve) => {
    pool.on('workerStart', () => {
      if (++up === workers) resolve();
    });
  });
  return { pool, startupMs: performance.now() - t };
}

export async function benchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('bench', argv, FLAGS);
  if (v.help) {
    process.stdout.write(
      `${formatHelp('corral bench [--quick] [--json]', 'Inline vs corral threads vs corral processes on the built-in workloads, on this machine, in one run.\nRatios are inline time / pool time: above 1 the pool is faster.', FLAGS)}\n`,
    );
    return 0;
  }
  const quick = Boolean(v.quick);
  const runs = v.runs === undefined ? (quick ? 3 : 5) : (parseIntFlag('runs', v.runs as string, 1) as number);
  const workers =
    v.workers === undefined ? cpuCount() : (parseIntFlag('workers', v.workers as string, 1) as number);
  const json = Boolean(v.json);
  paint.on = useColor(process.stdout);
  const list = workloads(quick);
  const say = (text: string): void => {
    if (!json && process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  };

  const results = new Map<string, { inline: number; thread: number; process: number }>();
  for (const w of list) {
    say(`inline: ${w.label}`);
    await warmUp(w.inline);
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) samples.push(await time(w.inline));
    results.set(w.name, { inline: median(samples), thread: NaN, process: NaN });
  }
  const startup: Record<Runtime, number> = { thread: NaN, process: NaN };
  for (const runtime of ['thread', 'process'] as const) {
    say(`starting ${workers} ${runtime} workers`);
    const { pool, startupMs } = await openPool(runtime, workers);
    startup[runtime] = startupMs;
    try {
      for (const w of list) {
        say(`${runtime}: ${w.label}`);
        await warmUp(() => w.pool(pool));
        const samples: number[] = [];
        for (let i = 0; i < runs; i++) samples.push(await time(() => w.pool(pool)));
        results.get(w.name)![runtime] = median(samples);
      }
    } finally {
      await pool.close();
    }
  }
  say('');

  const rows = list.map((w) => {
    const r = results.get(w.name)!;
    return {
      name: w.name,
      label: w.label,
      items: w.items,
      inlineMs: r.inline,
      threadMs: r.thread,
      processMs: r.process,
      threadRatio: r.inline / r.thread,
      processRatio: r.inline / r.process,
    };
  });
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ node: process.version, cpus: cpuCount(), workers, quick, runs, workloads: rows, startupMs: startup }, null, 2)}\n`,
    );
    return 0;
  }
  const ms = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const ratio = (x: number): string => {
    const t = `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}x`;
    return x >= 1.1 ? paint.green(t) : x < 0.9 ? paint.yellow(t) : t;
  };
  const header = [
    'workload',
    'items',
    'inline ms',
    `threads (${workers}) ms`,
    'ratio',
    `processes (${workers}) ms`,
    'ratio',
  ];
  const body = rows.map((r) => [
    r.label,
    r.items,
    ms(r.inlineMs),
    ms(r.threadMs),
    ratio(r.threadRatio),
    ms(r.processMs),
    ratio(r.processRatio),
  ]);
  body.push(['pool start-up', '', '-', ms(startup.thread), '', ms(startup.process), '']);
  process.stdout.write(
    `${paint.bold(`corral bench${quick ? ' --quick' : ''}`)}: Node ${process.version}, ${cpuCount()} usable CPUs, median of ${runs} runs after warm-up\n` +
      `${alignTable([header, ...body])}\n` +
      '  ratio = inline time / pool time (above 1: the pool is faster). Tiny tasks are all overhead: batch them\n' +
      '  (map chunks) or keep them inline; CPU-bound and skewed work is what workers are for.\n',
  );
  return 0;
}

/** table() with colour codes ignored when measuring widths. */
function alignTable(rows: string[][]): string {
  const strip = (s: string) => s.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), '');
  const plain = rows.map((r) => r.map(strip));
  const laid = table(plain).split('\n');
  // Put the colours back: each coloured cell is replaced in its line, which keeps the alignment.
  return laid
    .map((line, i) => {
      let out = line;
      rows[i]!.forEach((cell, j) => {
        if (cell !== plain[i]![j]) out = out.replace(plain[i]![j]!, cell);
      });
      return out;
    })
    .join('\n');
}
