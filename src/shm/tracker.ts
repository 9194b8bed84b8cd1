/**
 * The cleanup tracker: a tiny native process (native/shm-tracker.c) that unlinks the
 * segments this process created once this process is gone, SIGKILL included.
 *
 * Protocol and guarantees (the C file has the details):
 *  - One tracker per creating process, started on the first segment created without
 *    `persist: true`, shared by all its threads (the addon keeps the pipe process-wide).
 *  - Its stdin is a pipe whose write end only this process holds (O_CLOEXEC: no child
 *    inherits it). The addon writes `+<inode> <name>` when it creates a segment and
 *    `-<name>` when it unlinks one; end-of-file means this process has exited, and the
 *    tracker then unlinks what is still listed (only while the name still refers to that
 *    inode) and exits itself.
 *  - Attaching never talks to the tracker, so a process that only attached can never
 *    cause an unlink (Python's resource_tracker fault), and nothing is printed.
 *  - Started detached (own session), so the Ctrl-C that kills our process group does not
 *    kill it before it has cleaned up.
 * If it cannot be started, segments still work and are still unlinked by close() and
 * orderly exits; only a hard kill would leak them. `trackerStatus()` reports why.
 */

import { closeSync, existsSync } from 'node:fs';
import { builtin } from '../lazy.js';
import type { ShmBinding } from '../native/index.js';

/** Wait this long after a failed start before trying again, not on every create(). */
const RETRY_MS = 5_000;

let lastFailure: { at: number; reason: string } | undefined;
let warned = false;

export interface TrackerStatus {
  /** Pid of this process' tracker; 0 until the first tracked segment, or when it could not start. */
  pid: number;
  /** Names it currently covers (created here, not persistent, not yet unlinked). */
  tracked: number;
  /** Why the last start failed, if it did. */
  error?: string;
}

export function trackerStatus(binding: ShmBinding | undefined): TrackerStatus {
  if (!binding) return { pid: 0, tracked: 0 };
  const state = binding.trackerState();
  return lastFailure ? { ...state, error: lastFailure.reason } : state;
}

/** Makes sure a tracker is running and listening to this process. Returns whether one is. */
export function ensureTracker(binding: ShmBinding, executable: string): boolean {
  if (binding.trackerState().pid !== 0) return true;
  if (lastFailure && Date.now() - lastFailure.at < RETRY_MS) return false;
  const why = start(binding, executable);
  if (why === undefined) {
    lastFailure = undefined;
    return true;
  }
  lastFailure = { at: Date.now(), reason: why };
  if (!warned) {
    warned = true;
    process.emitWarning(
      `corral could not start its shared-memory tracker (${why}); segments are still removed by close() ` +
        'and orderly exits, but one whose creator is killed outright will stay in /dev/shm',
      { code: 'CORRAL_SHM_TRACKER' },
    );
  }
  return false;
}

function start(binding: ShmBinding, executable: string): string | undefined {
  if (!existsSync(executable)) return `${executable} does not exist`;
  let fds: [number, number];
  try {
    fds = binding.pipe();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  const [readFd, writeFd] = fds;
  let pid: number | undefined;
  let failure: string | undefined;
  try {
    const child = builtin('node:child_process').spawn(executable, [], {
      detached: true,
      stdio: [readFd, 'ignore', 'ignore'],
    });
    // A failed exec is reported asynchronously; without a listener it would crash us.
    child.on('error', () => {});
    child.unref();
    pid = child.pid;
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
  } finally {
    closeSync(readFd);
  }
  if (pid === undefined) {
    closeSync(writeFd);
    return failure ?? `could not spawn ${executable}`;
  }
  // Another thread may have started one meanwhile: then ours sees EOF now and exits.
  if (!binding.trackerAttach(writeFd, pid)) closeSync(writeFd);
  return undefined;
}
