/**
 * Locating this process's cgroups and reading their CPU and memory limits (Linux, v1, v2 and hybrid hosts).
 *
 * Everything here is best effort: a missing or malformed file means "no limit known", never an exception,
 * because a pool must still start on macOS, in odd containers, or under a locked-down /sys.
 */

import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

export type CgroupVersion = 1 | 2;

/** A cgroup directory of one hierarchy, with the mount point that bounds the walk up. */
export interface CgroupDir {
  version: CgroupVersion;
  /** The process's own cgroup directory (already prefixed with sysfsRoot). */
  dir: string;
  /** The hierarchy's mount point (prefixed); parents above it are not visible to us. */
  mountPoint: string;
}

export interface CgroupRoots {
  procRoot: string;
  sysfsRoot: string;
}

interface MountEntry {
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

interface CgroupLine {
  /** Empty for the v2 line `0::/path`. */
  controllers: string[];
  path: string;
}

export function readText(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** mountinfo escapes space, tab, newline and backslash as `\ooo` octal, so paths with them still split on ' '. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

function parseMountInfo(text: string): MountEntry[] {
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    // Optional fields (shared:N, master:N...) vary in number; the ' - ' separator is the only fixed anchor.
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields.length < dash + 4) continue;
    mounts.push({
      root: unescapeMountPath(fields[3]!),
      mountPoint: unescapeMountPath(fields[4]!),
      fsType: fields[dash + 1]!,
      superOptions: fields[dash + 3]!.split(','),
    });
  }
  return mounts;
}

function parseProcCgroup(text: string): CgroupLine[] {
  const lines: CgroupLine[] = [];
  for (const line of text.split('\n')) {
    // The path itself may contain ':', so only the first two separate fields.
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const controllers = line.slice(first + 1, second);
    lines.push({ controllers: controllers ? controllers.split(',') : [], path: line.slice(second + 1) });
  }
  return lines;
}

/**
 * Maps a path from /proc/self/cgroup onto a mount. The mount's root field is the part of the hierarchy the
 * mount exposes: inside a container it is often the container's own cgroup, so the listed path must be made
 * relative to it. A path outside that root (host cgroup namespace seen from a container) or one that does
 * not exist here can only be approximated by the mount point itself.
 */
function resolveDir(mount: MountEntry, cgroupPath: string, sysfsRoot: string): CgroupDir {
  const mountPoint = withoutTrailingSlash(join(sysfsRoot, mount.mountPoint));
  let relative: string | null = null;
  if (mount.root === '/') relative = cgroupPath;
  else if (cgroupPath === mount.root || cgroupPath.startsWith(`${mount.root}/`)) {
    relative = cgroupPath.slice(mount.root.length);
  }
  const candidate = relative === null ? mountPoint : withoutTrailingSlash(join(mountPoint, relative));
  const dir = isDirectory(candidate) ? candidate : mountPoint;
  return { version: mount.fsType === 'cgroup2' ? 2 : 1, dir, mountPoint };
}

/** The walk up compares directories as strings, so `/sys/fs/cgroup/` must equal the mount point. */
function withoutTrailingSlash(path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/** Of several mounts of one hierarchy (bind mounts), prefer the one whose root contains our cgroup. */
function pickMount(mounts: MountEntry[], cgroupPath: string): MountEntry | undefined {
  const containing = mounts
    .filter((m) => m.root === '/' || cgroupPath === m.root || cgroupPath.startsWith(`${m.root}/`))
    .sort((a, b) => b.root.length - a.root.length);
  return containing[0] ?? mounts[0];
}

/**
 * Finds the cgroup directory that governs `controller` ('cpu' or 'memory') for this process, or null when
 * no hierarchy carries it. On hybrid hosts both a v2 line and v1 lines exist and the v2 mount may hold only
 * e.g. hugetlb, so v2 is trusted only when its cgroup.controllers names the controller.
 */
export function findCgroup(controller: string, roots: CgroupRoots): CgroupDir | null {
  const cgroupText = readText(join(roots.procRoot, 'self', 'cgroup'));
  const mountText = readText(join(roots.procRoot, 'self', 'mountinfo'));
  if (cgroupText === null || mountText === null) return null;
  const lines = parseProcCgroup(cgroupText);
  const mounts = parseMountInfo(mountText);

  let v2: CgroupDir | null = null;
  let v2Listed: boolean | null = null;
  const v2Line = lines.find((l) => l.controllers.length === 0);
  const v2Mount =
    v2Line &&
    pickMount(
      mounts.filter((m) => m.fsType === 'cgroup2'),
      v2Line.path,
    );
  if (v2Line && v2Mount) {
    v2 = resolveDir(v2Mount, v2Line.path, roots.sysfsRoot);
    const listed = readText(join(v2.mountPoint, 'cgroup.controllers'));
    v2Listed = listed === null ? null : listed.trim().split(/\s+/).includes(controller);
  }
  if (v2 && v2Listed === true) return v2;

  // A v1 line names its controllers alone (`1:cpu:/`) or co-mounted (`4:cpu,cpuacct:/`): match by membership.
  const v1Line = lines.find((l) => l.controllers.includes(controller));
  const v1Mount =
    v1Line &&
    pickMount(
      mounts.filter((m) => m.fsType === 'cgroup' && m.superOptions.includes(controller)),
      v1Line.path,
    );
  if (v1Line && v1Mount) return resolveDir(v1Mount, v1Line.path, roots.sysfsRoot);

  // An unreadable controller list on a v2-only host is not evidence against v2.
  return v2Listed === null ? v2 : null;
}

/**
 * Calls `read` on the process's cgroup directory and every parent up to the mount point and returns the
 * smallest value with the directory it came from: a parent's limit binds all of its children, and the
 * kernel does not copy it down into the child's own files.
 */
export function minUpTree(
  cgroup: CgroupDir,
  read: (dir: string) => number | null,
): { value: number; dir: string } | null {
  let best: { value: number; dir: string } | null = null;
  let dir = cgroup.dir;
  for (;;) {
    const value = read(dir);
    if (value !== null && (best === null || value < best.value)) best = { value, dir };
    if (dir === cgroup.mountPoint || !dir.startsWith(`${cgroup.mountPoint}/`)) break;
    dir = dirname(dir);
  }
  return best;
}

/** CPU quota in cores for one directory (fractional, e.g. 1.5), or null for none/unreadable. */
export function readCpuQuota(version: CgroupVersion, dir: string): number | null {
  if (version === 2) {
    const fields = readText(join(dir, 'cpu.max'))?.trim().split(/\s+/);
    if (!fields || fields[0] === 'max') return null;
    // The kernel always writes both fields; 100000 µs is its default period if one ever is absent.
    return ratio(fields[0], fields[1] ?? '100000');
  }
  const quota = readText(join(dir, 'cpu.cfs_quota_us'))?.trim();
  const period = readText(join(dir, 'cpu.cfs_period_us'))?.trim();
  if (quota === undefined || period === undefined) return null;
  return ratio(quota, period);
}

function ratio(quota: string | undefined, period: string): number | null {
  if (quota === undefined || !/^\d+$/.test(quota) || !/^\d+$/.test(period)) return null; // v1 "-1" = none
  const q = Number(quota);
  const p = Number(period);
  return q > 0 && p > 0 ? q / p : null;
}

/** v1 reports "unlimited" as LONG_MAX rounded down to a page (9223372036854771712); anything that large is no limit. */
const V1_UNLIMITED = 2n ** 62n;

/** Memory limit in bytes for one directory, or null for none/unreadable. */
export function readMemoryLimit(version: CgroupVersion, dir: string): number | null {
  const file = version === 2 ? 'memory.max' : 'memory.limit_in_bytes';
  const text = readText(join(dir, file))?.trim();
  if (text === undefined || !/^\d+$/.test(text)) return null; // v2 "max"
  // BigInt because the v1 sentinel is beyond 2^53 and must not be rounded before the comparison.
  const bytes = BigInt(text);
  return bytes >= V1_UNLIMITED ? null : Number(bytes);
}

/** Current memory charged to the process's own cgroup (it includes page cache, not only RSS). */
export function readMemoryUsage(version: CgroupVersion, dir: string): number | null {
  const file = version === 2 ? 'memory.current' : 'memory.usage_in_bytes';
  const text = readText(join(dir, file))?.trim();
  return text !== undefined && /^\d+$/.test(text) ? Number(text) : null;
}
