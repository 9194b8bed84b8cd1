/**
 * `corral run <module>#<export>`: maps an exported function over JSON Lines, like GNU parallel for
 * JavaScript functions, under the pool's resource limits.
 */
import { createWriteStream, openSync, writeFileSync } from 'node:fs';
import { cpuCount, Pool, type PoolOptions } from '../index.js';
import {
  durationValue,
  type FlagSpec,
  formatHelp,
  parseChoiceFlag,
  parseFlags,
  parseIntFlag,
  sizeValue,
  UsageError,
} from './args.js';
import { type CliPool, Engine, type EngineState, type SourceItem } from './engine.js';
import { type LineSource, LineWriter, openLineSource } from './io.js';
import { Progress, type ProgressMode, paint, useColor } from './progress.js';
import { buildReport, FailureLog, formatSummary, type RunReport } from './report.js';
import { WorkerTracker } from './workers.js';

/** Exit statuses: documented in --help. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** A problem with the setup rather than the items (module, export, pool options): exit status 2. */
export class SetupError extends Error {}

function runFlags(): FlagSpec[] {
  const cpus = cpuCount();
  return [
    {
      name: 'input',
      short: 'i',
      type: 'string',
      value: 'FILE',
      default: 'stdin',
      help: "JSON Lines to read; '-' is stdin",
      group: 'Input and output',
    },
    {
      name: 'output',
      short: 'o',
      type: 'string',
      value: 'FILE',
      default: 'stdout',
      help: 'where results go, one JSON line per item',
      group: 'Input and output',
    },
    {
      name: 'errors',
      short: 'e',
      type: 'string',
      value: 'FILE',
      default: 'first few in the summary',
      help: 'failed items as JSON lines { index, input, error: { code, message } }',
      group: 'Input and output',
    },
    {
      name: 'report',
      type: 'string',
      value: 'FILE.json',
      default: 'none',
      help: 'write the summary as JSON',
      group: 'Input and output',
    },
    {
      name: 'lines',
      type: 'boolean',
      default: 'off',
      help: 'each input line is passed as a string, not parsed as JSON',
      group: 'Input and output',
    },
    {
      name: 'unordered',
      type: 'boolean',
      default: 'off',
      help: 'write results as they finish instead of in input order',
      group: 'Input and output',
    },
    {
      name: 'with-index',
      type: 'boolean',
      default: 'off',
      help: 'write { "index": i, "result": r } (i = 0-based input line) instead of r',
      group: 'Input and output',
    },
    {
      name: 'fail-fast',
      type: 'boolean',
      default: 'off',
      help: 'stop reading at the first failed item (what runs still finishes)',
      group: 'Input and output',
    },
    {
      name: 'quiet',
      short: 'q',
      type: 'boolean',
      default: 'off',
      help: 'no progress and no summary on stderr',
      group: 'Input and output',
    },
    {
      name: 'workers',
      short: 'w',
      type: 'string',
      value: 'N|auto',
      default: `auto = ${cpus} here (2x for --kind io)`,
      help: 'number of workers',
      group: 'Pool',
    },
    {
      name: 'runtime',
      type: 'string',
      value: 'thread|process|auto',
      default: 'auto',
      help: 'worker threads or child processes (process-only limits make auto pick processes)',
      group: 'Pool',
    },
    {
      name: 'kind',
      type: 'string',
      value: 'cpu|io',
      default: 'cpu',
      help: 'cpu: one task at a time per worker; io: several (--concurrency)',
      group: 'Pool',
    },
    {
      name: 'concurrency',
      type: 'string',
      value: 'N',
      default: '1 for cpu, 8 for io',
      help: 'tasks a worker runs at once',
      group: 'Pool',
    },
    {
      name: 'timeout',
      short: 't',
      type: 'string',
      value: 'DUR',
      default: 'none',
      help: "longest an item may run ('500ms', '30s', '2m'; a bare number is ms); its worker is replaced",
      group: 'Pool',
    },
    {
      name: 'retries',
      type: 'string',
      value: 'N',
      default: '0',
      help: 'times a failed item is run again (crash, timeout or throw)',
      group: 'Pool',
    },
    {
      name: 'max-tasks-per-worker',
      type: 'string',
      value: 'N',
      default: 'unlimited',
      help: 'replace a worker after this many tasks',
      group: 'Pool',
    },
    {
      name: 'chunksize',
      type: 'string',
      value: 'N|auto',
      default: 'auto',
      help: 'auto: every item is its own task (a failure costs only that item). N: chunks of N through pool.imap, fastest for tiny tasks, but the first failure ends the run',
      group: 'Pool',
    },
    {
      name: 'window',
      type: 'string',
      value: 'N',
      default: 'workers x concurrency x 64, at least 256',
      help: 'most items between read and written (bounds memory; fewer while tasks are slow)',
      group: 'Pool',
    },
    {
      name: 'heap',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: "V8 heap limit of each worker ('256MiB', '1GiB', bytes)",
      group: 'Limits (per worker)',
    },
    {
      name: 'rss',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: 'resident memory of each worker process, watched and enforced',
      group: 'Limits (per worker)',
    },
    {
      name: 'address-space',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: 'RLIMIT_AS of each worker process',
      group: 'Limits (per worker)',
    },
    {
      name: 'data',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: 'RLIMIT_DATA of each worker process',
      group: 'Limits (per worker)',
    },
    {
      name: 'open-files',
      type: 'string',
      value: 'N',
      default: 'none',
      help: 'RLIMIT_NOFILE of each worker process',
      group: 'Limits (per worker)',
    },
    {
      name: 'cpu-time',
      type: 'string',
      value: 'S',
      default: 'none',
      help: 'RLIMIT_CPU of each worker process, in seconds',
      group: 'Limits (per worker)',
    },
    {
      name: 'memory-budget',
      type: 'string',
      value: 'SIZE|auto',
      default: 'none',
      help: 'keep the pool (all workers and this process) under this much memory',
      group: 'Limits (per worker)',
    },
    { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
  ];
}

const ABOUT = `Maps an exported function over JSON Lines: each input line is one JSON value, passed as the single
argument; each result is written as one JSON line, in input order unless --unordered. A failed item goes to
--errors (its output line is left out; use --with-index to line results up with inputs) and the run goes on.
Blank input lines are skipped. A line that is not valid JSON is a failed item with code ERR_INPUT_JSON.
Whatever tasks print to stdout goes to stderr, so the output holds results only.`;

const FOOTER = `<module>#<export>: a .js/.mjs/.cjs file and the name of a function it exports ('default' if omitted).

Exit status: 0 every item succeeded; 1 some items failed; 2 usage or setup error (bad flag, module not found,
unknown export, an option the pool refuses); 130 interrupted (Ctrl-C).
Ctrl-C once: stop reading input, finish what is running, write its results in order, print the summary.
Ctrl-C twice: stop the workers now (items not finished are reported as cancelled).

examples:
  corral run tasks.mjs#resize --input images.jsonl --output out.jsonl --errors failed.jsonl
  seq 1000 | corral run tasks.mjs#square --runtime process --heap 256MiB --timeout 30s > squares.jsonl`;

export function runHelp(): string {
  return formatHelp(
    'corral run <module>#<export> [options] [--input FILE] [--output FILE]',
    ABOUT,
    runFlags(),
    FOOTER,
  );
}

/** Flags whose values the pool validates, for messages that name the flag rather than the option. */
const OPTION_FLAGS: [RegExp, string][] = [
  [/^(options\.)?limits\.heap/, '--heap'],
  [/^(options\.)?limits\.rss/, '--rss'],
  [/^(options\.)?limits\.addressSpace/, '--address-space'],
  [/^(options\.)?limits\.data/, '--data'],
  [/^(options\.)?limits\.openFiles/, '--open-files'],
  [/^(options\.)?limits\.cpuTime/, '--cpu-time'],
  [/^(options\.)?limits/, 'the limit flags'],
  [/^(options\.)?memoryBudget/, '--memory-budget'],
  [/^(options\.)?taskTimeout/, '--timeout'],
  [/^(options\.)?workers/, '--workers'],
  [/^(options\.)?concurrency/, '--concurrency'],
  [/^(options\.)?retries/, '--retries'],
  [/^(options\.)?maxTasksPerWorker/, '--max-tasks-per-worker'],
  [/^(options\.)?runtime/, '--runtime'],
  [/^(options\.)?module/, '<module>'],
];

export function flagForOption(option: string | undefined): string | undefined {
  if (!option) return undefined;
  return OPTION_FLAGS.find(([re]) => re.test(option))?.[1];
}

export interface RunConfig {
  modulePath: string;
  task: string;
  poolOptions: PoolOptions & Record<string, unknown>;
  window: number;
  slots: number;
  chunksize: number | 'auto';
  ordered: boolean;
  withIndex: boolean;
  failFast: boolean;
  lines: boolean;
  quiet: boolean;
  input: string | undefined;
  output: string | undefined;
  errors: string | undefined;
  report: string | undefined;
}

export function parseRunArgs(argv: string[]): RunConfig | 'help' {
  const { values: v, positionals } = parseFlags('run', argv, runFlags());
  if (v.help) return 'help';
  if (positionals.length === 0) {
    throw new UsageError('missing <module>#<export>, e.g. corral run ./tasks.mjs#score --input items.jsonl');
  }
  if (positionals.length > 1) {
    throw new UsageError(
      `expected one <module>#<export>, got ${positionals.length} arguments: ${positionals.join(' ')} (input goes to --input FILE or stdin)`,
    );
  }
  const target = positionals[0]!;
  const hash = target.lastIndexOf('#');
  const modulePath = hash >= 0 ? target.slice(0, hash) : target;
  const task = hash >= 0 ? target.slice(hash + 1) : 'default';
  if (!modulePath) throw new UsageError(`'${target}' names no module; expected <module>#<export>`);
  if (!task) throw new UsageError(`'${target}' names no export after '#'; expected <module>#<export>`);

  const str = (k: string) => v[k] as string | undefined;
  const kind =
    str('kind') === undefined ? 'cpu' : parseChoiceFlag('kind', str('kind')!, ['cpu', 'io'] as const);
  const runtime =
    str('runtime') === undefined
      ? undefined
      : parseChoiceFlag('runtime', str('runtime')!, ['thread', 'process', 'auto'] as const);
  const workers = str('workers') === undefined ? 'auto' : parseIntFlag('workers', str('workers')!, 1, true);
  const concurrency =
    str('concurrency') === undefined
      ? undefined
      : (parseIntFlag('concurrency', str('concurrency')!, 1) as number);
  const retries =
    str('retries') === undefined ? undefined : (parseIntFlag('retries', str('retries')!, 0) as number);
  const maxTasks =
    str('max-tasks-per-worker') === undefined
      ? undefined
      : (parseIntFlag('max-tasks-per-worker', str('max-tasks-per-worker')!, 1) as number);
  const chunksize =
    str('chunksize') === undefined ? 'auto' : parseIntFlag('chunksize', str('chunksize')!, 1, true);

  const limits: Record<string, unknown> = {};
  if (str('heap') !== undefined) limits.heap = sizeValue(str('heap')!);
  if (str('rss') !== undefined) limits.rss = sizeValue(str('rss')!);
  if (str('address-space') !== undefined) limits.addressSpace = sizeValue(str('address-space')!);
  if (str('data') !== undefined) limits.data = sizeValue(str('data')!);
  if (str('open-files') !== undefined) limits.openFiles = parseIntFlag('open-files', str('open-files')!, 1);
  if (str('cpu-time') !== undefined) {
    const raw = str('cpu-time')!;
    const s = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !(s > 0)) {
      throw new UsageError(`--cpu-time expects a number of seconds > 0, got '${raw}'`);
    }
    limits.cpuTime = s;
  }

  const poolOptions: RunConfig['poolOptions'] = { module: modulePath, workers, kind };
  if (runtime) poolOptions.runtime = runtime;
  if (concurrency !== undefined) poolOptions.concurrency = concurrency;
  if (str('timeout') !== undefined) poolOptions.taskTimeout = durationValue(str('timeout')!);
  if (retries !== undefined) poolOptions.retries = retries;
  if (maxTasks !== undefined) poolOptions.maxTasksPerWorker = maxTasks;
  if (Object.keys(limits).length > 0) poolOptions.limits = limits;
  if (str('memory-budget') !== undefined) {
    const raw = str('memory-budget')!;
    poolOptions.memoryBudget = raw === 'auto' ? 'auto' : sizeValue(raw);
  }

  const nWorkers = workers === 'auto' ? (kind === 'io' ? Math.max(2, 2 * cpuCount()) : cpuCount()) : workers;
  const perWorker = concurrency ?? (kind === 'io' ? 8 : 1);
  const window =
    str('window') === undefined
      ? Math.min(65_536, Math.max(256, nWorkers * perWorker * 64))
      : (parseIntFlag('window', str('window')!, 1) as number);

  const ordered = !v.unordered;
  if (v['with-index'] && !ordered && chunksize !== 'auto') {
    throw new UsageError(
      '--with-index with --unordered needs --chunksize auto: pool.imapUnordered does not say which input a result belongs to',
    );
  }
  return {
    modulePath,
    task,
    poolOptions,
    window,
    slots: nWorkers * perWorker,
    chunksize,
    ordered,
    withIndex: Boolean(v['with-index']),
    failFast: Boolean(v['fail-fast']),
    lines: Boolean(v.lines),
    quiet: Boolean(v.quiet),
    input: str('input'),
    output: str('output'),
    errors: str('errors'),
    report: str('report'),
  };
}

/** Lines to items: JSON parsing (or raw strings with --lines); blank lines are skipped in JSON mode. */
export async function* itemsFromLines(source: LineSource, raw: boolean): AsyncGenerator<SourceItem[]> {
  let index = 0;
  for await (const lines of source.batches()) {
    const items: SourceItem[] = [];
    for (const line of lines) {
      const i = index++;
      if (raw) {
        items.push({ index: i, value: line });
        continue;
      }
      if (line.trim() === '') continue;
      try {
        items.push({ index: i, value: JSON.parse(line) });
      } catch (error) {
        items.push({
          index: i,
          raw: line,
          error: {
            code: 'ERR_INPUT_JSON',
            message: `input line ${i + 1} is not valid JSON (${(error as Error).message}); use --lines to pass raw text`,
          },
        });
      }
    }
    if (items.length > 0) yield items;
  }
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

/** Creates the pool, turning a refused option into a setup error that names the flag. */
export function createPool(options: Record<string, unknown>, describeFlag: (f: string) => string): CliPool {
  try {
    return new Pool(options as unknown as PoolOptions) as unknown as CliPool;
  } catch (error) {
    const e = error as { code?: string; option?: string; message?: string };
    if (e.code === 'ERR_INVALID_OPTION' || e.code === 'ERR_NATIVE_UNAVAILABLE') {
      const flag = flagForOption(e.option);
      if (flag === '<module>') {
        throw new SetupError(`cannot use the task module: ${(e.message ?? '').replace(/^module: /, '')}`);
      }
      const refused = flag ? `${describeFlag(flag)}: ` : '';
      const unsupported =
        /unknown option/.test(e.message ?? '') && /limits|memoryBudget/.test(e.option ?? '');
      throw new SetupError(
        `${refused}${e.message}${unsupported ? '\n  (this version of the corral library does not support that option yet)' : ''}`,
      );
    }
    throw error;
  }
}

/** The env of process workers: the preload that sends task stdout to stderr and ignores Ctrl-C. */
export function workerEnv(): NodeJS.ProcessEnv {
  const preload = new URL('./worker-preload.js', import.meta.url).href;
  const existing = process.env.NODE_OPTIONS ? `${process.env.NODE_OPTIONS} ` : '';
  return { ...process.env, NODE_OPTIONS: `${existing}--import=${preload}` };
}

/** Sends writes to process.stdout (task output of worker threads lands there) to stderr; returns the real write. */
export function divertStdout(): {
  write: (chunk: string, cb: (e?: Error | null) => void) => boolean;
  restore(): void;
} {
  const stdout = process.stdout;
  const real = stdout.write.bind(stdout) as (chunk: string, cb: (e?: Error | null) => void) => boolean;
  const own = Object.getOwnPropertyDescriptor(stdout, 'write');
  stdout.write = ((...args: Parameters<typeof process.stderr.write>) =>
    process.stderr.write(...args)) as typeof process.stdout.write;
  return {
    write: real,
    restore() {
      if (own) Object.defineProperty(stdout, 'write', own);
      else delete (stdout as { write?: unknown }).write;
    },
  };
}

export interface SignalControl {
  /** First signal: stop taking input. */
  onStop(): void;
  /** Second signal: terminate now. */
  onTerminate(): void;
}

export function handleSignals(control: SignalControl): () => void {
  let count = 0;
  const handler = (): void => {
    count++;
    if (count === 1) control.onStop();
    else if (count === 2) control.onTerminate();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
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
  const source = openLineSource(config.input);
  let outStream: NodeJS.WritableStream & import('node:stream').Writable;
  let ownsOut = false;
  if (config.output !== undefined && config.output !== '-') {
    let fd: number;
    try {
      fd = openSync(config.output, 'w');
    } catch (error) {
      source.close();
      throw new UsageError(`cannot write --output ${config.output}: ${(error as Error).message}`);
    }
    outStream = createWriteStream('', { fd });
    ownsOut = true;
  } else outStream = process.stdout;
  if (config.errors) {
    try {
      openSync(config.errors, 'w');
    } catch (error) {
      source.close();
      throw new UsageError(`cannot write --errors ${config.errors}: ${(error as Error).message}`);
    }
  }

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
  const startupMs = performance.now() - t0;

  const failures = new FailureLog(config.errors);
  let engine: Engine | undefined;
  const writer = new LineWriter(
    outStream,
    ownsOut ? (chunk, cb) => outStream.write(chunk, cb) : diverted.write,
    ownsOut,
    (error) => {
      const code = (error as { code?: string }).code;
      if (code !== 'EPIPE') progress.log(`corral: cannot write the output: ${error.message}`);
      engine?.stop('output-closed');
    },
  );
  engine = new Engine({
    pool,
    task: config.task,
    source: itemsFromLines(source, config.lines),
    out: writer,
    ordered: config.ordered,
    withIndex: config.withIndex,
    failFast: config.failFast,
    window: config.window,
    slots: config.slots,
    chunksize: config.chunksize,
    call: {},
    onFailure: (record) => failures.add(record),
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
    throw error;
  } finally {
    source.close();
    tracker.sample();
    tracker.stop();
  }
  if (state.stopReason === 'terminated') await pool.terminate();
  else await pool.close();
  tracker.sample();
  await writer.end();
  progress.stop();
  unhook();
  diverted.restore();
  await failures.close();
  const wallMs = performance.now() - t0;

  if (state.fatal !== undefined) {
    throw new SetupError((state.fatal as Error).message ?? String(state.fatal));
  }
  const exitCode =
    state.stopReason === 'interrupted' || state.stopReason === 'terminated'
      ? EXIT.interrupted
      : state.failed > 0
        ? EXIT.failed
        : EXIT.ok;
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
    tracker,
    exitCode,
  });
  if (config.report) writeFileSync(config.report, `${JSON.stringify(report, null, 2)}\n`);
  if (!config.quiet)
    process.stderr.write(`${formatSummary(report, `corral run ${config.modulePath}#${config.task}`)}\n`);
  return exitCode;
}
