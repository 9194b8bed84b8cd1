// Scoped resources close themselves, and a pool with detectLeaks sees the difference: a task that
// opens through them leaks nothing even when it throws half-way; one that opens raw descriptors leaks.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { openFile, openFileSync, Pool, scoped, tempDir } from '../dist/src/index.js';

const openFds = () => readdirSync('/proc/self/fd').length;

it('openFileSync closes at dispose, once', () => {
  const before = openFds();
  const file = openFileSync('/dev/null');
  assert.equal(openFds(), before + 1);
  file[Symbol.dispose]();
  file[Symbol.dispose]();
  assert.equal(openFds(), before);
});

it('openFile closes through Symbol.asyncDispose; tempDir removes its tree', async () => {
  const before = openFds();
  const handle = await openFile('/dev/null');
  assert.equal(openFds(), before + 1);
  await handle[Symbol.asyncDispose]();
  assert.equal(openFds(), before);
  const dir = await tempDir('corral-test-');
  writeFileSync(join(dir.path, 'x'), 'y');
  await dir[Symbol.asyncDispose]();
  assert.equal(existsSync(dir.path), false);
  assert.ok(dir.path.startsWith(tmpdir()));
});

it('scoped() wraps any resource with its close function', () => {
  let closed = 0;
  const res = scoped(
    {
      n: 3,
      twice() {
        return this.n * 2;
      },
    },
    () => closed++,
  );
  assert.equal(res.twice(), 6);
  res[Symbol.dispose]();
  res[Symbol.dispose]();
  assert.equal(closed, 1);
});

it('in a pool with detectLeaks, tasks using scoped descriptors leak nothing even when they throw', async () => {
  const pool = new Pool({
    module: new URL('./fixtures/scoped-tasks.mjs', import.meta.url),
    runtime: 'process',
    workers: 1,
    detectLeaks: true,
  });
  const leaks = [];
  pool.on('leak', (l) => leaks.push(l));
  try {
    await assert.rejects(pool.apply('scopedThenThrow', []), /on purpose/);
    assert.equal(await pool.apply('scopedOk', []), 'ok');
    assert.deepEqual(leaks, []);
    await pool.apply('rawLeak', []);
    assert.deepEqual(
      leaks.map((l) => [l.task, l.fds]),
      [['rawLeak', 1]],
    );
  } finally {
    await pool.close();
  }
});

it('TypeScript `using` / `await using` blocks close them, on success and on throw', async () => {
  const { usingBlock } = await import('../dist/test/types/scoped-using.js');
  const before = openFds();
  const path = await usingBlock(false);
  assert.equal(existsSync(path), false, 'the temp dir went with the block');
  await assert.rejects(usingBlock(true), /failed inside the block/);
  assert.equal(openFds(), before);
});
