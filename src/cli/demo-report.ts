/**
 * The demo's report: the run's report plus what the demo measured (the speedup over one core, and what
 * became of the greedy tile), as JSON and as text.
 */
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cpuCount } from '../index.js';
import { type Phase, type PoolSetup, TASKS } from './demo-phase.js';
import type { FailureRecord } from './engine.js';
import { formatBytes, formatCount, formatDuration, formatRate, table } from './format.js';
import { paint } from './progress.js';
import { buildReport, type RunReport } from './report.js';

export interface DemoSummary {
  tiles: number;
  greedyTile: number;
  greedyError: FailureRecord['error'] | null;
  allOtherTilesDone: boolean;
  allCores: { workers: number; wallMs: number; tilesPerSecond: number };
  oneCore: { workers: number; tiles: number; wallMs: number; tilesPerSecond: number } | null;
  speedup: number | null;
  limits: string;
  loadAverage: number;
}

export type DemoReport = RunReport & { demo: DemoSummary };

export function demoReport(args: {
  started: Date;
  setup: PoolSetup;
  workers: number;
  cols: number;
  rows: number;
  greedy: number;
  phase1: Phase;
  phase2: Phase | undefined;
}): DemoReport {
  const { setup, workers, cols, rows, greedy, phase1, phase2 } = args;
  const total = cols * rows;
  const load = loadavg()[0] ?? 0;
  const report = buildReport({
    command: 'demo',
    task: 'examples/demo-tasks.mjs#renderTile',
    module: fileURLToPath(TASKS),
    startedAt: args.started,
    wallMs: phase1.wallMs,
    options: { ...setup.options, env: undefined, items: total, grid: { cols, rows }, greedyTile: greedy },
    state: phase1.state,
    written: 0,
    failures: phase1.failures,
    tracker: phase1.tracker,
    exitCode: 0,
  });
  const rateAll = phase1.state.succeeded / (phase1.wallMs / 1000);
  const oneCore = phase2
    ? {
        workers: 1,
        tiles: phase2.state.succeeded,
        wallMs: Math.round(phase2.wallMs),
        tilesPerSecond: phase2.state.succeeded / (phase2.wallMs / 1000),
      }
    : null;
  const rateOne = oneCore ? oneCore.tilesPerSecond : null;
  const speedup = rateOne ? rateAll / rateOne : null;
  const greedyFailed = phase1.failures.first.find((f) => f.index === greedy);
  return {
    ...report,
    demo: {
      tiles: total,
      greedyTile: greedy,
      greedyError: greedyFailed?.error ?? null,
      allOtherTilesDone: phase1.state.succeeded === total - (greedy >= 0 ? 1 : 0),
      allCores: { workers, wallMs: Math.round(phase1.wallMs), tilesPerSecond: rateAll },
      oneCore,
      speedup,
      limits: setup.limitsText,
      loadAverage: load,
    },
  };
}

export function formatDemoReport(r: DemoReport, phase1: Phase, greedy: number, total: number): string {
  const d = r.demo;
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
    const e = g as { kind?: string; limit?: number; observed?: number };
    const kind = g.code === 'ERR_MEMORY_LIMIT' ? `${e.kind ?? 'memory'} limit` : g.code;
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
  // The 1-minute load average counts our own workers too; what is left over is other work on the CPUs.
  const busy =
    process.platform === 'linux' && d.loadAverage - d.allCores.workers > 0.5 * cpuCount()
      ? d.loadAverage
      : null;
  if (busy !== null && d.speedup !== null) {
    lines.push(
      `  ${paint.yellow('note')}        other programs were using the CPUs (load average ${busy.toFixed(1)} on ${cpuCount()} CPUs): the speedup is understated`,
    );
  }
  return lines.join('\n');
}
