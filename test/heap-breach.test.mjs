// Heap breaches must be fast and quiet (issue 10). A heap bomb under limits.heap ends as a
// MemoryLimitError of kind 'heap' before a 2 s task timeout can misreport it, even with the other
// core busy; the pool's terminal gets the task's own stderr lines but none of V8's fatal-error dump;
// the dump (or the heap guard's report) stays on the error as stderrTail; a thread's breach never
// takes the pool's process down.
//
// Measured on the shared 2-core VM (load 3-4 from other sessions; heap 128MiB; this fixture's
// objectBomb; Node 20, 22, 24): once the old generation is full, V8 alone takes 0.2-1.5 s more to
// end the worker (processes and threads alike), the heap guard 20-110 ms for a process and 10-190 ms
// for a thread. On Node 24 a thread's bomb without the guard aborted the whole process.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { after, before, describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  CorralError,
  MemoryLimitError,
  systemInfo,
  TaskTimeoutError,
  WorkerCrashedError,
} from '../dist/src/index.js';
import { StderrRelay } from '../dist/src/runtime/stderr.js';
import { RUNTIMES, ready, rejection, settles, sleep, test, usePools } from './helpers.mjs';

const MODULE = new URL('./fixtures/heap-breach.mjs', import.meta.url);
const POOL_SCRIPT = fileURLToPath(new URL('./fixtures/heap-breach-pool.mjs', import.meta.url));
const MiB = 2 ** 20;
/** How long a breach may take to settle before the test gives up on it (the pool's own timeout is 2 s or none). */
const BOMB_MS = 15_000;
const V8_DUMP = /FATAL ERROR|Native stack trace|Last few GCs|JS stacktrace/;
const GUARD_LINE = /corral-heap-guard: used=(\d+) limit=(\d+) by=(full|thrash|v8)/;

const makePool = usePools(MODULE);

/**
 * A child that keeps one core busy for the duration of a describe block, and ends by itself when
 * this process is gone (a test run killed half-way must not leave it spinning).
 */
const SPIN = `for (;;) {
  const t = Date.now() + 50;
  while (Date.now() < t);
  try { process.kill(${process.pid}, 0); } catch { process.exit(); }
}`;
function busyCore() {
  let spinner;
  before(() => {
    spinner = spawn(process.execPath, ['-e', SPIN], { stdio: 'ignore' });
  });
  after(() => {
    spinner.kill('SIGKILL');
  });
}

/** Runs fixtures/heap-breach-pool.mjs in a child Node, returns its stderr and its JSON report. */
function runPoolChild(runtime, env = {}, bombs = 1) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [POOL_SCRIPT, runtime, String(bombs)],
      { env: { ...process.env, ...env }, timeout: 30_000, maxBuffer: 16 * MiB },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`${error.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
        resolve({ stderr, report: JSON.parse(stdout.trim().split('\n').at(-1)) });
      },
    );
  });
}

function assertHeapBreach(error, { runtime }) {
  assert.ok(
    !(error instanceof TaskTimeoutError),
    `the heap bomb was misreported as a timeout: ${error.message}`,
  );
  assert.ok(error instanceof MemoryLimitError, `expected MemoryLimitError, got ${error?.stack ?? error}`);
  assert.ok(error instanceof CorralError);
  assert.equal(error.code, 'ERR_MEMORY_LIMIT');
  assert.equal(error.kind, 'heap');
  assert.equal(error.limit, 128 * MiB);
  assert.equal(error.task, 'objectBomb');
  if (runtime === 'process')
    assert.equal(typeof error.stderrTail, 'string', 'the stderr tail is on the error');
  else assert.equal(error.stderrTail, undefined, 'a thread has no stderr of its own');
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
  test('process: the pool forwards a task console.error line but no V8 dump and no guard report', async () => {
    const { stderr, report } = await runPoolChild('process');
    assert.equal(report.code, 'ERR_MEMORY_LIMIT', JSON.stringify(report));
    assert.equal(report.kind, 'heap');
    assert.match(stderr, /a line the task wrote with console.error\n/);
    assert.match(stderr, /the replacement worker is heard too\n/);
    assert.doesNotMatch(stderr, V8_DUMP);
    assert.doesNotMatch(stderr, /corral-heap-guard/);
    assert.match(report.stderrTail, GUARD_LINE);
  });

  test('process without the addons: V8 dies its slow way, but its dump stays off the terminal and on the error', async () => {
    const { stderr, report } = await runPoolChild('process', { CORRAL_NO_NATIVE: '1' });
    assert.equal(report.code, 'ERR_MEMORY_LIMIT', JSON.stringify(report));
    assert.equal(report.kind, 'heap');
    assert.match(stderr, /a line the task wrote with console.error\n/);
    assert.match(stderr, /the replacement worker is heard too\n/);
    assert.doesNotMatch(stderr, V8_DUMP);
    assert.match(report.stderrTail, /FATAL ERROR: .*JavaScript heap out of memory/);
  });

  test("thread: three heap bombs in a row leave the pool's process alive", async () => {
    // Node's own near-heap-limit callback for a Worker allows it 16 MiB more while it stops; on
    // Node 24 one scavenge promotes more than that past the limit and V8 aborted the whole
    // process, pool included (every time, measured). The guard gives a stopping thread room.
    const { report } = await runPoolChild('thread', {}, 3);
    assert.deepEqual(report.codes, ['ERR_MEMORY_LIMIT', 'ERR_MEMORY_LIMIT', 'ERR_MEMORY_LIMIT']);
    assert.equal(report.after, 'the replacement worker is heard too');
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

describe('heap breach, the other core busy', () => {
  busyCore();

  test('the heap guard addon is built for this Node (workers depend on it to die quickly)', () => {
    assert.equal(systemInfo().capabilities.heapGuard, true, 'run `node scripts/build-native.mjs`');
  });

  // The bomb starts from a worker that already holds 90 MiB: filling all 128 MiB from nothing takes
  // this bomb 1.0-1.8 s on the shared 2-core VM with one core busy (measured), which would make the
  // 2 s timeout measure the machine. From 90 MiB it reaches the limit in a few hundred ms; then V8
  // alone takes 0.5-1.5 s more to give up (measured), the guard one collection.
  for (const runtime of RUNTIMES) {
    test(`${runtime}: a heap bomb under heap 128MiB with taskTimeout 2000 is a heap MemoryLimitError, the worker is replaced`, async () => {
      const { pool, events } = makePool({
        runtime,
        workers: 1,
        limits: { heap: '128MiB' },
        taskTimeout: 2000,
      });
      await ready(events, 1);
      await pool.apply('fill', [90], { timeout: 30_000 });
      const error = await rejection(pool.apply('objectBomb', []), 'the heap bomb', BOMB_MS);
      assertHeapBreach(error, { runtime });
      // The guard ended it (V8's own end carries no numbers): what it saw is live data near the limit
      // (Node 24 may promote past it in one scavenge).
      assert.ok(error.observed > 100 * MiB, `observed ${error.observed}`);
      if (runtime === 'process') {
        const report = GUARD_LINE.exec(error.stderrTail);
        assert.ok(report, `the guard's report is in the tail: ${JSON.stringify(error.stderrTail)}`);
        assert.deepEqual([Number(report[1]), Number(report[2])], [error.observed, 128 * MiB]);
        assert.doesNotMatch(error.stderrTail, V8_DUMP);
        assert.equal(error.pid, events.starts[0].pid);
      }
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.apply('square', [i])));
      assert.deepEqual(
        results,
        Array.from({ length: 20 }, (_, i) => i * i),
      );
      assert.equal(events.starts.length, 2, 'one replacement worker');
    });
  }
});

describe('heap breach, told apart from look-alikes', () => {
  for (const runtime of RUNTIMES) {
    // holdAndChurn counts what it holds as heapUsed growth from a start that includes garbage; a
    // collection during the fill frees that garbage, so it ends up holding more than asked. Asked for
    // 90 MiB, Node 24 once held 114.1 MiB live, past the guard's "full" line (112 MiB of 128): 80 leaves
    // room for that and still holds most of the heap.
    test(`${runtime}: a task holding 80 MiB of a 128 MiB heap while churning garbage for 3 s completes`, async () => {
      const { pool, events } = makePool({ runtime, workers: 1, limits: { heap: '128MiB' } });
      await ready(events, 1);
      const [kept, made] = await settles(pool.apply('holdAndChurn', [80, 3000]), 'the task', BOMB_MS);
      assert.ok(kept > 0 && made > 0);
      assert.equal(events.starts.length, 1, 'the worker was not replaced');
    });
  }

  test('process: a task calling process.exit with the guard exit code (87) is a crash, not a breach', async () => {
    const { pool, events } = makePool({ runtime: 'process', workers: 1, limits: { heap: '128MiB' } });
    await ready(events, 1);
    const error = await rejection(pool.apply('exit', [87]));
    assert.ok(error instanceof WorkerCrashedError, `${error?.stack ?? error}`);
    assert.equal(error.exitCode, 87);
    assert.equal(error.stderrTail, undefined, 'it wrote nothing to stderr');
  });

  test('process: text a task left without a newline before the breach is forwarded, the report is not', async () => {
    const { pool, events } = makePool({ runtime: 'process', workers: 1, limits: { heap: '128MiB' } });
    await ready(events, 1);
    const written = [];
    const write = process.stderr.write;
    process.stderr.write = (chunk) => {
      written.push(String(chunk));
      return true;
    };
    let error;
    try {
      error = await rejection(pool.apply('sayThenBomb', ['unfinished line ']), 'the heap bomb', BOMB_MS);
    } finally {
      process.stderr.write = write;
    }
    assert.equal(error.code, 'ERR_MEMORY_LIMIT', error.message);
    const text = written.join('');
    assert.match(text, /unfinished line /);
    assert.doesNotMatch(text, /corral-heap-guard/);
    assert.match(error.stderrTail, /unfinished line corral-heap-guard: used=/);
  });
});
