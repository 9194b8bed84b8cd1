/**
 * SharedMemory: a named block of memory that threads and processes map instead of copy.
 *
 * With the native addon (Linux), every segment is a POSIX shared memory object in /dev/shm
 * (shm_open with O_EXCL and mode 0600, a random unguessable name unless one is given),
 * mapped into a SharedArrayBuffer: the same bytes under the same name from any thread or
 * process. Without it, a segment is a plain SharedArrayBuffer that only this process'
 * threads can share, and every attempt to reach another process fails with
 * NativeUnavailableError saying why.
 *
 * Ownership: the creator owns a segment. Unless created with `persist: true`, it is
 * unlinked (removed from /dev/shm) when the creator closes it, when the creating thread
 * ends, and when the creating process dies in any way, SIGKILL included (tracker.ts).
 * Attaching never removes anything. Mappings that others hold stay readable after the name
 * is gone: POSIX keeps the memory until the last mapping goes.
 *
 * Atomics: `Atomics.add`/`sub`/`and`/`or`/`xor`/`exchange`/`compareExchange`/`load`/`store`
 * on Int32Array or BigInt64Array views are atomic across threads and processes alike (they
 * are CPU instructions on the shared pages). `Atomics.wait`/`waitAsync`/`notify` work
 * between threads of one process but do NOT cross processes: V8 keeps its waiter lists per
 * process, so a notify in one process wakes nobody in another (measured: the waiter times
 * out although the value changed). Block across processes with a pipe, an IPC message or
 * polling instead.
 */

import { ConfigError, SharedMemoryClosedError, SharedMemoryExistsError } from '../errors.js';
import { shmNative } from '../native/index.js';
import { checkKnownKeys, isPlainObject } from '../options.js';
import { critical } from '../runtime/critical.js';
import {
  localCreate,
  localLookup,
  localMissing,
  localWithdraw,
  posixAttach,
  posixCreate,
  posixUnlink,
  type Segment,
} from './backend.js';
import { checkName, checkSize, randomName, showBytes } from './names.js';
import { setShmUsed, shmEverUsed } from './used.js';

export interface CreateOptions {
  /** Bytes: a positive integer, or a string like '64MiB'. Must fit in what /dev/shm has free. */
  size: number | string;
  /** Default: `corral_<pid>_<random>`. With a leading '/' or without; `.name` shows it without. */
  name?: string;
  /** Keep the segment after its creator closes it or exits; then someone must `unlink()` it. Default false. */
  persist?: boolean;
  /**
   * Allocate the pages now (posix_fallocate), default true: a full /dev/shm then fails here
   * with a ConfigError rather than killing a later writer with SIGBUS. False leaves them to
   * be allocated on first write (sparse segments larger than the memory they will use).
   */
  reserve?: boolean;
}

export interface AttachOptions {
  /** Map only the first `size` bytes; a segment smaller than that is an error. Default: all of it. */
  size?: number | string;
}

export type FromOptions = Omit<CreateOptions, 'size'>;

/** Anything `view()` can build over the segment: the typed array constructors and DataView. */
export type ViewConstructor<T> = (new (
  buffer: SharedArrayBuffer,
  byteOffset?: number,
  length?: number,
) => T) &
  ({ readonly BYTES_PER_ELEMENT: number } | DataViewConstructor);

const INTERNAL = Symbol('corral.SharedMemory');

/**
 * Every open SharedMemory of this thread by name, weakly: `fromHandle` returns the
 * instance a thread already has (the creator's own object comes back as itself), and
 * without the addon this is how a name is found at all.
 */
const live = new Map<string, WeakRef<SharedMemory>>();
/** Segments corral makes for itself (claim boards) never travel in messages: they must not turn the walk on. */
export function internalSegment<T>(make: () => T): T {
  const before = shmEverUsed();
  try {
    return make();
  } finally {
    setShmUsed(before);
  }
}

/** Instances dropped without close(): give back their external-memory charge. */
const dropped = new FinalizationRegistry<{ name: string; charged: number }>(({ name, charged }) => {
  if (live.get(name)?.deref() === undefined) live.delete(name);
  if (charged > 0) shmNative()?.forget(charged);
});

/** How many open instances of this thread share one SharedArrayBuffer object. */
const claims = new WeakMap<SharedArrayBuffer, number>();

export class SharedMemory implements Disposable {
  /**
   * The segment's name, under the key handles use. Own enumerable properties are what a
   * structured clone (threads, 'advanced' IPC) or JSON keeps, so a SharedMemory that
   * travels without `encodeShm` still arrives as a handle (`{ __corralShm, size, id }`),
   * never as an empty object. Read it as `.name`.
   * @internal
   */
  readonly __corralShm: string;
  /** Bytes in the segment (as mapped here). */
  readonly size: number;
  /** Identity of the segment behind the name (its inode), telling apart a name unlinked and created again; 0 without the addon. */
  readonly id: number;
  #buffer: SharedArrayBuffer | undefined;
  readonly #posix: boolean;
  readonly #persist: boolean;
  /** Created here and not persistent: close() unlinks. */
  #owner: boolean;
  #charged: number;

  /** @internal Use `SharedMemory.create()`, `.attach()` or `.from()`. */
  constructor(token: typeof INTERNAL, segment: Segment, owner: boolean, persist: boolean) {
    if (token !== INTERNAL) {
      throw new TypeError(
        'SharedMemory has no public constructor: use SharedMemory.create(), .attach() or .from()',
      );
    }
    setShmUsed(true);
    this.__corralShm = segment.name;
    this.size = segment.size;
    this.id = segment.id;
    this.#buffer = segment.buffer;
    this.#posix = segment.posix;
    this.#owner = owner;
    this.#persist = persist;
    this.#charged = segment.charged;
    claims.set(segment.buffer, (claims.get(segment.buffer) ?? 0) + 1);
    // The first open instance keeps the name: the creator's own object is what comes back.
    if (!open(segment.name)) live.set(segment.name, new WeakRef(this));
    dropped.register(this, { name: segment.name, charged: segment.charged }, this);
  }

  /** Creates a new segment: zero-filled, exclusive (a taken name is SharedMemoryExistsError), mode 0600. */
  static create(options: CreateOptions): SharedMemory {
    return critical(() => SharedMemory.#create(options));
  }

  static #create(options: CreateOptions): SharedMemory {
    if (!isPlainObject(options)) {
      throw new ConfigError('options', 'SharedMemory.create() expects { size, name?, persist?, reserve? }');
    }
    checkKnownKeys('SharedMemory.create', options, ['size', 'name', 'persist', 'reserve']);
    const size = checkSize(options.size);
    const name = options.name === undefined ? randomName() : checkName(options.name);
    const persist = checkFlag('persist', options.persist, false);
    const reserve = checkFlag('reserve', options.reserve, true);
    const binding = shmNative();
    let segment: Segment;
    if (binding) {
      segment = posixCreate(binding, name, size, persist, reserve);
    } else {
      if (open(name) || localLookup(name)) throw new SharedMemoryExistsError(name);
      segment = localCreate(name, size);
    }
    return new SharedMemory(INTERNAL, segment, !persist, persist);
  }

  /**
   * Maps an existing segment by name, from any thread or process (without the addon: from
   * this process' threads only). Throws SharedMemoryNotFoundError when there is none.
   */
  static attach(name: string, options: AttachOptions = {}): SharedMemory {
    return critical(() => SharedMemory.#attach(name, options));
  }

  static #attach(name: string, options: AttachOptions): SharedMemory {
    const segmentName = checkName(name);
    if (!isPlainObject(options)) throw new ConfigError('options', 'SharedMemory.attach() expects { size? }');
    checkKnownKeys('SharedMemory.attach', options, ['size']);
    const size = options.size === undefined ? undefined : checkSize(options.size);
    const binding = shmNative();
    if (binding) return new SharedMemory(INTERNAL, posixAttach(binding, segmentName, size), false, false);
    const mine = open(segmentName);
    const buffer = mine ? mine.#buffer : localLookup(segmentName);
    if (!buffer) throw localMissing(segmentName, 'SharedMemory.attach() across processes');
    return adopt(segmentName, buffer, 0, size);
  }

  /** Creates a segment of `data.byteLength` bytes holding a copy of `data`. */
  static from(
    data: ArrayBufferView | ArrayBuffer | SharedArrayBuffer,
    options: FromOptions = {},
  ): SharedMemory {
    let bytes: Uint8Array;
    if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) bytes = new Uint8Array(data);
    else
      throw new ConfigError(
        'data',
        'SharedMemory.from() expects a typed array, DataView, Buffer or ArrayBuffer',
      );
    if (!isPlainObject(options))
      throw new ConfigError('options', 'SharedMemory.from() expects { name?, persist? }');
    if (bytes.byteLength === 0)
      throw new ConfigError('size', 'SharedMemory.from() got 0 bytes; a segment needs at least 1');
    const shm = SharedMemory.create({ ...options, size: bytes.byteLength });
    new Uint8Array(shm.buffer).set(bytes);
    return shm;
  }

  /** The segment's name (without a leading '/'): what `attach()` takes. */
  get name(): string {
    return this.__corralShm;
  }

  get closed(): boolean {
    return this.#buffer === undefined;
  }

  /** Whether the segment outlives its creator (`persist: true`). */
  get persistent(): boolean {
    return this.#persist;
  }

  /** Whether this is a /dev/shm segment that other processes can attach (false without the addon). */
  get crossProcess(): boolean {
    return this.#posix;
  }

  /** The whole segment. Views over it stay valid memory after close() but are then detached from the segment. */
  get buffer(): SharedArrayBuffer {
    if (this.#buffer === undefined) throw new SharedMemoryClosedError(this.name, 'buffer');
    return this.#buffer;
  }

  /**
   * A typed view (or DataView) over the segment: `byteOffset` must be a multiple of the
   * element size, `length` (in elements) defaults to as many as fit. Outside the segment →
   * RangeError.
   */
  view<T>(Ctor: ViewConstructor<T>, byteOffset = 0, length?: number): T {
    const buffer = this.buffer;
    if (typeof Ctor !== 'function') {
      throw new TypeError('view() expects a typed array constructor (e.g. Float64Array) or DataView');
    }
    const bytesPer =
      Ctor === (DataView as unknown) ? 1 : (Ctor as { BYTES_PER_ELEMENT?: unknown }).BYTES_PER_ELEMENT;
    if (typeof bytesPer !== 'number') {
      throw new TypeError('view() expects a typed array constructor (e.g. Float64Array) or DataView');
    }
    const kind = Ctor.name || 'view';
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset > this.size) {
      throw new RangeError(
        `${kind}: byteOffset ${byteOffset} is outside the segment (0..${this.size} bytes)`,
      );
    }
    if (byteOffset % bytesPer !== 0) {
      throw new RangeError(
        `${kind}: byteOffset ${byteOffset} is not a multiple of its element size ${bytesPer}`,
      );
    }
    const fits = Math.floor((this.size - byteOffset) / bytesPer);
    const count = length ?? fits;
    if (!Number.isSafeInteger(count) || count < 0 || count > fits) {
      throw new RangeError(
        `${kind}: ${length} elements of ${bytesPer} bytes at byteOffset ${byteOffset} do not fit in the ` +
          `segment's ${this.size} bytes (at most ${fits})`,
      );
    }
    return new Ctor(buffer, byteOffset, count);
  }

  /**
   * Done with the segment here. The creator of a non-persistent segment also unlinks it
   * (others that have it mapped keep their mapping). Idempotent. Afterwards `buffer`,
   * `view()` and sending it throw SharedMemoryClosedError; views taken before stay valid
   * memory (never a crash) but, when nothing else in this process holds the mapping, its
   * pages are released at once and they read zeros.
   */
  close(): void {
    critical(() => this.#close());
  }

  #close(): void {
    const buffer = this.#buffer;
    if (buffer === undefined) return;
    this.#buffer = undefined;
    dropped.unregister(this);
    if (live.get(this.name)?.deref() === this) live.delete(this.name);
    if (this.#owner) {
      this.#owner = false;
      this.#unlinkName();
    }
    const left = (claims.get(buffer) ?? 1) - 1;
    if (left > 0) claims.set(buffer, left);
    else claims.delete(buffer);
    const binding = this.#posix ? shmNative() : undefined;
    if (binding) {
      // Drops the pages now if this thread's buffer object is the only holder anywhere.
      if (left === 0) binding.release(buffer, this.#charged);
      else if (this.#charged > 0) binding.forget(this.#charged);
    }
    this.#charged = 0;
  }

  /**
   * Removes the name, so nobody can attach any more; the memory lives on for everyone who
   * has it mapped. Anyone may unlink, creator or not (persistent segments need it). Returns
   * false when the name was already gone (or now names another segment, which is left alone).
   */
  unlink(): boolean {
    return critical(() => {
      this.#owner = false;
      return this.#unlinkName();
    });
  }

  #unlinkName(): boolean {
    const binding = this.#posix ? shmNative() : undefined;
    if (binding) return posixUnlink(binding, this.name, this.id);
    return localWithdraw(this.name);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  get [Symbol.toStringTag](): string {
    return 'SharedMemory';
  }
}

function checkFlag(option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value === 'boolean') return value;
  throw new ConfigError(option, `expected true or false; got ${typeof value}`);
}

/** This thread's open instance for `name`, if any. */
export function open(name: string): SharedMemory | undefined {
  const shm = live.get(name)?.deref();
  return shm && !shm.closed ? shm : undefined;
}

/**
 * An attached (non-owning) instance over a buffer this thread already has: a local segment
 * found by name, or one a thread handle carried. @internal
 */
export function adopt(name: string, buffer: SharedArrayBuffer, id: number, size?: number): SharedMemory {
  const mapped = size ?? buffer.byteLength;
  if (mapped > buffer.byteLength) {
    throw new ConfigError(
      'size',
      `segment '${name}' holds ${showBytes(buffer.byteLength)}; cannot map ${showBytes(mapped)} of it`,
    );
  }
  const segment: Segment = { name, size: mapped, id, buffer, posix: id !== 0, charged: 0 };
  return new SharedMemory(INTERNAL, segment, false, false);
}

/** Maps `name` by way of the addon; undefined without it. @internal */
export function attachPosix(name: string, size: number): SharedMemory | undefined {
  const binding = shmNative();
  if (!binding) return undefined;
  return new SharedMemory(INTERNAL, posixAttach(binding, name, size), false, false);
}
