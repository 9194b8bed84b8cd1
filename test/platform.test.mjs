// What the README's platform table promises for macOS and Windows, run for real on Linux with
// process.platform forced (test/fixtures/force-platform.mjs): threads, heap limits (threads and
// processes) and SharedMemory between threads work; rlimits and SharedMemory with process workers
// report themselves unavailable, with a fix that fits that platform (no "build the addon" advice
// that cannot work there).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const preload = fileURLToPath(new URL('./fixtures/force-platform.mjs', import.meta.url));
const probe = fileURLToPath(new URL('./fixtures/platform-probe.mjs', import.meta.url));

function run(platform) {
  const env = { ...process.env, CORRAL_TEST_PLATFORM: platform };
  delete env.CORRAL_NO_NATIVE;
  delete env.CORRAL_NATIVE_PATH;
  delete env.CORRAL_SHM_NATIVE_DIR;
  const r = spawnSync(process.execPath, ['--import', preload, probe], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `probe failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

for (const platform of ['darwin', 'win32']) {
  describe(`on ${platform} (process.platform forced)`, () => {
    const got = run(platform);

    it('the probe really ran as that platform', () => {
      assert.equal(got.platform, platform);
    });

    it('threads and processes run tasks, and a heap breach is a MemoryLimitError of kind heap', () => {
      for (const runtime of ['thread', 'process']) {
        assert.deepEqual(got[`${runtime}Heap`], { squares: [1, 4, 9], breach: 'heap' }, runtime);
      }
    });

    it('SharedMemory works between worker threads', () => {
      assert.equal(got.threadShm, 2000);
    });

    it('the native addon reports itself unavailable, Linux-only, with a fix for this platform', () => {
      assert.equal(got.native.available, false);
      assert.equal(got.native.reason, `corral's native addons are Linux-only (this is ${platform})`);
      assert.match(got.native.fix, /limits\.heap/);
      assert.doesNotMatch(got.native.fix, /build/);
      assert.equal(got.sharedMemory.crossProcess, false);
    });

    it('rlimits are refused with NativeUnavailableError naming the platform and what works', () => {
      assert.equal(got.rlimit.code, 'ERR_NATIVE_UNAVAILABLE');
      assert.match(got.rlimit.message, /^limits\.openFiles is not available: .*Linux-only/);
      assert.match(got.rlimit.message, /Fix: use limits\.heap/);
    });

    it('rss, recycle.whenRssAbove, memoryBudget and detectLeaks (read from /proc) are refused, not ignored', () => {
      for (const [option, got1] of Object.entries(got.procOnly)) {
        assert.equal(got1.code, 'ERR_NATIVE_UNAVAILABLE', `${option}: ${JSON.stringify(got1)}`);
        assert.match(
          got1.message,
          new RegExp(`^${option.replace('.', '\\.')} is not available: .*only Linux`),
        );
        assert.match(got1.message, /Fix: use limits\.heap/);
      }
      assert.equal(Object.keys(got.procOnly).length, 4);
    });

    it('SharedMemory passed to a process worker is refused, pointing at threads', () => {
      assert.equal(got.processShm.code, 'ERR_NATIVE_UNAVAILABLE');
      assert.match(got.processShm.message, /Linux-only/);
      assert.match(got.processShm.message, /Fix: use runtime 'thread'/);
    });
  });
}
