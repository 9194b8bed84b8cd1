/**
 * Loader for corral's optional native addons, all in prebuilds/<platform>-<arch>/ (shipped for
 * linux-x64 and linux-arm64; `corral build-native` writes a source build to the same place):
 *  - corral.napi.node, from native/corral.c (Node-API 8, one build for every Node): `native()`,
 *    `requireNative()`;
 *  - corral_shm.abi<N>.node, from native/shm.cc (V8 API, one build per Node ABI, picked by
 *    `process.versions.modules`) and its tracker executable: `shmNative()`, `requireShmNative()`;
 *  - corral_heap.abi<N>.node, from native/heap.cc (the heap guard, built beside it):
 *    `heapGuardNative()` (a worker without it dies of a full heap only when V8 gives up).
 *
 * The addons are optional by design: corral must run where no compiler was available, so
 * nothing here throws on a missing or broken build. Callers that can degrade use
 * `native()` / `shmNative()`; callers that cannot do their job without it use the
 * `require*` forms, which fail with an error that says why and how to fix it.
 */

import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeUnavailableError } from '../errors.js';

export type RlimitResource = 'as' | 'data' | 'nofile' | 'cpu' | 'rss' | 'stack' | 'core' | 'nproc';

/** `null` is RLIM_INFINITY. Bytes for 'as', 'data', 'rss', 'stack', 'core'; seconds for 'cpu'. */
export interface Rlimit {
  soft: number | null;
  hard: number | null;
}

/**
 * Argument errors follow Node's conventions: wrong type → TypeError (`ERR_INVALID_ARG_TYPE`,
 * or `ERR_INVALID_ARG_VALUE` for an unknown resource), number out of range → RangeError
 * (`ERR_OUT_OF_RANGE`). A failing system call throws an Error with `code` = errno name
 * ('EPERM', 'ESRCH', 'EINVAL'), `errno` (negative) and `syscall`.
 */
export interface NativeBinding {
  /**
   * prctl(PR_SET_PDEATHSIG): deliver `sig` to this process when its parent dies, even by
   * SIGKILL. The kernel ties this to the parent *thread* that spawned us, and it does not
   * fire if the parent is already gone: compare `getppid()` with the expected parent pid
   * right after calling it.
   */
  setPdeathsig(sig: number): void;
  getppid(): number;
  getrlimit(r: RlimitResource): Rlimit;
  /** Limits this process (and children spawned afterwards, which inherit them). */
  setrlimit(r: RlimitResource, soft: number | null, hard: number | null): void;
  /** Reads another process' limit without changing it. */
  prlimit(pid: number, r: RlimitResource): Rlimit;
  /** Sets another process' limit and returns the one it replaced. pid 0 is this process. */
  prlimit(pid: number, r: RlimitResource, soft: number | null, hard: number | null): Rlimit;
  /**
   * Starts a thread that ends this process with `exitCode`, after one line "<marker> rss=<bytes>
   * limit=<bytes>" on stderr, as soon as its resident memory passes `limitBytes`. Once per process:
   * false if already armed. Absent from addons built before it existed.
   */
  armRssGuard?(limitBytes: number, exitCode: number, marker: string): boolean;
}

export interface NativeStatus {
  available: boolean;
  /** The .node file that was (or would have been) loaded. */
  path: string;
  /** Why it is not available; absent when it is. */
  reason?: string;
  /** What to do about it, when something can be done; absent when available. */
  fix?: string;
}

const FUNCTIONS = ['setPdeathsig', 'getppid', 'getrlimit', 'setrlimit', 'prlimit'] as const;

// dist/src/native/index.js → <package root>. The addons live in prebuilds/<platform>-<arch>/,
// shipped in the package for linux-x64 and linux-arm64 and written there by a source build.
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TARGET = `${process.platform}-${process.arch}`;
const PREBUILD_DIR = resolve(PACKAGE_ROOT, 'prebuilds', TARGET);

/**
 * The command that builds the addons from source for this machine and this Node: in an
 * installed package the `corral` bin (npm runs it from the project), in a clone the npm script.
 * `npx corral` inside a clone would not find the clone's own bin and would ask the registry.
 */
const BUILD_COMMAND = PACKAGE_ROOT.split(sep).includes('node_modules')
  ? 'npx corral build-native'
  : 'npm run build:native';
const BUILD_HINT = `build it from source with \`${BUILD_COMMAND}\` (needs python3, make and a C/C++ compiler)`;

type Loaded = { binding: NativeBinding | undefined; status: NativeStatus; hint: string };
let loaded: Loaded | undefined;

function disabledByEnv(): boolean {
  const v = process.env.CORRAL_NO_NATIVE;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** Why an addon cannot be used, and what to do about it. */
type Refusal = { reason: string; hint: string };

/** What a missing file means: the whole platform has no prebuilds, or only this file is absent. */
function missingReason(path: string, what: string): string {
  if (!existsSync(PREBUILD_DIR)) {
    let shipped: string[] = [];
    try {
      shipped = readdirSync(resolve(PACKAGE_ROOT, 'prebuilds'));
    } catch {
      // no prebuilds at all (a clone before its first build)
    }
    return (
      `no ${what} for ${TARGET} in this package` +
      (shipped.length > 0 ? ` (it ships ${shipped.sort().join(', ')})` : ' (it has no prebuilds/ directory)')
    );
  }
  return `${path} does not exist (${what})`;
}

/**
 * The checks both addons go through, in the order a user would want them explained: disabled,
 * wrong platform, not built, not loadable, stale (a build left over from an older corral would
 * otherwise fail later, far from here).
 */
function loadAddon(
  path: string,
  functions: readonly string[],
  notBuilt: string,
  hint: string,
  elsewhere: string,
): { exports: Record<string, unknown> } | Refusal {
  if (disabledByEnv()) {
    return {
      reason: `disabled by CORRAL_NO_NATIVE=${process.env.CORRAL_NO_NATIVE}`,
      hint: 'unset CORRAL_NO_NATIVE to use the native addon',
    };
  }
  if (process.platform !== 'linux') {
    return { reason: `corral's native addons are Linux-only (this is ${process.platform})`, hint: elsewhere };
  }
  // Checked up front so the usual case reads "not built" instead of a require() stack.
  if (!existsSync(path)) return { reason: notBuilt, hint };
  let exports: unknown;
  try {
    exports = createRequire(import.meta.url)(path);
  } catch (err) {
    // e.g. "version `GLIBC_2.34' not found" on an older distribution: a source build links
    // against the machine's own C library.
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return { reason: `${path} failed to load: ${why}`, hint };
  }
  const record = (exports ?? {}) as Record<string, unknown>;
  const absent = functions.filter((name) => typeof record[name] !== 'function');
  if (absent.length > 0)
    return { reason: `${path} is stale or not corral's addon: it lacks ${absent.join(', ')}`, hint };
  return { exports: record };
}

function load(): Loaded {
  const override = process.env.CORRAL_NATIVE_PATH;
  // Relative to the working directory, like any path a user types; require() alone would
  // resolve it against this module's directory instead.
  const path = override ? resolve(override) : resolve(PREBUILD_DIR, 'corral.napi.node');
  const r = loadAddon(
    path,
    FUNCTIONS,
    override
      ? `${path} does not exist (CORRAL_NATIVE_PATH points there)`
      : missingReason(path, 'native addon (prebuilt or built from source)'),
    BUILD_HINT,
    'use limits.heap, which works on every platform, or run on Linux for the rlimits (addressSpace, ' +
      'data, openFiles, cpuTime)',
  );
  if (!('exports' in r))
    return {
      binding: undefined,
      status: { available: false, path, reason: r.reason, ...(r.hint ? { fix: r.hint } : {}) },
      hint: r.hint,
    };
  return { binding: r.exports as unknown as NativeBinding, status: { available: true, path }, hint: '' };
}

function get(): Loaded {
  loaded ??= load();
  return loaded;
}

/** The addon, or `undefined` when it is missing, broken or disabled. Loads once; never throws. */
export function native(): NativeBinding | undefined {
  return get().binding;
}

/** Whether the addon is usable and, if not, why: for diagnostics such as `systemInfo()`. */
export function nativeStatus(): NativeStatus {
  return { ...get().status };
}

/** The addon, or a `NativeUnavailableError` (`ERR_NATIVE_UNAVAILABLE`) naming `capability`, the reason and the fix. */
export function requireNative(capability: string): NativeBinding {
  const { binding, status, hint } = get();
  if (binding) return binding;
  throw new NativeUnavailableError(capability, hint ? `${status.reason}; ${hint}` : `${status.reason}`);
}

// --- the shared-memory addon (native/shm.cc), one build per Node ABI ---------------------

/** A segment as the addon hands it over: the mapping, its length and the inode behind the name. */
export interface ShmMapping {
  buffer: SharedArrayBuffer;
  size: number;
  ino: number;
  /** create() only: whether a running tracker was told about the name. */
  tracked: boolean;
}

/**
 * native/shm.cc. Failed system calls throw Node-style errors: `code` is the errno name
 * ('ENOENT', 'EEXIST', 'ENOSPC', 'EACCES', ...), plus `errno`, `syscall` and `path`.
 */
export interface ShmBinding {
  /** NODE_MODULE_VERSION it was built for. */
  readonly abi: number;
  /** shm_open(O_CREAT|O_EXCL, 0600), registered with the tracker when `track`, sized, reserved when `reserve`, mapped. */
  create(name: string, size: number, reserve: boolean, track: boolean): ShmMapping;
  /** Maps an existing segment: all of it (size 0) or its first `size` bytes (EINVAL + actualSize when shorter). */
  attach(name: string, size: number): ShmMapping;
  /** Removes the name if it still refers to inode `ino` (0: whatever it refers to); false when it was gone. */
  unlink(name: string, ino: number): boolean;
  /** close(): gives back `charge` bytes of external memory; drops the pages now if nobody else holds them. */
  release(buffer: SharedArrayBuffer, charge: number): boolean;
  /** Gives back the external-memory charge of a SharedMemory collected without close(). */
  forget(charge: number): void;
  /** pipe2(O_CLOEXEC). */
  pipe(): [read: number, write: number];
  /** Adopts a started tracker's pipe (false: another thread already did; close yours). */
  trackerAttach(fd: number, pid: number): boolean;
  trackerState(): { pid: number; tracked: number };
}

export interface ShmNativeStatus extends NativeStatus {
  /** The tracker executable built next to the addon. */
  tracker: string;
}

const SHM_FUNCTIONS = [
  'create',
  'attach',
  'unlink',
  'release',
  'forget',
  'pipe',
  'trackerAttach',
  'trackerState',
];

type ShmLoaded = { binding: ShmBinding | undefined; status: ShmNativeStatus; hint: string };
let shmLoaded: ShmLoaded | undefined;

/** The directory of the per-ABI addons: CORRAL_SHM_NATIVE_DIR, or this package's prebuilds. */
function perAbiDir(): { dir: string; overridden: boolean } {
  const override = process.env.CORRAL_SHM_NATIVE_DIR;
  return { dir: override ? resolve(override) : PREBUILD_DIR, overridden: Boolean(override) };
}

/** `loadAddon` for `<name>.abi<N>.node`, plus the check that it was built for this Node. */
function loadPerAbi(
  name: string,
  functions: readonly string[],
  what: string,
  elsewhere: string,
): { path: string } & ({ exports: Record<string, unknown> } | Refusal) {
  const { dir, overridden } = perAbiDir();
  const path = resolve(dir, `${name}.abi${process.versions.modules}.node`);
  const notBuilt = overridden
    ? `${path} does not exist (CORRAL_SHM_NATIVE_DIR points there)`
    : missingReason(path, `${what} for Node ${process.versions.node} (ABI ${process.versions.modules})`);
  const r = loadAddon(path, functions, notBuilt, BUILD_HINT, elsewhere);
  if ('exports' in r && r.exports.abi !== Number(process.versions.modules)) {
    return {
      path,
      reason: `${path} was built for ABI ${String(r.exports.abi)}, this Node ${process.versions.node} has ${process.versions.modules}`,
      hint: BUILD_HINT,
    };
  }
  return { path, ...r };
}

function loadShm(): ShmLoaded {
  const tracker = resolve(perAbiDir().dir, 'corral-shm-tracker');
  const r = loadPerAbi(
    'corral_shm',
    SHM_FUNCTIONS,
    'shared-memory addon',
    "use runtime 'thread' (SharedMemory between worker threads works on every platform), or run on " +
      'Linux to share segments with worker processes',
  );
  if (!('exports' in r)) {
    return {
      binding: undefined,
      status: {
        available: false,
        path: r.path,
        tracker,
        reason: r.reason,
        ...(r.hint ? { fix: r.hint } : {}),
      },
      hint: r.hint,
    };
  }
  return {
    binding: r.exports as unknown as ShmBinding,
    status: { available: true, path: r.path, tracker },
    hint: '',
  };
}

function getShm(): ShmLoaded {
  shmLoaded ??= loadShm();
  return shmLoaded;
}

/** The shared-memory addon, or `undefined` when it is missing, broken, disabled or built for another Node. */
export function shmNative(): ShmBinding | undefined {
  return getShm().binding;
}

export function shmNativeStatus(): ShmNativeStatus {
  return { ...getShm().status };
}

/** The shared-memory addon, or a `NativeUnavailableError` naming `capability`, the reason and the fix. */
export function requireShmNative(capability: string): ShmBinding {
  const { binding, status, hint } = getShm();
  if (binding) return binding;
  throw new NativeUnavailableError(capability, hint ? `${status.reason}; ${hint}` : `${status.reason}`);
}

// --- the heap guard (native/heap.cc), built beside the shared-memory addon ------------------

/** native/heap.cc: ends a worker soon after its V8 heap fills (see the file's header). */
export interface HeapGuardBinding {
  readonly abi: number;
  /**
   * Watches this process's main isolate against an old-generation limit of `limitBytes`; when it
   * is reached, writes `<marker> used=<bytes> limit=<bytes> by=<full|thrash|v8>` to fd 2 and
   * `_exit(exitCode)`s. False when the process is armed already.
   */
  arm(limitBytes: number, exitCode: number, marker: string): boolean;
  /**
   * The same in a worker thread: when the limit is reached, `report` (at least three float64s) gets
   * [used, limit, 1 'full' | 2 'thrash' | 3 'v8'] and the thread's environment is stopped. False when
   * armed already.
   */
  armThread(limitBytes: number, report: SharedArrayBuffer): boolean;
  /**
   * limits.rss for this process, from inside (native/rss-stop.cc, "the rss stop"): a thread watches
   * its resident memory; past `limitBytes` a call made through `call()` is stopped in place (`call()`
   * returns `stopped`) where the JS running is not Node's nor under `own` (corral's scripts' URL
   * prefix), anything else ends the process like armRssGuard, as does passing `ceilingBytes`
   * (rssCeiling) before a stop lands. False when armed already. Absent from addons built before it
   * existed.
   */
  armRss?(
    limitBytes: number,
    exitCode: number,
    marker: string,
    stopped: unknown,
    own: string,
    ceilingBytes: number,
  ): boolean;
  /** `fn(...args)`, or the `stopped` value given to armRss when the rss stop ended the call. */
  call?(fn: (...args: unknown[]) => unknown, args: unknown[]): unknown;
  /**
   * After a stopped call: collects garbage and trims malloc's free memory, then returns the resident
   * bytes seen at the stop. Ends the process instead when it stays above 3/4 of the limit, or at once
   * when `goOn` is false.
   */
  reclaim?(goOn: boolean): number;
}

type HeapLoaded = { binding: HeapGuardBinding | undefined; status: NativeStatus };
let heapLoaded: HeapLoaded | undefined;

function getHeap(): HeapLoaded {
  if (heapLoaded) return heapLoaded;
  const r = loadPerAbi(
    'corral_heap',
    ['arm', 'armThread'],
    'heap guard',
    'limits.heap still holds, only a breach ends when V8 gives up (up to seconds later)',
  );
  heapLoaded =
    'exports' in r
      ? { binding: r.exports as unknown as HeapGuardBinding, status: { available: true, path: r.path } }
      : {
          binding: undefined,
          status: { available: false, path: r.path, reason: r.reason, ...(r.hint ? { fix: r.hint } : {}) },
        };
  return heapLoaded;
}

/** The heap guard, or `undefined` when it is missing, broken, disabled or built for another Node. */
export function heapGuardNative(): HeapGuardBinding | undefined {
  return getHeap().binding;
}

/** Whether the heap guard is usable here and, if not, why. */
export function heapGuardStatus(): NativeStatus {
  return { ...getHeap().status };
}
