// Process workers start with glibc's malloc asking for transparent huge pages (runtime/process.ts):
// a process worker faults in afresh the memory its malloc handed back, and in 2 MiB pages that costs
// a twentieth of what 4 KiB pages do here (issue 16). What the user's own GLIBC_TUNABLES says wins.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe } from 'node:test';
import { workerEnv } from '../dist/src/runtime/process.js';
import { test, usePools } from './helpers.mjs';

const TASKS = new URL('./fixtures/malloc-tasks.mjs', import.meta.url);
const makeWithEvents = usePools(TASKS);
const makePool = (options) => makeWithEvents(options).pool;

/** The mode in [brackets] of a THP setting: huge pages only on request ("madvise") is where the tunable decides. */
function thp(file) {
  try {
    return /\[([\w+]+)\]/.exec(readFileSync(`/sys/kernel/mm/transparent_hugepage/${file}`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}
const glibc = process.report.getReport().header.glibcVersionRuntime;
const [major, minor] = (glibc ?? '0.0').split('.').map(Number);
const glibcAtLeast235 = major > 2 || (major === 2 && minor >= 35);

describe('process workers: malloc tunables', () => {
  const noTunables = { ...process.env, GLIBC_TUNABLES: undefined };

  test('a process worker starts with glibc.malloc.hugetlb=1; its task and the programs it starts see none', async () => {
    const pool = makePool({ runtime: 'process', workers: 1, env: noTunables });
    assert.deepEqual(await pool.apply('tunables', []), {
      started: 'glibc.malloc.hugetlb=1',
      seen: null,
      child: '(unset)',
    });
  });

  test("the user's other tunables are kept, the user's own hugetlb setting wins, and the task sees the user's", async () => {
    const mine = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' },
    });
    const hugetlb0 = 'glibc.malloc.hugetlb=0';
    assert.deepEqual(await mine.apply('tunables', []), {
      started: hugetlb0,
      seen: hugetlb0,
      child: hugetlb0,
    });
    const other = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.check=0' },
    });
    const check0 = 'glibc.malloc.check=0';
    // What the process started with cannot be read back whole here: glibc (2.36) cuts the string at
    // the end of the first tunable it parses, in place. workerEnv's own test shows what is passed.
    const got = await other.apply('tunables', []);
    assert.equal(got.started, check0);
    assert.deepEqual([got.seen, got.child], [check0, check0]);
    assert.equal(
      workerEnv({ GLIBC_TUNABLES: check0 }).env.GLIBC_TUNABLES,
      `${check0}:glibc.malloc.hugetlb=1`,
    );
  });

  test('workerEnv: odd GLIBC_TUNABLES values', () => {
    const add = (value) => workerEnv({ GLIBC_TUNABLES: value });
    assert.deepEqual(add(''), {
      env: { GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' },
      restore: { GLIBC_TUNABLES: '' },
    });
    assert.equal(add('a=1:').env.GLIBC_TUNABLES, 'a=1::glibc.malloc.hugetlb=1');
    // A key without a value is the user's say on it too: nothing added, nothing to put back.
    assert.deepEqual(add('glibc.malloc.hugetlb'), {
      env: { GLIBC_TUNABLES: 'glibc.malloc.hugetlb' },
      restore: undefined,
    });
    // env is only checked to be a plain object: a number is taken as fork() would take it.
    assert.deepEqual(add(7), {
      env: { GLIBC_TUNABLES: '7:glibc.malloc.hugetlb=1' },
      restore: { GLIBC_TUNABLES: '7' },
    });
    assert.deepEqual(workerEnv({ A: 'b' }), {
      env: { A: 'b', GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' },
      restore: { GLIBC_TUNABLES: null },
    });
  });

  test('thread workers share the pool process: nothing is added (and a key set to undefined is left out, as in a process)', async () => {
    const pool = makePool({ runtime: 'thread', workers: 1, env: noTunables });
    assert.equal((await pool.apply('tunables', [])).seen, null);
  });

  const enabled = thp('enabled');
  const defrag = thp('defrag');
  const real =
    enabled === 'madvise' && ['always', 'madvise', 'defer+madvise'].includes(defrag) && glibcAtLeast235;
  test('memory a process worker touches is backed by huge pages; with hugetlb=0 it is not', {
    skip: real
      ? false
      : `needs THP enabled "madvise" (here ${enabled ?? 'unknown'}), defrag that compacts for madvise (here ${defrag ?? 'unknown'}) and glibc >= 2.35 (here ${glibc ?? 'none'})`,
  }, async () => {
    const on = makePool({ runtime: 'process', workers: 1, env: noTunables });
    const off = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' },
    });
    const [a, b] = await Promise.all([on.apply('hugePages', [60]), off.apply('hugePages', [60])]);
    assert.ok(a.kib >= 20 * 1024, `with hugetlb=1: ${a.kib} KiB in huge pages after touching 60 MiB`);
    assert.equal(b.kib, 0, `with hugetlb=0: ${b.kib} KiB in huge pages`);
  });
});

describe('process workers: V8 flags', () => {
  test("a process worker compiles on its own thread (--no-concurrent-recompilation) unless the pool's execArgv says otherwise", async () => {
    const plain = makePool({ runtime: 'process', workers: 1 });
    assert.deepEqual(await plain.apply('flags', []), ['--no-concurrent-recompilation']);
    // The pool's flags come after: V8 takes the last of two opposite flags.
    const own = makePool({ runtime: 'process', workers: 1, execArgv: ['--concurrent-recompilation'] });
    assert.deepEqual(await own.apply('flags', []), [
      '--no-concurrent-recompilation',
      '--concurrent-recompilation',
    ]);
  });
});
