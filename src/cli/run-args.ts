/**
 * The command line of `corral run`: its flags (one table for parsing and --help) and the config they make.
 */
import { cpuCount, type PoolOptions } from '../index.js';
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
import { workersValue } from './pool-setup.js';

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
      value: 'N|auto|MIN..MAX',
      default: `auto = ${cpus} here (2x for --kind io)`,
      help: 'number of workers; MIN..MAX: elastic, more while items wait, back to MIN when idle',
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
      help: "longest an item may run ('500ms', '30s', '2m', '1000h'; a bare number is ms; 'none': no limit); its worker is replaced",
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
      name: 'poison-after',
      type: 'string',
      value: 'N',
      default: '2',
      help: "workers an item may kill before it is quarantined (not retried; its crashes go to --errors); 'Infinity': never",
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
      name: 'cancel-grace',
      type: 'string',
      value: 'DUR',
      default: '1s',
      help: 'how long a timed-out item may take to return after its signal aborted, before its worker is stopped',
      group: 'Pool',
    },
    {
      name: 'idle-timeout',
      type: 'string',
      value: 'DUR',
      default: 'never',
      help: 'a worker idle this long exits; another starts when work arrives',
      group: 'Pool',
    },
    {
      name: 'teardown',
      type: 'string',
      value: 'EXPORT',
      default: 'none',
      help: 'an export of the module run once in each worker that retires in good order (idle, recycled, the end of the run)',
      group: 'Pool',
    },
    {
      name: 'stop-timeout',
      type: 'string',
      value: 'DUR',
      default: '5s',
      help: 'how long a worker told to stop (its teardown included) may take before it is killed',
      group: 'Pool',
    },
    {
      name: 'capture-output',
      type: 'boolean',
      help: "keep what an item's task writes to stdout/stderr and put it on its --errors line when it fails",
      group: 'Pool',
    },
    {
      name: 'initializer',
      type: 'string',
      value: 'EXPORT',
      default: 'none',
      help: "an export of the module run once in each worker before its first item (Python's initializer)",
      group: 'Pool',
    },
    {
      name: 'init-args',
      type: 'string',
      value: 'JSON',
      default: '[]',
      help: "the initializer's arguments, as a JSON array",
      group: 'Pool',
    },
    {
      name: 'exec-argv',
      type: 'string',
      value: "'FLAGS'",
      default: 'none',
      help: "Node flags for the workers, space-separated, e.g. '--max-semi-space-size=16 --no-warnings'",
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
      name: 'sample-interval',
      type: 'string',
      value: 'DUR',
      default: '100ms',
      help: 'how often worker memory is sampled (for --rss, --recycle-rss and --memory-budget)',
      group: 'Limits (per worker)',
    },
    {
      name: 'start-timeout',
      type: 'string',
      value: 'DUR',
      default: '20s',
      help: 'longest a worker may take to start before it is killed',
      group: 'Limits (per worker)',
    },
    {
      name: 'recycle-rss',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: 'retire a worker process between items once its resident memory is above this',
      group: 'Limits (per worker)',
    },
    {
      name: 'recycle-heap',
      type: 'string',
      value: 'SIZE',
      default: 'none',
      help: 'retire a worker between items once its V8 heap in use is above this',
      group: 'Limits (per worker)',
    },
    {
      name: 'detect-leaks',
      type: 'boolean',
      default: 'off',
      help: 'count descriptors before and after each item in process workers; a leak is reported in the summary',
      group: 'Limits (per worker)',
    },
    {
      name: 'recycle-on-leak',
      type: 'boolean',
      default: 'off',
      help: 'retire a worker process whose item leaked descriptors (implies --detect-leaks)',
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
    {
      name: 'journal',
      type: 'string',
      value: 'FILE',
      default: 'none',
      help: 'record finished input lines in FILE (fsync about 5 times a second, after the output), so that --resume can finish a run that was killed; needs --output FILE',
      group: 'Watch and resume',
    },
    {
      name: 'resume',
      type: 'boolean',
      default: 'off',
      help: 'finish the run --journal recorded: lines it holds are skipped, --output and --errors are cut back to what it holds and appended to (starts afresh if FILE does not exist yet)',
      group: 'Watch and resume',
    },
    {
      name: 'metrics-port',
      type: 'string',
      value: 'N',
      default: 'none',
      help: 'serve OpenMetrics / Prometheus text at http://HOST:N/metrics while the run lasts (0: any free port)',
      group: 'Watch and resume',
    },
    {
      name: 'dashboard',
      type: 'string',
      value: '[PORT]',
      default: 'off; PORT: any free one',
      help: 'serve a live dashboard of the pool at http://HOST:PORT/ while the run lasts (its address is printed)',
      group: 'Watch and resume',
    },
    {
      name: 'host',
      type: 'string',
      value: 'ADDRESS',
      default: '127.0.0.1',
      help: "the address --metrics-port and --dashboard listen on ('0.0.0.0': every interface)",
      group: 'Watch and resume',
    },
    { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
  ];
}

/** `--dashboard` takes an optional PORT: alone (or before something that is not a port) it means 0. */
function dashboardDefault(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (a === '--dashboard' && !/^\d+$/.test(argv[i + 1] ?? '')) out.push('--dashboard=0');
    else out.push(a);
  }
  return out;
}

const ABOUT = `Maps an exported function over JSON Lines: each input line is one JSON value, passed as the single
argument; each result is written as one JSON line, in input order unless --unordered. A failed item goes to
--errors (its output line is left out; use --with-index to line results up with inputs) and the run goes on.
Blank input lines are skipped. A line that is not valid JSON is a failed item with code ERR_INPUT_JSON, one
longer than a JavaScript string can hold (512 Mi characters) with code ERR_INPUT_TOO_LONG.
Whatever tasks print to stdout goes to stderr, so the output holds results only.`;

const footer =
  (): string => `<module>#<export>: a .js/.mjs/.cjs file and the name of a function it exports ('default' if omitted).

Every pool option has a flag above, except:
${notFlags()}

Exit status: 0 every item succeeded; 1 some items failed; 2 usage or setup error (bad flag, module not found,
unknown export, an option the pool refuses); 130 interrupted (Ctrl-C).
Ctrl-C once: stop reading input, finish what is running, write its results in order, print the summary.
Ctrl-C twice: stop the workers now (items not finished are reported as cancelled).

examples:
  corral run tasks.mjs#resize --input images.jsonl --output out.jsonl --errors failed.jsonl
  seq 1000 | corral run tasks.mjs#square --runtime process --heap 256MiB --timeout 30s > squares.jsonl`;

/**
 * Every pool option and the flag that sets it, or why none does. Typed over PoolOptions' keys, so a
 * new option does not compile until it is given a flag or a reason here (and so in --help).
 */
export const POOL_OPTION_FLAGS = {
  module: '<module>#<export>',
  runtime: '--runtime',
  workers: '--workers',
  kind: '--kind',
  concurrency: '--concurrency',
  taskTimeout: '--timeout',
  cancelGrace: '--cancel-grace',
  poisonAfter: '--poison-after',
  priorityAging: {
    none: 'a run is one map: priorities order calls of several callers, and it is the only one',
  },
  maxQueue: {
    none: 'the run already bounds what is queued with --window; a smaller maxQueue would only fail items',
  },
  maxTasksPerWorker: '--max-tasks-per-worker',
  retries: '--retries',
  initializer: '--initializer',
  teardown: '--teardown',
  stopTimeout: '--stop-timeout',
  captureOutput: '--capture-output',
  initArgs: '--init-args',
  idleTimeout: '--idle-timeout',
  execArgv: '--exec-argv',
  env: { none: "workers inherit corral's environment: set variables on the command, FOO=1 corral run ..." },
  limits:
    '--heap, --rss, --address-space, --data, --open-files, --cpu-time, --sample-interval, --start-timeout',
  recycle: '--recycle-rss, --recycle-heap, --recycle-on-leak (recycle.afterTasks: --max-tasks-per-worker)',
  memoryBudget: '--memory-budget',
  detectLeaks: '--detect-leaks',
} as const satisfies Record<keyof PoolOptions, string | { none: string }>;

function notFlags(): string {
  return Object.entries(POOL_OPTION_FLAGS)
    .flatMap(([option, flag]) => (typeof flag === 'string' ? [] : [`  ${option}: ${flag.none}`]))
    .join('\n');
}

/** `--init-args '[1, "a"]'`: a JSON array, as the initializer's arguments. */
function jsonArray(flag: string, raw: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new UsageError(`--${flag} expects a JSON array, e.g. '[1, "a"]': ${(error as Error).message}`);
  }
  if (!Array.isArray(value))
    throw new UsageError(`--${flag} expects a JSON array, e.g. '[1, "a"]', got ${raw}`);
  return value;
}

export function runHelp(): string {
  return formatHelp(
    'corral run <module>#<export> [options] [--input FILE] [--output FILE]',
    ABOUT,
    runFlags(),
    footer(),
  );
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
  journal: string | undefined;
  resume: boolean;
  metricsPort: number | undefined;
  dashboardPort: number | undefined;
  host: string;
}

export function parseRunArgs(argv: string[]): RunConfig | 'help' {
  const { values: v, positionals } = parseFlags('run', dashboardDefault(argv), runFlags());
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
  const elastic = /^(\d+)\.\.(\d+|auto)$/.exec(str('workers') ?? '');
  const workers = elastic
    ? {
        min: parseIntFlag('workers', elastic[1]!, 0) as number,
        max: elastic[2] === 'auto' ? ('auto' as const) : (parseIntFlag('workers', elastic[2]!, 1) as number),
      }
    : workersValue(str('workers'));
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
  const timeout = str('timeout') === undefined ? undefined : durationValue(str('timeout')!);
  if (timeout !== undefined) poolOptions.taskTimeout = timeout;
  if (retries !== undefined) poolOptions.retries = retries;
  const poison = str('poison-after');
  if (poison !== undefined) {
    poolOptions.poisonAfter = /^infinity$/i.test(poison)
      ? Infinity
      : (parseIntFlag('poison-after', poison, 1) as number);
  }
  if (maxTasks !== undefined) poolOptions.maxTasksPerWorker = maxTasks;
  if (str('memory-budget') !== undefined) {
    const raw = str('memory-budget')!;
    poolOptions.memoryBudget = raw === 'auto' ? 'auto' : sizeValue(raw);
  }
  if (str('cancel-grace') !== undefined) poolOptions.cancelGrace = durationValue(str('cancel-grace')!);
  if (str('idle-timeout') !== undefined) poolOptions.idleTimeout = durationValue(str('idle-timeout')!);
  if (str('initializer') !== undefined) poolOptions.initializer = str('initializer')!;
  if (str('teardown') !== undefined) poolOptions.teardown = str('teardown')!;
  if (str('stop-timeout') !== undefined) poolOptions.stopTimeout = durationValue(str('stop-timeout')!);
  if (v['capture-output']) poolOptions.captureOutput = true;
  if (str('init-args') !== undefined) poolOptions.initArgs = jsonArray('init-args', str('init-args')!);
  if (str('exec-argv') !== undefined) poolOptions.execArgv = str('exec-argv')!.split(/\s+/).filter(Boolean);
  if (str('sample-interval') !== undefined) limits.sampleInterval = durationValue(str('sample-interval')!);
  if (str('start-timeout') !== undefined) limits.startTimeout = durationValue(str('start-timeout')!);
  if (Object.keys(limits).length > 0) poolOptions.limits = limits;
  const recycle: Record<string, unknown> = {};
  if (str('recycle-rss') !== undefined) recycle.whenRssAbove = sizeValue(str('recycle-rss')!);
  if (str('recycle-heap') !== undefined) recycle.whenHeapAbove = sizeValue(str('recycle-heap')!);
  if (v['recycle-on-leak']) recycle.onLeak = true;
  if (Object.keys(recycle).length > 0) poolOptions.recycle = recycle;
  if (v['detect-leaks']) poolOptions.detectLeaks = true;

  const most = typeof workers === 'object' ? workers.max : workers;
  const nWorkers = most === 'auto' ? (kind === 'io' ? Math.max(2, 2 * cpuCount()) : cpuCount()) : most;
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
  const port = (flag: string): number | undefined => {
    const raw = str(flag);
    if (raw === undefined) return undefined;
    const n = parseIntFlag(flag, raw, 0) as number;
    if (n > 65535) throw new UsageError(`--${flag} expects a port number 0..65535, got ${raw}`);
    return n;
  };
  const journal = str('journal');
  if (v.resume && journal === undefined) {
    throw new UsageError('--resume needs the --journal FILE of the run to finish');
  }
  if (journal !== undefined) {
    if (str('output') === undefined || str('output') === '-') {
      throw new UsageError(
        '--journal needs --output FILE: a resumed run cuts the output back to what the journal holds and appends to it, which stdout cannot do',
      );
    }
    if (!ordered && chunksize !== 'auto') {
      throw new UsageError(
        '--journal with --unordered needs --chunksize auto: pool.imapUnordered does not say which input a result belongs to',
      );
    }
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
    journal,
    resume: Boolean(v.resume),
    metricsPort: port('metrics-port'),
    dashboardPort: port('dashboard'),
    host: str('host') ?? '127.0.0.1',
  };
}
