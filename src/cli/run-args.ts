/**
 * The command line of `corral run`: its flags (one table for parsing and --help) and the config they make.
 */
import { cpuCount, type PoolOptions } from '../index.js';
import { type FlagSpec, formatHelp, parseFlags, parseIntFlag, UsageError } from './args.js';
import { poolFlags, poolOptionsFromFlags } from './pool-flags.js';

function runFlags(): FlagSpec[] {
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
    ...poolFlags(),
    {
      name: 'redis',
      type: 'string',
      value: 'URL',
      default: 'none: this machine',
      help: 'run the items on the `corral worker` hosts serving --queue through this Redis (the pool flags then apply on the hosts, not here)',
      group: 'Beyond one machine',
    },
    {
      name: 'queue',
      type: 'string',
      value: 'NAME',
      default: 'none',
      help: 'the queue of --redis the worker hosts serve',
      group: 'Beyond one machine',
    },
    {
      name: 'host-wait',
      type: 'string',
      value: 'DURATION',
      default: '60s',
      help: 'with --redis: how long items may wait while no `corral worker` heartbeats on --queue before they fail (infinity: wait for hosts)',
      group: 'Beyond one machine',
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
Whatever tasks print to stdout goes to stderr, so the output holds results only (with --runtime
process also what bypasses console and process.stdout: a subprocess with inherited stdio, a write
to descriptor 1; threads share the descriptor with corral, so there such output lands in the results).`;

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
  backend: '--redis, --queue (the BullMQ backend: tasks run on `corral worker` hosts)',
} as const satisfies Record<keyof PoolOptions, string | { none: string }>;

function notFlags(): string {
  return Object.entries(POOL_OPTION_FLAGS)
    .flatMap(([option, flag]) => (typeof flag === 'string' ? [] : [`  ${option}: ${flag.none}`]))
    .join('\n');
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
  const { poolOptions, workers, kind, concurrency } = poolOptionsFromFlags(v, modulePath);
  const chunksize =
    str('chunksize') === undefined ? 'auto' : parseIntFlag('chunksize', str('chunksize')!, 1, true);
  const redis = str('redis');
  const queue = str('queue');
  if ((redis === undefined) !== (queue === undefined)) {
    throw new UsageError('--redis URL and --queue NAME go together: the worker hosts serve that queue there');
  }
  const hostWait = str('host-wait');
  if (hostWait !== undefined && redis === undefined) throw new UsageError('--host-wait goes with --redis');
  if (redis !== undefined) {
    poolOptions.backend = { bullmq: { connection: redis, queue: queue!, ...(hostWait ? { hostWait } : {}) } };
  }

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
