// Helpers of the BullMQ backend tests: a redis-server of the test's own on a free port (no
// persistence, killed by pid), and `corral worker` hosts as separate processes. Not a test file.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export { alive } from './helpers.mjs';

export const HAVE_REDIS = spawnSync('redis-server', ['--version']).status === 0;
export const SKIP = HAVE_REDIS ? false : 'redis-server is not installed (apt-get install redis-server)';
export const CLI = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
export const TASKS = fileURLToPath(new URL('./fixtures/remote-tasks.mjs', import.meta.url));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

function ping(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host }, () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      socket.destroy();
      resolve(String(d).startsWith('+PONG'));
    });
    socket.on('error', () => resolve(false));
  });
}

/**
 * A redis-server on a free port; `stop()` kills it by pid, `restart()` kills and starts it again (empty).
 * `bind`: the addresses it listens on (127.0.0.1 unless told); the url names the first.
 */
export async function startRedis({ bind = ['127.0.0.1'] } = {}) {
  const port = await freePort();
  const redis = {
    port,
    url: `redis://${bind[0]}:${port}`,
    proc: undefined,
    async start() {
      this.proc = spawn(
        'redis-server',
        [
          ...['--port', String(port), '--bind', bind.join(' '), '--save', '', '--appendonly', 'no'],
          // Off loopback it would refuse every client: the addresses given are the test's own links.
          ...(bind.every((a) => a.startsWith('127.')) ? [] : ['--protected-mode', 'no']),
        ],
        {
          stdio: 'ignore',
        },
      );
      for (let i = 0; i < 100; i++) {
        if (await ping(port, bind[0])) return;
        await sleep(20);
      }
      await this.stop();
      throw new Error(`redis-server did not start on port ${port}`);
    },
    async stop() {
      const p = this.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((r) => p.once('exit', r));
      process.kill(p.pid, 'SIGKILL');
      await gone;
    },
    async restart(downMs = 0) {
      await this.stop();
      await sleep(downMs);
      await this.start();
    },
  };
  await redis.start();
  return redis;
}

/** What this process started, killed by pid when it exits whatever way (a test timeout included). */
const started = new Set();
process.on('exit', () => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
});

/**
 * A `corral worker` process serving `queue`; resolves once it says it serves. `netns`: run it in that
 * network namespace (`ip netns exec` execs node in place, so the pid is the host's).
 */
export async function startHost(url, queue, args = [], module = TASKS, { netns, env } = {}) {
  const argv = [process.execPath, CLI, 'worker', '--redis', url, '--queue', queue, ...args, module];
  const [command, ...rest] = netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv;
  const proc = spawn(command, rest, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  started.add(proc.pid);
  proc.once('exit', () => started.delete(proc.pid));
  let log = '';
  proc.stderr.on('data', (d) => {
    log += d;
  });
  await new Promise((resolve, reject) => {
    const check = () => {
      if (/serves queue/.test(log)) resolve();
      else if (proc.exitCode !== null) reject(new Error(`corral worker exited ${proc.exitCode}: ${log}`));
      else setTimeout(check, 20);
    };
    check();
  });
  return {
    proc,
    pid: proc.pid,
    get log() {
      return log;
    },
    children: () => childrenOf(proc.pid),
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
      process.kill(proc.pid, signal);
      return gone;
    },
  };
}

/** Live processes whose parent is `pid`. */
export function childrenOf(pid) {
  const out = [];
  for (const entry of spawnSync('ls', ['/proc']).stdout.toString().split('\n')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {}
  }
  return out;
}

export function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '(gone)';
  }
}

/** Runs `corral ...args` with `input` on stdin; `onStderr(stderr, child)` sees stderr as it comes. */
export function corral(args, { input = '', onStderr, timeout = 30_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NO_COLOR: '1' } });
    started.add(child.pid);
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
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      started.delete(child.pid);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** An onStderr that calls `then(child)` once the progress line says at least `n` items are done. */
export function whenDone(n, then) {
  let fired = false;
  return (stderr, child) => {
    const m = [...stderr.matchAll(/corral: ([\d,]+)\/?[~\d,]* done/g)].at(-1);
    if (!fired && m && Number(m[1].replace(/,/g, '')) >= n) {
      fired = true;
      then(child);
    }
  };
}
