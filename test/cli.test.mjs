// The `corral` command end to end: every test spawns the real `node dist/src/cli/main.js` and looks only
// at what a user sees: stdout, stderr, files and the exit status.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const TASKS = fileURLToPath(new URL('./fixtures/cli-tasks.mjs', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'corral-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const file = (name) => join(tmp, `${++seq}-${name}`);

/** Runs the command; resolves with { code, signal, stdout, stderr }. `onStderr` sees stderr as it comes. */
function corral(args, { input, stdin, timeout = 60_000, env, onStderr, onSpawn } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: tmp,
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: [stdin ?? 'pipe', 'pipe', 'pipe'],
    });
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
      onStderr?.(stderr, child);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`corral ${args.join(' ')} did not finish in ${timeout} ms\n${stderr}`));
    }, timeout);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (!stdin) {
      child.stdin.on('error', () => {});
      child.stdin.end(input ?? '');
    }
  });
}

const lines = (text) => text.split('\n').filter((l) => l !== '');
const numbers = (n, from = 1) => Array.from({ length: n }, (_, i) => i + from);
const jsonl = (values) => values.map((v) => JSON.stringify(v)).join('\n') + '\n';

describe('corral run: output', () => {
  test('ordered output on 3000 lines, worker threads, tasks finishing out of order', async () => {
    const out = file('out.jsonl');
    const { code, stderr } = await corral(['run', `${TASKS}#jitter`, '--output', out, '--workers', '2'], {
      input: jsonl(numbers(3000)),
    });
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      lines(readFileSync(out, 'utf8')).map((l) => JSON.parse(l)),
      numbers(3000).map((x) => ({ x, y: x * 2 })),
    );
    assert.match(stderr, /3,000 done of 3,000 read: 3,000 ok, 0 failed/);
  });

  test('ordered output on 3000 lines, worker processes, via stdout', async () => {
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#square`, '--runtime', 'process'], {
      input: jsonl(numbers(3000)),
    });
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      lines(stdout).map(Number),
      numbers(3000).map((x) => x * x),
    );
    assert.match(stderr, /process\s+pid \d+/);
  });

  test('--unordered writes every result once, in completion order', async () => {
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#jitter`, '--unordered', '--with-index'], {
      input: jsonl(numbers(3000)),
    });
    assert.equal(code, 0, stderr);
    const got = lines(stdout).map((l) => JSON.parse(l));
    assert.equal(got.length, 3000);
    assert.deepEqual(
      got.map((r) => r.index).sort((a, b) => a - b),
      numbers(3000, 0),
    );
    for (const { index, result } of got) assert.deepEqual(result, { x: index + 1, y: 2 * (index + 1) });
  });

  test('--chunksize N goes through pool.imap and keeps the order', async () => {
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#square`, '--chunksize', '50'], {
      input: jsonl(numbers(3000)),
    });
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      lines(stdout).map(Number),
      numbers(3000).map((x) => x * x),
    );
  });

  test('--lines passes raw text lines; --with-index tags results with the input line', async () => {
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#upper`, '--lines', '--with-index'], {
      input: 'hello\n{not json}\n\nlast line without newline',
    });
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      lines(stdout).map((l) => JSON.parse(l)),
      [
        { index: 0, result: 'HELLO' },
        { index: 1, result: '{NOT JSON}' },
        { index: 2, result: '' },
        { index: 3, result: 'LAST LINE WITHOUT NEWLINE' },
      ],
    );
  });

  for (const runtime of ['thread', 'process']) {
    test(`what a module prints while it loads goes to stderr (${runtime})`, async () => {
      const { code, stdout, stderr } = await corral(
        [
          'run',
          `${fileURLToPath(new URL('./fixtures/cli-loud-module.mjs', import.meta.url))}#double`,
          '--runtime',
          runtime,
        ],
        { input: jsonl(numbers(5)) },
      );
      assert.equal(code, 0, stderr);
      assert.deepEqual(lines(stdout).map(Number), [2, 4, 6, 8, 10]);
      assert.match(stderr, /loading the loud module/);
    });
    test(`what a task prints goes to stderr, never into the results (${runtime})`, async () => {
      const { code, stdout, stderr } = await corral(['run', `${TASKS}#noisy`, '--runtime', runtime], {
        input: jsonl(numbers(20)),
      });
      assert.equal(code, 0, stderr);
      assert.deepEqual(lines(stdout).map(Number), numbers(20));
      assert.match(stderr, /noise from task/);
    });
  }
});

describe('corral run: failures', () => {
  test('--chunksize N: the first failure ends the run, as in pool.imap; it says where to resume', async () => {
    const errors = file('errors.jsonl');
    const report = file('report.json');
    const { code, stdout } = await corral(
      ['run', `${TASKS}#picky`, '--chunksize', '10', '--errors', errors, '--report', report, '-q'],
      { input: jsonl(numbers(3000)) },
    );
    assert.equal(code, 1);
    assert.deepEqual(lines(stdout).map(Number), [2, 3, 4, 5, 6, 7]);
    const [failed] = lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l));
    assert.deepEqual(
      { index: failed.index, input: failed.input, code: failed.error.code },
      { index: 6, input: 7, code: 'ERR_TASK_FAILED' },
    );
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.stopped, 'fail-fast');
    assert.equal(r.resumeLine, 8);
  });

  test('an item that kills its workers is quarantined: --errors holds its crash history, the run goes on', async () => {
    const out = file('out.jsonl');
    const errors = file('errors.jsonl');
    const { code } = await corral(
      [
        'run',
        `${TASKS}#poisonSeven`,
        '--retries',
        '5',
        '--workers',
        '1',
        '--output',
        out,
        '--errors',
        errors,
        '-q',
      ],
      { input: jsonl(numbers(20)) },
    );
    assert.equal(code, 1);
    assert.deepEqual(
      lines(readFileSync(out, 'utf8')).map(Number),
      numbers(20)
        .filter((x) => x !== 7)
        .map((x) => x * x),
    );
    const [failed, ...more] = lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l));
    assert.equal(more.length, 0);
    assert.equal(failed.input, 7);
    assert.equal(failed.error.code, 'ERR_POISON_TASK');
    assert.equal(failed.error.crashes.length, 2);
    assert.deepEqual(
      failed.error.crashes.map((c) => c.exitCode),
      [9, 9],
    );
  });

  test('failed items go to --errors with index, input and code; the run goes on; exit 1', async () => {
    const out = file('out.jsonl');
    const errors = file('errors.jsonl');
    // 1..600 with a malformed line after 30 and a blank line after it; 500 kills its worker.
    const input = [...numbers(30).map(String), '{"oops": ', '', ...numbers(570, 31).map(String)].join('\n');
    const { code, stderr } = await corral(
      ['run', `${TASKS}#picky`, '--runtime', 'process', '--output', out, '--errors', errors],
      { input },
    );
    assert.equal(code, 1, stderr);
    const failed = lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l));
    const sevens = numbers(600).filter((x) => x % 7 === 0);
    // The malformed line is a failed item like any other (code ERR_INPUT_JSON), reported with its raw text.
    const bad = failed.find((f) => f.error.code === 'ERR_INPUT_JSON');
    assert.deepEqual({ index: bad.index, input: bad.input }, { index: 30, input: '{"oops": ' });
    assert.match(bad.error.message, /line 31 is not valid JSON/);
    const crashed = failed.find((f) => f.error.code === 'ERR_WORKER_CRASHED');
    assert.equal(crashed.input, 500);
    assert.equal(crashed.error.exitCode, 3);
    const thrown = failed.filter((f) => f.error.code === 'ERR_TASK_FAILED');
    assert.deepEqual(
      thrown.map((f) => f.input),
      sevens,
    );
    for (const f of thrown) {
      assert.equal(f.error.cause.code, 'E_SEVEN');
      // index is the 0-based input line: lines after the malformed and the blank one are shifted by 2.
      assert.equal(f.index, f.input <= 30 ? f.input - 1 : f.input + 1);
    }
    assert.equal(failed.length, sevens.length + 2);
    // Every other item, in order; failed ones have no output line.
    const ok = numbers(600).filter((x) => x % 7 !== 0 && x !== 500);
    assert.deepEqual(
      lines(readFileSync(out, 'utf8')).map(Number),
      ok.map((x) => x + 1),
    );
    assert.match(stderr, /failures {2}ERR_TASK_FAILED 85, ERR_INPUT_JSON 1, ERR_WORKER_CRASHED 1/);
    assert.match(stderr, /1 crashed/);
  });

  test('--errors and --output are each open once while the run goes on, and the errors are all kept', async () => {
    const out = file('out.jsonl');
    const errors = file('errors.jsonl');
    const openOn = (pid, path) => {
      let n = 0;
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`) === path) n++;
        } catch {}
      }
      return n;
    };
    let seen;
    const { code, stderr } = await corral(['run', `${TASKS}#picky`, '--output', out, '--errors', errors], {
      stdin: 'pipe',
      onSpawn: (child) => {
        child.stdin.on('error', () => {});
        child.stdin.write('7\n1\n');
        // Input stays open: the run is in full swing once the first result is out.
        const poll = setInterval(() => {
          let text = '';
          try {
            text = readFileSync(out, 'utf8');
          } catch {}
          if (!text.includes('2')) return;
          clearInterval(poll);
          seen = { errors: openOn(child.pid, errors), output: openOn(child.pid, out) };
          child.stdin.end('14\n3\n');
        }, 20);
        child.on('close', () => clearInterval(poll));
      },
    });
    assert.equal(code, 1, stderr);
    assert.deepEqual(seen, { errors: 1, output: 1 }, 'descriptors of the run open on each file');
    assert.deepEqual(
      lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l).input),
      [7, 14],
    );
    assert.deepEqual(lines(readFileSync(out, 'utf8')).map(Number), [2, 4]);
  });

  test('without --errors the first failures are listed on stderr', async () => {
    const { code, stderr } = await corral(['run', `${TASKS}#picky`], { input: jsonl(numbers(30)) });
    assert.equal(code, 1);
    assert.match(stderr, /failed items \(use --errors FILE to keep them all\)/);
    assert.match(stderr, /#6 {2}ERR_TASK_FAILED {2}task 'picky' failed: Error: 7 is a multiple of 7/);
  });

  test('--fail-fast stops reading at the first failure', async () => {
    const { code, stdout, stderr } = await corral(
      ['run', `${TASKS}#picky`, '--fail-fast', '--workers', '1'],
      {
        input: jsonl(numbers(3000)),
      },
    );
    assert.equal(code, 1, stderr);
    assert.ok(lines(stdout).length < 2000, `${lines(stdout).length} results after fail-fast`);
    assert.deepEqual(lines(stdout).slice(0, 6).map(Number), [2, 3, 4, 5, 6, 7]);
    assert.match(stderr, /stopped at the first failure/);
  });

  test('a heap breach is contained and reported in the summary and the report', async () => {
    const report = file('report.json');
    const input = jsonl(numbers(40).map((id) => (id === 20 ? { hog: true } : { id })));
    const { code, stdout, stderr } = await corral(
      ['run', `${TASKS}#hog`, '--runtime', 'process', '--heap', '64MiB', '--report', report],
      { input },
    );
    assert.equal(code, 1, stderr);
    assert.deepEqual(
      lines(stdout).map(Number),
      numbers(40).filter((x) => x !== 20),
    );
    assert.match(stderr, /limits {4}1 breach: heap 1, 0 recycled, 0 crashed, 0 timed out/);
    // V8 aborts (SIGABRT), or the heap guard ends the worker first (exit code 87, no signal).
    assert.match(stderr, /process +pid \d+ +\d+ +[\d.]+ MiB +heap limit( \(SIGABRT\))?\n/);
    assert.match(
      stderr,
      /#19 {2}ERR_MEMORY_LIMIT {2}task 'hog' (went over|filled) the heap limit of 64.0 MiB/,
    );
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.breaches.total, 1);
    assert.deepEqual(r.breaches.byKind, { heap: 1 });
    assert.equal(r.failures.byCode.ERR_MEMORY_LIMIT, 1);
    assert.ok(
      r.workers.some((w) => w.exit?.reason !== 'pool closed'),
      'the breaching worker was replaced',
    );
  });
});

describe('corral run: usage and setup errors exit 2 with a message that says what to fix', () => {
  const cases = [
    [['run', `${TASKS}#square`, '--wrokers', '2'], /unknown option --wrokers \(did you mean --workers\?\)/],
    [
      ['run', `${TASKS}#square`, '--workers', 'zero'],
      /--workers expects an integer >= 1 or 'auto', got 'zero'/,
    ],
    [
      ['run', `${TASKS}#square`, '--runtime', 'proces'],
      /--runtime expects one of thread, process, auto, got 'proces' \(did you mean process\?\)/,
    ],
    [['run', `${TASKS}#square`, '--timeout'], /--timeout needs a value \(DUR\)/],
    [['run'], /missing <module>#<export>/],
    [['run', join(tmp, 'missing.mjs#square')], /cannot use the task module: no such file: .*missing\.mjs/],
    [['run', `${TASKS}#sqare`], /has no function export named 'sqare'; it exports: .*square/],
    [['run', `${TASKS}#notAFunction`], /has no function export named 'notAFunction'/],
    [['run', `${TASKS}#square`, '--input', join(tmp, 'nope.jsonl')], /cannot read --input .*nope\.jsonl/],
    [
      ['run', `${TASKS}#square`, '--rss', '256MiB', '--runtime', 'thread'],
      /--rss: .*needs runtime 'process'/,
    ],
    [['run', `${TASKS}#square`, '--address-space', '1MiB'], /--address-space: /],
    [['rnu'], /unknown command 'rnu' \(did you mean 'run'\?\)/],
  ];
  for (const [args, pattern] of cases) {
    test(args.slice(1).join(' ').replace(tmp, '<tmp>') || args[0], async () => {
      const { code, stdout, stderr } = await corral(args, { input: '1\n2\n' });
      assert.equal(code, 2, stderr);
      assert.equal(stdout, '');
      assert.match(stderr, pattern);
    });
  }

  test('--help lists every flag with its default', async () => {
    const { code, stdout: text } = await corral(['run', '--help']);
    assert.equal(code, 0);
    // Long descriptions wrap onto indented lines: join them back.
    const stdout = text.replace(/\n {20,}/g, ' ');
    for (const flag of [
      'input',
      'output',
      'errors',
      'report',
      'lines',
      'unordered',
      'fail-fast',
      'quiet',
      'workers',
      'runtime',
      'kind',
      'heap',
      'rss',
      'address-space',
      'data',
      'open-files',
      'cpu-time',
      'memory-budget',
      'timeout',
      'chunksize',
      'retries',
    ]) {
      assert.match(stdout, new RegExp(`--${flag}\\b.*\\(default: [^)]+\\)`), `--${flag} with its default`);
    }
    assert.match(stdout, /Exit status: 0 every item succeeded; 1 some items failed; 2 usage or setup error/);
  });
});

describe('corral run: every pool option is a flag, or --help says why not', () => {
  test('--capture-output puts what a failed item wrote on its --errors line; --workers MIN..MAX is elastic', async () => {
    const errors = file('errors.jsonl');
    const { code, stdout, stderr } = await corral(
      ['run', `${TASKS}#talkative`, '--capture-output', '--workers', '0..2', '--errors', errors, '-q'],
      { input: jsonl([1, -2, 3]) },
    );
    assert.equal(code, 1, stderr);
    assert.deepEqual(lines(stdout).map(Number), [1, 3]);
    const [failed] = lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l));
    assert.equal(failed.input, -2);
    assert.match(failed.error.output, /checking -2/);
    assert.doesNotMatch(failed.error.output, /checking 1/);
  });

  test('--initializer and --init-args run the initializer in each worker first', async () => {
    for (const runtime of ['thread', 'process']) {
      const args = ['--initializer', 'setup', '--init-args', '["a", 2]', '--runtime', runtime, '-q'];
      const { code, stdout, stderr } = await corral(['run', `${TASKS}#initialized`, ...args], {
        input: '0\n1\n',
      });
      assert.equal(code, 0, stderr);
      assert.deepEqual(
        lines(stdout).map(JSON.parse),
        [
          ['a', 2],
          ['a', 2],
        ],
        runtime,
      );
    }
  });

  test('--exec-argv gives process workers those Node flags', async () => {
    const args = ['--exec-argv', ' --max-semi-space-size=4  --no-warnings', '--runtime', 'process', '-q'];
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#execArgv`, ...args], { input: '0\n' });
    assert.equal(code, 0, stderr);
    const argv = JSON.parse(lines(stdout)[0]);
    assert.ok(argv.includes('--max-semi-space-size=4') && argv.includes('--no-warnings'), stdout);
  });

  test('--detect-leaks counts leaked descriptors in the summary; --recycle-on-leak retires the worker', async () => {
    const report = file('leaks.json');
    const leaks = await corral(
      ['run', `${TASKS}#leakFd`, '--detect-leaks', '--workers', '1', '--report', report],
      {
        input: '1\n2\n3\n',
      },
    );
    assert.equal(leaks.code, 0, leaks.stderr);
    assert.match(leaks.stderr, /3 descriptors leaked/);
    assert.equal(JSON.parse(readFileSync(report, 'utf8')).leakedFds, 3);
    const recycled = await corral(
      ['run', `${TASKS}#leakFd`, '--recycle-on-leak', '--workers', '1', '--report', report, '-q'],
      { input: '1\n2\n3\n' },
    );
    assert.equal(recycled.code, 0, recycled.stderr);
    assert.ok(JSON.parse(readFileSync(report, 'utf8')).recycles >= 2, readFileSync(report, 'utf8'));
  });

  test('the other new flags reach the pool: its refusals name the option', async () => {
    const cases = [
      [['--init-args', '{"a":1}'], /--init-args expects a JSON array/],
      [['--idle-timeout', 'soon'], /idleTimeout: expected a duration/],
      [['--cancel-grace', 'soon'], /cancelGrace: expected a duration/],
      [['--sample-interval', 'often'], /sampleInterval: expected a duration/],
      [['--start-timeout', 'later'], /startTimeout: expected a duration/],
      [['--recycle-rss', 'big', '--runtime', 'process'], /whenRssAbove: expected a size/],
      [['--recycle-heap', 'big'], /whenHeapAbove: expected a size/],
      [['--initializer', 'nope'], /nope/],
    ];
    for (const [flags, pattern] of cases) {
      const { code, stderr } = await corral(['run', `${TASKS}#square`, ...flags, '-q'], { input: '1\n' });
      assert.equal(code, 2, `${flags.join(' ')}: ${stderr}`);
      assert.match(stderr, pattern, flags.join(' '));
    }
    const ok = await corral(
      [
        'run',
        `${TASKS}#square`,
        '--idle-timeout',
        '50ms',
        '--sample-interval',
        '20ms',
        '--start-timeout',
        '10s',
        '--recycle-heap',
        '1GiB',
        '-q',
      ],
      { input: '3\n' },
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, '9\n');
  });

  test('--help names the flag of every pool option, or says why there is none', async () => {
    const { stdout: text } = await corral(['run', '--help']);
    const help = text.replace(/\n {20,}/g, ' ');
    const { POOL_OPTION_FLAGS } = await import('../dist/src/cli/run-args.js');
    for (const [option, flag] of Object.entries(POOL_OPTION_FLAGS)) {
      if (typeof flag === 'string') {
        for (const f of flag.match(/--[a-z-]+/g) ?? [])
          assert.match(help, new RegExp(`^ +(-\\w, )?${f} `, 'm'), `${option}: ${f}`);
      } else assert.ok(help.includes(`  ${option}: ${flag.none}`), option);
    }
  });
});

describe('corral run: Ctrl-C and streaming', () => {
  /** Waits until the plain progress line says at least `n` items are done, then calls `then`. */
  const whenDone = (n, then) => {
    let fired = false;
    return (stderr, child) => {
      const m = [...stderr.matchAll(/corral: ([\d,]+)\/?[~\d,]* done/g)].at(-1);
      if (!fired && m && Number(m[1].replace(/,/g, '')) >= n) {
        fired = true;
        then(child);
      }
    };
  };

  test('one SIGINT: input stops, running items finish, the output is complete and in order', async () => {
    const out = file('out.jsonl');
    const report = file('report.json');
    const { code, stderr } = await corral(
      ['run', `${TASKS}#slow`, '--output', out, '--report', report, '--kind', 'io', '--workers', '2'],
      { input: jsonl(numbers(20_000)), onStderr: whenDone(100, (child) => child.kill('SIGINT')) },
    );
    assert.equal(code, 130, stderr);
    const text = readFileSync(out, 'utf8');
    assert.ok(text.endsWith('\n'), 'no half-written last line');
    const got = lines(text).map(Number);
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.stopped, 'interrupted');
    assert.ok(got.length >= 100 && got.length < 20_000, `${got.length} lines`);
    // Every item reported done is in the output, in order: a prefix of the input.
    assert.equal(r.items.done, got.length);
    assert.equal(r.items.written, got.length);
    assert.deepEqual(got, numbers(got.length));
    assert.match(stderr, /stopped by Ctrl-C/);
  });

  test('two SIGINTs: workers stop now; what was written is still whole lines, in order', async () => {
    const out = file('out.jsonl');
    const report = file('report.json');
    const { code, stderr } = await corral(
      ['run', `${TASKS}#slow`, '--output', out, '--report', report, '--runtime', 'process'],
      {
        input: jsonl(numbers(5000).map((x) => ({ ms: x % 50 === 0 ? 3000 : 5, x }))),
        onStderr: whenDone(60, (child) => {
          child.kill('SIGINT');
          setTimeout(() => child.kill('SIGINT'), 200);
        }),
      },
    );
    assert.equal(code, 130, stderr);
    const text = readFileSync(out, 'utf8');
    assert.ok(text === '' || text.endsWith('\n'), 'no half-written last line');
    const got = lines(text).map((l) => JSON.parse(l).x);
    assert.deepEqual(got, numbers(got.length));
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.stopped, 'terminated');
    assert.ok(r.items.cancelled > 0, 'the running items were abandoned');
    // The output stops before the first abandoned item, which is where a new run can resume.
    assert.equal(r.resumeLine, got.length + 1);
    assert.equal(r.items.written, got.length);
  });

  test('an endless input is read only as fast as items finish', async () => {
    const report = file('report.json');
    // A producer that never stops: if corral read ahead without bound, its memory would grow until killed.
    const producer = spawn(process.execPath, [
      '-e',
      `const line = JSON.stringify({ ms: 1, pad: 'x'.repeat(200) }) + '\\n';
       const chunk = line.repeat(1000);
       const write = () => { while (process.stdout.write(chunk)); };
       process.stdout.on('drain', write); process.stdout.on('error', () => process.exit(0)); write();`,
    ]);
    try {
      const { code, stderr } = await corral(
        ['run', `${TASKS}#slow`, '--output', '/dev/null', '--report', report, '--kind', 'io'],
        { stdin: producer.stdout, onStderr: whenDone(3000, (child) => child.kill('SIGINT')) },
      );
      assert.equal(code, 130, stderr);
      const r = JSON.parse(readFileSync(report, 'utf8'));
      assert.ok(r.items.read - r.items.done === 0, 'everything read was finished');
      assert.ok(r.items.read < 200_000, `read ${r.items.read} items`);
      assert.ok(r.parentPeakRss < 400 * 2 ** 20, `parent peak RSS ${r.parentPeakRss}`);
    } finally {
      producer.kill();
    }
  });
});

describe('corral run: --timeout', () => {
  const items = jsonl([
    { ms: 60, x: 1 },
    { ms: 10, x: 2 },
  ]);
  const run = async (timeout) => {
    const report = file('report.json');
    const r = await corral(['run', `${TASKS}#slow`, '--timeout', timeout, '--report', report, '-q'], {
      input: items,
    });
    return { ...r, report: r.code === 2 ? undefined : JSON.parse(readFileSync(report, 'utf8')) };
  };

  for (const none of ['none', 'Infinity']) {
    test(`--timeout ${none} means no limit`, async () => {
      const { code, stdout, stderr, report } = await run(none);
      assert.equal(code, 0, stderr);
      assert.deepEqual(
        lines(stdout).map((l) => JSON.parse(l).x),
        [1, 2],
      );
      assert.equal(report.timeouts, 0);
      assert.equal('taskTimeout' in report.options, false);
    });
  }

  test('--timeout 30ms still stops the item that runs longer', async () => {
    const { code, stdout, report } = await run('30ms');
    assert.equal(code, 1);
    assert.deepEqual(
      lines(stdout).map((l) => JSON.parse(l).x),
      [2],
    );
    assert.deepEqual(report.failures.byCode, { ERR_TASK_TIMEOUT: 1 });
  });

  // Past 2^31-1 ms a bare setTimeout fires after 1 ms: the pool has to clamp its timers. Until the
  // library here does, the command can only pass the value on, so this waits for that.
  test('--timeout 1000h (past 2^31-1 ms) is a deadline far away, not a usage error', async (t) => {
    const { Pool } = await import('../dist/src/index.js');
    const pool = new Pool({ module: TASKS, workers: 1, taskTimeout: 2 ** 31 });
    const clamps = await pool.apply('slow', [{ ms: 20 }]).then(
      () => true,
      () => false,
    );
    await pool.terminate();
    if (!clamps) {
      t.skip('the pool here does not clamp timers past 2^31-1 ms yet');
      return;
    }
    const { code, stdout, stderr, report } = await run('1000h');
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      lines(stdout).map((l) => JSON.parse(l).x),
      [1, 2],
    );
    assert.equal(report.timeouts, 0);
  });
});

describe('corral run: long input lines', () => {
  test('a 64 MiB line is read in linear time', { timeout: 120_000 }, async () => {
    const n = 64 * 2 ** 20;
    const t0 = performance.now();
    const { code, stdout, stderr } = await corral(
      ['run', `${TASKS}#length`, '--lines', '--workers', '1', '--quiet'],
      { input: `${'a'.repeat(n)}\nbb\n` },
    );
    const ms = performance.now() - t0;
    assert.equal(code, 0, stderr);
    assert.deepEqual(lines(stdout).map(Number), [n, 2]);
    // Re-scanning the partial line for each 256 KiB read made this ~30 s (32 MiB took 7.9 s); linear is < 2 s.
    assert.ok(ms < 10_000, `a 64 MiB line took ${Math.round(ms)} ms`);
  });

  test("a line past V8's string limit is a failed item (ERR_INPUT_TOO_LONG), not a crash", {
    timeout: 300_000,
  }, async () => {
    const { constants } = await import('node:buffer');
    const errors = file('errors.jsonl');
    const report = file('report.json');
    // Streamed from a reused buffer: neither side needs the line whole, and corral must not either.
    const block = Buffer.alloc(2 ** 20, 'a');
    const total = constants.MAX_STRING_LENGTH + 2 ** 20;
    const feed = async (stdin) => {
      const write = (chunk) => (stdin.write(chunk) ? undefined : new Promise((r) => stdin.once('drain', r)));
      await write('"');
      for (let sent = 0; sent < total; sent += block.length) await write(block);
      await write('"\n"abc"\n\n[1,2]\n');
      stdin.end();
    };
    const { code, stdout, stderr } = await corral(
      ['run', `${TASKS}#length`, '--workers', '1', '--errors', errors, '--report', report, '--quiet'],
      {
        stdin: 'pipe',
        onSpawn: (child) => {
          child.stdin.on('error', () => {});
          feed(child.stdin).catch(() => {});
        },
      },
    );
    assert.equal(code, 1, stderr);
    assert.doesNotMatch(stderr, /internal error|Invalid string length/);
    assert.deepEqual(lines(stdout).map(Number), [3, 5]);
    const [failed, ...more] = lines(readFileSync(errors, 'utf8')).map((l) => JSON.parse(l));
    assert.deepEqual(more, []);
    assert.equal(failed.index, 0);
    assert.equal(failed.error.code, 'ERR_INPUT_TOO_LONG');
    assert.match(failed.error.message, /input line 1 is longer than the 536,?870,?888 characters/);
    assert.ok(failed.input.startsWith('"aaaa') && failed.input.length < 200, 'the input is shown cut short');
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.deepEqual([r.items.read, r.items.succeeded, r.items.failed], [3, 2, 1]);
  });
});

describe('corral run: --report', () => {
  test('holds the summary as JSON', async () => {
    const report = file('report.json');
    const { code } = await corral(['run', `${TASKS}#picky`, '--report', report, '--workers', '2', '-q'], {
      input: jsonl(numbers(100)),
    });
    assert.equal(code, 1);
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.command, 'run');
    assert.match(r.task, /cli-tasks\.mjs#picky$/);
    assert.deepEqual(r.items, {
      read: 100,
      done: 100,
      succeeded: 86,
      failed: 14,
      cancelled: 0,
      discarded: 0,
      written: 86,
    });
    assert.deepEqual(r.failures.byCode, { ERR_TASK_FAILED: 14 });
    assert.equal(r.failures.first[0].index, 6);
    assert.equal(r.exitCode, 1);
    assert.equal(r.stopped, null);
    assert.ok(r.wallMs > 0 && r.throughput > 0);
    assert.equal(r.options.workers, 2);
    assert.equal(r.workers.length >= 2, true);
    for (const w of r.workers) {
      assert.equal(typeof w.tasks, 'number');
      assert.ok(w.peakRss > 0, 'peak RSS per worker');
    }
    assert.equal(
      r.workers.reduce((n, w) => n + w.tasks, 0),
      100,
      'tasks per worker add up to the items (the start-up check of the export is not one)',
    );
  });
});

describe('corral info, bench, demo', () => {
  test('info --json: CPUs and why, memory, rlimits, /dev/shm, native, pool sizes', async () => {
    const { code, stdout } = await corral(['info', '--json']);
    assert.equal(code, 0);
    const info = JSON.parse(stdout);
    assert.ok(info.cpus.effective >= 1);
    assert.match(info.cpus.decidedBy, /^(cores|affinity|quota|env)$/);
    assert.ok(info.memory.limit > 0 && info.memory.available > 0);
    assert.ok('openFiles' in info.rlimits || Array.isArray(info.rlimits));
    assert.ok(info.shm === null || info.shm.size > 0);
    assert.ok('native' in info);
    const sizes = info.poolSize ?? info.poolSizes;
    assert.equal(sizes.cpu, info.cpus.effective);
    assert.ok(sizes.io >= 2);
  });

  test('info prints a readable table', async () => {
    const { code, stdout } = await corral(['info']);
    assert.equal(code, 0);
    assert.match(stdout, /CPUs/);
    assert.match(stdout, /memory/);
  });

  test('demo: every other tile finishes, the greedy one is contained, the speedup is measured', async () => {
    const report = file('demo.json');
    const { code, stdout, stderr } = await corral(['demo', '--items', '300', '--report', report], {
      timeout: 120_000,
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /speedup {5}[\d.]+x on \d+ workers/);
    assert.match(
      stdout,
      /contained {3}tile \d+ allocated without end: heap limit breach \(ERR_MEMORY_LIMIT\)\n {14}limit 64 MiB.*its worker was replaced/,
    );
    assert.match(stdout, /every other tile finished/);
    const r = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(r.demo.allOtherTilesDone, true);
    assert.equal(r.demo.greedyError.code, 'ERR_MEMORY_LIMIT');
    assert.ok(r.demo.speedup > 0);
    assert.ok(r.workers.every((w) => w.peakRss > 0));
  });

  test('bench --quick --json: every workload, inline vs threads vs processes', async () => {
    const { code, stdout, stderr } = await corral(['bench', '--quick', '--runs', '1', '--json'], {
      timeout: 120_000,
    });
    assert.equal(code, 0, stderr);
    const r = JSON.parse(stdout);
    assert.deepEqual(
      r.workloads.map((w) => w.name),
      ['tiny', 'cpu', 'skewed', 'payload'],
    );
    for (const w of r.workloads)
      for (const k of ['inlineMs', 'threadMs', 'processMs']) assert.ok(w[k] > 0, `${w.name} ${k}`);
    assert.ok(r.startupMs.thread > 0 && r.startupMs.process > 0);
  });
});

describe('live progress on a terminal', () => {
  let hasScript = true;
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
  } catch {
    hasScript = false;
  }
  test('redraws one line with a bar, counts, rate, ETA and memory', {
    skip: !hasScript && 'no script(1)',
  }, async () => {
    const input = file('in.jsonl');
    writeFileSync(input, jsonl(numbers(300).map(() => ({ ms: 10 }))));
    const out = file('out.jsonl');
    const typescript = file('typescript');
    const cmd = `stty cols 120 rows 30; ${process.execPath} ${MAIN} run ${TASKS}#slow --input ${input} --output ${out} --workers 2`;
    const result = await new Promise((resolve) => {
      const child = spawn('script', ['-qfec', cmd, typescript], {
        env: { ...process.env, NO_COLOR: '1', TERM: 'xterm' },
      });
      child.on('close', (code) => resolve(code));
    });
    assert.equal(result, 0);
    const screen = readFileSync(typescript, 'utf8');
    // The bar is redrawn in place (carriage return, erase to end of line), never as new lines.
    const frames = screen.split('\r').filter((f) => f.includes('▕'));
    assert.ok(frames.length >= 5, `${frames.length} frames`);
    assert.match(
      screen,
      /▕[█▏▎▍▌▋▊▉ ]+▏ +\d+% [\d,]+\/[\d,]+ │ [\d.,]+\/s │ ETA \d+:\d\d │ 0 failed │ mem [\d.]+ MiB/,
    );
    assert.ok(screen.includes('\u001b[K'), 'erases to the end of the line');
    assert.equal(lines(readFileSync(out, 'utf8')).length, 300);
    assert.match(screen, /300 done of 300 read/);
  });
});

describe('corral run: files that fail, and resumes (a second hostile review)', () => {
  test('an output that cannot be written (ENOSPC) fails the run; it exited 0', async () => {
    const { code, stderr } = await corral(['run', `${TASKS}#square`, '--output', '/dev/full'], {
      input: jsonl(numbers(1000)),
    });
    assert.notEqual(code, 0, stderr);
    assert.match(stderr, /cannot write the output: .*ENOSPC/);
    assert.doesNotMatch(stderr, /closed by its reader/);
  });

  test('an --errors file that cannot be written fails the run, with a message', async () => {
    const { code, stderr } = await corral(['run', `${TASKS}#picky`, '--errors', '/dev/full', '-q'], {
      input: jsonl([1, 7, 2]),
    });
    assert.notEqual(code, 0, stderr);
    assert.match(stderr, /cannot write the --errors file \/dev\/full/);
    assert.doesNotMatch(stderr, /internal error/);
  });

  test('--output naming the input is refused before anything is written; the input is kept', async () => {
    const data = file('data.jsonl');
    writeFileSync(data, jsonl(numbers(10)));
    const { code, stderr } = await corral(['run', `${TASKS}#square`, '--input', data, '--output', data]);
    assert.equal(code, 2);
    assert.match(stderr, /--input and --output name the same file/);
    assert.equal(readFileSync(data, 'utf8'), jsonl(numbers(10)));
    const out = file('out.jsonl');
    const same = await corral(['run', `${TASKS}#square`, '--output', out, '--journal', out], {
      input: '1\n',
    });
    assert.equal(same.code, 2);
    assert.match(same.stderr, /--output and --journal name the same file/);
  });

  test('a --report that cannot be written is refused before the run, not with a stack trace after it', async () => {
    const { code, stderr } = await corral(
      ['run', `${TASKS}#slow`, '--report', join(tmp, 'no-such-dir', 'r.json')],
      { input: jsonl(numbers(5)) },
    );
    assert.equal(code, 2);
    assert.match(stderr, /--report .*cannot write it/);
    assert.doesNotMatch(stderr, /internal error|\n\s+at /);
  });

  test('a subprocess of a task writes to stderr, not into the results (process workers)', async () => {
    const { code, stdout, stderr } = await corral(['run', `${TASKS}#echoChild`, '--runtime', 'process'], {
      input: jsonl(numbers(3)),
    });
    assert.equal(code, 0, stderr);
    assert.deepEqual(lines(stdout), ['1', '2', '3']);
    assert.match(stderr, /child-of-2/);
  });

  test('--chunksize with --journal: a bad line read ahead of a failed item does not mark the lines between as done', async () => {
    const input = file('in.jsonl');
    writeFileSync(input, '7\n8\n9\n{bad\n');
    const out = file('out.jsonl');
    const errors = file('errors.jsonl');
    const journal = file('journal');
    const args = ['run', `${TASKS}#picky`, '-i', input, '-o', out, '-e', errors, '--journal', journal];
    const first = await corral([...args, '--chunksize', '10', '-q']);
    assert.equal(first.code, 1, first.stderr);
    const resumed = await corral([...args, '--chunksize', '10', '--resume', '-q']);
    assert.equal(resumed.code, 1, resumed.stderr);
    assert.deepEqual(lines(readFileSync(out, 'utf8')), ['9', '10'], '8 and 9 ran on the resume');
  });

  test('a resume exits 1 when items failed before it, as the whole run would have', async () => {
    const input = file('in.jsonl');
    writeFileSync(input, jsonl([1, 7, 2]));
    const args = ['run', `${TASKS}#picky`, '-i', input, '-o', file('out.jsonl'), '-e', file('err.jsonl')];
    const journal = ['--journal', file('journal')];
    const first = await corral([...args, ...journal, '-q']);
    assert.equal(first.code, 1, first.stderr);
    const resumed = await corral([...args, ...journal, '--resume']);
    assert.equal(resumed.code, 1, resumed.stderr);
    assert.match(resumed.stderr, /1 of them had failed/);
  });

  test('a resume refuses an input rewritten since, even at the same size', async () => {
    const input = file('in.jsonl');
    writeFileSync(input, jsonl(numbers(100)));
    const out = file('out.jsonl');
    const journal = file('journal');
    const args = ['run', `${TASKS}#slow`, '-i', input, '-o', out, '--journal', journal, '-q'];
    const first = await corral(args);
    assert.equal(first.code, 0, first.stderr);
    writeFileSync(input, jsonl(numbers(100).reverse())); // the same bytes, in another order
    const resumed = await corral([...args, '--resume']);
    assert.equal(resumed.code, 2);
    assert.match(resumed.stderr, /the input was modified since/);
  });
});
