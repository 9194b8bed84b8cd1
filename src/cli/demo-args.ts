/** The command line of `corral demo`: its flags (one table for parsing and --help) and the config they make. */
import { cpuCount } from '../index.js';
import {
  type FlagSpec,
  formatHelp,
  type Parsed,
  parseChoiceFlag,
  parseIntFlag,
  sizeValue,
  UsageError,
} from './args.js';
import { workersValue } from './pool-setup.js';

export function demoFlags(): FlagSpec[] {
  return [
    {
      name: 'items',
      type: 'string',
      value: 'N',
      default: '4480 (an 80 x 56 grid)',
      help: 'about how many tiles to render',
    },
    {
      name: 'workers',
      short: 'w',
      type: 'string',
      value: 'N|auto',
      default: `auto = ${cpuCount()} here`,
      help: 'workers for the main run',
    },
    {
      name: 'runtime',
      type: 'string',
      value: 'process|thread',
      default: 'process',
      help: 'worker processes (limits enforced per process) or threads (heap limit only)',
    },
    { name: 'heap', type: 'string', value: 'SIZE', default: '64MiB', help: 'heap limit of each worker' },
    {
      name: 'rss',
      type: 'string',
      value: 'SIZE',
      default: '256MiB (process runtime)',
      help: 'resident memory limit of each worker process',
    },
    { name: 'report', type: 'string', value: 'FILE.json', help: 'also write the report as JSON' },
    {
      name: 'no-greedy',
      type: 'boolean',
      default: 'one greedy tile',
      help: 'leave out the tile that goes over the memory limit',
    },
    {
      name: 'no-live',
      type: 'boolean',
      default: 'live picture on a terminal',
      help: 'plain progress lines even on a terminal',
    },
    { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
  ];
}

export function demoHelp(): string {
  return formatHelp(
    'corral demo [--items N] [--workers N] [--runtime process|thread]',
    'Renders a Mandelbrot atlas of a few thousand tiles (generated here, no download) with renderTile from\nexamples/demo-tasks.mjs on every usable core, each worker under a memory limit. One tile is greedy on\npurpose: its worker goes over the heap limit and is replaced, and every other tile still finishes.\nThen a sample runs on one core, and the report shows the speedup, memory per worker and the breach.',
    demoFlags(),
  );
}

export interface DemoConfig {
  /** About how many tiles (the grid rounds it). */
  items: number;
  workers: number;
  runtime: 'process' | 'thread';
  heap: string | number;
  /** The heap limit in MiB, for V8's own flag when the library has no `limits` option. */
  heapMb: number;
  rss: string | number;
  /** Whether to include the tile that goes over the memory limit. */
  greedy: boolean;
  /** The live picture: on a terminal, unless --no-live. */
  live: boolean;
  report: string | undefined;
}

export function demoConfig(v: Parsed['values']): DemoConfig {
  const items = v.items === undefined ? 4480 : (parseIntFlag('items', v.items as string, 16) as number);
  const w = workersValue(v.workers as string | undefined);
  const workers = w === 'auto' ? cpuCount() : w;
  const runtime =
    v.runtime === undefined
      ? 'process'
      : parseChoiceFlag('runtime', v.runtime as string, ['process', 'thread'] as const);
  const heapRaw = (v.heap as string | undefined) ?? '64MiB';
  const heap = sizeValue(heapRaw);
  const heapMb = typeof heap === 'number' ? Math.max(16, Math.round(heap / 2 ** 20)) : parseMiB(heapRaw);
  const rss = sizeValue((v.rss as string | undefined) ?? '256MiB');
  return {
    items,
    workers,
    runtime,
    heap,
    heapMb,
    rss,
    greedy: !v['no-greedy'],
    live: process.stderr.isTTY === true && !v['no-live'],
    report: v.report as string | undefined,
  };
}

function parseMiB(raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw);
  if (!m) throw new UsageError(`--heap expects a size like 64MiB, got '${raw}'`);
  const unit = (m[2] || 'b').toLowerCase();
  const factor: Record<string, number> = {
    b: 1 / 2 ** 20,
    k: 1 / 1024,
    kib: 1 / 1024,
    kb: 1 / 1024,
    m: 1,
    mib: 1,
    mb: 1,
    g: 1024,
    gib: 1024,
    gb: 1024,
  };
  if (factor[unit] === undefined) throw new UsageError(`--heap expects a size like 64MiB, got '${raw}'`);
  return Math.max(16, Math.round(Number(m[1]) * factor[unit]!));
}
