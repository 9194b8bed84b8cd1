// What importing corral costs a program: the Node built-ins only some pools use (src/lazy.ts) load
// when first used, not with the import; a worker loads node:v8 at its first heap report, not at start.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe } from 'node:test';
import { promisify } from 'node:util';
import { test } from './helpers.mjs';

const INDEX = new URL('../dist/src/index.js', import.meta.url).href;
const LAZY = ['child_process', 'crypto', 'v8', 'fs/promises'];

/** Runs `body` (ES module code with `corral` imported) in a fresh Node; its stdout, parsed. */
async function fresh(body) {
  const script = `const corral = await import(${JSON.stringify(INDEX)});
    const loaded = () => process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
    ${body}`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  return JSON.parse(stdout);
}

describe('built-ins loaded on demand', () => {
  test('importing corral and running a thread pool loads none of them', async () => {
    const loaded = await fresh(`
      const pool = new corral.Pool({ module: ${JSON.stringify(new URL('./fixtures/tasks.mjs', import.meta.url).href)}, runtime: 'thread', workers: 1 });
      await pool.apply('square', [3]);
      await pool.close();
      console.log(JSON.stringify(loaded()));`);
    for (const m of LAZY) assert.ok(!loaded.includes(m), `${m} was loaded: ${loaded.join(' ')}`);
  });

  test('a process pool loads node:child_process when it starts its first worker', async () => {
    const [before, after] = await fresh(`
      const before = loaded();
      const pool = new corral.Pool({ module: ${JSON.stringify(new URL('./fixtures/tasks.mjs', import.meta.url).href)}, runtime: 'process', workers: 1 });
      const after = loaded();
      await pool.apply('square', [3]);
      await pool.close();
      console.log(JSON.stringify([before, after]));`);
    assert.ok(!before.includes('child_process'));
    assert.ok(after.includes('child_process'));
  });

  test('a fresh worker runs its first task without node:v8 loaded', async () => {
    const { Pool } = await import(INDEX);
    const pool = new Pool({
      module: new URL('./fixtures/tasks.mjs', import.meta.url),
      runtime: 'thread',
      workers: 1,
    });
    try {
      const { worker, loaded } = await pool.apply('builtinsLoaded', []);
      assert.ok(worker, 'the list is the worker thread’s');
      assert.ok(!loaded.includes('v8'), `v8 was loaded: ${loaded.join(' ')}`);
    } finally {
      await pool.close();
    }
  });
});
