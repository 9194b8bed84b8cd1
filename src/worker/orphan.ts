/**
 * A worker process must not outlive the pool's process, even when that process is SIGKILLed and
 * gets no chance to clean up. The kernel can do this for us (PR_SET_PDEATHSIG) when the native
 * addon is built; without it we fall back to noticing the IPC channel close, which works only when
 * the worker's event loop is free (a task stuck in a synchronous loop is not interrupted).
 */
import { constants } from 'node:os';
import { native } from '../native/index.js';

/**
 * `parent` is the pool's pid as the pool read it before starting this worker: reading process.ppid
 * here instead would be too late, since a parent that died meanwhile has already been replaced by
 * init (or a subreaper) and the check below would pass.
 */
export function guardAgainstOrphaning(parent: number): void {
  const binding = native();
  if (binding) {
    binding.setPdeathsig(constants.signals.SIGKILL);
    // The parent may have died between fork and prctl; then the signal will never come.
    if (binding.getppid() !== parent) process.kill(process.pid, 'SIGKILL');
  } else if (process.ppid !== parent) process.exit(0);
  process.on('disconnect', () => process.exit(0));
  // Re-parenting shows the parent is gone even when the channel close was missed.
  setInterval(() => {
    if (process.ppid !== parent) process.exit(0);
  }, 1000).unref();
}
