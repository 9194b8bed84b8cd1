/**
 * The kernel's OOM killer ends a process with a bare SIGKILL, which looks like anyone's kill. A
 * memory cgroup counts the processes of its own that any OOM killer took (`oom_kill` in v2's
 * memory.events, v1's memory.oom_control): a worker that died by SIGKILL while that count rose was
 * taken by it, which is a breach of the cgroup's memory limit (the container's, usually).
 */
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { type CgroupDir, findCgroup, minUpTree, readMemoryLimit, readText } from './cgroup.js';

export class OomWatch {
  private constructor(private readonly cgroup: CgroupDir) {}

  /** Watches the memory cgroup this process is in (its workers are born there), if it has one. */
  static forThisProcess(roots = { procRoot: '/proc', sysfsRoot: '' }): OomWatch | undefined {
    const cgroup = findCgroup('memory', roots);
    if (!cgroup) return undefined;
    const watch = new OomWatch(cgroup);
    return watch.kills() === undefined ? undefined : watch;
  }

  /** OOM kills counted in the cgroup and its parents so far (only its rise means anything). */
  kills(): number | undefined {
    const file = this.cgroup.version === 2 ? 'memory.events' : 'memory.oom_control';
    let total: number | undefined;
    let dir = this.cgroup.dir;
    for (;;) {
      const n = readText(join(dir, file))?.match(/^oom_kill (\d+)$/m)?.[1];
      if (n !== undefined) total = (total ?? 0) + Number(n);
      if (dir === this.cgroup.mountPoint || !dir.startsWith(`${this.cgroup.mountPoint}/`)) break;
      dir = join(dir, '..');
    }
    return total;
  }

  /** The memory limit that held: the smallest up the tree, or the machine's memory without one. */
  limit(): number {
    return minUpTree(this.cgroup, (dir) => readMemoryLimit(this.cgroup.version, dir))?.value ?? totalmem();
  }
}
