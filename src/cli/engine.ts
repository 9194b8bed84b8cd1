/**
 * The heart of `corral run` (and of `corral demo`): maps one task over a stream of items with a pool.
 *
 * Default (`chunksize: 'auto'`): every item is its own `pool.apply` call, so a failure, a timeout or a
 * worker crash costs only that item; the pool still batches calls that arrive together (up to 64 per
 * message). At most `window` items are between "read" and "written": reading waits while the window is
 * full, which bounds memory whatever the input size, and a reorder buffer (inside the window) writes the
 * results in input order.
 *
 * `chunksize: N`: items travel through `pool.imap` / `imapUnordered` in chunks of N, the library's fastest
 * path for tiny tasks; as with `map` in the library (and Python), the first failed item ends the run.
 */
import type { Duration, Pool } from '../index.js';

/** A pool over any module whose tasks take one input: what the command runs. */
export type CliPool = Pool<Record<string, (input: unknown) => unknown>>;

import type { LineWriter } from './io.js';

export type SourceItem =
  | { index: number; value: unknown }
  | { index: number; raw: string; error: { code: string; message: string } };

export interface FailureRecord {
  index: number | null;
  input: unknown;
  error: { code: string; message: string; name?: string; cause?: Record<string, unknown> } & Record<
    string,
    unknown
  >;
}

export interface EngineSpec {
  pool: CliPool;
  task: string;
  source: AsyncIterable<SourceItem[]>;
  /** Where results go (null: nowhere, e.g. the demo counts them only). */
  out: LineWriter | null;
  ordered: boolean;
  withIndex: boolean;
  failFast: boolean;
  /** Most items between read and written. */
  window: number;
  /** Tasks the pool runs at once (workers x concurrency): the window never goes below twice this. */
  slots: number;
  chunksize: number | 'auto';
  call: { timeout?: Duration; retries?: number };
  onFailure(record: FailureRecord): void;
  /** Called for every success, in output order. */
  onResult?(index: number, input: unknown, result: unknown): void;
  /** Called after every item settles (cheap bookkeeping only). */
  onSettle?(): void;
  /** A failure that makes the whole run pointless (unknown export, module does not load): stop at once. */
  isFatal?(error: unknown): boolean;
}

export type StopReason = 'interrupted' | 'terminated' | 'fail-fast' | 'output-closed' | 'fatal';

export interface EngineState {
  read: number;
  done: number;
  succeeded: number;
  failed: number;
  /** Items that never got a result because the run was terminated (second Ctrl-C). */
  cancelled: number;
  /** Finished items not written because an earlier item never finished (terminated runs, in order mode). */
  discarded: number;
  inflight: number;
  inputDone: boolean;
  stopReason: StopReason | null;
  failuresByCode: Map<string, number>;
  fatal: unknown;
  /**
   * Where a stopped run can start again (0-based input line): the first line not taken, or in order mode
   * after a terminate, the first item that did not finish. null when the input was read to its end.
   */
  resumeIndex: number | null;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface Slot {
  seq: number;
  index: number;
  input: unknown;
  outcome: Outcome | undefined;
}

export class Engine {
  readonly state: EngineState = {
    read: 0,
    done: 0,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    discarded: 0,
    inflight: 0,
    inputDone: false,
    stopReason: null,
    failuresByCode: new Map(),
    fatal: undefined,
    resumeIndex: null,
  };
  /** Input line of the last item taken. */
  private lastIndex = -1;
  private readonly slots = new Map<number, Slot>();
  private nextSeq = 0;
  private emitSeq = 0;
  private wake: (() => void) | undefined;
  private stopWake: (() => void) | undefined;
  private readonly stopped: Promise<void>;
  private terminated = false;

  constructor(private readonly spec: EngineSpec) {
    this.stopped = new Promise((resolve) => {
      this.stopWake = resolve;
    });
  }

  /** Stop taking input; what was read still runs and is written. */
  stop(reason: StopReason): void {
    if (this.state.stopReason === null || reason === 'terminated' || reason === 'fatal') {
      if (this.state.stopReason !== 'terminated') this.state.stopReason = reason;
    }
    this.stopWake?.();
    this.poke();
  }

  /** Stop now: running items are abandoned (they reject with PoolClosedError and count as cancelled). */
  async terminate(): Promise<void> {
    this.terminated = true;
    this.stop('terminated');
    await this.spec.pool.terminate();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async run(): Promise<EngineState> {
    if (this.spec.chunksize === 'auto') await this.runItems();
    else await this.runChunked(this.spec.chunksize);
    return this.state;
  }

  // ------------------------------------------------------------------------------------------
  // Items mode: one apply per item, windowed, reordered.

  private pending(): number {
    return this.spec.ordered ? this.state.read - this.emitCount : this.state.inflight;
  }
  private emitCount = 0;

  /**
   * The window in use: about half a second of work at the measured rate, between twice the pool's slots
   * and --window. Tiny tasks get the whole window (the pool batches them); slow ones keep only a few queued
   * per worker, so a Ctrl-C does not have to wait for minutes of queued work.
   */
  private window(): number {
    const floor = Math.min(this.spec.window, Math.max(1, this.spec.slots * 2));
    if (this.rate <= 0) return floor;
    return Math.max(floor, Math.min(this.spec.window, Math.ceil(this.rate * 0.5)));
  }
  private rate = 0;
  private rateTimer: NodeJS.Timeout | undefined;

  private measureRate(): void {
    let last = { t: performance.now(), done: 0 };
    this.rateTimer = setInterval(() => {
      const now = { t: performance.now(), done: this.state.done };
      const r = ((now.done - last.done) / (now.t - last.t)) * 1000;
      this.rate = this.rate === 0 ? r : this.rate * 0.5 + r * 0.5;
      last = now;
    }, 200);
    this.rateTimer.unref();
  }

  private async runItems(): Promise<void> {
    this.measureRate();
    try {
      await this.readItems();
    } finally {
      clearInterval(this.rateTimer);
    }
  }

  /** The input's batches of lines until it ends (inputDone) or the run stops, whichever is first. */
  private async *batches(): AsyncGenerator<SourceItem[]> {
    const it = this.spec.source[Symbol.asyncIterator]();
    for (;;) {
      if (this.state.stopReason) return;
      const next = it.next();
      next.catch(() => {});
      const r = await Promise.race([next, this.stopped.then(() => undefined)]);
      if (r === undefined || this.state.stopReason) return;
      if (r.done) {
        this.state.inputDone = true;
        return;
      }
      yield r.value;
    }
  }

  private async readItems(): Promise<void> {
    outer: for await (const batch of this.batches()) {
      for (const item of batch) {
        if (this.state.stopReason) break outer;
        this.take(item);
        const window = this.window();
        if (this.pending() >= window) {
          const low = Math.max(1, Math.floor(window / 2));
          await this.until(() => this.pending() <= low);
        }
        if (this.spec.out?.needsDrain) await Promise.race([this.spec.out.drain(), this.stopped]);
      }
    }
    await this.until(() => this.state.inflight === 0);
    this.flushOrdered(true);
    if (!this.state.inputDone && this.state.resumeIndex === null) this.state.resumeIndex = this.lastIndex + 1;
  }

  private until(condition: () => boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const check = (): void => {
        if (condition() || (this.terminated && this.state.inflight === 0)) resolve();
        else this.wake = check;
      };
      check();
    });
  }

  private take(item: SourceItem): void {
    const seq = this.nextSeq++;
    this.state.read++;
    this.lastIndex = item.index;
    const slot: Slot = {
      seq,
      index: item.index,
      input: 'error' in item ? item.raw : item.value,
      outcome: undefined,
    };
    if (this.spec.ordered) this.slots.set(seq, slot);
    if ('error' in item) {
      // A line that is not JSON is a failed item like any other; it never reaches a worker.
      this.settle(slot, { ok: false, error: item.error }, false);
      return;
    }
    this.state.inflight++;
    this.spec.pool.apply(this.spec.task, [item.value], this.spec.call).then(
      (value) => this.settle(slot, { ok: true, value }, true),
      (error) => this.settle(slot, { ok: false, error }, true),
    );
  }

  private settle(slot: Slot, outcome: Outcome, inflight: boolean): void {
    if (inflight) this.state.inflight--;
    this.spec.onSettle?.();
    slot.outcome = outcome;
    if (!outcome.ok && this.terminated && isPoolClosed(outcome.error)) {
      this.state.cancelled++;
      if (!this.spec.ordered) this.emitCount++;
    } else {
      if (!outcome.ok && this.spec.isFatal?.(outcome.error)) {
        this.state.fatal ??= outcome.error;
        this.stop('fatal');
      }
      if (this.spec.ordered) this.flushOrdered(false);
      else this.emit(slot);
    }
    this.poke();
  }

  /** Writes every slot from the head of the order that has its outcome. */
  private flushOrdered(final: boolean): void {
    if (!this.spec.ordered) return;
    while (!this.cut) {
      const slot = this.slots.get(this.emitSeq);
      if (!slot || slot.outcome === undefined) break;
      if (this.terminated && !slot.outcome.ok && isPoolClosed(slot.outcome.error)) {
        // The first item that will never finish: nothing after it can be written in order. The output
        // stays a prefix of the input, and the run can resume from this line.
        this.cut = true;
        this.state.resumeIndex = slot.index;
        break;
      }
      this.slots.delete(this.emitSeq++);
      this.emit(slot);
    }
    if (final && this.slots.size > 0) {
      for (const slot of this.slots.values()) {
        if (slot.outcome && !(slot.outcome.ok === false && isPoolClosed(slot.outcome.error)))
          this.state.discarded++;
      }
      this.slots.clear();
    }
  }
  private cut = false;

  private emit(slot: Slot): void {
    this.emitCount++;
    const outcome = slot.outcome!;
    if (outcome.ok) this.succeed(slot.index, slot.input, outcome.value);
    else this.failItem(slot.index, slot.input, outcome.error);
  }

  private succeed(index: number | null, input: unknown, value: unknown): void {
    let line: string;
    try {
      line = toJsonLine(this.spec.withIndex ? { index, result: value } : value);
    } catch (error) {
      this.failItem(index, input, {
        code: 'ERR_OUTPUT_JSON',
        message: `the result cannot be written as JSON: ${(error as Error).message}`,
      });
      return;
    }
    this.state.done++;
    this.state.succeeded++;
    this.spec.out?.push(line);
    if (index !== null) this.spec.onResult?.(index, input, value);
  }

  private failItem(index: number | null, input: unknown, error: unknown): void {
    this.state.done++;
    this.state.failed++;
    const record = failureRecord(index, input, error);
    const code = record.error.code;
    this.state.failuresByCode.set(code, (this.state.failuresByCode.get(code) ?? 0) + 1);
    this.spec.onFailure(record);
    if (this.spec.failFast && this.state.stopReason !== 'fatal') this.stop('fail-fast');
  }

  // ------------------------------------------------------------------------------------------
  // Chunked mode: pool.imap / imapUnordered; the first failure ends the run.

  private async runChunked(chunksize: number): Promise<void> {
    const { ordered } = this.spec;
    const inputs: { index: number; input: unknown }[] = [];
    let head = 0;
    let inputError: { index: number; raw: string; error: { code: string; message: string } } | undefined;
    const self = this;
    async function* values(): AsyncGenerator<unknown> {
      for await (const batch of self.batches()) {
        for (const item of batch) {
          if (self.state.stopReason) return;
          if ('error' in item) {
            // Like a failed item in map(): the run ends here, after what was read before it.
            inputError = item;
            self.stop('fail-fast');
            return;
          }
          self.state.read++;
          self.state.inflight++;
          self.lastIndex = item.index;
          if (ordered) inputs.push({ index: item.index, input: item.value });
          yield item.value;
        }
      }
    }
    let taskFailed = false;
    const iterator = ordered
      ? this.spec.pool.imap(this.spec.task, values(), { ...this.spec.call, chunksize })
      : this.spec.pool.imapUnordered(this.spec.task, values(), { ...this.spec.call, chunksize });
    try {
      for await (const value of iterator) {
        this.state.inflight--;
        this.spec.onSettle?.();
        const at = ordered ? inputs[head++] : undefined;
        if (ordered && head > 1024) {
          inputs.splice(0, head);
          head = 0;
        }
        this.succeed(at?.index ?? null, at?.input, value);
        if (this.spec.out?.needsDrain) await Promise.race([this.spec.out.drain(), this.stopped]);
      }
    } catch (error) {
      if (this.terminated && isPoolClosed(error)) {
        this.state.cancelled += this.state.inflight;
      } else {
        taskFailed = true;
        // In order mode the failed item is the next one not yet yielded; imapUnordered does not say which.
        const at = ordered ? inputs[head] : undefined;
        this.state.inflight--;
        this.failItem(at?.index ?? null, at?.input ?? null, error);
        // What was read after it was dropped: a new run can start right after the failed item.
        if (at) this.state.resumeIndex = at.index + 1;
        if (this.spec.isFatal?.(error)) {
          this.state.fatal ??= error;
          this.stop('fatal');
        } else this.stop('fail-fast');
        // The rest of what was read was dropped by the pool.
        this.state.cancelled += this.state.inflight;
      }
      this.state.inflight = 0;
    }
    // A bad line read ahead of a task that failed first is not this run's to report: the items between
    // them were dropped, and a resume starts right after the failed item. (Reported, it was journaled
    // as done, and a resume skipped the dropped lines.)
    if (inputError && !taskFailed) {
      this.failItem(inputError.index, inputError.raw, inputError.error);
      this.state.resumeIndex ??= inputError.index + 1;
    }
    if (!this.state.inputDone && this.state.resumeIndex === null && (ordered || this.state.cancelled === 0)) {
      this.state.resumeIndex = this.lastIndex + 1;
    }
  }
}

function isPoolClosed(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'ERR_POOL_CLOSED';
}

/** JSON for one output line. Typed arrays, Map, Set and BigInt get a JSON form instead of `{}` or a throw. */
export function toJsonLine(value: unknown): string {
  const text = JSON.stringify(value, replacer);
  return text === undefined ? 'null' : text;
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return value;
  if (ArrayBuffer.isView(value) && !(value instanceof DataView))
    return Array.from(value as unknown as ArrayLike<number>);
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  return value;
}

/** The `--errors` line of a failed item: `{ index, input, error: { code, message } }`, plus the cause's code. */
export function failureRecord(index: number | null, input: unknown, error: unknown): FailureRecord {
  const e = (error ?? {}) as Record<string, unknown>;
  const code = typeof e.code === 'string' ? e.code : 'ERR_UNKNOWN';
  const message = typeof e.message === 'string' ? e.message : String(error);
  const out: FailureRecord['error'] = { code, message };
  if (error instanceof Error) out.name = error.name;
  for (const key of [
    'kind',
    'limit',
    'observed',
    'signal',
    'exitCode',
    'timeout',
    'workerId',
    'pid',
    'stderrTail',
    'crashes',
    'output',
  ] as const) {
    const v = e[key];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Array.isArray(v))) out[key] = v;
  }
  const cause = e.cause as Record<string, unknown> | undefined;
  if (cause && typeof cause === 'object') {
    const c: Record<string, unknown> = {};
    if (typeof cause.name === 'string') c.name = cause.name;
    if (typeof cause.message === 'string') c.message = cause.message;
    if (cause.code !== undefined) c.code = cause.code;
    out.cause = c;
  }
  return { index, input, error: out };
}
