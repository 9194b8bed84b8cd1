// The native addon, exercised for real: limits are proved by the kernel enforcing them
// (EMFILE, /proc/<pid>/limits), pdeathsig by a parent actually being SIGKILLed.
// Needs `node scripts/build-native.mjs` first; without the addon these tests fail with
// the loader's reason rather than skipping, so a broken build cannot pass unnoticed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { native, nativeStatus, requireNative } from '../dist/src/native/index.js';

const MODULE_URL = new URL('../dist/src/native/index.js', import.meta.url).href;
const ERRORS_URL = new URL('../dist/src/errors.js', import.meta.url).href;
const ADDON = fileURLToPath(
  new URL(`../prebuilds/${process.platform}-${process.arch}/corral.napi.node`, import.meta.url),
);

// The in-process tests mean the real addon, whatever the caller's shell exported.
delete process.env.CORRAL_NO_NATIVE;
delete process.env.CORRAL_NATIVE_PATH;
const CLEAN_ENV = { ...process.env };

/** Every process a test starts, so a failing assertion still leaves nothing behind. */
const started = new Set();

function alive(pid) {
  // A zombie has exited; it only waits for whoever inherited it to reap it.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function killIfAlive(pid) {
  if (pid !== undefined && alive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
}

after(() => {
  for (const pid of started) killIfAlive(pid);
});

/** Runs ESM `code` in a fresh node and returns its exit status and output. */
async function runNode(code, { env = CLEAN_ENV, timeout = 20_000 } = {}) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout,
    killSignal: 'SIGKILL',
  });
  started.add(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const [code_, signal] = await once(child, 'close');
  started.delete(child.pid);
  return { code: code_, signal, stdout, stderr };
}

async function runJson(code, options) {
  const r = await runNode(code, options);
  assert.equal(r.code, 0, `child failed (code ${r.code}, signal ${r.signal}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

const PROC_NAMES = {
  cpu: 'Max cpu time',
  data: 'Max data size',
  stack: 'Max stack size',
  core: 'Max core file size',
  rss: 'Max resident set',
  nproc: 'Max processes',
  nofile: 'Max open files',
  as: 'Max address space',
};

/** The kernel's own view of a process' limits, independent of the addon. */
function procLimits(pid) {
  const out = {};
  for (const line of readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').slice(1)) {
    const name = line.slice(0, 26).trim();
    const [soft, hard] = line.slice(26).trim().split(/\s+/);
    const value = (v) => (v === 'unlimited' ? null : Number(v));
    for (const [key, label] of Object.entries(PROC_NAMES)) {
      if (label === name) out[key] = { soft: value(soft), hard: value(hard) };
    }
  }
  return out;
}

function addon() {
  const status = nativeStatus();
  assert.ok(status.available, `native addon unavailable: ${status.reason}`);
  return requireNative('native tests');
}

describe('native addon', () => {
  test('loads once from prebuilds/<platform>-<arch> and reports itself available', () => {
    const n = addon();
    assert.equal(native(), n);
    assert.equal(native(), native());
    const status = nativeStatus();
    assert.deepEqual(status, { available: true, path: ADDON });
    assert.equal(n.getppid(), process.ppid);
  });

  test('getrlimit agrees with /proc/self/limits for every resource', () => {
    const n = addon();
    const kernel = procLimits('self');
    assert.equal(Object.keys(kernel).length, 8);
    for (const r of Object.keys(PROC_NAMES)) {
      assert.deepEqual(n.getrlimit(r), kernel[r], r);
    }
  });

  test('setrlimit(nofile) is enforced: a child lowered to 64 gets EMFILE at fd 63', async () => {
    const result = await runJson(`
      import { openSync, closeSync } from 'node:fs';
      import { requireNative } from ${JSON.stringify(MODULE_URL)};
      const n = requireNative('test');
      const before = n.getrlimit('nofile');
      n.setrlimit('nofile', 64, before.hard);
      const after = n.getrlimit('nofile');
      const fds = [];
      let code = null;
      try {
        for (let i = 0; i < 4096; i++) fds.push(openSync('/dev/null', 'r'));
      } catch (e) {
        code = e.code;
      }
      const maxFd = Math.max(...fds);
      for (const fd of fds) closeSync(fd);
      console.log(JSON.stringify({ before, after, opened: fds.length, maxFd, code }));
    `);
    assert.deepEqual(result.after, { soft: 64, hard: result.before.hard });
    assert.equal(result.code, 'EMFILE', `opened ${result.opened} files without EMFILE`);
    // open() takes the lowest free descriptor, so a soft limit of 64 fills 0..63 exactly.
    assert.equal(result.maxFd, 63);
    assert.ok(result.opened > 0 && result.opened < 64, `opened ${result.opened}`);
  });

  test('setrlimit reports kernel refusals as errno errors', () => {
    const n = addon();
    const before = n.getrlimit('nofile');
    assert.throws(() => n.setrlimit('nofile', 100, 50), {
      name: 'Error',
      code: 'EINVAL',
      errno: -22,
      syscall: 'setrlimit',
      message: /^EINVAL: .*RLIMIT_NOFILE, soft=100, hard=50/,
    });
    assert.deepEqual(n.getrlimit('nofile'), before);
  });

  test("prlimit sets and reads a sleeping child's cpu limit, as /proc/<pid>/limits shows", async () => {
    const n = addon();
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    started.add(child.pid);
    try {
      await once(child, 'spawn');
      const before = procLimits(child.pid).cpu;
      // Lowering needs no privilege; raising a hard limit would, so stay at or below it.
      const hard = before.hard === null ? 7 : Math.min(before.hard, 7);
      const soft = Math.min(5, hard);

      assert.deepEqual(n.prlimit(child.pid, 'cpu'), before, 'read-only form returns the current limit');
      assert.deepEqual(n.prlimit(child.pid, 'cpu', soft, hard), before, 'returns the limit it replaced');
      assert.deepEqual(procLimits(child.pid).cpu, { soft, hard });
      assert.deepEqual(n.prlimit(child.pid, 'cpu'), { soft, hard });
      assert.deepEqual(procLimits(child.pid).cpu, { soft, hard }, 'the read-only form changed nothing');
      assert.deepEqual(procLimits(process.pid).cpu, before, 'the caller is untouched');
    } finally {
      child.kill('SIGKILL');
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
      started.delete(child.pid);
    }
  });

  test('prlimit on a pid that does not exist throws ESRCH', () => {
    const n = addon();
    // Far above any pid_max (at most 2^22), so it cannot exist.
    assert.throws(() => n.prlimit(2 ** 31 - 1, 'cpu'), {
      code: 'ESRCH',
      errno: -3,
      syscall: 'prlimit',
    });
  });

  test('setPdeathsig(SIGKILL) kills a busy child when its parent is SIGKILLed', {
    timeout: 30_000,
  }, async () => {
    // A starts two busy children: B asks for SIGKILL on parent death, C does not. C
    // surviving proves B died of pdeathsig and not of its pipes or process group.
    const childCode = (role, withSig) => `
      import { requireNative } from ${JSON.stringify(MODULE_URL)};
      const n = requireNative('pdeathsig test');
      ${withSig ? 'n.setPdeathsig(9);' : ''}
      console.log(JSON.stringify({ role: ${JSON.stringify(role)}, pid: process.pid, ppid: n.getppid() }));
      for (;;) {}
    `;
    const parentCode = `
      const { spawn } = require('node:child_process');
      for (const code of JSON.parse(process.argv[1])) {
        spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'inherit', 'inherit'] });
      }
      setInterval(() => {}, 1000);
    `;
    const a = spawn(
      process.execPath,
      ['-e', parentCode, JSON.stringify([childCode('B', true), childCode('C', false)])],
      { env: CLEAN_ENV, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.add(a.pid);
    const reports = {};
    let stderr = '';
    a.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    try {
      await new Promise((resolve, reject) => {
        let buf = '';
        const timer = setTimeout(() => reject(new Error(`children did not report:\n${stderr}`)), 15_000);
        a.on('exit', () => reject(new Error(`A exited early:\n${stderr}`)));
        a.stdout.setEncoding('utf8').on('data', (d) => {
          buf += d;
          for (const line of buf.split('\n').slice(0, -1)) {
            const r = JSON.parse(line);
            reports[r.role] = r;
            started.add(r.pid);
          }
          buf = buf.slice(buf.lastIndexOf('\n') + 1);
          if (reports.B && reports.C) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      assert.equal(reports.B.ppid, a.pid, 'getppid() in B is A');
      assert.equal(reports.C.ppid, a.pid);
      assert.ok(alive(reports.B.pid) && alive(reports.C.pid));

      a.kill('SIGKILL');
      const deadline = Date.now() + 3000;
      while (alive(reports.B.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      assert.equal(alive(reports.B.pid), false, 'B outlived its SIGKILLed parent');
      assert.equal(alive(reports.C.pid), true, 'the control child without pdeathsig died too');
    } finally {
      a.kill('SIGKILL');
      killIfAlive(reports.B?.pid);
      killIfAlive(reports.C?.pid);
    }
  });

  test('bad arguments throw TypeError (wrong type) or RangeError (out of range)', () => {
    const n = addon();
    const type = (fn, code = 'ERR_INVALID_ARG_TYPE') => assert.throws(fn, { name: 'TypeError', code });
    const range = (fn) => assert.throws(fn, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });

    type(() => n.setPdeathsig(), 'ERR_MISSING_ARGS');
    type(() => n.setPdeathsig('9'));
    type(() => n.setPdeathsig(null));
    range(() => n.setPdeathsig(0));
    range(() => n.setPdeathsig(1.5));
    range(() => n.setPdeathsig(65));

    type(() => n.getrlimit(), 'ERR_MISSING_ARGS');
    type(() => n.getrlimit(7));
    type(() => n.getrlimit('files'), 'ERR_INVALID_ARG_VALUE');
    type(() => n.getrlimit('nofile-and-then-some'), 'ERR_INVALID_ARG_VALUE');
    type(() => n.getrlimit('NOFILE'), 'ERR_INVALID_ARG_VALUE');

    type(() => n.setrlimit('nofile', 64), 'ERR_MISSING_ARGS');
    type(() => n.setrlimit('nofile', '64', null));
    type(() => n.setrlimit('nofile', 64, undefined));
    type(() => n.setrlimit('nofile', 64n, null));
    range(() => n.setrlimit('nofile', -1, null));
    range(() => n.setrlimit('nofile', 1.5, null));
    range(() => n.setrlimit('nofile', Number.NaN, null));
    range(() => n.setrlimit('nofile', 2 ** 64, null));

    type(() => n.prlimit(), 'ERR_MISSING_ARGS');
    type(() => n.prlimit('1', 'cpu'));
    type(() => n.prlimit(process.pid, 'cpu', 5), 'ERR_MISSING_ARGS');
    type(() => n.prlimit(process.pid, 'cpu', 5, '7'));
    range(() => n.prlimit(-1, 'cpu'));
    range(() => n.prlimit(2 ** 31, 'cpu'));
  });
});

describe('native loader fallbacks', () => {
  const probe = `
    import { native, nativeStatus, requireNative } from ${JSON.stringify(MODULE_URL)};
    import { NativeUnavailableError } from ${JSON.stringify(ERRORS_URL)};
    let error;
    try { requireNative('parent-death signals'); } catch (e) { error = e; }
    console.log(JSON.stringify({
      native: typeof native(),
      status: nativeStatus(),
      thrown: error === undefined ? null : {
        isNativeUnavailable: error instanceof NativeUnavailableError,
        name: error.name, code: error.code, capability: error.capability, message: error.message,
      },
    }));
  `;

  test('CORRAL_NO_NATIVE=1 hides the addon and requireNative throws ERR_NATIVE_UNAVAILABLE', async () => {
    const r = await runJson(probe, { env: { ...CLEAN_ENV, CORRAL_NO_NATIVE: '1' } });
    assert.equal(r.native, 'undefined');
    assert.equal(r.status.available, false);
    assert.match(r.status.reason, /CORRAL_NO_NATIVE=1/);
    assert.equal(r.thrown?.isNativeUnavailable, true);
    assert.equal(r.thrown.name, 'NativeUnavailableError');
    assert.equal(r.thrown.code, 'ERR_NATIVE_UNAVAILABLE');
    assert.equal(r.thrown.capability, 'parent-death signals');
    assert.match(r.thrown.message, /^parent-death signals is not available: disabled by CORRAL_NO_NATIVE=1/);
  });

  test('CORRAL_NO_NATIVE=0 does not disable it', async () => {
    const r = await runJson(probe, { env: { ...CLEAN_ENV, CORRAL_NO_NATIVE: '0' } });
    assert.equal(r.native, 'object');
    assert.equal(r.thrown, null);
  });

  test('a missing build says where it looked and to run npm run build:native', async () => {
    const missing = path.join(tmpdir(), 'corral-no-such-dir', 'corral.node');
    const r = await runJson(probe, { env: { ...CLEAN_ENV, CORRAL_NATIVE_PATH: missing } });
    assert.equal(r.native, 'undefined');
    assert.deepEqual(r.status.path, missing);
    assert.match(r.status.reason, /does not exist/);
    assert.equal(r.thrown?.code, 'ERR_NATIVE_UNAVAILABLE');
    assert.ok(r.thrown.message.includes(missing), r.thrown.message);
    assert.ok(r.thrown.message.includes('npm run build:native'), r.thrown.message);
  });

  test('CORRAL_NATIVE_PATH loads a copy elsewhere, and a file that is not an addon is reported', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'corral-native-'));
    try {
      const copy = path.join(dir, 'copy.node');
      copyFileSync(ADDON, copy);
      const ok = await runJson(probe, { env: { ...CLEAN_ENV, CORRAL_NATIVE_PATH: copy } });
      assert.equal(ok.native, 'object');
      assert.deepEqual(ok.status, { available: true, path: copy });

      const junk = path.join(dir, 'junk.node');
      writeFileSync(junk, 'not an ELF file');
      const bad = await runJson(probe, { env: { ...CLEAN_ENV, CORRAL_NATIVE_PATH: junk } });
      assert.equal(bad.native, 'undefined');
      assert.match(bad.status.reason, /failed to load/);
      assert.equal(bad.thrown?.code, 'ERR_NATIVE_UNAVAILABLE');
      assert.ok(bad.thrown.message.includes('npm run build:native'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
