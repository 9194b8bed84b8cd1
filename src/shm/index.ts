/** Shared memory across threads and processes: the public pieces and a status probe. */

import { shmNative, shmNativeStatus } from '../native/index.js';
import { type ShmSpace, shmSpace } from './names.js';
import { type TrackerStatus, trackerStatus } from './tracker.js';

export {
  clearShmCache,
  DEFAULT_BUDGET,
  decodeShm,
  encodeShm,
  fromHandle,
  type HandleOptions,
  type HandleRuntime,
  isHandle,
  SHM_HANDLE,
  type ShmHandle,
  toHandle,
} from './handle.js';
export {
  type AttachOptions,
  type CreateOptions,
  type FromOptions,
  SharedMemory,
  type ViewConstructor,
} from './shared-memory.js';
export type { TrackerStatus } from './tracker.js';

export interface ShmStatus {
  /** Segments are /dev/shm objects that processes can share (the addon is loaded). */
  crossProcess: boolean;
  /** Why not, when not. */
  reason?: string;
  /** What to do about it, when something can be done. */
  fix?: string;
  /** The addon file for this Node's ABI. */
  addon: string;
  /** /dev/shm size and free bytes, when it can be read. */
  space?: ShmSpace;
  tracker: TrackerStatus;
}

/** What SharedMemory can do here: for systemInfo() and diagnostics. Loads the addon if needed. */
export function shmStatus(): ShmStatus {
  const binding = shmNative();
  const status = shmNativeStatus();
  const space = shmSpace();
  return {
    crossProcess: binding !== undefined,
    ...(status.reason === undefined ? {} : { reason: status.reason }),
    ...(status.fix === undefined ? {} : { fix: status.fix }),
    addon: status.path,
    ...(space ? { space } : {}),
    tracker: trackerStatus(binding),
  };
}
