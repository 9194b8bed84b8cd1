// Compiled by tsc (down-levelled for Node 20/22), then run by test/scoped.test.mjs: `using` and
// `await using` really close corral's scoped resources, also when the block throws.
import { openFile, openFileSync, tempDir } from '../../src/index.js';

export async function usingBlock(fail: boolean): Promise<string> {
  await using dir = await tempDir('corral-using-');
  using raw = openFileSync('/dev/null');
  await using file = await openFile('/dev/null');
  if (fail) throw new Error(`failed inside the block (fd ${raw.fd}, ${file.fd})`);
  return dir.path;
}
