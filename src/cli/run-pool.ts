/**
 * The pool of `corral run`, from start to close: it starts the workers, checks the export before any input
 * is read, then drives the engine over the input with progress and Ctrl-C handling.
 */
import type { ObserveServer } from '../index.js';
import { type CliPool, Engine, type EngineState } from './engine.js';
import { type LineSource, LineWriter } from './io.js';
import type { JournalStart } from './journal.js';
import { closePool, createPool, handleSignals, SetupError, workerEnv } from './pool-setup.js';
import { Progress, type ProgressMode, paint, useColor } from './progress.js';
import { FailureLog } from './report.js';
import type { RunConfig } from './run-args.js';
import { type DivertedStdout, divertStdout, itemsFromLines, type RunOutput } from './run-io.js';
import { WorkerTracker } from './workers.js';

/**
 * --metrics-port and --dashboard: their servers, started once the module loaded. A port that cannot be
 * had is a setup error (exit 2), and the run does not start.
 */
async function startServers(
  config: RunConfig,
  started: StartedPool,
  source: LineSource,
  output: RunOutput,
  state: () => EngineState | undefined,
): Promise<ObserveServer[]> {
  const { pool } = started;
  const servers: ObserveServer[] = [];
  const say = (text: string): void => {
    if (!config.quiet) process.stderr.write(`${started.mode === 'bar' ? '\r\x1b[K' : ''}${text}\n`);
  };
  // Items in all, for the dashboard's ETA: exact once the input is read, else estimated from its size.
  const total = (): number | undefined => {
    const s = state();
    if (!s) return undefined;
    if (s.inputDone) return s.read;
    if (source.size === null || source.bytesRead === 0) return undefined;
    return Math.round((s.read * source.size) / source.bytesRead);
  };
  try {
    if (config.metricsPort !== undefined) {
      const s = await pool.serveMetrics({ port: config.metricsPort, host: config.host });
      servers.push(s);
      say(`corral: metrics at ${s.url}metrics`);
    }
    if (config.dashboardPort !== undefined) {
      const d = await pool.dashboard({
        port: config.dashboardPort,
        host: config.host,
        title: `corral run ${config.modulePath}#${config.task}`,
        total,
      });
      servers.push(d);
      // Printed even with --quiet: without it a free port cannot be found.
      process.stderr.write(`corral: dashboard at ${d.url}\n`);
    }
  } catch (error) {
    for (const s of servers) await s.close();
    await pool.terminate();
    started.diverted.restore();
    source.close();
    output.abandon();
    const flag = servers.length === 0 && config.metricsPort !== undefined ? '--metrics-port' : '--dashboard';
    throw new SetupError(`${flag}: ${(error as Error).message}`);
  }
  return servers;
}

const PROBE_TASK = '#corral:probe-exports';

/**
 * Loads the module in a worker and checks the export before any input is read: a typo in the export
 * name is a setup error (exit 2) with the list of what the module does export, not N failed items.
 */
export async function checkExport(pool: CliPool, modulePath: string, task: string): Promise<void> {
  try {
    await pool.apply(PROBE_TASK, [undefined]);
  } catch (error) {
    const e = error as { code?: string; available?: string[]; message?: string };
    if (e.code === 'ERR_UNKNOWN_TASK' && Array.isArray(e.available)) {
      if (e.available.includes(task)) return;
      throw new SetupError(
        `${modulePath} has no function export named '${task}'; it exports: ${
          e.available.length ? e.available.join(', ') : '(no functions)'
        }`,
      );
    }
    throw new SetupError(e.message ?? String(error));
  }
  throw new SetupError(`${modulePath} exports a task named '${PROBE_TASK}'?`);
}

export function isFatal(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ERR_MODULE_LOAD' || code === 'ERR_UNKNOWN_TASK' || code === 'ERR_WORKER_START';
}

function describeFlags(flag: string, config: RunConfig): string {
  const o = config.poolOptions;
  const limits = (o.limits ?? {}) as Record<string, unknown>;
  if (flag === 'the limit flags') {
    const given = Object.entries(limits).map(
      ([k, val]) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${val}`,
    );
    return given.join(' ');
  }
  return flag;
}

export interface StartedPool {
  pool: CliPool;
  tracker: WorkerTracker;
  mode: ProgressMode;
  diverted: DivertedStdout;
}

/** Creates the pool and checks the export; on failure, what it opened is closed again (and the source). */
export async function startPool(config: RunConfig, source: LineSource): Promise<StartedPool> {
  const options = { ...config.poolOptions, env: workerEnv() };
  // From here on, what worker threads print (even while their module loads) goes to stderr.
  const diverted = divertStdout();
  let pool: CliPool;
  try {
    pool = createPool(options, (flag) => describeFlags(flag, config));
  } catch (error) {
    diverted.restore();
    source.close();
    throw error;
  }
  const tracker = new WorkerTracker(pool);
  tracker.start();
  const mode: ProgressMode = config.quiet ? 'off' : process.stderr.isTTY ? 'bar' : 'plain';
  paint.on = useColor(process.stderr);
  if (mode === 'bar') {
    if (config.input === undefined && process.stdin.isTTY) {
      process.stderr.write('corral: reading JSON Lines from the terminal; Ctrl-D ends the input\n');
    }
    process.stderr.write(`\r\x1b[Kcorral: loading ${config.modulePath} in the workers...`);
  }
  try {
    await checkExport(pool, config.modulePath, config.task);
  } catch (error) {
    if (mode === 'bar') process.stderr.write('\r\x1b[K');
    source.close();
    tracker.stop();
    await pool.terminate();
    diverted.restore();
    throw error;
  }
  tracker.countFromNow();
  return { pool, tracker, mode, diverted };
}

export interface EngineRun {
  state: EngineState;
  writer: LineWriter;
  failures: FailureLog;
}

/** Maps the task over the input until it ends or Ctrl-C; the pool is closed and the output flushed. */
export async function runEngine(
  config: RunConfig,
  source: LineSource,
  started: StartedPool,
  output: RunOutput,
  journalStart?: JournalStart,
): Promise<EngineRun> {
  const { pool, tracker, mode, diverted } = started;
  const outStream = output.stream;
  const failures = new FailureLog(output.errors);
  let engine: Engine | undefined;
  let outputError: Error | undefined;
  const servers = await startServers(config, started, source, output, () => engine?.state);
  const writer = new LineWriter(
    outStream,
    output.owned ? (chunk, cb) => outStream.write(chunk, cb) : diverted.write,
    output.owned,
    (error) => {
      // Its reader went away (| head): a normal end. Anything else (ENOSPC, EIO) loses results: the
      // run fails, as it does when the file cannot be opened (it exited 0, "closed by its reader").
      if ((error as { code?: string }).code === 'EPIPE') engine?.stop('output-closed');
      else {
        outputError ??= new Error(`cannot write the output: ${error.message}`);
        if (engine) {
          engine.state.fatal ??= outputError;
          engine.stop('fatal');
        }
      }
    },
  );
  const journal = journalStart?.open(
    {
      fd: output.outFd!,
      get bytes() {
        return writer.bytes;
      },
      settled: () => writer.settled(),
    },
    output.errors && {
      fd: output.errors.fd,
      get bytes() {
        return failures.bytes;
      },
      settled: () => failures.settled(),
    },
  );
  if (journalStart && journalStart.skipped > 0 && mode !== 'off') {
    process.stderr.write(
      `corral: resuming ${config.journal}: ${journalStart.skipped} items finished before are skipped\n`,
    );
  }
  engine = new Engine({
    pool,
    task: config.task,
    source: itemsFromLines(source, config.lines, journalStart?.skip),
    out: writer,
    ordered: config.ordered,
    withIndex: config.withIndex,
    failFast: config.failFast,
    window: config.window,
    slots: config.slots,
    chunksize: config.chunksize,
    call: {},
    onFailure: (record) => {
      failures.add(record);
      if (record.index !== null) journal?.finished(record.index, true);
    },
    onResult: journal && ((index) => journal.finished(index)),
    onSettle: () => tracker.maybeSample(),
    isFatal,
  });
  const eng = engine;

  let note: string | undefined;
  const progress = new Progress(mode, () => ({
    done: eng.state.done,
    failed: eng.state.failed,
    read: eng.state.read,
    inputDone: eng.state.inputDone,
    bytesRead: source.bytesRead,
    bytesTotal: source.size,
    linesSeen: source.linesSeen,
    memory: tracker.memoryNow,
    workers: tracker.workers.size,
    ...(note
      ? { note: eng.state.stopReason === 'terminated' ? note : `${note}: ${eng.state.inflight} in flight` }
      : {}),
  }));
  const unhook = handleSignals({
    onStop: () => {
      note = 'stopping (Ctrl-C again to abandon running items)';
      if (mode === 'off' || mode === 'plain')
        process.stderr.write(
          `corral: stopping: no more input is read; finishing ${eng.state.inflight} running items (Ctrl-C again to abandon them)\n`,
        );
      eng.stop('interrupted');
      source.close();
    },
    onTerminate: () => {
      note = 'terminating';
      void eng.terminate();
    },
  });
  progress.start();

  let state: EngineState;
  try {
    state = await eng.run();
  } catch (error) {
    progress.stop();
    diverted.restore();
    await pool.terminate();
    await journal?.close().catch(() => {});
    for (const s of servers) await s.close();
    // What was logged so far is kept; the output file is let go unfinished.
    await failures.close().catch(() => {});
    output.abandon();
    throw error;
  } finally {
    source.close();
    tracker.sample();
    tracker.stop();
  }
  await closePool(pool, state);
  tracker.sample();
  await journal?.close();
  for (const s of servers) await s.close();
  await writer.end();
  progress.stop();
  unhook();
  diverted.restore();
  try {
    await failures.close();
  } catch (error) {
    state.fatal ??= error;
  }
  if (outputError) state.fatal ??= outputError;
  return { state, writer, failures };
}
