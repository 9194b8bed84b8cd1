/**
 * `corral run <module>#<export>`: maps an exported function over JSON Lines, like GNU parallel for
 * JavaScript functions, under the pool's resource limits.
 */
import { openLineSource } from './io.js';
import { type JournalStart, startJournal } from './journal.js';
import { EXIT, SetupError, wasInterrupted } from './pool-setup.js';
import { buildReport, checkReportPath, formatSummary, type RunReport, writeReportFile } from './report.js';
import { parseRunArgs, runHelp } from './run-args.js';
import { checkDistinctFiles, openOutputs } from './run-io.js';
import { runEngine, type StartedPool, startPool } from './run-pool.js';

// main.ts takes these two from here, beside runCommand.
export { EXIT, SetupError } from './pool-setup.js';

export async function runCommand(argv: string[]): Promise<number> {
  const parsed = parseRunArgs(argv);
  if (parsed === 'help') {
    process.stdout.write(`${runHelp()}\n`);
    return EXIT.ok;
  }
  const config = parsed;
  const started = new Date();
  const t0 = performance.now();

  // Open everything that can fail on a typo before any worker starts.
  checkDistinctFiles(config);
  if (config.report) checkReportPath(config.report);
  const source = openLineSource(config.input);
  let journal: JournalStart | undefined;
  try {
    journal = config.journal === undefined ? undefined : startJournal(config);
  } catch (error) {
    source.close();
    throw error;
  }
  const output = openOutputs(config, source, journal?.resumeAt);

  let setup: StartedPool;
  try {
    setup = await startPool(config, source);
  } catch (error) {
    output.abandon();
    throw error;
  }
  const startupMs = performance.now() - t0;

  const { state, writer, failures } = await runEngine(config, source, setup, output, journal);
  const wallMs = performance.now() - t0;

  if (state.fatal !== undefined) {
    throw new SetupError((state.fatal as Error).message ?? String(state.fatal));
  }
  // A resume exits as the whole run would have: items that failed before it count too.
  const failed = state.failed + (journal?.failedBefore ?? 0);
  const exitCode = wasInterrupted(state) ? EXIT.interrupted : failed > 0 ? EXIT.failed : EXIT.ok;
  const report: RunReport = buildReport({
    command: 'run',
    task: `${config.modulePath}#${config.task}`,
    module: config.modulePath,
    startedAt: started,
    wallMs,
    startupMs,
    options: {
      ...config.poolOptions,
      window: config.window,
      chunksize: config.chunksize,
      ordered: config.ordered,
    },
    state,
    written: writer.lines,
    failures,
    tracker: setup.tracker,
    exitCode,
  });
  if (journal) {
    report.journal = { file: config.journal!, skipped: journal.skipped, failedBefore: journal.failedBefore };
  }
  if (config.report && !writeReportFile(config.report, report) && exitCode === EXIT.ok) return EXIT.usage;
  if (!config.quiet)
    process.stderr.write(`${formatSummary(report, `corral run ${config.modulePath}#${config.task}`)}\n`);
  return exitCode;
}
