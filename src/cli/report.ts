/**
 * The end of a run: failures (kept in a file, and the first few for the screen), limit breaches, and the
 * summary, as text for people and as JSON (`--report`) for machines. Both come from one object.
 */
import { accessSync, constants, statSync, type WriteStream, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UsageError } from './args.js';
import type { EngineState, FailureRecord } from './engine.js';
import { toJsonLine } from './engine.js';
import { formatBytes, formatCount, formatDuration, formatRate, table } from './format.js';
import { paint } from './progress.js';
import type { WorkerRecord, WorkerTracker } from './workers.js';

export interface Breach {
  index: number | null;
  /** The worker that went over the limit, when the error says. */
  workerId?: number;
  code: string;
  kind: string;
  limit?: unknown;
  observed?: unknown;
  /** true when corral's error did not say so and the command recognised V8's own out-of-memory abort. */
  inferred: boolean;
}

const HEAP_ABORT =
  /heap out of memory|Reached heap limit|Allocation failed - JavaScript heap|CALL_AND_RETRY_LAST/;

/** Receives every failed item: writes it to --errors (if given), counts breaches, keeps a few examples. */
export class FailureLog {
  readonly first: FailureRecord[] = [];
  readonly breaches: Breach[] = [];
  readonly path: string | undefined;
  private readonly stream: WriteStream | undefined;
  private error: Error | undefined;
  /** Bytes written to the errors file. */
  bytes = 0;

  constructor(
    file: { path: string; stream: WriteStream } | undefined,
    private readonly keep = 5,
  ) {
    this.path = file?.path;
    this.stream = file?.stream;
    this.stream?.on('error', (e) => {
      this.error = e;
    });
  }

  add(record: FailureRecord): void {
    if (this.first.length < this.keep) this.first.push(record);
    const e = record.error;
    if (e.code === 'ERR_MEMORY_LIMIT' || e.code === 'ERR_CPU_TIME_LIMIT') {
      this.breaches.push({
        index: record.index,
        code: e.code,
        kind: e.code === 'ERR_CPU_TIME_LIMIT' ? 'cpu-time' : String(e.kind ?? 'memory'),
        limit: e.limit,
        observed: e.observed,
        ...(typeof e.workerId === 'number' ? { workerId: e.workerId } : {}),
        inferred: false,
      });
    } else if (e.code === 'ERR_WORKER_CRASHED' && HEAP_ABORT.test(e.message)) {
      this.breaches.push({
        index: record.index,
        code: e.code,
        kind: 'heap',
        ...(typeof e.workerId === 'number' ? { workerId: e.workerId } : {}),
        inferred: true,
      });
    }
    if (this.stream && !this.error) {
      const line = `${toJsonLine(record)}\n`;
      this.bytes += Buffer.byteLength(line);
      this.stream.write(line);
    }
  }

  /** Resolves once every line so far is written (see cli/journal.ts). */
  settled(): Promise<void> {
    const s = this.stream;
    if (!s) return Promise.resolve();
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => s.write('', (e) => (e ? reject(e) : resolve())));
  }

  /** Ends the file; rejects with the error that kept a failure from being written, if any. */
  async close(): Promise<void> {
    const s = this.stream;
    if (!s) return;
    // A stream that failed already emitted its 'error' and 'close': waiting for them hung, and
    // with nothing else to wait for the process ended without an exit status.
    if (!this.error && !s.destroyed) {
      await new Promise<void>((resolve) => {
        s.once('close', resolve);
        s.once('error', () => resolve());
        s.end();
      });
    }
    if (this.error) throw new Error(`cannot write the --errors file ${this.path}: ${this.error.message}`);
  }
}

export interface RunReport {
  command: string;
  task: string;
  module: string;
  startedAt: string;
  wallMs: number;
  /** Of wallMs, the time until the workers had loaded the module (before the first item). */
  startupMs: number | null;
  options: Record<string, unknown>;
  /** The engine's own counts, and how many results reached the output. */
  items: Pick<EngineState, 'read' | 'done' | 'succeeded' | 'failed' | 'cancelled' | 'discarded'> & {
    written: number;
  };
  throughput: number;
  failures: { byCode: Record<string, number>; first: FailureRecord[]; file: string | null };
  breaches: { total: number; byKind: Record<string, number>; list: Breach[] };
  recycles: number;
  crashes: number;
  timeouts: number;
  /** Descriptors left open by tasks, counted with --detect-leaks. */
  leakedFds: number;
  workers: (Omit<WorkerRecord, 'rss' | 'startedAt' | 'exit'> & {
    exit: { reason: string; signal: string | null; exitCode: number | null } | null;
  })[];
  parentPeakRss: number | null;
  stopped: string | null;
  /** 1-based input line a stopped run can resume from (e.g. `tail -n +N`), null when all input was read. */
  resumeLine: number | null;
  /** --journal: its file, and the items a --resume found finished by the runs before (not counted above). */
  journal?: { file: string; skipped: number; failedBefore: number };
  exitCode: number;
}

export function buildReport(args: {
  command: string;
  task: string;
  module: string;
  startedAt: Date;
  wallMs: number;
  startupMs?: number;
  options: Record<string, unknown>;
  state: EngineState;
  written: number;
  failures: FailureLog;
  tracker: WorkerTracker;
  exitCode: number;
}): RunReport {
  const { state, failures, tracker } = args;
  const byKind: Record<string, number> = {};
  const breachOf = new Map<number, string>();
  for (const b of failures.breaches) {
    byKind[b.kind] = (byKind[b.kind] ?? 0) + 1;
    if (b.workerId !== undefined) breachOf.set(b.workerId, b.kind);
  }
  return {
    command: args.command,
    task: args.task,
    module: args.module,
    startedAt: args.startedAt.toISOString(),
    wallMs: Math.round(args.wallMs),
    startupMs: args.startupMs === undefined ? null : Math.round(args.startupMs),
    options: args.options,
    items: {
      read: state.read,
      done: state.done,
      succeeded: state.succeeded,
      failed: state.failed,
      cancelled: state.cancelled,
      discarded: state.discarded,
      written: args.written,
    },
    throughput: args.wallMs > 0 ? (state.done / args.wallMs) * 1000 : 0,
    failures: {
      byCode: Object.fromEntries([...state.failuresByCode].sort((a, b) => b[1] - a[1])),
      first: failures.first,
      file: failures.path ?? null,
    },
    breaches: {
      total: Math.max(
        failures.breaches.length,
        tracker.breaches + failures.breaches.filter((b) => b.inferred).length,
      ),
      byKind,
      list: failures.breaches.slice(0, 100),
    },
    recycles: Math.max(tracker.recycles, tracker.poolRecycles),
    // Deaths that were limit breaches are counted as breaches, not crashes.
    crashes: Math.max(
      0,
      tracker.crashes -
        tracker.list().filter((w) => w.exit?.reason === 'crashed' && breachOf.has(w.id)).length,
    ),
    timeouts: tracker.timeouts,
    leakedFds: tracker.leakedFds,
    workers: tracker.list().map((w) => ({
      id: w.id,
      runtime: w.runtime,
      pid: w.pid,
      threadId: w.threadId,
      tasks: w.tasks,
      peakRss: w.peakRss,
      peakRssSource: w.peakRssSource,
      exit: w.exit
        ? {
            // A worker that died of a limit (V8's heap abort is a crash to the pool) says which one.
            reason:
              w.exit.reason === 'crashed' && breachOf.has(w.id)
                ? `${breachOf.get(w.id)} limit`
                : w.exit.reason,
            signal: w.exit.signal,
            exitCode: w.exit.exitCode,
          }
        : null,
    })),
    parentPeakRss: tracker.parentPeak,
    stopped: state.stopReason,
    resumeLine: state.resumeIndex === null ? null : state.resumeIndex + 1,
    exitCode: args.exitCode,
  };
}

const STOPPED: Record<string, string> = {
  interrupted: 'stopped by Ctrl-C: input reading stopped, everything read was finished and written',
  terminated:
    'terminated by a second Ctrl-C: running items were abandoned; results after the first of them were not written, to keep the order',
  'fail-fast': 'stopped at the first failure (--fail-fast or --chunksize N)',
  'output-closed': 'stopped because the output was closed by its reader',
  fatal: 'stopped: the task cannot run at all',
};

function exitText(w: RunReport['workers'][number]): string {
  if (!w.exit) return 'running';
  if (w.exit.reason !== 'crashed' && !w.exit.signal) return w.exit.reason;
  if (w.exit.reason !== 'crashed') return `${w.exit.reason} (${w.exit.signal})`;
  const how = w.exit.signal
    ? ` (${w.exit.signal})`
    : w.exit.exitCode !== null
      ? ` (exit code ${w.exit.exitCode})`
      : '';
  return `${w.exit.reason}${how}`;
}

/** --report: the report as indented JSON. */
/** Before any worker starts: a --report that cannot be written is said now, not after the whole run. */
export function checkReportPath(path: string): void {
  let directory = false;
  try {
    directory = statSync(path).isDirectory();
  } catch {
    // Not there yet: its directory must be.
  }
  try {
    if (directory) throw new Error('it is a directory');
    accessSync(dirname(resolve(path)), constants.W_OK);
  } catch (error) {
    throw new UsageError(`--report ${path}: cannot write it (${(error as Error).message})`);
  }
}

/**
 * Writes the report; false (said on stderr) when it cannot be written. The run's own exit status
 * stands; a run that was otherwise fine exits 2 (it printed a stack trace as an internal error).
 */
export function writeReportFile(path: string, report: RunReport): boolean {
  try {
    writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
    return true;
  } catch (error) {
    process.stderr.write(`corral: cannot write --report ${path}: ${(error as Error).message}\n`);
    return false;
  }
}

export function formatSummary(r: RunReport, title: string): string {
  const lines: string[] = [];
  lines.push(paint.bold(title));
  const it = r.items;
  const failed = it.failed > 0 ? paint.red(`${formatCount(it.failed)} failed`) : '0 failed';
  lines.push(
    `  items     ${formatCount(it.done)} done of ${formatCount(it.read)} read: ${paint.green(`${formatCount(it.succeeded)} ok`)}, ${failed}` +
      (it.cancelled ? `, ${formatCount(it.cancelled)} not finished` : '') +
      (it.discarded ? `, ${formatCount(it.discarded)} finished after a cancelled one and not written` : ''),
  );
  if (it.failed > 0) {
    const codes = Object.entries(r.failures.byCode)
      .map(([code, n]) => `${code} ${formatCount(n)}`)
      .join(', ');
    lines.push(`  failures  ${codes}`);
  }
  lines.push(
    `  time      ${formatDuration(r.wallMs)} wall${r.startupMs !== null ? ` (${formatDuration(r.startupMs)} of it starting workers)` : ''}, ${formatRate(r.throughput)}`,
  );
  const kinds = Object.entries(r.breaches.byKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const inferred = r.breaches.list.some((b) => b.inferred) ? ' (V8 heap abort recognised in the crash)' : '';
  lines.push(
    `  limits    ${r.breaches.total ? paint.yellow(`${r.breaches.total} breach${r.breaches.total > 1 ? 'es' : ''}: ${kinds}${inferred}`) : '0 breaches'}, ` +
      `${r.recycles} recycled, ${r.crashes} crashed, ${r.timeouts} timed out` +
      (r.leakedFds > 0 ? `, ${paint.yellow(`${r.leakedFds} descriptors leaked`)}` : ''),
  );
  const rows = [['worker', 'runtime', 'pid/thread', 'tasks', 'peak RSS', 'ended']];
  for (const w of r.workers) {
    rows.push([
      String(w.id),
      w.runtime,
      w.pid !== undefined ? `pid ${w.pid}` : w.threadId !== undefined ? `thread ${w.threadId}` : '-',
      formatCount(w.tasks),
      `${formatBytes(w.peakRss)}${w.peakRssSource === 'shared-process' ? '*' : ''}`,
      exitText(w),
    ]);
  }
  if (r.workers.length > 0) {
    lines.push('  workers', table(rows, '    '));
    if (r.workers.some((w) => w.peakRssSource === 'shared-process')) {
      lines.push(`    * worker threads share this process: the figure is its peak RSS`);
    } else lines.push(`    this process (the parent): peak RSS ${formatBytes(r.parentPeakRss)}`);
  }
  if (r.stopped) lines.push(paint.yellow(`  ${STOPPED[r.stopped] ?? r.stopped}`));
  if (r.journal && r.journal.skipped > 0) {
    lines.push(
      `  resumed: ${formatCount(r.journal.skipped)} items finished before were skipped (${r.journal.file})${r.journal.failedBefore > 0 ? `; ${formatCount(r.journal.failedBefore)} of them had failed` : ''}`,
    );
  }
  if (r.resumeLine !== null && r.command === 'run') {
    lines.push(
      r.journal
        ? `  to finish it, run the same command with --resume (the journal ${r.journal.file} says where it stopped)`
        : `  to resume, start from input line ${formatCount(r.resumeLine)} (e.g. tail -n +${r.resumeLine} FILE)`,
    );
  }
  if (r.failures.first.length > 0) {
    lines.push(
      r.failures.file
        ? `  failed items are in ${r.failures.file}; the first:`
        : `  failed items (use --errors FILE to keep them all):`,
    );
    for (const f of r.failures.first) {
      const msg = f.error.message.split('\n')[0]!;
      lines.push(
        `    #${f.index ?? '?'}  ${f.error.code}  ${msg.length > 160 ? `${msg.slice(0, 157)}...` : msg}`,
      );
    }
    if (it.failed > r.failures.first.length) {
      lines.push(`    ... and ${formatCount(it.failed - r.failures.first.length)} more`);
    }
  }
  return lines.join('\n');
}
