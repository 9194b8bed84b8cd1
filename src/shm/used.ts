/**
 * Whether this thread ever held a SharedMemory: until then, messages need no walk for handles.
 * Kept apart from shared-memory.ts so that a worker can ask without loading the shared-memory
 * machinery (the addon loader, the tracker), which most pools never use.
 *
 * The flag lives on globalThis (one per thread), not in this module, for the reason critical.ts gives:
 * a task may load another copy of corral, whose SharedMemory must still count. It also lets the
 * worker's bundled entry carry its own copy of this module instead of loading this file at start.
 */
const KEY = Symbol.for('corral.shm.used');

const state: { made: boolean } = ((globalThis as { [KEY]?: { made: boolean } })[KEY] ??= { made: false });

export function shmEverUsed(): boolean {
  return state.made;
}

export function setShmUsed(value: boolean): void {
  state.made = value;
}
