/**
 * `corral demo`: the main job on its built-in example. Renders a Mandelbrot atlas of a few thousand tiles
 * (generated here, deterministically) with `renderTile` from examples/demo-tasks.mjs on every usable core,
 * each worker under a heap and RSS limit. One tile is greedy on purpose: it allocates without end, its
 * worker goes over the heap limit and is replaced, and every other tile still finishes. On a terminal the
 * picture fills in live, tile by tile. Then the same kind of work runs on one core, for the speedup.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseFlags } from './args.js';
import { demoConfig, demoFlags, demoHelp } from './demo-args.js';
import { Canvas, FAILED, tileColour } from './demo-canvas.js';
import { openPool, type Phase, poolSetup, runPhase, snapshotOf, TASKS } from './demo-phase.js';
import { demoReport, formatDemoReport } from './demo-report.js';
import { LiveScreen, workersLine } from './demo-screen.js';
import { grid } from './demo-tiles.js';
import { formatCount } from './format.js';
import { EXIT, SetupError, wasInterrupted } from './pool-setup.js';
import { Progress, paint, stripAnsi, useColor } from './progress.js';
import { checkReportPath, writeReportFile } from './report.js';

export async function demoCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('demo', argv, demoFlags());
  if (v.help) {
    process.stdout.write(`${demoHelp()}\n`);
    return EXIT.ok;
  }
  if (!existsSync(TASKS)) {
    throw new SetupError(
      `the demo's task module ${fileURLToPath(TASKS)} is missing: run the demo from a clone of corral (npm start)`,
    );
  }
  const config = demoConfig(v);
  if (config.report) checkReportPath(config.report);
  const { workers, runtime, heap, heapMb, rss, live } = config;
  const { cols, rows } = grid(config.items);
  const total = cols * rows;
  // The greedy tile: about a third of the way in, so the picture is well under way when it strikes.
  const greedy = config.greedy ? Math.floor(total * 0.37) : -1;
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

  const report = demoReport({ started, setup, workers, cols, rows, greedy, phase1, phase2 });
  process.stdout.write(`${formatDemoReport(report, phase1, greedy, total)}\n`);
  const reported = !config.report || writeReportFile(config.report, report);
  if (wasInterrupted(phase1.state)) return EXIT.interrupted;
  if (!report.demo.allOtherTilesDone) return EXIT.failed;
  return reported ? EXIT.ok : EXIT.usage;
}
