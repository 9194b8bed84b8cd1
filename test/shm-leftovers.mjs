// Which corral segments in /dev/shm are leftovers: made by this process, or by a process that is gone
// (names are corral_<creator pid>_<random>). A segment of another live program, such as a second
// test run on the same machine, is that program's business, not a leak of ours.
import { readdirSync } from 'node:fs';

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

export function leftoverSegments() {
  return readdirSync('/dev/shm').filter((name) => {
    const m = /^corral_(\d+)_/.exec(name);
    if (!m) return false;
    const pid = Number(m[1]);
    return pid === process.pid || !alive(pid);
  });
}
