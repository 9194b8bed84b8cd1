/**
 * Every error corral throws or rejects with. One hierarchy, one file: callers can branch on
 * `instanceof` or on the stable `code` string (which survives serialisation, `instanceof` does not).
 */

export type CorralErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_POOL_CLOSED'
  | 'ERR_QUEUE_FULL'
  | 'ERR_TASK_FAILED'
  | 'ERR_TASK_TIMEOUT'
  | 'ERR_TASK_ABORTED'
  | 'ERR_WORKER_CRASHED'
  | 'ERR_WORKER_START'
  | 'ERR_MODULE_LOAD'
  | 'ERR_UNKNOWN_TASK'
  | 'ERR_SERIALIZATION'
  | 'ERR_NATIVE_UNAVAILABLE'
  | 'ERR_MEMORY_LIMIT'
  | 'ERR_CPU_TIME_LIMIT'
  | 'ERR_POISON_TASK'
  | 'ERR_SHM_NOT_FOUND'
  | 'ERR_SHM_EXISTS'
  | 'ERR_SHM_CLOSED'
  | 'ERR_QUEUE_CLOSED'
  | 'ERR_QUEUE_EMPTY'
  | 'ERR_BACKEND_UNAVAILABLE'
  | 'ERR_WORKER_LOST'
  | 'ERR_PAYLOAD_TOO_LARGE'
  | 'ERR_MODULE_VERSION'
  | 'ERR_DEPENDENCY_MISSING'
  | 'ERR_NOT_SUPPORTED';

export class CorralError extends Error {
  readonly code: CorralErrorCode;
  /** The worker host it happened on, for errors a distributed backend's host sent back (`name:pid`). */
  declare readonly host?: string;
  constructor(code: CorralErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

/** An option or argument is not acceptable; the message names it and says what is allowed. */
export class ConfigError extends CorralError {
  readonly option: string;
  constructor(option: string, message: string) {
    super('ERR_INVALID_OPTION', `${option}: ${message}`);
    this.option = option;
  }
}

/** The pool was closed or terminated before the task could run. */
export class PoolClosedError extends CorralError {
  constructor(message = 'the pool is closed; create a new Pool to submit more work') {
    super('ERR_POOL_CLOSED', message);
  }
}

/**
 * Back pressure: `maxQueue` tasks already wait in a pool, or a channel `Queue` holds `maxsize` items
 * (`put` with `{ wait: false }` or past its timeout). `maxQueue` is the bound either way.
 */
export class QueueFullError extends CorralError {
  readonly maxQueue: number;
  constructor(maxQueue: number, message?: string) {
    super(
      'ERR_QUEUE_FULL',
      message ??
        `the task queue is full (maxQueue = ${maxQueue}); wait for running tasks to settle or raise maxQueue`,
    );
    this.maxQueue = maxQueue;
  }
}

/** A channel (Queue, JoinableQueue, Pipe end) was closed: no more puts, and gets once it is drained. */
export class QueueClosedError extends CorralError {
  constructor(message = 'the queue is closed') {
    super('ERR_QUEUE_CLOSED', message);
  }
}

/** `get` with `{ wait: false }` or a timeout found no item. */
export class QueueEmptyError extends CorralError {
  /** How long it waited, in ms (0 for `{ wait: false }`). */
  readonly waited: number;
  constructor(waited: number) {
    super(
      'ERR_QUEUE_EMPTY',
      waited > 0 ? `no item arrived within ${waited} ms` : 'the queue is empty (get with { wait: false })',
    );
    this.waited = waited;
  }
}

/** The task's own code threw; `cause` is the remote error rebuilt with its name, message, stack and fields. */
export class TaskError extends CorralError {
  readonly task: string;
  /** What the task wrote to stdout/stderr while it ran (pools with captureOutput: true). */
  readonly output: string | undefined;
  constructor(task: string, cause: unknown) {
    const why = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super('ERR_TASK_FAILED', `task '${task}' failed: ${why}`, { cause });
    this.task = task;
    const output = (cause as { output?: unknown } | null)?.output;
    this.output = typeof output === 'string' ? output : undefined;
  }
}

export class TaskTimeoutError extends CorralError {
  readonly task: string;
  readonly timeout: number;
  constructor(task: string, timeout: number) {
    super(
      'ERR_TASK_TIMEOUT',
      // Settled at the deadline, before the worker's fate is known: the task may still honour its signal.
      `task '${task}' did not finish within ${timeout} ms; its signal was aborted, and its worker is replaced if the task does not return within cancelGrace`,
    );
    this.task = task;
    this.timeout = timeout;
  }
}

/** The task's AbortSignal fired. `cause` is the signal's reason. */
export class AbortError extends CorralError {
  readonly task: string;
  constructor(task: string, reason: unknown) {
    super('ERR_TASK_ABORTED', `task '${task}' was aborted`, { cause: reason });
    this.task = task;
  }
}

export interface WorkerExit {
  workerId: number;
  pid: number | undefined;
  threadId: number | undefined;
  exitCode: number | null;
  signal: string | null;
  /** Last lines the worker wrote to stderr (process runtime), or the error a thread died of. */
  detail?: string;
}

/**
 * The last few KiB a dead process worker wrote to stderr, V8's fatal-error dump included (the
 * parent's terminal is spared it); undefined for threads, which write to the parent's stderr.
 */
function stderrTailOf(exit: Pick<WorkerExit, 'pid' | 'detail'>): string | undefined {
  return exit.pid !== undefined ? exit.detail : undefined;
}

/** The worker running the task died. Tasks it had not started yet are re-queued, not failed. */
export class WorkerCrashedError extends CorralError {
  readonly task: string;
  readonly workerId: number;
  readonly pid: number | undefined;
  readonly threadId: number | undefined;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string | undefined;
  constructor(task: string, exit: WorkerExit, message?: string, options?: { cause?: unknown }) {
    const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.exitCode}`;
    const who = exit.pid !== undefined ? `pid ${exit.pid}` : `thread ${exit.threadId}`;
    super(
      'ERR_WORKER_CRASHED',
      message ??
        `worker ${exit.workerId} (${who}) died with ${how} while running task '${task}'` +
          (exit.detail ? `: ${exit.detail}` : ''),
      options,
    );
    this.task = task;
    this.workerId = exit.workerId;
    this.pid = exit.pid;
    this.threadId = exit.threadId;
    this.exitCode = exit.exitCode;
    this.signal = exit.signal;
    this.stderrTail = stderrTailOf(exit);
  }
}

/** Workers could not be started (bad execArgv, resources exhausted, repeated crashes at start). */
export class WorkerStartError extends CorralError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_WORKER_START', message, options);
  }
}

/** The task module (or its initializer) failed to load in a worker. Not retried. */
export class ModuleLoadError extends CorralError {
  readonly module: string;
  constructor(module: string, cause: unknown) {
    const why = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super('ERR_MODULE_LOAD', `task module ${module} failed to load in a worker: ${why}`, { cause });
    this.module = module;
  }
}

export class UnknownTaskError extends CorralError {
  readonly task: string;
  readonly available: readonly string[];
  constructor(task: string, available: readonly string[]) {
    super(
      'ERR_UNKNOWN_TASK',
      `the task module has no function export named '${task}'; it exports: ${available.length ? available.join(', ') : '(no functions)'}`,
    );
    this.task = task;
    this.available = available;
  }
}

/**
 * Arguments, a result or a channel item (`direction: 'item'`, refused by `put`) could not be
 * structured-cloned (functions, class instances with methods, sockets...).
 */
export class SerializationError extends CorralError {
  readonly task: string;
  readonly direction: 'arguments' | 'result' | 'item';
  constructor(task: string, direction: 'arguments' | 'result' | 'item', cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      'ERR_SERIALIZATION',
      (direction === 'item'
        ? `an item put on ${task} cannot be sent between workers: ${why}. `
        : `the ${direction} of task '${task}' cannot be sent between workers: ${why}. `) +
        'Pass plain data (objects, arrays, strings, numbers, typed arrays, Map/Set); functions and sockets cannot travel.',
      { cause },
    );
    this.task = task;
    this.direction = direction;
  }
}

/** A capability that needs the native addon (or a Linux facility) is not available here. */
export class NativeUnavailableError extends CorralError {
  readonly capability: string;
  constructor(capability: string, why: string) {
    super('ERR_NATIVE_UNAVAILABLE', `${capability} is not available: ${why}`);
    this.capability = capability;
  }
}

/**
 * Which limit: a worker's V8 `heap`, its sampled `rss`, its `address-space` or `data` rlimit, the
 * pool's memory `budget`, or the memory `cgroup` it runs in (the kernel's OOM killer took it).
 */
export type MemoryLimitKind = 'heap' | 'rss' | 'address-space' | 'data' | 'budget' | 'cgroup';

/**
 * The task's worker went over a memory limit. Most breaches are deaths (V8 aborts, the kernel kills),
 * so this is decided from how the worker ended, the limits in force and its last stderr lines.
 */
export class MemoryLimitError extends CorralError {
  readonly task: string;
  readonly kind: MemoryLimitKind;
  /** The limit in bytes. */
  readonly limit: number;
  /** The value seen when it was breached, in bytes, when known. */
  readonly observed: number | undefined;
  readonly workerId: number;
  readonly pid: number | undefined;
  readonly stderrTail: string | undefined;
  /**
   * True when the worker's rss guard stopped the call inside the worker, which freed the memory and
   * went on (limits.rss, during the call's synchronous part); false when the worker was replaced.
   */
  readonly inPlace: boolean;
  constructor(
    task: string,
    kind: MemoryLimitKind,
    limit: number,
    observed: number | undefined,
    exit: Pick<WorkerExit, 'workerId' | 'pid' | 'detail'>,
    options?: { cause?: unknown; inPlace?: boolean },
  ) {
    const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const inPlace = options?.inPlace === true;
    // The heap guard stops a worker whose heap is full before V8 gives up on it: what it saw
    // is live data just under the limit, with no room left to work in.
    const how =
      observed === undefined
        ? `went over the ${kind} limit of ${mib(limit)}`
        : observed < limit
          ? `filled the ${kind} limit of ${mib(limit)} (${mib(observed)} still live after a full garbage collection)`
          : `went over the ${kind} limit of ${mib(limit)} (observed ${mib(observed)})`;
    const after = inPlace
      ? `the call was stopped, and worker ${exit.workerId} freed the memory and goes on`
      : `worker ${exit.workerId} was replaced`;
    super('ERR_MEMORY_LIMIT', `task '${task}' ${how}; ${after}`, options);
    this.task = task;
    this.inPlace = inPlace;
    this.kind = kind;
    this.limit = limit;
    this.observed = observed;
    this.workerId = exit.workerId;
    this.pid = exit.pid;
    this.stderrTail = stderrTailOf(exit);
  }
}

/** The task used more CPU time than limits.cpuTime; the kernel stopped its worker. */
export class CpuTimeLimitError extends CorralError {
  readonly task: string;
  /** Seconds of CPU allowed per task. */
  readonly limit: number;
  readonly workerId: number;
  readonly pid: number | undefined;
  readonly signal: string | null;
  readonly stderrTail: string | undefined;
  constructor(task: string, limit: number, exit: Pick<WorkerExit, 'workerId' | 'pid' | 'signal' | 'detail'>) {
    super(
      'ERR_CPU_TIME_LIMIT',
      `task '${task}' used more than ${limit} s of CPU time; the kernel stopped worker ${exit.workerId} (${exit.signal}) and it was replaced`,
    );
    this.task = task;
    this.limit = limit;
    this.workerId = exit.workerId;
    this.pid = exit.pid;
    this.signal = exit.signal;
    this.stderrTail = stderrTailOf(exit);
  }
}

/** `SharedMemory.attach()` (or a task receiving one) found no segment by that name: never created, or unlinked. */
export class SharedMemoryNotFoundError extends CorralError {
  readonly segment: string;
  constructor(segment: string, detail = '') {
    super(
      'ERR_SHM_NOT_FOUND',
      `no shared memory segment named '${segment}'${detail ? ` ${detail}` : ''}: it was never created, or its ` +
        'creator closed or unlinked it (or exited: segments without persist: true go with their creator)',
    );
    this.segment = segment;
  }
}

/** `SharedMemory.create({ name })` with a name that is already taken (creation is exclusive). */
export class SharedMemoryExistsError extends CorralError {
  readonly segment: string;
  constructor(segment: string) {
    super(
      'ERR_SHM_EXISTS',
      `a shared memory segment named '${segment}' already exists; attach to it with SharedMemory.attach(), ` +
        'or leave out name to get a fresh random one',
    );
    this.segment = segment;
  }
}

/** A `SharedMemory` was used after `close()`. */
export class SharedMemoryClosedError extends CorralError {
  readonly segment: string;
  constructor(segment: string, operation: string) {
    super(
      'ERR_SHM_CLOSED',
      `shared memory '${segment}' was used after close() (${operation}); attach again with SharedMemory.attach() to keep using it`,
    );
    this.segment = segment;
  }
}

/** One death of a worker while it ran a task: the history a PoisonTaskError carries. */
export interface CrashRecord {
  workerId: number;
  pid: number | undefined;
  threadId: number | undefined;
  exitCode: number | null;
  signal: string | null;
  /** The limit it breached, when the death was a breach ('heap', 'rss', 'cpu-time', ...). */
  breach: string | undefined;
  /** The worker's highest sampled RSS and V8 heap in bytes, when they were measured. */
  peakRss: number | undefined;
  peakHeapUsed: number | undefined;
  /** ms since the epoch. */
  at: number;
}

/**
 * The task's input killed `poisonAfter` workers (crashes or breaches while it ran): it is not run
 * again, whatever retries are left. `crashes` says how each worker died.
 */
export class PoisonTaskError extends CorralError {
  readonly task: string;
  readonly crashes: readonly CrashRecord[];
  constructor(task: string, crashes: readonly CrashRecord[], options?: { cause?: unknown }) {
    const how = crashes
      .map((c) => c.breach ?? (c.signal ? `signal ${c.signal}` : `exit code ${c.exitCode}`))
      .join(', ');
    super(
      'ERR_POISON_TASK',
      `task '${task}' killed ${crashes.length} workers (${how}) and is not run again: its input is poison. ` +
        'Fix the input or the task; poisonAfter sets how many deaths are tolerated',
      options,
    );
    this.task = task;
    this.crashes = crashes;
  }
}

/**
 * The distributed backend cannot reach its Redis server (refused, timed out, gone for longer than
 * the backend waits for it). The message says which address and what to check.
 */
export class BackendUnavailableError extends CorralError {
  readonly backend: string;
  readonly address: string;
  constructor(backend: string, address: string, why: string, options?: { cause?: unknown }) {
    super(
      'ERR_BACKEND_UNAVAILABLE',
      `the ${backend} backend cannot reach Redis at ${address}: ${why.replace(/\.+$/, '')}. Check that redis-server runs there, ` +
        'that this host may connect to it (bind address, firewall, password) and the connection options',
      options,
    );
    this.backend = backend;
    this.address = address;
  }
}

/**
 * No `corral worker` had a live heartbeat on the queue for as long as the call may wait (the BullMQ
 * backend's hostWait): the call fails rather than wait silently for a host that may never come.
 */
export class NoHostError extends BackendUnavailableError {
  readonly queue: string;
  /** How long the call waited, in ms. */
  readonly waitedMs: number;
  constructor(address: string, queue: string, waitedMs: number) {
    super('bullmq', address, 'no host');
    this.message =
      `no corral worker has a heartbeat on queue '${queue}' at ${address} (waited ${Math.round(waitedMs)} ms). ` +
      `Start one on each machine: corral worker --redis redis://${address} --queue ${queue} <module>; ` +
      'check that hosts use the same queue name and prefix, or raise hostWait (Infinity waits for hosts forever)';
    this.queue = queue;
    this.waitedMs = waitedMs;
  }
}

/**
 * A remote job's host stopped answering (it died, was partitioned, its lock expired) more often than
 * the stall budget allows: it is not run again. At-least-once: it may have run, whole or in part.
 */
export class WorkerLostError extends CorralError {
  readonly task: string;
  readonly jobId: string;
  /** Times the job was found stalled (its host lost) before it was given up. */
  readonly stalls: number;
  constructor(task: string, jobId: string, stalls: number, message?: string) {
    super(
      'ERR_WORKER_LOST',
      message ??
        `task '${task}' (job ${jobId}) lost its worker host ${stalls} times (lock expired, host dead or ` +
          'partitioned) and is not run again; raise stallBudget to allow more re-runs',
    );
    this.task = task;
    this.jobId = jobId;
    this.stalls = stalls;
  }
}

/** A task's arguments or result, serialised, are larger than the backend's maxPayload. */
export class PayloadTooLargeError extends CorralError {
  readonly task: string;
  readonly direction: 'arguments' | 'result';
  readonly size: number;
  readonly limit: number;
  constructor(task: string, direction: 'arguments' | 'result', size: number, limit: number) {
    super(
      'ERR_PAYLOAD_TOO_LARGE',
      `the ${direction} of task '${task}' take${direction === 'result' ? 's' : ''} ${size} bytes serialised, over the limit of ${limit} bytes ` +
        '(maxPayload); pass a reference (a path, a key in a store) rather than the data, or raise maxPayload',
    );
    this.task = task;
    this.direction = direction;
    this.size = size;
    this.limit = limit;
  }
}

/** A worker host refused a job built for another version of the task module. Not retried. */
export class ModuleVersionError extends CorralError {
  readonly task: string;
  /** The version the job was built for, and the one the host runs. */
  readonly expected: string;
  readonly actual: string;
  override readonly host: string;
  constructor(task: string, expected: string, actual: string, host: string) {
    super(
      'ERR_MODULE_VERSION',
      `host ${host} runs version ${actual} of the task module, but task '${task}' was built for version ` +
        `${expected}; deploy the same module on every host (or give both sides the same moduleVersion)`,
    );
    this.task = task;
    this.expected = expected;
    this.actual = actual;
    this.host = host;
  }
}

/** An optional peer dependency a feature needs is not installed; the message names the package. */
export class DependencyMissingError extends CorralError {
  readonly dependency: string;
  constructor(dependency: string, feature: string, options?: { cause?: unknown }) {
    super(
      'ERR_DEPENDENCY_MISSING',
      `${feature} needs the package '${dependency}', which is not installed: npm install ${dependency}`,
      options,
    );
    this.dependency = dependency;
  }
}

/** A feature that this backend (or this version of corral) does not have yet. */
export class NotSupportedError extends CorralError {
  readonly feature: string;
  constructor(feature: string, why: string) {
    super('ERR_NOT_SUPPORTED', `${feature} is not supported: ${why}`);
    this.feature = feature;
  }
}
