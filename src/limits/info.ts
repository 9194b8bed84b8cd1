/**
 * systemInfo(): what this machine and container let the process use, and what corral would do with
 * it. Plain data, so the CLI and users print or serialise it as they like.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { heapGuardStatus, type NativeStatus, nativeStatus } from '../native/index.js';
import { type ShmStatus, shmStatus } from '../shm/index.js';
import { floorsFor } from './limits.js';
import { type CpuInfo, ioPoolSize, type MemoryInfo, probeCpus, probeMemory } from './system.js';

export interface RlimitInfo {
  soft: number | null;
  hard: number | null;
}

export interface SystemInfo {
  node: string;
  platform: string;
  cpus: CpuInfo;
  memory: MemoryInfo;
  /** This process's rlimits (null = unlimited), from /proc/self/limits. */
  rlimits: Record<
    'addressSpace' | 'data' | 'openFiles' | 'cpuTime' | 'rss' | 'stack' | 'processes',
    RlimitInfo
  >;
  shm: { path: string; size: number; free: number } | null;
  native: NativeStatus;
  /** Shared memory: whether processes can share segments here (the per-Node-version addon), and the tracker. */
  sharedMemory: ShmStatus;
  /** What corral can enforce here, and the smallest limits this Node version starts under. */
  capabilities: {
    rlimits: boolean;
    parentDeathSignal: boolean;
    rssWatchdog: boolean;
    /**
     * A worker over limits.heap ends within ~100 ms of its heap filling (native/heap.cc), instead
     * of after V8's own seconds of futile collections.
     */
    heapGuard: boolean;
    minAddressSpace: number;
    minData: number;
  };
  /** Pool sizes corral chooses with workers: 'auto'. */
  poolSize: { cpu: number; io: number };
}

const LIMIT_NAMES: Record<string, keyof SystemInfo['rlimits']> = {
  'Max address space': 'addressSpace',
  'Max data size': 'data',
  'Max open files': 'openFiles',
  'Max cpu time': 'cpuTime',
  'Max resident set': 'rss',
  'Max stack size': 'stack',
  'Max processes': 'processes',
};

function readRlimits(): SystemInfo['rlimits'] {
  const out = {} as SystemInfo['rlimits'];
  for (const key of Object.values(LIMIT_NAMES)) out[key] = { soft: null, hard: null };
  let text = '';
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return out;
  }
  const value = (v: string | undefined): number | null =>
    v === undefined || v === 'unlimited' ? null : Number(v);
  for (const line of text.split('\n')) {
    for (const [label, key] of Object.entries(LIMIT_NAMES)) {
      if (line.startsWith(label)) {
        const [soft, hard] = line.slice(label.length).trim().split(/\s+/);
        out[key] = { soft: value(soft), hard: value(hard) };
      }
    }
  }
  return out;
}

function readShm(): SystemInfo['shm'] {
  try {
    const s = statfsSync('/dev/shm');
    return { path: '/dev/shm', size: s.blocks * s.bsize, free: s.bavail * s.bsize };
  } catch {
    return null;
  }
}

export function systemInfo(): SystemInfo {
  const cpus = probeCpus();
  const native = nativeStatus();
  const floors = floorsFor();
  const linux = process.platform === 'linux';
  return {
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    cpus,
    memory: probeMemory(),
    rlimits: readRlimits(),
    shm: readShm(),
    native,
    sharedMemory: shmStatus(),
    capabilities: {
      rlimits: native.available,
      parentDeathSignal: native.available,
      rssWatchdog: linux,
      heapGuard: heapGuardStatus().available,
      minAddressSpace: floors.addressSpace,
      minData: floors.data,
    },
    poolSize: { cpu: cpus.effective, io: ioPoolSize(cpus.effective) },
  };
}
