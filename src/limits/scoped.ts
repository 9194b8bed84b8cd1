/**
 * Scoped resources for task code, in the spirit of Python's `with`: each returns something that
 * closes itself at the end of a `using` / `await using` block (TypeScript >= 5.2 down-levels them for
 * Node 20/22; Node 24 runs them natively), so a task that throws half-way leaks no descriptor and
 * `detectLeaks` stays quiet.
 *
 *   await using file = await openFile(path, 'r');  // fs.promises.FileHandle, closed at block end
 *   using fd = openFileSync(path, 'w');              // { fd }, closed at block end
 *   await using dir = await tempDir('job-');         // { path }, removed with its contents
 *   using sock = scoped(net.connect(port), (s) => s.destroy());
 */
import { closeSync, type OpenMode, openSync, type PathLike } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { builtin } from '../lazy.js';

/** Node 20 has Symbol.dispose/asyncDispose but older typings may not promise them on FileHandle. */
export type ScopedFileHandle = FileHandle & AsyncDisposable;

/** fs.promises.open whose handle closes itself at the end of an `await using` block. */
export async function openFile(
  path: PathLike,
  flags: OpenMode = 'r',
  mode?: number,
): Promise<ScopedFileHandle> {
  const handle = (await builtin('node:fs/promises').open(path, flags, mode)) as ScopedFileHandle;
  if (typeof handle[Symbol.asyncDispose] !== 'function') {
    Object.defineProperty(handle, Symbol.asyncDispose, { value: () => handle.close(), configurable: true });
  }
  return handle;
}

export interface ScopedFd extends Disposable {
  readonly fd: number;
  /** Closes now; a later dispose does nothing. */
  close(): void;
}

/** fs.openSync whose descriptor closes itself at the end of a `using` block. */
export function openFileSync(path: PathLike, flags: OpenMode = 'r', mode?: number): ScopedFd {
  const fd = openSync(path, flags, mode);
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  return { fd, close, [Symbol.dispose]: close };
}

export interface ScopedDir extends AsyncDisposable {
  readonly path: string;
}

/** A fresh directory under the system temp dir, removed with its contents at the end of `await using`. */
export async function tempDir(prefix = 'corral-'): Promise<ScopedDir> {
  const fs = builtin('node:fs/promises');
  const path = await fs.mkdtemp(join(tmpdir(), prefix));
  return { path, [Symbol.asyncDispose]: () => fs.rm(path, { recursive: true, force: true }) };
}

/**
 * Any resource with a close function: `using s = scoped(socket, (s) => s.destroy())`. An object: a
 * number or other primitive cannot carry a dispose method, so it is closed at once (nothing leaks)
 * and the call throws ConfigError: use openFileSync for a descriptor, or scope an object holding it.
 */
export function scoped<T extends object>(resource: T, close: (resource: T) => void): T & Disposable {
  if (resource === null || (typeof resource !== 'object' && typeof resource !== 'function')) {
    try {
      close(resource);
    } catch {
      // Closing it was the courtesy; the error below is the answer.
    }
    throw new ConfigError(
      'scoped',
      `expected an object to scope (a socket, a handle); got ${resource === null ? 'null' : typeof resource}, which was closed. For a descriptor use openFileSync(), or scoped({ fd }, ({ fd }) => closeSync(fd))`,
    );
  }
  let open = true;
  const dispose = (): void => {
    if (!open) return;
    open = false;
    close(resource);
  };
  return new Proxy(resource as T & object, {
    get(target, key, receiver) {
      if (key === Symbol.dispose) return dispose;
      const value = Reflect.get(target, key, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as T & Disposable;
}
