/**
 * The flags that make a local pool, in one typed table shared by `corral run` and `corral worker`
 * (a worker host runs a local pool under the same limits): their specs for parsing and --help, and
 * the PoolOptions they make. POOL_OPTION_FLAGS (run-args.ts) checks every option has its flag.
 */
import { cpuCount, type PoolOptions } from '../index.js';
import {
  durationValue,
  type FlagSpec,
  parseChoiceFlag,
  parseIntFlag,
  sizeValue,
  UsageError,
} from './args.js';
import { workersValue } from './pool-setup.js';

export function poolFlags(): FlagSpec[] {
  const cpus = cpuCount();
  return [
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
  ];
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

export interface PoolFromFlags {
  poolOptions: PoolOptions & Record<string, unknown>;
  workers: PoolOptions['workers'] & {};
  kind: 'cpu' | 'io';
  concurrency: number | undefined;
}

/** The pool options the flags of poolFlags() say, for the task module at `modulePath`. */
export function poolOptionsFromFlags(
  v: Record<string, string | boolean | undefined>,
  modulePath: string,
): PoolFromFlags {
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

  const poolOptions: PoolOptions & Record<string, unknown> = { module: modulePath, workers, kind };
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

  return { poolOptions, workers, kind, concurrency };
}
