// A process worker's stderr reaches the pool's terminal line by line without the dumps Node and V8
// print when the process dies; those stay on the error as stderrTail (issue 10).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WorkerCrashedError } from '../dist/src/index.js';
import { StderrRelay } from '../dist/src/runtime/stderr.js';
import { ready, sleep, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/heap-breach.mjs', import.meta.url);
const POOL_SCRIPT = fileURLToPath(new URL('./fixtures/heap-breach-pool.mjs', import.meta.url));
const MiB = 2 ** 20;
const V8_DUMP = /FATAL ERROR|Native stack trace|Last few GCs|JS stacktrace/;

const makePool = usePools(MODULE);

/** The rejection reason; a promise that resolves fails the test. */
async function rejection(promise) {
  try {
    const value = await promise;
    assert.fail(`expected a rejection, got ${JSON.stringify(value)}`);
  } catch (error) {
    return error;
  }
}

/** Runs fixtures/heap-breach-pool.mjs in a child Node, returns its stderr and its JSON report. */
function runPoolChild(runtime, env = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [POOL_SCRIPT, runtime],
      { env: { ...process.env, ...env }, timeout: 30_000, maxBuffer: 16 * MiB },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`${error.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
        resolve({ stderr, report: JSON.parse(stdout.trim().split('\n').at(-1)) });
      },
    );
  });
}

describe('stderrTail on the error of a dead worker', () => {
  test('process: a worker that wrote to stderr and then exited carries that text on its WorkerCrashedError', async () => {
    const { pool, events } = makePool({ runtime: 'process', workers: 1 });
    await ready(events, 1);
    const error = await rejection(pool.apply('sayThenExit', ['last words before exit', 3]));
    assert.ok(error instanceof WorkerCrashedError, `${error?.stack ?? error}`);
    assert.equal(error.exitCode, 3);
    assert.equal(error.stderrTail, 'last words before exit');
  });

  test("thread: stderrTail is undefined, a thread writes to the pool's own stderr", async () => {
    const { pool, events } = makePool({ runtime: 'thread', workers: 1 });
    await ready(events, 1);
    const error = await rejection(pool.apply('exit', [3]));
    assert.ok(error instanceof WorkerCrashedError, `${error?.stack ?? error}`);
    assert.equal(error.stderrTail, undefined);
  });
});

describe('StderrRelay, fed the stderr of a real dying Node', () => {
  /** stderr of a Node that prints two lines of its own and then exhausts a 32 MiB heap. */
  function dyingStderr() {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [
          '--max-old-space-size=32',
          '-e',
          "console.error('first line'); console.error(''); console.error('FATAL ERROR: not really, a task said this'); " +
            "console.error('last line'); const k = []; for (;;) k.push({ a: k.length, b: [k.length] });",
        ],
        { maxBuffer: 16 * MiB },
        (_error, _stdout, stderr) => resolve(stderr),
      );
    });
  }

  test('forwards the task lines (blank and look-alike ones too) and none of the dump, however it is chunked', async () => {
    const stderr = await dyingStderr();
    assert.match(stderr, V8_DUMP, 'the child really printed a V8 dump');
    for (const size of [1, 7, 64, 4096, stderr.length]) {
      let out = '';
      const relay = new StderrRelay((text) => {
        out += text;
      });
      for (let i = 0; i < stderr.length; i += size) relay.push(stderr.slice(i, i + size));
      relay.end();
      assert.equal(
        out,
        'first line\n\nFATAL ERROR: not really, a task said this\nlast line\n',
        `chunks of ${size}`,
      );
      assert.equal(relay.tail, stderr.slice(-4096));
    }
  });

  test('a line without its newline is forwarded after a short wait, and its end follows it', async () => {
    let out = '';
    const relay = new StderrRelay((text) => {
      out += text;
    });
    relay.push('progress 10%');
    assert.equal(out, '', 'held while it may still become a dump line');
    await sleep(400);
    assert.equal(out, 'progress 10%');
    relay.push(' 20%\nnext\n');
    assert.equal(out, 'progress 10% 20%\nnext\n');
    relay.push('\n');
    await sleep(400);
    assert.equal(out, 'progress 10% 20%\nnext\n\n', "a blank line is the task's once nothing follows");
    relay.end();
  });
});

describe('heap breach, what reaches the terminal', () => {
  test('process without the addons: V8 dies its slow way, but its dump stays off the terminal and on the error', async () => {
    const { stderr, report } = await runPoolChild('process', { CORRAL_NO_NATIVE: '1' });
    assert.equal(report.code, 'ERR_MEMORY_LIMIT', JSON.stringify(report));
    assert.equal(report.kind, 'heap');
    assert.match(stderr, /a line the task wrote with console.error\n/);
    assert.match(stderr, /the replacement worker is heard too\n/);
    assert.doesNotMatch(stderr, V8_DUMP);
    assert.match(report.stderrTail, /FATAL ERROR: .*JavaScript heap out of memory/);
  });

  test('thread: the breach prints nothing on the terminal and the task line still does', async () => {
    const { stderr, report } = await runPoolChild('thread');
    assert.equal(report.code, 'ERR_MEMORY_LIMIT', JSON.stringify(report));
    assert.equal(report.kind, 'heap');
    assert.match(stderr, /a line the task wrote with console.error\n/);
    assert.doesNotMatch(stderr, V8_DUMP);
    assert.equal(report.stderrTail, undefined);
  });
});
