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

/** CPU time a process has used so far (user + system), in ms, from /proc/<pid>/stat. */
export function readCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
/** USER_HZ: 100 on every Linux build that matters (the kernel ABI fixes it for /proc). */
const CLOCK_TICKS = 100;

/** Highest resident memory a process has had (VmHWM). */
export function readPeakRss(pid: number | 'self'): number | undefined {
  return statusField(pid, 'VmHWM');
}
