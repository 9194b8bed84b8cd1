// `module` may be a .ts file where this Node runs TypeScript (type stripping, Node >= 22.18);
// elsewhere the pool refuses it at once with a ConfigError that says what to do.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ConfigError, Pool } from '../dist/src/index.js';

const module = new URL('./fixtures/ts-tasks.ts', import.meta.url);
const [major, minor] = process.versions.node.split('.').map(Number);
const runsTs = major > 23 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);

it(`a .ts task module ${runsTs ? 'runs' : 'is refused'} on Node ${process.versions.node}`, async () => {
  if (!runsTs) {
    assert.throws(
      () => new Pool({ module }),
      (e) => e instanceof ConfigError && e.option === 'module' && /compile it to \.js first/.test(e.message),
    );
    return;
  }
  for (const runtime of ['thread', 'process']) {
    const pool = new Pool({ module, runtime, workers: 1 });
    try {
      assert.deepEqual(await pool.map('triple', [1, 2, 3]), [3, 6, 9]);
    } finally {
      await pool.close();
    }
  }
});
