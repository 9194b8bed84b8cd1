/**
 * What the command reads from /proc itself: resident memory of worker processes (VmRSS, and VmHWM, the
 * kernel's high-water mark, which catches peaks between two samples) and this process's rlimits.
 * Linux only; elsewhere every reading is null and the summary says "-".
 */
import { readFileSync } from 'node:fs';

export interface ProcMemory {
  /** Resident set size now, bytes. */
  rss: number;
  /** Peak resident set size since the process started (VmHWM), bytes. */
  peak: number;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function kib(status: string, field: string): number | null {
  const m = new RegExp(`^${field}:\\s*(\\d+)\\s*kB`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : null;
}

/** Memory of one process; null when it is gone, a zombie, or /proc is not there. */
export function procMemory(pid: number | 'self'): ProcMemory | null {
  const status = readText(`/proc/${pid}/status`);
  if (!status) return null;
  const rss = kib(status, 'VmRSS');
  const peak = kib(status, 'VmHWM');
  if (rss === null || peak === null) return null;
  return { rss, peak };
}

export interface RlimitRow {
  name: string;
  soft: number | 'unlimited';
  hard: number | 'unlimited';
  units: string;
}

/** This process's resource limits, from /proc/self/limits; null where that file does not exist. */
export function readRlimits(): RlimitRow[] | null {
  const text = readText('/proc/self/limits');
  if (!text) return null;
  const rows: RlimitRow[] = [];
  for (const line of text.split('\n').slice(1)) {
    const m = /^(.+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$/.exec(line);
    if (!m) continue;
    const num = (v: string): number | 'unlimited' => (v === 'unlimited' ? v : Number(v));
    rows.push({ name: m[1]!.trim(), soft: num(m[2]!), hard: num(m[3]!), units: m[4] ?? '' });
  }
  return rows;
}
