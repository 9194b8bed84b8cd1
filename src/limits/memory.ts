import { readFileSync } from 'node:fs';

function statusField(pid: number | 'self', field: string): number | undefined {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident memory of a process in bytes, from /proc (undefined once it is gone). */
export function readRss(pid: number): number | undefined {
  return statusField(pid, 'VmRSS');
}

/** Highest resident memory a process has had (VmHWM). */
export function readPeakRss(pid: number | 'self'): number | undefined {
  return statusField(pid, 'VmHWM');
}
