/**
 * How many CPUs and how much memory this process may really use.
 *
 * `os.cpus().length` counts the machine, not the container: under a cgroup CPU quota (docker `--cpus`,
 * Kubernetes limits) sizing a pool by it oversubscribes and every worker gets throttled. Node 20's
 * `os.availableParallelism()` (libuv 1.46) honours only the affinity mask, and newer libuv misses the
 * `N:cpu:/` v1 layout and takes the top-most v2 limit rather than the strictest, so the quota is read here.
 */

import os from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import {
  type CgroupRoots,
  findCgroup,
  minUpTree,
  readCpuQuota,
  readMemoryLimit,
  readMemoryUsage,
  readText,
} from './cgroup.js';

export interface CpuInfo {
  /** What `cpuCount()` returns: the smallest limit that applies, floored, at least 1. */
  effective: number;
  /** `os.cpus().length`. */
  cores: number;
  /** `os.availableParallelism()`. */
  availableParallelism: number;
  /** CPUs in this process's affinity mask (`Cpus_allowed_list` in /proc/self/status); null if unreadable. */
  affinity: number | null;
  /** cgroup CPU quota in cores (quota / period, may be fractional such as 1.5); null = no limit. */
  quota: number | null;
  decidedBy: 'cores' | 'affinity' | 'quota' | 'env';
  /**
   * The cgroup directory the quota was read from (the strictest ancestor when a parent limits harder), or
   * the process's own cgroup directory when no quota is set; null when no hierarchy carries the cpu controller.
   */
  cgroup: { version: 1 | 2; path: string } | null;
}

export interface ProbeOptions {
  /** Where procfs is mounted; default '/proc'. */
  procRoot?: string;
  /** Prefix for the absolute mount points listed in mountinfo; default '' (the real root). */
  sysfsRoot?: string;
  /** Where `CORRAL_CPU_COUNT` is looked up; default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

export interface MemoryInfo {
  /** `os.totalmem()`. */
  total: number;
  /** `MemAvailable` from /proc/meminfo (machine-wide, not per cgroup); `os.freemem()` where that is missing. */
  available: number;
  /** Strictest cgroup memory limit from the process's cgroup up to the mount root; null = none. */
  cgroupLimit: number | null;
  /** Bytes charged to the process's own cgroup, page cache included; null if unreadable. */
  cgroupUsage: number | null;
  cgroupVersion: 1 | 2 | null;
  /** `min(total, cgroupLimit)`. */
  limit: number;
  decidedBy: 'physical' | 'cgroup';
}

const ENV_CPU_COUNT = 'CORRAL_CPU_COUNT';

function roots(options: ProbeOptions | undefined): CgroupRoots {
  return { procRoot: options?.procRoot ?? '/proc', sysfsRoot: options?.sysfsRoot ?? '' };
}

/** An explicit count beats every probe: it is how users correct a probe that guessed wrong. */
function envCpuCount(env: NodeJS.ProcessEnv): number | null {
  const raw = env[ENV_CPU_COUNT];
  // `CORRAL_CPU_COUNT= cmd` is the shell idiom for "unset", not a request for zero CPUs.
  if (raw === undefined || raw.trim() === '') return null;
  const text = raw.trim();
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) {
    throw new ConfigError(ENV_CPU_COUNT, `must be a positive integer, got "${raw}"`);
  }
  return value;
}

/** Counts a cpulist such as `0-3,8,10-11`; null when it is absent or not in that format. */
function readAffinity(procRoot: string): number | null {
  const status = readText(join(procRoot, 'self', 'status'));
  const list = status?.match(/^Cpus_allowed_list:\s*(\S+)\s*$/m)?.[1];
  if (!list) return null;
  let count = 0;
  for (const part of list.split(',')) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!range) return null;
    const from = Number(range[1]);
    const to = range[2] === undefined ? from : Number(range[2]);
    if (to < from) return null;
    count += to - from + 1;
  }
  return count > 0 ? count : null;
}

export function probeCpus(options?: ProbeOptions): CpuInfo {
  const { procRoot, sysfsRoot } = roots(options);
  const override = envCpuCount(options?.env ?? process.env);
  const cores = os.cpus().length;
  const availableParallelism = os.availableParallelism();
  const affinity = readAffinity(procRoot);

  let quota: number | null = null;
  let cgroup: CpuInfo['cgroup'] = null;
  const found = findCgroup('cpu', { procRoot, sysfsRoot });
  if (found) {
    const strictest = minUpTree(found, (dir) => readCpuQuota(found.version, dir));
    quota = strictest?.value ?? null;
    cgroup = { version: found.version, path: strictest?.dir ?? found.dir };
  }

  const bound = Math.min(availableParallelism, affinity ?? Infinity, quota ?? Infinity);
  const effective = Math.max(1, Math.floor(bound));
  const base = { cores, availableParallelism, affinity, quota, cgroup };
  if (override !== null) return { effective: override, decidedBy: 'env', ...base };

  let decidedBy: CpuInfo['decidedBy'];
  // A limit that does not go below the machine (quota 4 on 2 cores, full affinity mask) decides nothing.
  if (effective >= (cores || availableParallelism)) decidedBy = 'cores';
  else if (quota !== null && Math.max(1, Math.floor(quota)) === effective) decidedBy = 'quota';
  // availableParallelism below the mask can only come from libuv's own quota reading; it is still "not cores".
  else decidedBy = 'affinity';
  return { effective, decidedBy, ...base };
}

let cached: number | undefined;

/**
 * Number of workers a CPU-bound pool should run. Cached for the default options (the environment, quota and
 * mask are read once per process); pass options to probe afresh.
 */
export function cpuCount(options?: ProbeOptions): number {
  const isDefault =
    options === undefined ||
    (options.procRoot === undefined && options.sysfsRoot === undefined && options.env === undefined);
  if (!isDefault) return probeCpus(options).effective;
  cached ??= probeCpus().effective;
  return cached;
}

function readMemAvailable(procRoot: string): number | null {
  const kib = readText(join(procRoot, 'meminfo'))?.match(/^MemAvailable:\s*(\d+)\s*kB/m)?.[1];
  return kib === undefined ? null : Number(kib) * 1024;
}

export function probeMemory(options?: ProbeOptions): MemoryInfo {
  const { procRoot, sysfsRoot } = roots(options);
  const total = os.totalmem();
  // MemFree alone undercounts: reclaimable page cache is available to us, and MemAvailable accounts for it.
  const available = readMemAvailable(procRoot) ?? os.freemem();

  let cgroupLimit: number | null = null;
  let cgroupUsage: number | null = null;
  let cgroupVersion: 1 | 2 | null = null;
  const found = findCgroup('memory', { procRoot, sysfsRoot });
  if (found) {
    cgroupVersion = found.version;
    cgroupLimit = minUpTree(found, (dir) => readMemoryLimit(found.version, dir))?.value ?? null;
    cgroupUsage = readMemoryUsage(found.version, found.dir);
  }
  const limited = cgroupLimit !== null && cgroupLimit < total;
  return {
    total,
    available,
    cgroupLimit,
    cgroupUsage,
    cgroupVersion,
    limit: limited ? cgroupLimit! : total,
    decidedBy: limited ? 'cgroup' : 'physical',
  };
}

/**
 * Default size of a pool for I/O-bound tasks: 2 x cpus, at least 2.
 *
 * I/O tasks spend most of their time waiting, so while one worker waits another can use the CPU: sizing by
 * cores alone would leave CPUs idle. Each I/O worker also runs several tasks at once on its event loop, so the
 * pool's real concurrency is already a multiple of its size; a small factor keeps memory and file descriptors
 * (4 per thread worker) in check instead of scaling workers with the number of outstanding requests. The
 * floor of 2 keeps one slow task from stalling every other on a 1-CPU quota.
 */
export function ioPoolSize(cpus: number): number {
  if (!Number.isFinite(cpus) || cpus < 0) {
    throw new ConfigError('cpus', `must be a non-negative number, got ${String(cpus)}`);
  }
  return Math.max(2, 2 * Math.floor(cpus));
}
