/**
 * `corral info`: what this machine and container let the process use. From the library's `systemInfo()`
 * when it exports one; otherwise assembled from `probeCpus()` and `probeMemory()` plus what the command
 * reads itself (rlimits, /dev/shm), and the report says which parts only systemInfo() can give.
 */
import { statfsSync } from 'node:fs';
import * as corral from '../index.js';
import { cpuCount, probeCpus, probeMemory } from '../index.js';
import { type FlagSpec, formatHelp, parseFlags } from './args.js';
import { formatBytes } from './format.js';
import { readRlimits } from './procfs.js';
import { paint, useColor } from './progress.js';

const FLAGS: FlagSpec[] = [
  { name: 'json', type: 'boolean', default: 'off', help: 'print JSON for machines' },
  { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
];

interface Shm {
  path: string;
  size: number;
  free: number;
}

function readShm(): Shm | null {
  try {
    const s = statfsSync('/dev/shm');
    return { path: '/dev/shm', size: s.blocks * s.bsize, free: s.bavail * s.bsize };
  } catch {
    return null;
  }
}

export function gatherInfo(): Record<string, unknown> {
  const lib = corral as unknown as Record<string, unknown>;
  const base = {
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
  if (typeof lib.systemInfo === 'function') {
    return { source: 'systemInfo()', ...base, ...(lib.systemInfo as () => Record<string, unknown>)() };
  }
  const cpus = probeCpus();
  const memory = probeMemory();
  const cpu = cpuCount();
  return {
    source: 'probeCpus() + probeMemory() + /proc (systemInfo() is not exported by this corral yet)',
    ...base,
    cpus,
    memory,
    rlimits: readRlimits(),
    shm: readShm(),
    native: null,
    poolSizes: { cpu, io: Math.max(2, 2 * cpu) },
    missing: [
      'native: whether the native addon (rlimits, parent-death signal) is built is only reported by systemInfo()',
      'rlimits and /dev/shm are read by the command itself from /proc/self/limits and statfs',
    ],
  };
}

const RLIMIT_NAMES: Record<string, string> = {
  'Max open files': 'open files',
  'Max address space': 'address space',
  'Max data size': 'data',
  'Max cpu time': 'cpu time',
  'Max resident set': 'resident set',
  'Max processes': 'processes',
  'Max stack size': 'stack',
};

function limitText(v: number | 'unlimited', units: string): string {
  if (v === 'unlimited') return 'unlimited';
  return units === 'bytes' ? formatBytes(v) : `${v}${units === 'seconds' ? ' s' : ''}`;
}

function formatProbed(info: Record<string, unknown>): string {
  const cpus = info.cpus as ReturnType<typeof probeCpus>;
  const memory = info.memory as ReturnType<typeof probeMemory>;
  const rl = info.rlimits as ReturnType<typeof readRlimits>;
  const shm = info.shm as Shm | null;
  const pools = info.poolSizes as { cpu: number; io: number };
  const lines = [
    paint.bold(`corral info  (Node ${info.node}, ${info.platform})`),
    ...cpuAndMemory(cpus, memory),
  ];
  if (rl) {
    const shown = rl
      .filter((r) => RLIMIT_NAMES[r.name])
      .map((r) => {
        const soft = limitText(r.soft, r.units);
        const hard = limitText(r.hard, r.units);
        return `${RLIMIT_NAMES[r.name]} ${soft}${hard !== soft ? ` (hard ${hard})` : ''}`;
      });
    lines.push(`  rlimits     ${shown.join(', ')}`);
  } else lines.push('  rlimits     unknown (/proc/self/limits not readable)');
  lines.push(
    shm
      ? `  /dev/shm    ${formatBytes(shm.size)}, ${formatBytes(shm.free)} free`
      : '  /dev/shm    not available',
  );
  lines.push(
    `  native      ${paint.yellow('unknown')}: only systemInfo() can say, and this corral does not export it yet`,
  );
  lines.push(
    `  pool sizes  ${pools.cpu} workers for CPU-bound work, ${pools.io} for I/O-bound (workers: 'auto')`,
  );
  return lines.join('\n');
}

type Rl = { soft: number | null; hard: number | null };

/** The shape systemInfo() has in this corral (src/limits/info.ts); anything else is printed generically. */
function looksLikeSystemInfo(info: Record<string, unknown>): boolean {
  const i = info as Record<string, Record<string, unknown> | undefined>;
  return (
    typeof i.cpus?.effective === 'number' &&
    typeof i.memory?.limit === 'number' &&
    typeof i.rlimits === 'object' &&
    typeof i.poolSize?.cpu === 'number' &&
    typeof i.native?.available === 'boolean'
  );
}

function formatSystemInfo(info: Record<string, unknown>): string {
  const cpus = info.cpus as ReturnType<typeof probeCpus>;
  const memory = info.memory as ReturnType<typeof probeMemory>;
  const rl = info.rlimits as Record<string, Rl>;
  const shm = info.shm as Shm | null;
  const native = info.native as { available: boolean; path?: string; reason?: string; fix?: string };
  const caps = (info.capabilities ?? {}) as Record<string, unknown>;
  const pools = info.poolSize as { cpu: number; io: number };
  const lines = [paint.bold(`corral info  (Node ${info.node}, ${info.platform})`)];
  lines.push(...cpuAndMemory(cpus, memory));
  const unit: Record<string, 'bytes' | 'seconds' | ''> = {
    addressSpace: 'bytes',
    data: 'bytes',
    rss: 'bytes',
    stack: 'bytes',
    cpuTime: 'seconds',
  };
  const names: Record<string, string> = {
    openFiles: 'open files',
    addressSpace: 'address space',
    data: 'data',
    cpuTime: 'cpu time',
    rss: 'resident set',
    stack: 'stack',
    processes: 'processes',
  };
  const shown = Object.entries(rl).map(([k, v]) => {
    const show = (x: number | null) => limitText(x === null ? 'unlimited' : x, unit[k] ?? '');
    const soft = show(v.soft);
    const hard = show(v.hard);
    return `${names[k] ?? k} ${soft}${hard !== soft ? ` (hard ${hard})` : ''}`;
  });
  lines.push(`  rlimits     ${shown.join(', ')}`);
  lines.push(
    shm
      ? `  /dev/shm    ${formatBytes(shm.size)}, ${formatBytes(shm.free)} free`
      : '  /dev/shm    not available',
  );
  lines.push(
    native.available
      ? `  native      ${paint.green('built')} (${native.path}): rlimits and the parent-death signal work`
      : `  native      ${paint.yellow('missing')}: ${native.reason ?? ''}; limits other than heap and rss are refused${native.fix ? `. Fix: ${native.fix}` : ''}`,
  );
  const shared = info.sharedMemory as { crossProcess?: boolean; reason?: string; fix?: string } | undefined;
  if (shared && typeof shared.crossProcess === 'boolean') {
    lines.push(
      shared.crossProcess
        ? `  shared mem  ${paint.green('available')}: segments in /dev/shm can be shared between worker processes`
        : `  shared mem  ${paint.yellow('threads only')}${shared.reason ? `: ${shared.reason}` : ''}${shared.fix ? `. Fix: ${shared.fix}` : ''}`,
    );
  }
  if (typeof caps.minAddressSpace === 'number' || typeof caps.minData === 'number') {
    lines.push(
      `  floors      this Node starts under --address-space >= ${formatBytes(caps.minAddressSpace as number)}, --data >= ${formatBytes(caps.minData as number)}` +
        (caps.rssWatchdog === false ? '; no rss watchdog on this platform' : ''),
    );
  }
  lines.push(
    `  pool sizes  ${pools.cpu} workers for CPU-bound work, ${pools.io} for I/O-bound (workers: 'auto')`,
  );
  return lines.join('\n');
}

function cpuAndMemory(cpus: ReturnType<typeof probeCpus>, memory: ReturnType<typeof probeMemory>): string[] {
  const why: Record<string, string> = {
    cores: 'all cores are usable',
    affinity: 'the CPU affinity mask allows fewer',
    quota: 'the cgroup CPU quota allows fewer',
    env: 'CORRAL_CPU_COUNT says so',
  };
  return [
    `  CPUs        ${paint.bold(String(cpus.effective))} usable: ${why[cpus.decidedBy] ?? cpus.decidedBy}` +
      ` (cores ${cpus.cores}, availableParallelism ${cpus.availableParallelism}, affinity ${cpus.affinity ?? '?'},` +
      ` cgroup quota ${cpus.quota ?? 'none'}${cpus.cgroup ? ` in cgroup v${cpus.cgroup.version} ${cpus.cgroup.path}` : ''})`,
    `  memory      limit ${paint.bold(formatBytes(memory.limit))} (${memory.decidedBy === 'cgroup' ? `cgroup v${memory.cgroupVersion} limit` : 'physical memory, no cgroup limit'}),` +
      ` available ${formatBytes(memory.available)}` +
      (memory.cgroupUsage !== null ? `, cgroup usage ${formatBytes(memory.cgroupUsage)}` : ''),
  ];
}

/** Whatever shape systemInfo() has: nested keys as dotted paths, memory-like numbers also humanised. */
function formatGeneric(info: Record<string, unknown>): string {
  const lines = [paint.bold(`corral info  (Node ${info.node}, ${info.platform}; from systemInfo())`)];
  const walk = (value: unknown, path: string): void => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) if (k !== 'source') walk(v, path ? `${path}.${k}` : k);
      return;
    }
    let text = Array.isArray(value) ? value.map((v) => JSON.stringify(v)).join(', ') : String(value);
    if (
      typeof value === 'number' &&
      value >= 1024 * 1024 &&
      /mem|size|limit|avail|total|free|rss|bytes|shm|heap/i.test(path)
    ) {
      text = `${formatBytes(value)} (${value})`;
    }
    lines.push(`  ${path.padEnd(32)} ${text}`);
  };
  walk(info, '');
  return lines.join('\n');
}

export async function infoCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags('info', argv, FLAGS);
  if (values.help) {
    process.stdout.write(
      `${formatHelp('corral info [--json]', 'What this machine and container let corral use: effective CPUs and why, memory limit and\navailable memory, rlimits, /dev/shm, native support, and the pool sizes corral would choose.', FLAGS)}\n`,
    );
    return 0;
  }
  const info = gatherInfo();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return 0;
  }
  paint.on = useColor(process.stdout);
  const text = !String(info.source).startsWith('systemInfo')
    ? formatProbed(info)
    : looksLikeSystemInfo(info)
      ? formatSystemInfo(info)
      : formatGeneric(info);
  process.stdout.write(`${text}\n`);
  return 0;
}
