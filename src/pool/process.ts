/**
 * Process: one dedicated long-running worker running one function, like multiprocessing.Process.
 * It is a worker of the same kind as the pool's (same entry, runtimes, limits and typed errors),
 * started for a single unit and stopped when that unit settles.
 *
 *   const p = new Process({ module, fn: 'producer', args: [queue] });
 *   p.start();
 *   await p.join();        // the function's result, or its typed error
 *   p.exitCode;            // 0 returned, 1 threw, else how the worker died (-N for signal N)
 */

import { EventEmitter } from 'node:events';
import { constants } from 'node:os';
import { emitSafely } from '../callback.js';
import { channelFrame, channelLinkGone } from '../channel/hub.js';
import { type Deadline, deadlines } from '../deadline.js';
import {
  ConfigError,
  CpuTimeLimitError,
  MemoryLimitError,
  ModuleLoadError,
  SerializationError,
  TaskError,
  UnknownTaskError,
  WorkerCrashedError,
  type WorkerExit,
  WorkerStartError,
} from '../errors.js';
import { type Breach, classifyDeath, classifyThrown } from '../limits/classify.js';
import { heapMbFor, type LimitsOptions, rlimitsFor } from '../limits/limits.js';
import { readRss } from '../limits/memory.js';
import { isPlainObject } from '../options.js';
import { codecError, codecErrorFromWire, decodeResult, encodeArgs } from '../runtime/codec.js';
import {
  type FromWorker,
  fromWireError,
  type ResultFrame,
  ResultStatus,
  type UnitFrame,
  UnitMode,
  type WireError,
} from '../runtime/protocol.js';
import { startWorker } from '../runtime/spawn.js';
import type { RuntimeExit, RuntimeWorker } from '../runtime/types.js';
import {
  type AnyModule,
  type PoolConfig,
  resolvePoolOptions,
  type TaskArgs,
  type TaskNames,
  type TaskResult,
} from './config.js';

const KNOWN = ['module', 'fn', 'args', 'runtime', 'limits', 'execArgv', 'env', 'name'];

export interface ProcessOptions<M = AnyModule, K extends TaskNames<M> = TaskNames<M>> {
  /** The module exporting `fn`: path or file URL, as for Pool. */
  module: string | URL;
  /** The export to run. */
  fn: K;
  /** Its arguments; Queues, Pipe ends and SharedMemory travel as handles. */
  args?: TaskArgs<M, K>;
  /** 'thread', 'process' or 'auto' (default: threads unless a limit needs a process). */
  runtime?: 'thread' | 'process' | 'auto';
  /** The same limits as a pool worker's (heap, rss, addressSpace, data, openFiles, cpuTime, startTimeout). */
  limits?: LimitsOptions;
  execArgv?: string[];
  env?: NodeJS.ProcessEnv;
  /** For messages and errors. Default `Process-<n>`. */
  name?: string;
}

export interface ProcessEvents {
  start: [info: { pid: number | undefined; threadId: number | undefined }];
  exit: [info: { exitCode: number; signal: string | null; error: Error | undefined }];
  /** The worker went over a limit; join() rejects with this error. */
  breach: [error: MemoryLimitError | CpuTimeLimitError];
}

type State = 'new' | 'starting' | 'running' | 'exited';
let nextId = 1;

export class Process<
  M = AnyModule,
  K extends TaskNames<M> = TaskNames<M>,
> extends EventEmitter<ProcessEvents> {
  readonly name: string;
  readonly id = nextId++;
  private readonly config: PoolConfig;
  private readonly fn: string;
  private readonly args: unknown[];
  private state: State = 'new';
  private rt: RuntimeWorker | undefined = undefined;
  private outcome: { ok: true; value: unknown } | { ok: false; error: Error; code: number } | undefined;
  private killed = false;
  private observed: { kind: 'rss'; limit: number; value: number } | undefined = undefined;
  private timer: Deadline | undefined = undefined;
  private sampler: NodeJS.Timeout | undefined = undefined;
  private readonly done: Promise<TaskResult<M, K>>;
  private settle!: { resolve(value: TaskResult<M, K>): void; reject(error: Error): void };
  private code: number | null = null;
  private sig: string | null = null;
  private failure: Error | undefined = undefined;

  constructor(options: ProcessOptions<M, K>) {
    super();
    if (!isPlainObject(options)) {
      throw new ConfigError(
        'options',
        "expected { module, fn, args?, runtime?, limits? }, e.g. { module, fn: 'producer', args: [queue] }",
      );
    }
    for (const key of Object.keys(options)) {
      if (!KNOWN.includes(key))
        throw new ConfigError(key, `unknown Process option; known: ${KNOWN.join(', ')}`);
    }
    const o = options as ProcessOptions<AnyModule>;
    if (typeof o.fn !== 'string' || o.fn === '')
      throw new ConfigError('fn', 'expected the name of a function export of the module');
    if (o.args !== undefined && !Array.isArray(o.args))
      throw new ConfigError('args', 'expected an array of arguments');
    if (o.name !== undefined && typeof o.name !== 'string')
      throw new ConfigError('name', 'expected a string');
    this.config = resolvePoolOptions({
      module: o.module,
      runtime: o.runtime,
      limits: o.limits,
      execArgv: o.execArgv,
      env: o.env,
      workers: 1,
    });
    this.fn = o.fn;
    this.args = (o.args as unknown[] | undefined) ?? [];
    this.name = o.name ?? `Process-${this.id}`;
    this.done = new Promise<TaskResult<M, K>>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.done.catch(() => {}); // join() is optional: a failure not joined is in exitCode and 'exit'
  }

  get runtime(): 'thread' | 'process' {
    return this.config.runtime;
  }

  get pid(): number | undefined {
    return this.rt?.pid;
  }

  get threadId(): number | undefined {
    return this.rt?.threadId;
  }

  /** Started and not yet exited. */
  get alive(): boolean {
    return this.state === 'starting' || this.state === 'running';
  }

  /**
   * null until it exited; then 0 (the function returned), 1 (it threw, or the module failed to
   * load), the worker's own exit code if it died, or -N if a signal N killed it (as in Python).
   */
  get exitCode(): number | null {
    return this.code;
  }

  /** The signal that ended it, if one did (process runtime). */
  get signal(): string | null {
    return this.sig;
  }

  /** Why it failed, once it has (what join() rejected with). */
  get error(): Error | undefined {
    return this.failure;
  }

  /** Starts the worker. Arguments are encoded now: a queue from another thread is a ConfigError here. */
  start(): this {
    if (this.state !== 'new')
      throw new ConfigError('start', `${this.name} was already started; a Process runs once`);
    let payload: unknown;
    let flags: number;
    try {
      ({ payload, flags } = encodeArgs(this.args, this.config.runtime));
    } catch (error) {
      throw codecError(this.fn, 'arguments', error);
    }
    const unit: UnitFrame = flags
      ? [1, this.fn, UnitMode.Apply, payload, flags]
      : [1, this.fn, UnitMode.Apply, payload];
    const { config } = this;
    const limits = config.limits;
    this.state = 'starting';
    try {
      this.rt = startWorker(
        { runtime: config.runtime, execArgv: config.execArgv, env: config.env, heapMb: heapMbFor(limits) },
        {
          module: config.module,
          workerId: this.id,
          concurrency: 1,
          initializer: undefined,
          teardown: undefined,
          captureOutput: false,
          initArgs: [],
          limits: {
            rlimits: rlimitsFor(limits),
            cpuTime: limits.cpuTime,
            heapAbove: undefined,
            detectLeaks: false,
          },
          board: undefined,
          boardSegment: undefined,
          parentPid: process.pid,
          rssGuard: config.runtime === 'process' ? limits.rss : undefined,
        },
        { message: (m) => this.onMessage(m, unit), exit: (e) => this.onExit(e) },
      );
    } catch (error) {
      this.state = 'exited';
      const why = error instanceof Error ? error.message : String(error);
      this.finish(
        new WorkerStartError(`${this.name} could not be created: ${why}`, { cause: error }),
        1,
        null,
      );
      return this;
    }
    this.timer = deadlines.after(limits.startTimeout, () => {
      if (this.state !== 'starting') return;
      this.outcome = {
        ok: false,
        code: 1,
        error: new WorkerStartError(
          `${this.name} was not ready within ${limits.startTimeout} ms and was stopped`,
        ),
      };
      this.rt?.kill();
    });
    if (limits.rss !== undefined && this.rt.pid !== undefined) {
      const pid = this.rt.pid;
      const rss = limits.rss;
      this.sampler = setInterval(() => {
        const value = readRss(pid);
        if (value !== undefined && value > rss && this.state !== 'exited' && !this.observed) {
          this.observed = { kind: 'rss', limit: rss, value };
          this.rt?.kill();
        }
      }, limits.sampleInterval);
      this.sampler.unref();
    }
    return this;
  }

  /** Resolves with the function's result once the worker has exited; rejects with its typed error. */
  join(): Promise<TaskResult<M, K>> {
    if (this.state === 'new')
      return Promise.reject(new ConfigError('join', `${this.name} was never started`));
    return this.done;
  }

  /** Stops it now (SIGKILL for a process, terminate() for a thread). join() then rejects with WorkerCrashedError. */
  kill(): void {
    if (!this.alive || !this.rt) return;
    this.killed = true;
    this.rt.kill();
  }

  /** `await using p = new Process(...)`: waits for it to end (kill() first to stop it); never throws. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.state === 'new') return;
    await this.done.catch(() => {});
  }

  private onMessage(m: FromWorker, unit: UnitFrame): void {
    try {
      this.handle(m, unit);
    } catch (error) {
      // A message that claims to be corral's and cannot be read: the worker is stopped, and join() says why.
      this.outcome ??= {
        ok: false,
        code: 1,
        error: new WorkerCrashedError(
          this.fn,
          {
            workerId: this.id,
            pid: this.rt?.pid,
            threadId: this.rt?.threadId,
            exitCode: null,
            signal: 'SIGKILL',
          },
          `${this.name} sent a message corral could not read ('${m.t}': ${error instanceof Error ? error.message : String(error)}) and was stopped`,
        ),
      };
      this.rt?.kill();
    }
  }

  private handle(m: FromWorker, unit: UnitFrame): void {
    const rt = this.rt!;
    if (m.t === 'chan') {
      channelFrame(rt, m);
      return;
    }
    if (m.t === 'ready') {
      if (this.state !== 'starting') return;
      deadlines.cancel(this.timer);
      this.state = 'running';
      emitSafely(this, 'start', { pid: rt.pid, threadId: rt.threadId });
      try {
        rt.send({ t: 'run', units: [unit] });
      } catch (error) {
        this.outcome = { ok: false, code: 1, error: new SerializationError(this.fn, 'arguments', error) };
        rt.kill();
      }
    } else if (m.t === 'done') {
      const frame = m.results[0];
      if (frame && !this.outcome) this.outcome = this.result(frame);
      try {
        rt.send({ t: 'stop' });
      } catch {
        rt.kill();
      }
    } else if (m.t === 'fatal') {
      const cause = fromWireError(m.error);
      const error =
        m.phase === 'load'
          ? new ModuleLoadError(this.config.module, cause)
          : new WorkerStartError(`${this.name} could not apply its limits: ${cause.message}`, { cause });
      this.outcome = { ok: false, code: 1, error };
      rt.kill();
    }
  }

  private result(frame: ResultFrame): NonNullable<Process['outcome']> {
    const [, status, value, , report] = frame;
    switch (status) {
      case ResultStatus.Ok:
      case ResultStatus.OkNumbers:
        if (!report?.shm) return { ok: true, value };
        // Mapped now, while the worker (which may own the segment) is still alive.
        try {
          return { ok: true, value: decodeResult(value) };
        } catch (error) {
          return { ok: false, code: 1, error: codecError(this.fn, 'result', error) };
        }
      case ResultStatus.CodecFailed:
        return { ok: false, code: 1, error: codecErrorFromWire(this.fn, value as WireError) };
      case ResultStatus.Threw: {
        const cause = fromWireError(value as WireError);
        const breach = classifyThrown(cause, this.config.limits);
        return {
          ok: false,
          code: 1,
          error: breach ? this.breachError(breach, cause) : new TaskError(this.fn, cause),
        };
      }
      case ResultStatus.UnknownTask:
        return { ok: false, code: 1, error: new UnknownTaskError(this.fn, value as string[]) };
      default:
        return {
          ok: false,
          code: 1,
          error: new SerializationError(this.fn, 'result', fromWireError(value as WireError)),
        };
    }
  }

  /** `detail`: the dead worker's stderr tail, when it died of the breach. */
  private breachError(
    breach: Breach,
    cause?: unknown,
    detail?: string,
  ): MemoryLimitError | CpuTimeLimitError {
    const who = { workerId: this.id, pid: this.rt?.pid, signal: this.sig, detail };
    const error =
      breach.type === 'cpu'
        ? new CpuTimeLimitError(this.fn, breach.limit, who)
        : new MemoryLimitError(this.fn, breach.kind, breach.limit, breach.observed, who, { cause });
    emitSafely(this, 'breach', error);
    return error;
  }

  private onExit(exit: RuntimeExit): void {
    const rt = this.rt!;
    this.state = 'exited';
    deadlines.cancel(this.timer);
    if (this.sampler) clearInterval(this.sampler);
    this.sig = exit.signal;
    const info: WorkerExit = {
      workerId: this.id,
      pid: rt.pid,
      threadId: rt.threadId,
      exitCode: exit.exitCode,
      signal: exit.signal,
      detail: exit.detail,
    };
    channelLinkGone(rt, info);
    const died =
      exit.signal !== null
        ? -((constants.signals as Record<string, number>)[exit.signal] ?? 0)
        : (exit.exitCode ?? 1);
    const outcome = this.outcome;
    if (outcome?.ok) {
      this.finish(undefined, 0, outcome.value);
      return;
    }
    if (outcome) {
      this.finish(outcome.error, outcome.code, undefined);
      return;
    }
    const breach = classifyDeath({ ...exit, observed: this.observed }, this.config.limits);
    let error: Error;
    if (breach) error = this.breachError(breach, undefined, exit.detail);
    else if (this.killed) {
      error = new WorkerCrashedError(
        this.fn,
        info,
        `${this.name} was stopped by kill() while running '${this.fn}'`,
      );
    } else error = new WorkerCrashedError(this.fn, info);
    this.finish(error, died === 0 ? 1 : died, undefined);
  }

  private finish(error: Error | undefined, code: number, value: unknown): void {
    this.state = 'exited';
    this.code = code;
    this.failure = error;
    if (error) this.settle.reject(error);
    else this.settle.resolve(value as TaskResult<M, K>);
    emitSafely(this, 'exit', { exitCode: code, signal: this.sig, error });
  }
}
