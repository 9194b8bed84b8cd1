// Process workers start with glibc's malloc asking for transparent huge pages (runtime/process.ts):
// a process worker faults in afresh the memory its malloc handed back, and in 2 MiB pages that costs
// a twentieth of what 4 KiB pages do here (issue 16). What the user's own GLIBC_TUNABLES says wins.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe } from 'node:test';
import { test, usePools } from './helpers.mjs';

const TASKS = new URL('./fixtures/malloc-tasks.mjs', import.meta.url);
const makeWithEvents = usePools(TASKS);
const makePool = (options) => makeWithEvents(options).pool;

/** THP mode in [brackets]; huge pages only on request ("madvise") is where the tunable decides. */
function thpMode() {
  try {
    return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}
const glibc = process.report.getReport().header.glibcVersionRuntime;
const glibcAtLeast235 =
  glibc !== undefined && Number(glibc.split('.')[1]) >= 35 && Number(glibc.split('.')[0]) >= 2;

describe('process workers: malloc tunables', () => {
  test('a process worker starts with glibc.malloc.hugetlb=1', async () => {
    const pool = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: undefined },
    });
    assert.equal(await pool.apply('tunables', []), 'glibc.malloc.hugetlb=1');
  });

  test("the user's other tunables are kept, and the user's own hugetlb setting wins", async () => {
    const mine = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' },
    });
    assert.equal(await mine.apply('tunables', []), 'glibc.malloc.hugetlb=0');
    const other = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.check=0' },
    });
    assert.equal(await other.apply('tunables', []), 'glibc.malloc.check=0:glibc.malloc.hugetlb=1');
  });

  test('thread workers share the pool process: nothing is added (and a key set to undefined is left out, as in a process)', async () => {
    const pool = makePool({
      runtime: 'thread',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: undefined },
    });
    assert.equal(await pool.apply('tunables', []), null);
  });

  const real = thpMode() === 'madvise' && glibcAtLeast235;
  test('memory a process worker touches is backed by huge pages; with hugetlb=0 it is not', {
    skip: real
      ? false
      : `needs THP "madvise" (here ${thpMode() ?? 'unknown'}) and glibc >= 2.35 (here ${glibc ?? 'none'})`,
  }, async () => {
    const on = makePool({
      runtime: 'process',
      workers: 1,
      env: { ...process.env, GLIBC_TUNABLES: undefined },
    });
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
