import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { builtin } from '../lazy.js';
import { StderrRelay } from './stderr.js';
import type { RuntimeEvents, RuntimeWorker, SpawnSpec } from './types.js';

/** A child that exited but whose channel never closed (a grandchild holds it) is reported anyway. */
const EXIT_GRACE_MS = 500;

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Children must not outlive an exiting parent; SIGKILL of the parent is covered in the worker. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/**
 * glibc malloc settings every worker process starts with, unless its environment sets the same key.
 *
 * Why hugetlb=1: with it, glibc asks for transparent huge pages (madvise) on the memory it maps,
 * which matters where the system gives them only on request (THP "madvise", Debian's default). A
 * process worker faults in every page of memory it touches afresh, and it touches afresh more often
 * than a thread: its malloc hands freed memory back to the system (glibc's trim), where a thread
 * pool's one process keeps its freed pages for the next task. On the 2-core VM, touching 320 MiB of
 * fresh 10 MiB Buffers took ~870 ms in 4 KiB pages and ~40 ms in 2 MiB ones (a page fault here costs
 * ~10 us), and issue 16's contained mix went from 1.17x piscina's wall to 0.97x. Idle RSS is
 * unchanged (76 MiB either way); a system with THP "never" ignores the request, as does a libc that
 * is not glibc, or a glibc before 2.35.
 */
const MALLOC_TUNABLES = ['glibc.malloc.hugetlb=1'];

/**
 * The environment a worker process starts with: `env`, with corral's malloc settings added where
 * unset; and, when it added any, what the worker puts back once it runs (glibc read them at start):
 * the task, and any program it starts, sees the user's GLIBC_TUNABLES (null: none), not corral's.
 */
export function workerEnv(env: NodeJS.ProcessEnv): {
  env: NodeJS.ProcessEnv;
  restore: Record<string, string | null> | undefined;
} {
  // String(): env is checked to be a plain object only, and fork() stringifies what it is given.
  const given = env.GLIBC_TUNABLES;
  const own = given === undefined ? '' : String(given);
  const keys = new Set(own.split(':').map((kv) => kv.split('=')[0]));
  const add = MALLOC_TUNABLES.filter((kv) => !keys.has(kv.split('=')[0]));
  if (add.length === 0) return { env, restore: undefined };
  return {
    env: { ...env, GLIBC_TUNABLES: [own, ...add].filter((kv) => kv !== '').join(':') },
    restore: { GLIBC_TUNABLES: given === undefined ? null : own },
  };
}

/**
 * V8 flags every process worker starts with, ahead of the pool's `execArgv` (a later flag wins: a
 * user's `--concurrent-recompilation` turns this one off). A fresh process optimises its first hot
 * loop faster on its own thread than by handing it to a compiler thread: the first map of 100k
 * squares on a fresh 2-process pool took 41 -> 36 ms on Node 20, 34.5 -> 28 on 22 and 37.7 -> 31.4 on
 * 24 (medians of 9 fresh pools each, interleaved, 2-vCPU VM). A pool sized to the cores leaves that
 * thread no idle core anyway. Threads cannot have it: V8 flags are the whole process's.
 */
const PROCESS_V8_FLAGS = ['--no-concurrent-recompilation'];

/** Where a process worker's descriptor 1 goes: this process's stdout, unless stdoutToStderr() said otherwise. */
let childStdout: 'inherit' | 2 = 'inherit';

/**
 * For the CLI, whose stdout carries results only: process workers get this process's stderr as their
 * descriptor 1. The preload moves process.stdout.write; this also covers what bypasses it (a
 * subprocess with inherited stdio, fs.writeSync(1)), which wrote into the results.
 */
export function stdoutToStderr(): void {
  childStdout = 2;
}

export function spawnProcess(spec: SpawnSpec, events: RuntimeEvents): RuntimeWorker {
  installExitHook();
  const execArgv = [...PROCESS_V8_FLAGS, ...spec.execArgv];
  const { env, restore } = workerEnv(spec.env ?? process.env);
  if (spec.heapMb !== undefined) execArgv.push(`--max-old-space-size=${spec.heapMb}`);
  // Loaded with the first process worker, not with corral (lazy.ts).
  const child = builtin('node:child_process').fork(fileURLToPath(spec.entry), [], {
    execArgv,
    env,
    serialization: 'advanced',
    stdio: ['ignore', childStdout, 'pipe', 'ipc'],
    // Its own process group: a terminal's Ctrl-C goes to the pool's process, which decides what
    // stops (the CLI finishes running tasks first), instead of killing every worker mid-task.
    detached: true,
  });
  live.add(child);
  const stderr = new StderrRelay((text) => process.stderr.write(text));
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => stderr.push(chunk));
  child.on('message', (m) => events.message(m as never));

  // 'exit' can come before the last IPC messages and stderr bytes are read; wait for both to end.
  let exited: { exitCode: number | null; signal: string | null } | undefined;
  let channelOpen = true;
  let stderrOpen = child.stderr !== null;
  let spawnError: Error | undefined;
  let reported = false;
  const report = (): void => {
    if (reported || !exited || ((channelOpen || stderrOpen) && !graceOver)) return;
    reported = true;
    live.delete(child);
    const code = (spawnError as { code?: unknown } | undefined)?.code;
    events.exit({
      ...exited,
      detail: spawnError ? `${spawnError.name}: ${spawnError.message}` : stderr.tail.trim() || undefined,
      code: typeof code === 'string' ? code : undefined,
    });
  };
  let graceOver = false;
  child.on('disconnect', () => {
    channelOpen = false;
    report();
  });
  child.stderr?.on('close', () => {
    stderr.end();
    stderrOpen = false;
    report();
  });
  child.on('error', (error) => {
    // Only a child that never started has its error for the exit report. A started one's 'error' is
    // a message written to it after it died and before its end was read here (EPIPE; the parent
    // still thinks it connected): that says nothing of why it ended, and must not take the place of
    // its stderr tail, by which a guard's exit is recognised (a breach was once typed a crash so).
    if (child.pid !== undefined) return;
    spawnError = error;
    exited = { exitCode: null, signal: null };
    graceOver = true;
    report();
  });
  child.on('exit', (exitCode, signal) => {
    exited = { exitCode, signal };
    setTimeout(() => {
      graceOver = true;
      report();
    }, EXIT_GRACE_MS).unref();
    report();
  });
  // The V8 flag above sets the limit; the guard in the worker (native/heap.cc) enforces it promptly.
  child.send({
    t: 'init',
    init: {
      ...spec.init,
      ...(spec.heapMb === undefined ? {} : { heapGuardMb: spec.heapMb }),
      ...(restore === undefined ? {} : { envRestore: restore }),
    },
  });
  return {
    pid: child.pid,
    threadId: undefined,
    send: (message) => {
      // A dead channel is not an error of the message: the exit report settles its units.
      if (child.connected) child.send(message);
    },
    kill: () => {
      child.kill('SIGKILL');
    },
  };
}
