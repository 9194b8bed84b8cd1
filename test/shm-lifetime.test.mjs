// SharedMemory lifetimes, proved with real processes and real kills: the creator owns a
// segment; it goes when the creator closes it, when the creating thread ends, and when the
// creating process dies however it dies (SIGKILL included: the tracker); attaching never
// removes anything; a mapping outlives the name.
//
// Skipped, with the reason, when the shared-memory addon is not built for this Node's ABI
// (test/shm.test.mjs then proves that process use fails with NativeUnavailableError).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SharedMemory, shmStatus } from '../dist/src/shm/index.js';
import {
  alive,
  corralSegments,
  exists,
  killAll,
  mappedSegments,
  Peer,
  waitFor,
} from './fixtures/shm-harness.mjs';
import { leftoverSegments } from './shm-leftovers.mjs';

delete process.env.CORRAL_NO_NATIVE;
delete process.env.CORRAL_SHM_NATIVE_DIR;

const status = shmStatus();
const skip = status.crossProcess
  ? false
  : `no shared-memory addon for Node ${process.versions.node} (ABI ${process.versions.modules}): ${status.reason}`;
if (skip) console.log(`# shm lifetime tests skipped: ${skip}`);

const before_ = new Set(corralSegments());
const MiB = 2 ** 20;

after(() => killAll());

describe('the creator owns the segment', { skip }, () => {
  test('creator SIGKILLed while a child holds the mapping: the name goes at once, the child reads on', async (t) => {
    const creator = await Peer.process();
    const child = await Peer.process();
    try {
      const { name, tracker } = await creator.call('create', { size: 8 * MiB, fill: 1.5 });
      assert.ok(tracker > 0, 'creating started a tracker');
      assert.ok(alive(tracker));
      const expected = 1.5 * MiB;
      await child.call('attach', { name });
      assert.equal(await child.call('sum', { name }), expected);

      creator.child.kill('SIGKILL');
      const ms = await waitFor(`${name} to leave /dev/shm`, () => !exists(name), { timeout: 3000 });
      t.diagnostic(`unlinked ${ms.toFixed(1)} ms after SIGKILL of the creator (tracker saw the pipe close)`);
      await waitFor('the tracker to exit', () => !alive(tracker), { timeout: 3000 });

      // The name is gone from the namespace; the memory lives on while the child maps it.
      assert.equal(await child.call('sum', { name }), expected);
      await child.call('write', { name, index: 0, value: 101.5 });
      assert.equal(await child.call('sum', { name }), expected + 100);
      await assert.rejects(
        Peer.process().then((p) => p.call('attach', { name }).finally(() => p.stop())),
        {
          code: 'ERR_SHM_NOT_FOUND',
        },
      );
    } finally {
      await creator.stop();
      await child.stop();
    }
  });

  test('a process that only attached never unlinks, however it ends', async () => {
    const shm = SharedMemory.create({ size: 4096 });
    try {
      const killed = await Peer.process();
      await killed.call('attach', { name: shm.name });
      assert.equal((await killed.call('status')).tracker.pid, 0, 'attaching starts no tracker');
      killed.child.kill('SIGKILL');
      await killed.stop();

      const closer = await Peer.process();
      await closer.call('attach', { name: shm.name });
      await closer.call('close', { name: shm.name });
      await closer.call('exit', { code: 0 }).catch(() => {});
      await closer.stop();

      const thread = await Peer.thread();
      await thread.call('attach', { name: shm.name });
      await thread.stop();

      await sleep(100);
      assert.ok(exists(shm.name), 'still there after three attachers left');
    } finally {
      shm.close();
    }
    assert.ok(!exists(shm.name), "the creator's close() removed it");
  });

  test('a creator that exits without closing takes its segments along; persist: true ones stay', async () => {
    const creator = await Peer.process();
    const { name } = await creator.call('create', { size: 4096 });
    const { name: kept } = await creator.call('create', { size: 4096, persist: true });
    await creator.call('exit', { code: 0 }).catch(() => {});
    await creator.stop();
    await waitFor(`${name} to go`, () => !exists(name), { timeout: 3000 });
    assert.ok(exists(kept), 'persist: true survives its creator');
    const later = SharedMemory.attach(kept);
    assert.equal(later.unlink(), true);
    later.close();
    assert.ok(!exists(kept));
  });

  test('persist: true also survives SIGKILL of its creator', async () => {
    const creator = await Peer.process();
    const { name } = await creator.call('create', { size: 4096, persist: true, fill: 2 });
    creator.child.kill('SIGKILL');
    await creator.stop();
    await sleep(100);
    const shm = SharedMemory.attach(name);
    try {
      assert.equal(shm.view(Float64Array)[0], 2);
    } finally {
      shm.unlink();
      shm.close();
    }
  });

  test('a worker thread that ends takes the segments it created along (the process lives on)', async () => {
    const thread = await Peer.thread();
    const { name } = await thread.call('create', { size: 4096 });
    const { name: other } = await thread.call('create', { size: 4096 });
    assert.ok(exists(name) && exists(other));
    const mine = SharedMemory.attach(name);
    await thread.stop(); // worker.terminate()
    assert.ok(!exists(name) && !exists(other), 'unlinked by the thread teardown, not left to process exit');
    assert.equal(mine.view(Uint8Array).length, 4096, 'our mapping is unaffected');
    mine.close();
  });

  test('a tracker that dies is replaced and told every live name again', async () => {
    const creator = await Peer.process();
    try {
      const first = await creator.call('create', { size: 4096 });
      process.kill(first.tracker, 'SIGKILL');
      await waitFor('the first tracker to die', () => !alive(first.tracker));
      // The next create finds the pipe broken (EPIPE), starts a new tracker and re-registers.
      const second = await creator.call('create', { size: 4096 });
      const third = await creator.call('create', { size: 4096 });
      assert.notEqual(third.tracker, first.tracker);
      assert.ok(third.tracker > 0 && alive(third.tracker));
      assert.equal((await creator.call('status')).tracker.tracked, 3);
      creator.child.kill('SIGKILL');
      for (const { name } of [first, second, third]) {
        await waitFor(`${name} to go`, () => !exists(name), { timeout: 3000 });
      }
    } finally {
      await creator.stop();
    }
  });

  test('a stopped tracker blocks no create or close; what it missed reaches it when it reads again', async (t) => {
    const creator = await Peer.process();
    let tracker = 0;
    try {
      const first = await creator.call('create', { size: 4096 });
      tracker = first.tracker;
      process.kill(tracker, 'SIGSTOP');
      // Two lines to the tracker per cycle, ~30 bytes each: ten times what its pipe holds.
      let timer;
      const blocked = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('create/close blocked on the stopped tracker')), 20_000);
      });
      const churn = await Promise.race([creator.call('churn', { n: 10_000 }), blocked]).finally(() =>
        clearTimeout(timer),
      );
      t.diagnostic(`10,000 create/close cycles with the tracker stopped: ${churn.ms.toFixed(0)} ms`);
      const kept = [];
      for (let i = 0; i < 3; i++) kept.push((await creator.call('create', { size: 4096 })).name);
      process.kill(tracker, 'SIGCONT');
      await sleep(500);
      assert.ok(alive(tracker), 'the same tracker, still listening');
      creator.child.kill('SIGKILL');
      for (const name of [first.name, ...kept]) {
        await waitFor(`${name} to go`, () => !exists(name), { timeout: 3000 });
      }
      assert.deepEqual(
        churn.names.filter((name) => exists(name)),
        [],
      );
      await waitFor('the tracker to exit', () => !alive(tracker), { timeout: 3000 });
    } finally {
      if (tracker) process.kill(tracker, 'SIGCONT');
      await creator.stop();
    }
  });

  test('a segment a pool thread made and returned outlives the thread, and the process exits cleanly', () => {
    // The thread's addon instance made the mapping; the main thread holds the last view when the
    // process exits. Before the addon was marked NODELETE, Node unloaded it with the thread and V8's
    // release of the mapping at exit jumped into unmapped code: SIGSEGV (exit 139), 4 runs in 5.
    const script = `
      import { Pool } from ${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)};
      const pool = new Pool({ module: ${JSON.stringify(new URL('./fixtures/shm-tasks.mjs', import.meta.url).href)},
        runtime: 'thread', workers: 1, maxTasksPerWorker: 1 });
      const shm = await pool.apply('makeSegment', [4]);
      await pool.close();
      console.log([...shm.view(Float64Array)].join());
      shm.unlink();`;
    for (let i = 0; i < 3; i++) {
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(run.status, 0, `run ${i}: exit ${run.status} ${run.signal ?? ''} ${run.stderr}`);
      assert.equal(run.stdout.trim(), '7,7,7,7');
    }
  });

  test('1000 create/close cycles leave nothing behind: no name, no mapping', (t) => {
    const t0 = performance.now();
    const names = [];
    for (let i = 0; i < 1000; i++) {
      const shm = SharedMemory.create({ size: 64 * 1024 });
      shm.view(Float64Array).fill(i);
      names.push(shm.name);
      shm.close();
    }
    t.diagnostic(`1000 x 64 KiB create+write+close: ${(performance.now() - t0).toFixed(0)} ms`);
    assert.equal(new Set(names).size, 1000);
    assert.deepEqual(
      names.filter((n) => exists(n)),
      [],
    );
    assert.deepEqual(mappedSegments(), [], 'every mapping was released by close(), none waits for GC');
    assert.equal(shmStatus().tracker.tracked, 0);
  });
});

test('this file leaves nothing of corral in /dev/shm', async () => {
  const left = () => leftoverSegments().filter((n) => !before_.has(n));
  for (let i = 0; i < 200 && left().length > 0; i++) await sleep(10);
  assert.deepEqual(left(), []);
});
