// Where workers start (runtime/spawn.ts): the bundled entry that `npm run build` makes
// (scripts/bundle-worker.mjs), unless it is missing or older than a module it was made from, when
// workers start from worker/main.js instead and so never run stale code.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test, useTempDir } from './helpers.mjs';

const DIST = fileURLToPath(new URL('../dist/src', import.meta.url));
const tmp = dirname(useTempDir('corral-entry-', 'unused')());
const TASK = join(tmp, 'argv-task.mjs');
writeFileSync(TASK, 'export const argv = () => process.argv[1];\n');

/** In a fresh Node: the entry a process worker of the corral build at `src` started from. */
async function entryOf(src) {
  const script = `
    const { Pool } = await import(${JSON.stringify(join(src, 'index.js'))});
    const pool = new Pool({ module: ${JSON.stringify(TASK)}, runtime: 'process', workers: 1 });
    try { console.log(await pool.apply('argv', [])); } finally { await pool.close(); }`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  return stdout.trim();
}

describe('worker entry', () => {
  test('workers of this build start from the bundle; the bundle was made from the worker modules', async () => {
    const inputs = JSON.parse(readFileSync(join(DIST, 'worker/entry.inputs.json'), 'utf8'));
    assert.ok(inputs.includes('main.js') && inputs.includes('runner.js'), `inputs: ${inputs}`);
    // shm/shared-memory.js stays outside: a task's SharedMemory must be the class the runner decodes
    // with. shm/used.js is inside: its flag lives on globalThis, so the package's copy sets it too.
    assert.ok(!inputs.includes('../shm/shared-memory.js'), `inputs: ${inputs}`);
    assert.ok(inputs.includes('../shm/used.js'), `inputs: ${inputs}`);
    assert.equal(await entryOf(DIST), join(DIST, 'worker/entry.js'));
  });

  test('a bundle older than a module it was made from, or without its list of inputs, is not used', async () => {
    const copy = join(tmp, 'dist', 'src');
    cpSync(DIST, copy, { recursive: true, preserveTimestamps: true });
    writeFileSync(join(tmp, 'package.json'), '{"type":"module"}\n');
    assert.equal(await entryOf(copy), join(copy, 'worker/entry.js'));
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(copy, 'worker/runner.js'), later, later); // as a `tsc --watch` rebuild of runner.ts
    assert.equal(await entryOf(copy), join(copy, 'worker/main.js'));
    utimesSync(join(copy, 'worker/entry.js'), later, later); // bundled again
    assert.equal(await entryOf(copy), join(copy, 'worker/entry.js'));
    rmSync(join(copy, 'worker/entry.inputs.json'));
    assert.equal(await entryOf(copy), join(copy, 'worker/main.js'));
  });
});
