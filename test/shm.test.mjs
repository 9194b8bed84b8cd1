// SharedMemory: the API, bad input, and the same bytes seen from worker threads and
// forked processes (plain worker_threads / child_process.fork through a tiny harness until
// the pool integration lands). Lifetimes and the tracker are in shm-lifetime.test.mjs.
//
// Everything that needs a /dev/shm segment shared with another process is skipped, with
// the reason, when the shared-memory addon is not built for this Node's ABI; then
// SharedMemory must fail under processes with NativeUnavailableError, which is tested instead.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ConfigError,
  NativeUnavailableError,
  SharedMemoryClosedError,
  SharedMemoryExistsError,
  SharedMemoryNotFoundError,
} from '../dist/src/errors.js';
import {
  decodeShm,
  encodeShm,
  fromHandle,
  SharedMemory,
  shmStatus,
  toHandle,
} from '../dist/src/shm/index.js';
import { corralSegments, exists, killAll, mappedSegments, Peer, waitFor } from './fixtures/shm-harness.mjs';
import { leftoverSegments } from './shm-leftovers.mjs';

// The real addon, whatever the caller's shell exported.
delete process.env.CORRAL_NO_NATIVE;
delete process.env.CORRAL_SHM_NATIVE_DIR;

const status = shmStatus();
const skip = status.crossProcess
  ? false
  : `no shared-memory addon for Node ${process.versions.node} (ABI ${process.versions.modules}): ${status.reason}`;

const before_ = new Set(corralSegments());
const MiB = 2 ** 20;

before(() => {
  if (skip) console.log(`# shm: cross-process tests skipped: ${skip}`);
});

/** Segments a test made: closed after it whatever happened (Node 20 has no `using`). */
const owned = [];
const own = (shm) => {
  owned.push(shm);
  return shm;
};
afterEach(() => {
  for (const shm of owned.splice(0)) shm.close();
});

after(() => killAll());

describe('SharedMemory API', () => {
  test('create: random unguessable name, exclusive 0600 segment in /dev/shm, zero-filled', { skip }, () => {
    const shm = own(SharedMemory.create({ size: 4096 }));
    assert.match(shm.name, new RegExp(`^corral_${process.pid}_[0-9a-f]{24}$`));
    assert.equal(shm.size, 4096);
    assert.equal(shm.crossProcess, true);
    assert.equal(shm.persistent, false);
    const st = statSync(`/dev/shm/${shm.name}`);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.size, 4096);
    assert.equal(st.ino, shm.id);
    assert.ok(shm.buffer instanceof SharedArrayBuffer);
    assert.equal(shm.buffer.byteLength, 4096);
    assert.ok(shm.view(Uint8Array).every((b) => b === 0));
    assert.notEqual(own(SharedMemory.create({ size: 1 })).name, shm.name, 'names differ');
  });

  test('a given name (leading / optional), sizes as strings, views of every kind', () => {
    const name = `corral_test_${process.pid}_named`;
    const shm = own(SharedMemory.create({ size: '1KiB', name: `/${name}` }));
    assert.equal(shm.name, name);
    assert.equal(shm.size, 1024);
    const f64 = shm.view(Float64Array);
    assert.equal(f64.length, 128);
    f64[1] = 2.5;
    assert.equal(shm.view(Float64Array, 8, 1)[0], 2.5);
    assert.equal(shm.view(DataView).getFloat64(8, true), 2.5);
    assert.equal(shm.view(Int32Array, 1020).length, 1);
    assert.equal(shm.view(Uint8Array, 1024).length, 0, 'an empty view at the very end is fine');
    assert.equal(shm.view(BigInt64Array).length, 128);
  });

  test('from() copies a typed array, a Buffer or an ArrayBuffer in', () => {
    const data = Float64Array.from({ length: 1000 }, (_, i) => i * 0.5);
    const a = own(SharedMemory.from(data));
    assert.equal(a.size, 8000);
    assert.deepEqual(a.view(Float64Array), data);
    const b = own(SharedMemory.from(Buffer.from('hello')));
    assert.equal(Buffer.from(b.buffer).toString(), 'hello');
    const part = new Uint8Array([9, 8, 7, 6]).subarray(1, 3);
    const c = own(SharedMemory.from(part));
    assert.deepEqual([...c.view(Uint8Array)], [8, 7]);
  });

  test('views outside the segment are RangeErrors', () => {
    const shm = own(SharedMemory.create({ size: 64 }));
    assert.throws(() => shm.view(Float64Array, 72), RangeError);
    assert.throws(() => shm.view(Float64Array, 4), /multiple of its element size 8/);
    assert.throws(() => shm.view(Float64Array, 0, 9), /do not fit in the segment's 64 bytes \(at most 8\)/);
    assert.throws(() => shm.view(Float64Array, 8, 8), RangeError);
    assert.throws(() => shm.view(Uint8Array, -1), RangeError);
    assert.throws(() => shm.view(Uint8Array, 1.5), RangeError);
    assert.throws(() => shm.view(Uint8Array, 0, -1), RangeError);
    assert.throws(() => shm.view(Object), TypeError);
  });

  test('use after close() is SharedMemoryClosedError; close is idempotent; using/dispose closes', () => {
    const shm = SharedMemory.create({ size: 64 });
    const { name } = shm;
    shm.close();
    shm.close();
    assert.equal(shm.closed, true);
    assert.equal(shm.name, name, 'name and size stay readable');
    assert.equal(shm.size, 64);
    for (const use of [() => shm.buffer, () => shm.view(Uint8Array), () => toHandle(shm)]) {
      assert.throws(use, (err) => err instanceof SharedMemoryClosedError && err.code === 'ERR_SHM_CLOSED');
    }
    assert.equal(shm.unlink(), false, 'already unlinked by close()');
    // `using` (Node 24, or TypeScript) calls this at the end of the block.
    const disposed = SharedMemory.create({ size: 8 });
    disposed[Symbol.dispose]();
    assert.equal(disposed.closed, true);
    assert.ok(!exists(disposed.name));
  });

  test('bad input gets typed errors', () => {
    const config = (option, pattern) => (err) =>
      err instanceof ConfigError &&
      err.code === 'ERR_INVALID_OPTION' &&
      err.option === option &&
      pattern.test(err.message);
    for (const size of [0, -5, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 'lots', '0MiB', null, 2 ** 53]) {
      assert.throws(
        () => SharedMemory.create({ size }),
        config('size', /positive number of bytes/),
        String(size),
      );
    }
    assert.throws(() => SharedMemory.create(), config('options', /expects \{ size/));
    assert.throws(() => SharedMemory.create({}), config('size', /positive/));
    assert.throws(
      () => SharedMemory.create({ size: 8, sise: 8 }),
      config('SharedMemory.create.sise', /unknown option/),
    );
    assert.throws(() => SharedMemory.create({ size: 8, persist: 'yes' }), config('persist', /true or false/));
    for (const name of ['', '/', 'a/b', 'x\ny', '.', '..', 'x'.repeat(251), 42]) {
      assert.throws(() => SharedMemory.create({ size: 8, name }), config('name', /./), JSON.stringify(name));
    }
    if (status.crossProcess) {
      assert.throws(
        () => SharedMemory.create({ size: status.space.free + 2 ** 30 }),
        config('size', /is more than \/dev\/shm can hold: .* free of /),
      );
    } else {
      assert.throws(() => SharedMemory.create({ size: 2 ** 52 }), config('size', /cannot allocate/));
    }
    assert.throws(() => SharedMemory.from(new Uint8Array(0)), config('size', /0 bytes/));
    assert.throws(() => SharedMemory.from('text'), config('data', /typed array/));
    assert.throws(() => new SharedMemory(), TypeError);

    assert.throws(
      () => SharedMemory.attach(`corral_test_${process.pid}_missing`),
      (err) => err instanceof SharedMemoryNotFoundError && err.code === 'ERR_SHM_NOT_FOUND',
    );
    assert.throws(() => SharedMemory.attach(42), config('name', /string/));
    assert.throws(() => SharedMemory.attach('x', { size: -1 }), config('size', /positive/));

    const shm = own(SharedMemory.create({ size: 100 }));
    assert.throws(
      () => SharedMemory.create({ size: 8, name: shm.name }),
      (err) => err instanceof SharedMemoryExistsError && err.code === 'ERR_SHM_EXISTS',
    );
    assert.throws(
      () => SharedMemory.attach(shm.name, { size: 101 }),
      config('size', /holds 100 bytes; cannot map 101 bytes of it/),
    );
    const prefix = own(SharedMemory.attach(shm.name, { size: 10 }));
    assert.equal(prefix.size, 10, 'attach may map a prefix');
    assert.throws(() => fromHandle({ nope: 1 }), config('handle', /__corralShm/));
  });

  test('persist: true outlives close(); anyone may unlink() it', { skip }, () => {
    const shm = SharedMemory.create({ size: 16, persist: true });
    shm.view(Uint8Array)[0] = 7;
    shm.close();
    assert.ok(exists(shm.name));
    const again = SharedMemory.attach(shm.name);
    assert.equal(again.view(Uint8Array)[0], 7);
    assert.equal(again.unlink(), true);
    assert.equal(again.unlink(), false);
    assert.ok(!exists(shm.name));
    assert.equal(again.view(Uint8Array)[0], 7, 'the mapping outlives the name');
    again.close();
  });

  test('close() releases the mapping at once when nothing else holds it', { skip }, () => {
    const shm = SharedMemory.create({ size: MiB });
    const view = shm.view(Float64Array);
    view.fill(1);
    assert.equal(mappedSegments().filter((l) => l.includes(shm.name)).length, 1);
    shm.close();
    assert.equal(
      mappedSegments().filter((l) => l.includes(shm.name)).length,
      0,
      'pages dropped, not left to GC',
    );
    assert.equal(view[0], 0, 'a stale view reads zeros instead of crashing');
  });

  test('SharedMemory survives structured clone and JSON as a handle, never as {}', () => {
    const shm = own(SharedMemory.create({ size: 8 }));
    const expected = { __corralShm: shm.name, size: 8, id: shm.id };
    assert.deepEqual(structuredClone(shm), expected);
    assert.deepEqual(JSON.parse(JSON.stringify(shm)), expected);
    assert.equal(fromHandle(structuredClone(shm)), shm, 'this thread gets its own instance back');
  });
});

describe('handles: encodeShm / decodeShm / fromHandle', () => {
  test('encodeShm replaces instances, copies only the containers it changes, says whether it found any', () => {
    const shm = own(SharedMemory.create({ size: 8 }));
    const untouched = { list: [1, 2, { deep: true }], text: 'x' };
    const args = { a: untouched, b: [0, { shm }], c: new Float64Array(2) };
    const { value, found } = encodeShm(args);
    assert.equal(found, true);
    assert.notEqual(value, args);
    assert.equal(value.a, untouched, 'unchanged branches are shared, not copied');
    assert.equal(value.c, args.c, 'typed arrays are not walked');
    // Without the addon the handle also carries the buffer (threads are all it can reach).
    const { sab, ...handle } = value.b[1].shm;
    assert.deepEqual(handle, { __corralShm: shm.name, size: 8, id: shm.id });
    assert.equal(sab === undefined, shm.crossProcess);
    assert.equal(args.b[1].shm, shm, 'the input is not mutated');
    assert.deepEqual(encodeShm(untouched), { value: untouched, found: false });
    assert.deepEqual(encodeShm(42), { value: 42, found: false });
    assert.equal(encodeShm(shm).value.__corralShm, shm.name);

    const decoded = decodeShm(value);
    assert.equal(decoded.b[1].shm, shm);
    assert.equal(decoded.a, untouched);
  });

  test('the walk stops at its budget', () => {
    const shm = own(SharedMemory.create({ size: 8 }));
    const far = [...Array.from({ length: 2000 }, (_, i) => i), { shm }];
    assert.equal(encodeShm(far).found, false, 'beyond the default 1000 values');
    assert.equal(encodeShm(far, 5000).found, true);
  });

  test("runtime: 'thread' carries the buffer; 'process' and the default carry only the name", {
    skip,
  }, () => {
    const shm = own(SharedMemory.create({ size: 8 }));
    assert.ok(toHandle(shm, { runtime: 'thread' }).sab instanceof SharedArrayBuffer);
    assert.equal(toHandle(shm, { runtime: 'process' }).sab, undefined);
    assert.equal(toHandle(shm).sab, undefined);
  });
});

describe('one segment, many workers', { skip }, () => {
  test('a parent writes; a worker thread and a forked process read it and write back', async () => {
    const n = MiB / 8;
    const shm = own(SharedMemory.create({ size: MiB }));
    const data = shm.view(Float64Array);
    for (let i = 0; i < n; i++) data[i] = i % 7;
    let expected = 0;
    for (let i = 0; i < n; i++) expected += i % 7;

    const thread = await Peer.thread();
    const child = await Peer.process();
    try {
      // The thread gets the buffer in the handle (no mmap); the process maps the name.
      const viaHandle = await thread.call('handle', { handle: toHandle(shm, { runtime: 'thread' }) });
      assert.deepEqual(viaHandle, { name: shm.name, size: MiB, id: shm.id, cached: true, viaBuffer: true });
      assert.equal(await thread.call('sum', { name: shm.name }), expected);
      const attached = await child.call('attach', { name: shm.name });
      assert.deepEqual(attached, { name: shm.name, size: MiB, id: shm.id });
      assert.equal(await child.call('sum', { name: shm.name }), expected);

      await thread.call('write', { name: shm.name, index: 0, value: 1000 });
      await child.call('write', { name: shm.name, index: 1, value: 2000 });
      assert.equal(data[0], 1000);
      assert.equal(data[1], 2000);
      const after = expected - (0 % 7) - (1 % 7) + 3000;
      assert.equal(await thread.call('sum', { name: shm.name }), after, 'the thread sees the process write');
      assert.equal(await child.call('sum', { name: shm.name }), after, 'the process sees the thread write');

      // A handle through IPC, decoded on the other side into a cached SharedMemory.
      const { value, found } = encodeShm({ data: { shm, from: 3 } }, 1000, { runtime: 'process' });
      assert.equal(found, true);
      assert.deepEqual(await child.call('decode', { value }), { isShm: true, sum: after, from: 3 });
      const again = await child.call('handle', { handle: toHandle(shm, { runtime: 'process' }) });
      assert.equal(again.cached, true);
    } finally {
      await thread.stop();
      await child.stop();
    }
  });

  test('Atomics.add from 2 threads and 2 processes reaches the exact total', async () => {
    const shm = own(SharedMemory.create({ size: 64 }));
    const counter = shm.view(Int32Array);
    const peers = await Promise.all([Peer.thread(), Peer.thread(), Peer.process(), Peer.process()]);
    const n = 200_000;
    try {
      for (const p of peers) {
        if (p.kind === 'thread') await p.call('handle', { handle: toHandle(shm, { runtime: 'thread' }) });
        else await p.call('attach', { name: shm.name });
      }
      await Promise.all(peers.map((p) => p.call('count', { name: shm.name, n })));
      assert.equal(Atomics.load(counter, 0), 4 * n);
    } finally {
      await Promise.all(peers.map((p) => p.stop()));
    }
  });

  test('Atomics.wait/notify work between threads but not across processes', async () => {
    const shm = own(SharedMemory.create({ size: 64 }));
    const flags = shm.view(Int32Array);
    const thread = await Peer.thread();
    const child = await Peer.process();
    try {
      await thread.call('handle', { handle: toHandle(shm, { runtime: 'thread' }) });
      await child.call('attach', { name: shm.name });
      const waits = [
        thread.call('wait', { name: shm.name, timeout: 5000 }),
        child.call('wait', { name: shm.name, timeout: 1500 }),
      ];
      await waitFor('both peers to block', () => Atomics.load(flags, 2) === 2, { timeout: 5000 });
      await sleep(100);
      Atomics.store(flags, 1, 1);
      const woken = Atomics.notify(flags, 1);
      const [inThread, inProcess] = await Promise.all(waits);
      assert.equal(inThread, 'ok', 'the thread was woken');
      assert.equal(inProcess, 'timed-out', "V8 keeps waiters per process: the child's wait was not woken");
      assert.equal(woken, 1, 'notify woke the thread only');
    } finally {
      await thread.stop();
      await child.stop();
    }
  });

  test('a handle whose name now belongs to another segment is SharedMemoryNotFoundError', async () => {
    const name = `corral_test_${process.pid}_reused`;
    const first = SharedMemory.create({ size: 64, name });
    const stale = toHandle(first, { runtime: 'process' });
    first.close();
    const second = own(SharedMemory.create({ size: 64, name }));
    assert.notEqual(second.id, first.id);
    const child = await Peer.process();
    try {
      await assert.rejects(child.call('handle', { handle: stale }), { code: 'ERR_SHM_NOT_FOUND' });
      await assert.rejects(
        child.call('handle', { handle: { ...stale, __corralShm: `corral_test_${process.pid}_gone` } }),
        { code: 'ERR_SHM_NOT_FOUND' },
      );
      const ok = await child.call('handle', { handle: toHandle(second) });
      assert.equal(ok.id, second.id);
    } finally {
      await child.stop();
    }
  });
});

describe('without the addon', () => {
  test('processes get NativeUnavailableError saying why; threads still share', async () => {
    if (!status.crossProcess) {
      // This Node has no addon build: the real thing, in this process.
      const shm = own(SharedMemory.create({ size: 8 }));
      assert.equal(shm.crossProcess, false);
      assert.throws(() => toHandle(shm, { runtime: 'process' }), NativeUnavailableError);
    }
    const { runNode } = await import('./fixtures/shm-harness.mjs');
    const code = `
      import { once } from 'node:events';
      import { Worker } from 'node:worker_threads';
      import { SharedMemory, toHandle, shmStatus } from ${JSON.stringify(new URL('../dist/src/shm/index.js', import.meta.url).href)};
      const out = { status: shmStatus() };
      const shm = SharedMemory.create({ size: 16 });
      shm.view(Int32Array)[0] = 41;
      out.crossProcess = shm.crossProcess;
      try { toHandle(shm, { runtime: 'process' }); } catch (e) { out.toProcess = { name: e.name, code: e.code, message: e.message }; }
      try { SharedMemory.attach(process.argv[1]); } catch (e) { out.attachPosix = { name: e.name, code: e.code }; }
      try { SharedMemory.attach('corral_nothing_here'); } catch (e) { out.attachMissing = { name: e.name, code: e.code }; }
      out.sameThread = SharedMemory.attach(shm.name).view(Int32Array)[0];
      const src = "import { workerData, parentPort } from 'node:worker_threads';" +
        "const m = await import(workerData.url);" +
        "const viaName = m.SharedMemory.attach(workerData.name);" +
        "Atomics.add(viaName.view(Int32Array), 0, 1);" +
        "const viaHandle = m.fromHandle(workerData.handle);" +
        "parentPort.postMessage(Atomics.add(viaHandle.view(Int32Array), 0, 0));";
      const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(src)), {
        workerData: { url: ${JSON.stringify(new URL('../dist/src/shm/index.js', import.meta.url).href)}, name: shm.name, handle: toHandle(shm) },
      });
      [out.threadSaw] = await once(w, 'message');
      out.parentSees = shm.view(Int32Array)[0];
      shm.close();
      console.log(JSON.stringify(out));
    `;
    // A real /dev/shm segment, made here if this Node has the addon: without it, it cannot be mapped.
    const posix = status.crossProcess ? SharedMemory.create({ size: 8 }) : undefined;
    try {
      const r = await runNode(code.replace('process.argv[1]', JSON.stringify(posix?.name ?? 'corral_none')), {
        env: { ...process.env, CORRAL_NO_NATIVE: '1' },
      });
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1));
      assert.equal(out.status.crossProcess, false);
      assert.match(out.status.reason, /CORRAL_NO_NATIVE=1/);
      assert.equal(out.crossProcess, false);
      assert.equal(out.toProcess.name, 'NativeUnavailableError');
      assert.equal(out.toProcess.code, 'ERR_NATIVE_UNAVAILABLE');
      assert.match(out.toProcess.message, /CORRAL_NO_NATIVE=1.*between worker threads of one process only/);
      if (posix) assert.equal(out.attachPosix.name, 'NativeUnavailableError');
      assert.equal(out.attachMissing.name, 'SharedMemoryNotFoundError');
      assert.equal(out.sameThread, 41);
      assert.equal(out.threadSaw, 42, 'a worker thread attached by name and through the handle');
      assert.equal(out.parentSees, 42);
    } finally {
      posix?.close();
    }
  });
});

test('this file leaves nothing of corral in /dev/shm', async () => {
  // Peers exit asynchronously; give the last trackers a moment.
  // Only segments of this process or of processes that are gone: a segment of another live program
  // (a second test run on the machine) is not a leftover of this file.
  const leftovers = () => leftoverSegments().filter((n) => !before_.has(n));
  for (let i = 0; i < 200 && leftovers().length > 0; i++) await sleep(10);
  assert.deepEqual(leftovers(), []);
});
