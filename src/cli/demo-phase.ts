/**
 * The demo's runs: a pool with the demo's limits, and one phase of tiles through it (all cores, then one),
 * timed from the moment every worker is up.
 */
import { fileURLToPath } from 'node:url';
import { type TileResult, tiles } from './demo-tiles.js';
import { type CliPool, Engine, type EngineState } from './engine.js';
import { closePool, createPool, handleSignals, SetupError, workerEnv } from './pool-setup.js';
import type { ProgressSnapshot } from './progress.js';
import { FailureLog } from './report.js';
import { WorkerTracker } from './workers.js';

export const TASKS = new URL('../../../examples/demo-tasks.mjs', import.meta.url);

export interface PoolSetup {
  options: Record<string, unknown>;
  /** How the limits are enforced, for the report. */
  limitsText: string;
  viaLimits: boolean;
}

export function poolSetup(
  runtime: 'process' | 'thread',
  heap: string | number,
  rss: string | number,
  workers: number,
): PoolSetup {
  // workerEnv(): process workers ignore the terminal's Ctrl-C (the demo decides) and print to stderr.
  const base = { module: fileURLToPath(TASKS), runtime, workers, taskTimeout: '60s', env: workerEnv() };
  const limits: Record<string, unknown> = { heap };
  // The rss watchdog reads /proc: elsewhere the pool refuses it, and heap alone still bounds the demo.
  const withRss = runtime === 'process' && process.platform === 'linux';
  if (withRss) limits.rss = rss;
  const text = `heap ${heap}${withRss ? `, rss ${rss}` : ''} each`;
  return { options: { ...base, limits }, limitsText: text, viaLimits: true };
}

/** A pool with the demo's limits; a corral without `limits` gets V8's own heap flag instead. */
export function openPool(setup: PoolSetup, heapMb: number): { pool: CliPool; setup: PoolSetup } {
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

export interface Phase {
  state: EngineState;
  wallMs: number;
  tracker: WorkerTracker;
  failures: FailureLog;
}

export async function runPhase(args: {
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
  // SIGINT only: a SIGTERM ends the demo at once, as by default.
  const unhook = handleSignals(
    {
      onStop: () => engine.stop('interrupted'),
      onTerminate: () => {
        void engine.terminate();
      },
    },
    ['SIGINT'],
  );
  const t0 = performance.now();
  display.start();
  let state: EngineState;
  try {
    state = await engine.run();
  } finally {
    display.stop();
    unhook();
  }
  const wallMs = performance.now() - t0;
  tracker.sample();
  tracker.stop();
  await closePool(pool, state);
  return { state, wallMs, tracker, failures };
}

export function snapshotOf(engine: Engine, tracker: WorkerTracker, total: number): () => ProgressSnapshot {
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
