/**
 * Whether this thread ever held a SharedMemory: until then, messages need no walk for handles.
 * Kept apart from shared-memory.ts so that a worker can ask without loading the shared-memory
 * machinery (the addon loader, the tracker), which most pools never use.
 */
let made = false;

export function shmEverUsed(): boolean {
  return made;
}

export function setShmUsed(value: boolean): void {
  made = value;
}
