/**
 * `corral demo`: the main job on its built-in example. Renders a Mandelbrot atlas of a few thousand tiles
 * (generated here, deterministically) with `renderTile` from examples/demo-tasks.mjs on every usable core,
 * each worker under a heap and RSS limit. One tile is greedy on purpose: it allocates without end, its
 * worker goes over the heap limit and is replaced, and every other tile still finishes. On a terminal the
 * picture fills in live, tile by tile. Then the same kind of work runs on one core, for the speedup.
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cpuCount } from '../index.js';
import {
  type FlagSpec,
  formatHelp,
  parseChoiceFlag,
  parseFlags,
  parseIntFlag,
  sizeValue,
  UsageError,
} from './args.js';
import { type CliPool, Engine, type EngineState, type SourceItem } from './engine.js';
import { formatBytes, formatCount, formatDuration, formatRate, table } from './format.js';
import {
  Progress,
  type ProgressSnapshot,
  paint,
  RateMeter,
  renderBarLine,
  stripAnsi,
  useColor,
} from './progress.js';
import { buildReport, FailureLog, type RunReport } from './report.js';
import { createPool, SetupError, workerEnv } from './run.js';
import { WorkerTracker } from './workers.js';

const TASKS = new URL('../../../examples/demo-tasks.mjs', import.meta.url);
/** The region of the complex plane the atlas covers; its aspect ratio sets the grid. */
const REGION = { x0: -2.4, x1: 1.0, y0: -1.2, y1: 1.2 };
const TILE = { size: 48, maxIter: 1200 };

function flags(): FlagSpec[] {
  return [
    {
      name: 'items',
      type: 'string',
      value: 'N',
      default: '4480 (an 80 x 56 grid)',
      help: 'about how many tiles to render',
    },
    {
      name: 'workers',
      short: 'w',
      type: 'string',
      value: 'N|auto',
      default: `auto = ${cpuCount()} here`,
      help: 'workers for the main run',
    },
    {
      name: 'runtime',
      type: 'string',
      value: 'process|thread',
      default: 'process',
      help: 'worker processes (limits enforced per process) or threads (heap limit only)',
    },
    { name: 'heap', type: 'string', value: 'SIZE', default: '64MiB', help: 'heap limit of each worker' },
    {
      name: 'rss',
      type: 'string',
      value: 'SIZE',
      default: '256MiB (process runtime)',
      help: 'resident memory limit of each worker process',
    },
    { name: 'report', type: 'string', value: 'FILE.json', help: 'also write the report as JSON' },
    {
      name: 'no-greedy',
      type: 'boolean',
      default: 'one greedy tile',
      help: 'leave out the tile that goes over the memory limit',
    },
    {
      name: 'no-live',
      type: 'boolean',
      default: 'live picture on a terminal',
      help: 'plain progress lines even on a terminal',
    },
    { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
  ];
}

interface Tile {
  id: number;
  col: number;
  row: number;
  size: number;
  maxIter: number;
  x0: number;
  x1: number;
  y0: number;
  y1: number;
  greedy?: true;
}

interface TileResult {
  id: number;
  mean: number;
  inside: number;
  edges: number;
}

function grid(items: number): { cols: number; rows: number } {
  const aspect = (REGION.x1 - REGION.x0) / (REGION.y1 - REGION.y0);
  const cols = Math.max(2, Math.round(Math.sqrt(items * aspect)));
  return { cols, rows: Math.max(2, Math.round(items / cols)) };
}

function tileAt(id: number, cols: number, rows: number): Tile {
  const col = id % cols;
  const row = Math.floor(id / cols);
  const w = (REGION.x1 - REGION.x0) / cols;
  const h = (REGION.y1 - REGION.y0) / rows;
  return {
    id,
    col,
    row,
    ...TILE,
    x0: REGION.x0 + col * w,
    x1: REGION.x0 + (col + 1) * w,
    y0: REGION.y0 + row * h,
    y1: REGION.y0 + (row + 1) * h,
  };
}

async function* tiles(ids: Iterable<number>, cols: number, rows: number, greedy: number | null) {
  let batch: SourceItem[] = [];
  for (const id of ids) {
    const tile = tileAt(id, cols, rows);
    if (id === greedy) tile.greedy = true;
    batch.push({ index: id, value: tile });
    if (batch.length === 256) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

// ── colours ─────────────────────────────────────────────────────────────────────────────────────

const STOPS: [number, number, number, number][] = [
  [0, 0, 7, 100],
  [0.16, 32, 107, 203],
  [0.42, 237, 255, 255],
  [0.64, 255, 170, 0],
  [0.86, 120, 20, 0],
  [1, 0, 0, 0],
];

function palette(t: number): [number, number, number] {
  const x = Math.max(0, Math.min(1, t));
  for (let i = 1; i < STOPS.length; i++) {
    const [p1, r1, g1, b1] = STOPS[i]!;
    const [p0, r0, g0, b0] = STOPS[i - 1]!;
    if (x <= p1) {
      const f = (x - p0) / (p1 - p0);
      return [r0 + (r1 - r0) * f, g0 + (g1 - g0) * f, b0 + (b1 - b0) * f];
    }
  }
  return [0, 0, 0];
}

function tileColour(r: TileResult): [number, number, number] {
  // Mostly inside the set: black. Else the mean escape time, stretched so the boundary glows.
  if (r.inside > 0.9) return [0, 0, 0];
  return palette(r.mean ** 2.2 * 0.95);
}

const trueColour = /truecolor|24bit/i.test(process.env.COLORTERM ?? '');

function sgr(fg: [number, number, number] | null, bg: [number, number, number] | null): string {
  const code = (rgb: [number, number, number], base: 38 | 48): string => {
    if (trueColour) return `${base};2;${rgb.map((v) => Math.round(v)).join(';')}`;
    const c = rgb.map((v) => Math.round((v / 255) * 5));
    return `${base};5;${16 + 36 * c[0]! + 6 * c[1]! + c[2]!}`;
  };
  const parts = [fg ? code(fg, 38) : '39', bg ? code(bg, 48) : '49'];
  return `\x1b[${parts.join(';')}m`;
}

// ── the live picture ────────────────────────────────────────────────────────────────────────────

const PENDING: [number, number, number] = [38, 38, 38];
const FAILED: [number, number, number] = [255, 0, 60];

class Canvas {
  private readonly colours: ([number, number, number] | null)[];
  readonly width: number;
  readonly height: number;

  constructor(
    private readonly cols: number,
    private readonly rows: number,
    maxWidth: number,
    maxHeight: number,
  ) {
    this.colours = new Array(cols * rows).fill(null);
    // One character cell shows two tiles, one above the other (▀ with a foreground and a background).
    this.width = Math.max(8, Math.min(cols, maxWidth));
    this.height = Math.max(4, Math.min(Math.ceil(rows / 2), maxHeight));
  }

  set(id: number, rgb: [number, number, number]): void {
    this.colours[id] = rgb;
  }

  private at(cx: number, sy: number): [number, number, number] | null {
    const col = Math.min(this.cols - 1, Math.floor((cx * this.cols) / this.width));
    const row = Math.min(this.rows - 1, Math.floor((sy * this.rows) / (this.height * 2)));
    return this.colours[row * this.cols + col] ?? null;
  }

  lines(): string[] {
    const out: string[] = [];
    for (let cy = 0; cy < this.height; cy++) {
      let line = '';
      let last = '';
      for (let cx = 0; cx < this.width; cx++) {
        const top = this.at(cx, 2 * cy) ?? PENDING;
        const bottom = this.at(cx, 2 * cy + 1) ?? PENDING;
        const s = sgr(top, bottom);
        if (s !== last) line += s;
        last = s;
        line += '▀';
      }
      out.push(`${line}\x1b[0m`);
    }
    return out;
  }
}

class LiveScreen {
  private timer: NodeJS.Timeout | undefined;
  private height = 0;
  private readonly meter = new RateMeter();
  private rate = 0;
  private tick = 0;
  private readonly log: string[] = [];
  private partial = '';
  private readonly realWrite: typeof process.stderr.write;
  private readonly own: PropertyDescriptor | undefined;

  constructor(
    private readonly canvas: Canvas,
    private readonly title: string,
    private readonly snapshot: () => ProgressSnapshot,
    private readonly workersLine: () => string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.realWrite = stream.write.bind(stream) as typeof process.stderr.write;
    this.own = Object.getOwnPropertyDescriptor(stream, 'write');
  }

  /** A line for the event area under the picture. */
  note(text: string): void {
    this.log.push(text);
    if (this.log.length > 2) this.log.shift();
  }

  start(): void {
    // Worker stderr (V8's out-of-memory report, for one) would tear the picture: show its gist instead.
    this.stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      this.partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      let cut = this.partial.indexOf('\n');
      while (cut >= 0) {
        const line = this.partial.slice(0, cut).trim();
        this.partial = this.partial.slice(cut + 1);
        if (/FATAL ERROR|out of memory|Error:/.test(line)) this.note(paint.dim(`worker stderr: ${line}`));
        cut = this.partial.indexOf('\n');
      }
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      if (cb) queueMicrotask(cb);
      return true;
    }) as typeof process.stderr.write;
    this.timer = setInterval(() => this.draw(), 100);
    this.timer.unref();
    this.draw();
  }

  private draw(): void {
    const s = this.snapshot();
    this.rate = this.meter.add(s.done);
    this.tick++;
    const width = this.stream.columns || 80;
    const frame = [
      this.title,
      ...this.canvas.lines(),
      renderBarLine(s, this.rate, width, this.tick),
      this.workersLine(),
      this.log[0] ?? '',
      this.log[1] ?? '',
    ].map((l) => fit(l, width));
    while (frame.length < this.height) frame.push('');
    // Rewrite only the lines that changed: a full picture ten times a second is a lot for a terminal.
    let text = this.height > 0 ? `\x1b[${this.height}F` : '';
    frame.forEach((line, i) => {
      text += line === this.shown[i] ? '\x1b[1E' : `\x1b[2K${line}\n`;
    });
    this.shown = frame;
    this.height = frame.length;
    this.realWrite(text);
  }
  private shown: string[] = [];

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.draw();
    if (this.own) Object.defineProperty(this.stream, 'write', this.own);
    else delete (this.stream as { write?: unknown }).write;
  }
}

/** Cuts a line with colour codes to `width` visible characters, so it never wraps. */
function fit(line: string, width: number): string {
  if (stripAnsi(line).length < width) return line;
  let visible = 0;
  let out = '';
  for (let i = 0; i < line.length; ) {
    if (line.charCodeAt(i) === 27) {
      const end = line.indexOf('m', i);
      out += line.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    if (visible >= width - 1) break;
    out += line[i];
    visible++;
    i++;
  }
  return `${out}\x1b[0m`;
}

// ── the runs ────────────────────────────────────────────────────────────────────────────────────

interface PoolSetup {
  options: Record<string, unknown>;
  /** How the limits are enforced, for the report. */
  limitsText: string;
  viaLimits: boolean;
}

function poolSetup(
  runtime: 'process' | 'thread',
  heap: string | number,
  rss: string | number,
  workers: number,
): PoolSetup {
  // workerEnv(): process workers ignore the terminal's Ctrl-C (the demo decides) and print to stderr.
  const base = { module: fileURLToPath(TASKS), runtime, workers, taskTimeout: '60s', env: workerEnv() };
  const limits: Record<string, unknown> = { heap };
  if (runtime === 'process') limits.rss = rss;
  const text = `heap ${heap}${runtime === 'process' ? `, rss ${rss}` : ''} each`;
  return { options: { ...base, limits }, limitsText: text, viaLimits: true };
}

/** A pool with the demo's limits; a corral without `limits` gets V8's own heap flag instead. */
function openPool(setup: PoolSetup, heapMb: number): { pool: CliPool; setup: PoolSetup } {
  try {
    return { pool: createPool(setup.options, (f) => f), setup };
  } catch (error) {
    if (!(error instanceof SetupError) || !/limits/.test(error.message)) throw error;
    const { limits: _unused, ...rest } = setup.options;
    const fallback: PoolSetup = {
      options: { ...rest, runtime: 'process', execArgv: [`--max-old-space-size=${heapMb}`] },
      limitsText: `--max-old-space-size=${heapMb} per worker process (this corral has no limits option), 60 s task timeout`,
      viaLimits: false,
    };
    return { pool: createPool(fallback.options, (f) => f), setup: fallback };
  }
}

async function waitForWorkers(pool: CliPool, n: number): Promise<void> {
  let started = 0;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 15_000);
    const on = (): void => {
      if (++started >= n) {
        clearTimeout(timer);
        pool.off('workerStart', on);
        resolve();
      }
    };
    pool.on('workerStart', on);
  });
}

interface Phase {
  state: EngineState;
  wallMs: number;
  tracker: WorkerTracker;
  failures: FailureLog;
}

async function runPhase(args: {
  pool: CliPool;
  workers: number;
  ids: number[];
  cols: number;
  rows: number;
  greedy: number | null;
  onResult?: (index: number, result: TileResult) => void;
  onFailure?: (index: number | null, message: string) => void;
  display: (engine: Engine, tracker: WorkerTracker) => { start(): void; stop(): void };
}): Promise<Phase> {
  const { pool } = args;
  const tracker = new WorkerTracker(pool);
  tracker.start(150);
  await waitForWorkers(pool, args.workers);
  const failures = new FailureLog(undefined, 10);
  const engine = new Engine({
    pool,
    task: 'renderTile',
    source: tiles(args.ids, args.cols, args.rows, args.greedy),
    out: null,
    ordered: false,
    withIndex: false,
    failFast: false,
    window: Math.max(64, args.workers * 16),
    slots: args.workers,
    chunksize: 'auto',
    call: {},
    onFailure: (record) => {
      failures.add(record);
      args.onFailure?.(record.index, record.error.message);
    },
    onSettle: () => tracker.maybeSample(),
    onResult: (index, _input, value) => args.onResult?.(index, value as TileResult),
  });
  const display = args.display(engine, tracker);
  let interrupted = 0;
  const onSignal = (): void => {
    if (++interrupted === 1) engine.stop('interrupted');
    else void engine.terminate();
  };
  process.on('SIGINT', onSignal);
  const t0 = performance.now();
  display.start();
  let state: EngineState;
  try {
    state = await engine.run();
  } finally {
    display.stop();
    process.off('SIGINT', onSignal);
  }
  const wallMs = performance.now() - t0;
  tracker.sample();
  tracker.stop();
  if (state.stopReason === 'terminated') await pool.terminate();
  else await pool.close();
  return { state, wallMs, tracker, failures };
}

function snapshotOf(engine: Engine, tracker: WorkerTracker, total: number): () => ProgressSnapshot {
  return () => ({
    done: engine.state.done,
    failed: engine.state.failed,
    read: total,
    inputDone: true,
    bytesRead: 0,
    bytesTotal: null,
    memory: tracker.memoryNow,
    workers: tracker.workers.size,
  });
}

function workersLine(tracker: WorkerTracker): string {
  const live = tracker.list().filter((w) => !w.exit);
  return live
    .map((w) => `${paint.cyan(`worker ${w.id}`)} ${formatCount(w.tasks)} tiles ${formatBytes(w.rss)}`)
    .join(paint.dim(' │ '));
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('demo', argv, flags());
  if (v.help) {
    process.stdout.write(
      `${formatHelp(
        'corral demo [--items N] [--workers N] [--runtime process|thread]',
        'Renders a Mandelbrot atlas of a few thousand tiles (generated here, no download) with renderTile from\nexamples/demo-tasks.mjs on every usable core, each worker under a memory limit. One tile is greedy on\npurpose: its worker goes over the heap limit and is replaced, and every other tile still finishes.\nThen a sample runs on one core, and the report shows the speedup, memory per worker and the breach.',
        flags(),
      )}\n`,
    );
    return 0;
  }
  if (!existsSync(TASKS)) {
    throw new SetupError(
      `the demo's task module ${fileURLToPath(TASKS)} is missing: run the demo from a clone of corral (npm start)`,
    );
  }
  const items = v.items === undefined ? 4480 : (parseIntFlag('items', v.items as string, 16) as number);
  const w = v.workers === undefined ? 'auto' : parseIntFlag('workers', v.workers as string, 1, true);
  const workers = w === 'auto' ? cpuCount() : w;
  const runtime =
    v.runtime === undefined
      ? 'process'
      : parseChoiceFlag('runtime', v.runtime as string, ['process', 'thread'] as const);
  const heapRaw = (v.heap as string | undefined) ?? '64MiB';
  const heap = sizeValue(heapRaw);
  const heapMb = typeof heap === 'number' ? Math.max(16, Math.round(heap / 2 ** 20)) : parseMiB(heapRaw);
  const rss = sizeValue((v.rss as string | undefined) ?? '256MiB');
  const { cols, rows } = grid(items);
  const total = cols * rows;
  // The greedy tile: about a third of the way in, so the picture is well under way when it strikes.
  const greedy = v['no-greedy'] ? -1 : Math.floor(total * 0.37);
  const live = process.stderr.isTTY === true && !v['no-live'];
  paint.on = useColor(process.stderr);
  const started = new Date();

  const main = openPool(poolSetup(runtime, heap, rss, workers), heapMb);
  const setup = main.setup;
  const title = `${paint.bold('corral demo')} · ${formatCount(total)} Mandelbrot tiles · ${workers} ${String(setup.options.runtime)} workers · ${setup.limitsText}`;
  if (!live) process.stderr.write(`${stripAnsi(title)}\n`);

  let breachNote = '';
  let screen: LiveScreen | undefined;
  const rowsAvailable = (process.stderr.rows || 24) - 7;
  const canvas = new Canvas(cols, rows, (process.stderr.columns || 80) - 1, Math.max(4, rowsAvailable));
  const phase1 = await runPhase({
    pool: main.pool,
    workers,
    ids: Array.from({ length: total }, (_, i) => i),
    cols,
    rows,
    greedy,
    onResult: (index, r) => canvas.set(index, tileColour(r)),
    onFailure: (index, message) => {
      if (index !== null) canvas.set(index, FAILED);
      breachNote = `tile ${index}: ${message.split('\n')[0]}`;
      screen?.note(`${paint.red('✖')} ${breachNote}`);
      if (!live) process.stderr.write(`corral demo: ${breachNote}\n`);
    },
    display: (engine, tracker) => {
      if (live) {
        screen = new LiveScreen(canvas, title, snapshotOf(engine, tracker, total), () =>
          workersLine(tracker),
        );
        return screen;
      }
      return new Progress('plain', snapshotOf(engine, tracker, total), process.stderr, 2000);
    },
  });

  // The same kind of work on one core: one tile in eight (the greedy one left out).
  let phase2: Phase | undefined;
  if (phase1.state.stopReason === null) {
    // A hashed choice rather than every n-th tile: a stride would pick the same columns on every row.
    const sample = Array.from({ length: total }, (_, i) => i).filter(
      (id) => id !== greedy && Math.imul(id + 1, 2654435761) >>> 29 === 0,
    );
    const one = openPool(poolSetup(runtime, heap, rss, 1), heapMb);
    if (!live)
      process.stderr.write(
        `corral demo: now ${sample.length} of the same tiles on one worker, for the speedup\n`,
      );
    phase2 = await runPhase({
      pool: one.pool,
      workers: 1,
      ids: sample,
      cols,
      rows,
      greedy: null,
      display: (engine, tracker) => {
        const p = new Progress(
          live ? 'bar' : 'plain',
          snapshotOf(engine, tracker, sample.length),
          process.stderr,
          2000,
        );
        return {
          start() {
            if (live)
              process.stderr.write(
                `one core, for comparison: ${formatCount(sample.length)} of the same tiles on 1 worker\n`,
              );
            p.start();
          },
          stop: () => p.stop(),
        };
      },
    });
  }

  // The 1-minute load average counts our own workers too; what is left over is other work on the CPUs.
  const load = loadavg()[0] ?? 0;
  const busy = process.platform === 'linux' && load - workers > 0.5 * cpuCount() ? load : null;
  const wallMs = phase1.wallMs;
  const report = buildReport({
    command: 'demo',
    task: 'examples/demo-tasks.mjs#renderTile',
    module: fileURLToPath(TASKS),
    startedAt: started,
    wallMs,
    options: { ...setup.options, env: undefined, items: total, grid: { cols, rows }, greedyTile: greedy },
    state: phase1.state,
    written: 0,
    failures: phase1.failures,
    tracker: phase1.tracker,
    exitCode: 0,
  });
  const rateAll = phase1.state.succeeded / (phase1.wallMs / 1000);
  const rateOne = phase2 ? phase2.state.succeeded / (phase2.wallMs / 1000) : null;
  const speedup = rateOne ? rateAll / rateOne : null;
  const allOthersDone = phase1.state.succeeded === total - (greedy >= 0 ? 1 : 0);
  const greedyFailed = phase1.failures.first.find((f) => f.index === greedy);
  const extended = {
    ...report,
    demo: {
      tiles: total,
      greedyTile: greedy,
      greedyError: greedyFailed?.error ?? null,
      allOtherTilesDone: allOthersDone,
      allCores: { workers, wallMs: Math.round(phase1.wallMs), tilesPerSecond: rateAll },
      oneCore: phase2
        ? {
            workers: 1,
            tiles: phase2.state.succeeded,
            wallMs: Math.round(phase2.wallMs),
            tilesPerSecond: rateOne,
          }
        : null,
      speedup,
      limits: setup.limitsText,
      loadAverage: load,
    },
  };
  let text = formatDemoReport(extended, phase1, greedy, total);
  if (busy !== null && speedup !== null) {
    text += `\n  ${paint.yellow('note')}        other programs were using the CPUs (load average ${busy.toFixed(1)} on ${cpuCount()} CPUs): the speedup is understated`;
  }
  process.stdout.write(`${text}\n`);
  if (v.report) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(v.report as string, `${JSON.stringify(extended, null, 2)}\n`);
  }
  if (phase1.state.stopReason === 'interrupted' || phase1.state.stopReason === 'terminated') return 130;
  if (!allOthersDone) return 1;
  return 0;
}

function parseMiB(raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw);
  if (!m) throw new UsageError(`--heap expects a size like 64MiB, got '${raw}'`);
  const unit = (m[2] || 'b').toLowerCase();
  const factor: Record<string, number> = {
    b: 1 / 2 ** 20,
    k: 1 / 1024,
    kib: 1 / 1024,
    kb: 1 / 1024,
    m: 1,
    mib: 1,
    mb: 1,
    g: 1024,
    gib: 1024,
    gb: 1024,
  };
  if (factor[unit] === undefined) throw new UsageError(`--heap expects a size like 64MiB, got '${raw}'`);
  return Math.max(16, Math.round(Number(m[1]) * factor[unit]!));
}

function formatDemoReport(
  r: RunReport & { demo: Record<string, unknown> & { speedup: number | null } },
  phase1: Phase,
  greedy: number,
  total: number,
): string {
  const d = r.demo as {
    allCores: { workers: number; wallMs: number; tilesPerSecond: number };
    oneCore: { tiles: number; wallMs: number; tilesPerSecond: number } | null;
    speedup: number | null;
    limits: string;
    greedyError: { code: string; message: string; kind?: string } | null;
    allOtherTilesDone: boolean;
  };
  const lines: string[] = [];
  lines.push('');
  lines.push(paint.bold(`corral demo report: ${formatCount(total)} Mandelbrot tiles, rendered and measured`));
  lines.push(
    `  all cores   ${d.allCores.workers} workers, ${formatDuration(d.allCores.wallMs)}, ${formatRate(d.allCores.tilesPerSecond)}`,
  );
  if (d.oneCore && d.speedup) {
    lines.push(
      `  one core    1 worker, ${formatCount(d.oneCore.tiles)} sampled tiles in ${formatDuration(d.oneCore.wallMs)}, ${formatRate(d.oneCore.tilesPerSecond)}`,
    );
    lines.push(
      `  speedup     ${paint.bold(`${d.speedup.toFixed(2)}x`)} on ${d.allCores.workers} workers (${((d.speedup / d.allCores.workers) * 100).toFixed(0)}% of ideal), measured in this run`,
    );
  }
  lines.push(`  limits      ${d.limits}`);
  const rowsT = [['worker', 'pid', 'tiles', 'peak RSS', 'ended']];
  for (const w of r.workers) {
    rowsT.push([
      String(w.id),
      w.pid !== undefined ? String(w.pid) : `thread ${w.threadId ?? '?'}`,
      formatCount(w.tasks),
      formatBytes(w.peakRss),
      w.exit ? (w.exit.signal ? `${w.exit.reason} (${w.exit.signal})` : w.exit.reason) : '-',
    ]);
  }
  lines.push('  memory per worker (the main run):');
  lines.push(table(rowsT, '    '));
  lines.push(`    this process: peak RSS ${formatBytes(r.parentPeakRss)}`);
  const g = d.greedyError;
  if (g) {
    const kind = g.code === 'ERR_MEMORY_LIMIT' ? `${g.kind ?? 'memory'} limit` : g.code;
    const e = g as { limit?: number; observed?: number };
    lines.push(
      `  contained   tile ${greedy} allocated without end: ${paint.yellow(kind)} breach (${g.code})`,
    );
    lines.push(
      `              ${typeof e.limit === 'number' ? `limit ${formatBytes(e.limit)}${typeof e.observed === 'number' ? `, observed ${formatBytes(e.observed)}` : ''}; ` : ''}its worker was replaced, the run went on`,
    );
  } else
    lines.push(
      `  contained   the greedy tile ${greedy} did not fail (was the heap limit large enough to hold it?)`,
    );
  lines.push(
    d.allOtherTilesDone
      ? `  every other tile finished: ${formatCount(phase1.state.succeeded)} of ${formatCount(total - 1)}`
      : paint.red(
          `  ${formatCount(phase1.state.succeeded)} of ${formatCount(total - 1)} other tiles finished (${phase1.state.stopReason ?? 'failures'})`,
        ),
  );
  const others = phase1.failures.first.filter((f) => f.index !== greedy);
  for (const f of others.slice(0, 3))
    lines.push(paint.red(`    tile ${f.index}: ${f.error.code} ${f.error.message.split('\n')[0]}`));
  return lines.join('\n');
}
