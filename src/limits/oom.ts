/**
 * The kernel's OOM killer ends a process with a bare SIGKILL, which looks like anyone's kill. A
 * memory cgroup counts the processes of its own that any OOM killer took (`oom_kill` in v2's
 * memory.events, v1's memory.oom_control): a worker that died by SIGKILL while that count rose was
 * taken by it, which is a breach of the cgroup's memory limit (the container's, usually). The pool
 * re-reads the count as the worker reports (every 100 ms at most), so another process's OOM kill
 * long before this worker's death is not mistaken for it.
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

  /**
   * OOM kills of this cgroup's own processes so far (only its rise means anything). Not summed up
   * the tree, and v2's local count where the kernel has one: kills in sibling cgroups must not count.
   */
  kills(): number | undefined {
    const { version, dir } = this.cgroup;
    const text =
      version === 2
        ? (readText(join(dir, 'memory.events.local')) ?? readText(join(dir, 'memory.events')))
        : readText(join(dir, 'memory.oom_control'));
    const n = text?.match(/^oom_kill (\d+)$/m)?.[1];
    return n === undefined ? undefined : Number(n);
  }

  /** The memory limit that held: the smallest up the tree, or the machine's memory without one. */
  limit(): number {
    return minUpTree(this.cgroup, (dir) => readMemoryLimit(this.cgroup.version, dir))?.value ?? totalmem();
  }
}
