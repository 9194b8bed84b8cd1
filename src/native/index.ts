/**
 * Loader for corral's optional native addons:
 *  - native/corral.c (Node-API 8, one build for every Node): `native()`, `requireNative()`;
 *  - native/shm.cc (V8 API, one build per Node ABI in native/build-shm/abi<N>/, picked by
 *    `process.versions.modules`) and its tracker executable: `shmNative()`, `requireShmNative()`.
 *
 * The addons are optional by design: corral must run where no compiler was available, so
 * nothing here throws on a missing or broken build. Callers that can degrade use
 * `native()` / `shmNative()`; callers that cannot do their job without it use the
 * `require*` forms, which fail with an error that says why and how to fix it.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
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
}

export interface NativeStatus {
  available: boolean;
  /** The .node file that was (or would have been) loaded. */
  path: string;
  /** Why it is not available; absent when it is. */
  reason?: string;
}

const FUNCTIONS = ['setPdeathsig', 'getppid', 'getrlimit', 'setrlimit', 'prlimit'] as const;

// dist/src/native/index.js → <package root>/native/build/Release/corral.node
const DEFAULT_PATH = fileURLToPath(new URL('../../../native/build/Release/corral.node', import.meta.url));

const BUILD_HINT = 'run `npm run build:native` in the corral package (needs python3, make and a C compiler)';

type Loaded = { binding: NativeBinding | undefined; status: NativeStatus; hint: string };
let loaded: Loaded | undefined;

function disabledByEnv(): boolean {
  const v = process.env.CORRAL_NO_NATIVE;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** Why an addon cannot be used, and what to do about it. */
type Refusal = { reason: string; hint: string };

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
): { exports: Record<string, unknown> } | Refusal {
  if (disabledByEnv()) {
    return {
      reason: `disabled by CORRAL_NO_NATIVE=${process.env.CORRAL_NO_NATIVE}`,
      hint: 'unset CORRAL_NO_NATIVE to use the native addon',
    };
  }
  if (process.platform !== 'linux') {
    return { reason: `corral's native addons are Linux-only (this is ${process.platform})`, hint: '' };
  }
  // Checked up front so the usual case reads "not built" instead of a require() stack.
  if (!existsSync(path)) return { reason: `${path} does not exist (${notBuilt})`, hint };
  let exports: unknown;
  try {
    exports = createRequire(import.meta.url)(path);
  } catch (err) {
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
  const path = override ? resolve(override) : DEFAULT_PATH;
  const r = loadAddon(
    path,
    FUNCTIONS,
    override ? 'CORRAL_NATIVE_PATH points there' : 'the addon was not built',
    BUILD_HINT,
  );
  if (!('exports' in r))
    return { binding: undefined, status: { available: false, path, reason: r.reason }, hint: r.hint };
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

// dist/src/native/index.js → <package root>/native/build-shm/abi<N>/
const SHM_DEFAULT_DIR = fileURLToPath(
  new URL(`../../../native/build-shm/abi${process.versions.modules}/`, import.meta.url),
);

const SHM_BUILD_HINT =
  `run \`npm run build:native\` in the corral package with this Node (needs python3, make and a C++ ` +
  `compiler), or \`node scripts/build-native.mjs --node${process.versions.node.split('.')[0]}\` with another one`;

type ShmLoaded = { binding: ShmBinding | undefined; status: ShmNativeStatus; hint: string };
let shmLoaded: ShmLoaded | undefined;

function loadShm(): ShmLoaded {
  const override = process.env.CORRAL_SHM_NATIVE_DIR;
  const dir = override ? resolve(override) : SHM_DEFAULT_DIR;
  const path = resolve(dir, 'corral_shm.node');
  const tracker = resolve(dir, 'corral-shm-tracker');
  const notBuilt = override
    ? 'CORRAL_SHM_NATIVE_DIR points there'
    : `the addon was not built for Node ${process.versions.node}, ABI ${process.versions.modules}`;
  let r = loadAddon(path, SHM_FUNCTIONS, notBuilt, SHM_BUILD_HINT);
  if ('exports' in r && r.exports.abi !== Number(process.versions.modules)) {
    r = {
      reason: `${path} was built for ABI ${String(r.exports.abi)}, this Node ${process.versions.node} has ${process.versions.modules}`,
      hint: SHM_BUILD_HINT,
    };
  }
  if (!('exports' in r)) {
    return {
      binding: undefined,
      status: { available: false, path, tracker, reason: r.reason },
      hint: r.hint,
    };
  }
  return {
    binding: r.exports as unknown as ShmBinding,
    status: { available: true, path, tracker },
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
