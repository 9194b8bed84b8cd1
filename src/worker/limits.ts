/**
 * Limits as seen from inside a worker: rlimits applied before the task module loads, the CPU
 * budget moved before each task, and the measurements a task's result may carry.
 */
import { readdirSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { isMainThread } from 'node:worker_threads';
import { HEAP_GUARD_EXIT, HEAP_GUARD_MARKER } from '../limits/heap-guard.js';
import { RSS_GUARD_EXIT, RSS_GUARD_MARKER, RSS_STOPPED_CODE, rssCeiling } from '../limits/rss-guard.js';
import { heapGuardNative, native } from '../native/index.js';
import { stopLandedSafely } from '../runtime/critical.js';
import type { TaskUsage, UnitReport, WorkerLimits } from '../runtime/protocol.js';
import type { Task } from './runner.js';

const HEAP_CHECK_MS = 5;
const CPU_CHECK_MS = 50;

/** Applied to this process before any user code runs; soft = hard so the task cannot raise it. */
export function applyRlimits(limits: WorkerLimits): void {
  if (limits.rlimits.length === 0 && limits.cpuTime === undefined) return;
  const binding = native();
  if (!binding) throw new Error('resource limits need the native addon, which did not load in this worker');
  for (const [resource, limit] of limits.rlimits) {
    try {
      binding.setrlimit(resource, limit, limit);
    } catch (error) {
      throw rlimitRefused(resource, limit, error);
    }
  }
}

const OPTION_OF = { as: 'limits.addressSpace', data: 'limits.data', nofile: 'limits.openFiles' } as const;

/** Says which limit, its value, and the hard limit that refused it: what the user can change. */
function rlimitRefused(resource: 'as' | 'data' | 'nofile', limit: number, error: unknown): Error {
  const code = (error as { code?: unknown }).code;
  let hard: number | null | undefined;
  try {
    hard = native()?.getrlimit(resource).hard;
  } catch {}
  const option = OPTION_OF[resource];
  const shown = resource === 'nofile' ? String(limit) : `${limit} bytes`;
  const why =
    code === 'EPERM' && hard !== undefined
      ? `the worker's hard limit is ${hard === null ? 'unlimited' : hard}${resource === 'nofile' ? '' : ' bytes'}, and ` +
        'raising a hard limit needs CAP_SYS_RESOURCE (for openFiles, also no more than /proc/sys/fs/nr_open). ' +
        `Ask for at most ${hard}, or raise the hard limit of the pool's process (e.g. ulimit -H) before starting it`
      : String((error as Error)?.message ?? error);
  return Object.assign(
    new Error(`${option} = ${shown} could not be applied (${String(code ?? 'error')}): ${why}`),
    {
      code,
    },
  );
}

/**
 * Arms the heap guard (native/heap.cc) for this process, or with `report` for this worker thread:
 * V8 alone takes up to seconds of futile collections to give up on a full heap. Not with
 * --heapsnapshot-near-heap-limit, whose snapshot must come first, and not without the addon: then
 * V8's own, slower, death stands.
 */
export function armHeapGuard(heapMb: number, report: SharedArrayBuffer | undefined): boolean {
  const flags = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`;
  if (flags.includes('--heapsnapshot-near-heap-limit')) return false;
  const guard = heapGuardNative();
  if (!guard) return false;
  if (report) return guard.armThread(heapMb * 2 ** 20, report);
  // A process's guard _exits: never from a thread, which would take the whole pool with it.
  return isMainThread && guard.arm(heapMb * 2 ** 20, HEAP_GUARD_EXIT, HEAP_GUARD_MARKER);
}

/**
 * Arms the rss guard for this process: from inside, a breach of limits.rss is seen within a millisecond
 * or so, where the pool's sampler sees it up to sampleInterval later (and then has to kill the worker
 * and wait for its exit). With `inPlace` and the heap addon, rss-stop.cc's guard can stop a synchronous
 * call of the task instead of the process ('in-place'; see stoppable()); otherwise corral.c's ends the
 * process ('exit'). Without either addon, the sampler alone enforces it (false).
 */
export function armRssGuard(limit: number, inPlace: boolean): 'in-place' | 'exit' | false {
  if (!isMainThread) return false;
  const heap = inPlace ? heapGuardNative() : undefined;
  try {
    const ceiling = rssCeiling(limit);
    if (heap?.armRss?.(limit, RSS_GUARD_EXIT, RSS_GUARD_MARKER, STOPPED, CORRAL_SCRIPTS, ceiling))
      return 'in-place';
  } catch {
    // No thread or no /proc/self/statm for it: corral.c's guard (or the sampler) holds the limit.
  }
  const binding = native();
  return binding?.armRssGuard?.(limit, RSS_GUARD_EXIT, RSS_GUARD_MARKER) ? 'exit' : false;
}

/** What heap.cc's call() returns for a call it stopped: nothing a task can return. */
const STOPPED = Symbol('corral rss stop');
/** Where corral's own scripts are (dist/src/), as V8 names them: a stop does not land in them. */
const CORRAL_SCRIPTS = new URL('../', import.meta.url).href;

/**
 * The task functions, each called through the rss stop, so that a breach during its synchronous part
 * ends that call and not the process. The call then throws RSS_STOPPED_CODE once its memory is freed
 * (reclaim() ends the process when it cannot be). What runs after an await is not covered: a breach
 * there ends the process as before.
 */
export function stoppable(tasks: Map<string, Task>, limit: number, key: string): Map<string, Task> {
  const guard = heapGuardNative()!;
  const call = guard.call!;
  const reclaim = guard.reclaim!;
  const out = new Map<string, Task>();
  for (const [name, fn] of tasks) {
    out.set(name, (...args: unknown[]) => {
      const value = call(fn, args);
      if (value !== STOPPED) return value;
      const rss = reclaim(stopLandedSafely());
      throw Object.assign(
        new Error(`task '${name}' went over limits.rss and was stopped; its worker freed the memory`),
        // `key`: the pool's secret for this worker, so that no task can throw one of these itself.
        { code: RSS_STOPPED_CODE, rss, limit, key },
      );
    });
  }
  return out;
}

/**
 * Descriptors open now. Listing /proc/self/fd takes a descriptor itself, which a task at its openFiles
 * limit has used up (and that must not crash the worker); but then the count is known without the
 * list: a new descriptor takes the lowest free number, so EMFILE means every number below the soft
 * limit is open. (Read as "cannot count", the task that leaked them all went unreported.) Undefined
 * when it cannot be known at all.
 */
function openFds(): number | undefined {
  if (!isMainThread) return 0;
  try {
    return readdirSync('/proc/self/fd').length;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EMFILE') return undefined;
    const soft = native()?.getrlimit('nofile').soft;
    return typeof soft === 'number' && Number.isFinite(soft) ? soft : undefined;
  }
}

/** getrusage's peak: no descriptor needed, unlike reading /proc (a task may have used them all). */
function peakRss(): number {
  return isMainThread ? process.resourceUsage().maxRSS * 1024 : process.memoryUsage.rss();
}

/** Per-task bookkeeping, present only when a limit or measurement needs it, so the plain path stays bare. */
export class UnitProbe {
  private fdsBefore: number | undefined = 0;
  private cpuBefore: NodeJS.CpuUsage | undefined;
  private wallBefore = 0;
  private cpuArmedAt = 0;
  private cpuCheckedAt = -Infinity;
  private heapCheckedAt = 0;

  constructor(readonly limits: WorkerLimits) {}

  before(wantUsage: boolean): void {
    const { cpuTime, detectLeaks } = this.limits;
    if (cpuTime !== undefined) {
      // RLIMIT_CPU counts the whole life of the process: move the soft limit so it counts this task.
      // Only the soft one: an unprivileged process may raise it again up to the hard limit.
      // Reading the CPU clock is a system call; tiny tasks read it at most every CPU_CHECK_MS of wall
      // time, and one extra second of limit covers what runs between reads. A task so gets at least
      // cpuTime seconds and less than cpuTime + 2 (the limit counts whole seconds anyway).
      const now = performance.now();
      if (now - this.cpuCheckedAt >= CPU_CHECK_MS) {
        this.cpuCheckedAt = now;
        const used = process.cpuUsage();
        const soft = Math.ceil((used.user + used.system) / 1e6) + cpuTime + 1;
        if (soft !== this.cpuArmedAt) {
          native()?.setrlimit('cpu', soft, null);
          this.cpuArmedAt = soft;
        }
      }
    }
    if (detectLeaks || wantUsage) this.fdsBefore = openFds();
    if (wantUsage) {
      this.cpuBefore = process.cpuUsage();
      this.wallBefore = performance.now();
    }
  }

  after(wantUsage: boolean): UnitReport | undefined {
    let report: UnitReport | undefined;
    const { detectLeaks, heapAbove } = this.limits;
    const fds = detectLeaks || wantUsage ? openFds() : 0;
    const opened = fds === undefined || this.fdsBefore === undefined ? undefined : fds - this.fdsBefore;
    if (detectLeaks && opened !== undefined && opened > 0) (report ??= {}).leakedFds = opened;
    // Reading heap statistics costs microseconds: tiny tasks look at most every few milliseconds.
    if (heapAbove !== undefined && performance.now() - this.heapCheckedAt > HEAP_CHECK_MS) {
      this.heapCheckedAt = performance.now();
      const used = getHeapStatistics().used_heap_size;
      if (used > heapAbove) (report ??= {}).heapUsed = used;
    }
    if (wantUsage && this.cpuBefore) {
      const cpu = process.cpuUsage(this.cpuBefore);
      const usage: TaskUsage = {
        wallMs: performance.now() - this.wallBefore,
        cpuUserMs: cpu.user / 1000,
        cpuSystemMs: cpu.system / 1000,
        peakRss: peakRss(),
        fdsOpened: opened,
      };
      (report ??= {}).usage = usage;
    }
    return report;
  }
}
