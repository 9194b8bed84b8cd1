/**
 * OpenTelemetry, when the application has `@opentelemetry/api` (an optional peer dependency): each unit
 * (an apply call, a map chunk, a stream) becomes a span `corral <task>`, child of the caller's active
 * span, from the moment it is queued to its settlement, with its queue wait, run time, worker, peak
 * RSS and outcome; its trace context travels to the worker in the unit frame (worker/tracing.ts), so
 * spans a task makes join the caller's trace.
 *
 * The API is loaded only once the application has registered something with it (its SDK does as it
 * starts, and leaves its mark on globalThis): many programs have the package installed by a dependency
 * and never trace, and loading it cost such a program ~25 ms and ~3 MiB at its first pool for spans
 * that would go nowhere. Until then the dispatcher looks for that mark at each unit it queues (one
 * property check), so an SDK registered after a pool was made is still seen. The shapes below are the
 * few parts of the API used here, declared structurally so that corral's types never name a package its
 * users may not have.
 */
import { createRequire } from 'node:module';
import { readPeakRss } from '../limits/memory.js';
import type { TraceCarrier } from '../runtime/protocol.js';

interface SpanContext {
  traceId: string;
  spanId: string;
  traceFlags: number;
  traceState?: { serialize(): string } | undefined;
}

interface Span {
  spanContext(): SpanContext;
  setAttribute(key: string, value: string | number | boolean): unknown;
  addEvent(name: string, attributes?: Record<string, string | number>): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  recordException(exception: Error): unknown;
  isRecording(): boolean;
  end(): void;
}

interface Tracer {
  startSpan(
    name: string,
    options: { kind: number; attributes: Record<string, string | number> },
    context: unknown,
  ): Span;
}

interface Api {
  trace: {
    getTracer(name: string, version?: string): Tracer;
    /** The global ProxyTracerProvider: its delegate is the SDK's provider once one is registered. */
    getTracerProvider(): { getDelegate?(): object | undefined };
  };
  context: { active(): unknown };
  isSpanContextValid(context: SpanContext): boolean;
  SpanKind: { INTERNAL: number };
  SpanStatusCode: { ERROR: number };
}

/** Where API 1.x keeps what was registered with it (its GLOBAL_OPENTELEMETRY_API_KEY). */
const REGISTERED = Symbol.for('opentelemetry.js.api.1');

/** undefined: not loaded yet; null: registered with, but this program cannot load it. */
let api: Api | null | undefined;

/** The application's OpenTelemetry API, or null while nothing has been registered with one. */
export function otelApi(): Api | null {
  if (api !== undefined) return api;
  if (!(REGISTERED in globalThis)) return null;
  try {
    api = createRequire(import.meta.url)('@opentelemetry/api') as Api;
  } catch {
    api = null;
  }
  return api;
}

/**
 * The caller's context, for work that is queued later on its behalf (map chunks). Through otelApi():
 * a map may be the first call after an SDK registered, before any unit has loaded the API.
 */
export function activeContext(): unknown {
  return otelApi()?.context.active();
}

const PEAK_READ_MS = 100;

const MODES = ['apply', 'map', 'starmap', 'map', 'stream'];

/** Outcome of a failed unit, by its error's code. */
const OUTCOMES: Record<string, string> = {
  ERR_TASK: 'error',
  ERR_MEMORY_LIMIT: 'breach',
  ERR_CPU_TIME_LIMIT: 'breach',
  ERR_WORKER_CRASHED: 'crash',
  ERR_POISON_TASK: 'crash',
  ERR_TASK_TIMEOUT: 'timeout',
  ERR_ABORTED: 'aborted',
  ERR_POOL_CLOSED: 'cancelled',
};

/** One unit's span, while it is queued and running. */
export class TaskSpan {
  sentAt = 0;
  constructor(
    readonly span: Span,
    readonly carrier: TraceCarrier,
  ) {}
}

/** What a unit looks like to the tracer (pool/unit.ts). */
interface TracedUnit {
  readonly name: string;
  readonly mode: number;
  readonly size: number;
  queuedAt: number;
  attempts: number;
  traceContext: unknown;
  usage: { peakRss: number } | undefined;
}

/** What a worker looks like to the tracer (pool/worker.ts). */
interface TracedWorker {
  readonly id: number;
  readonly peakRss: number;
  readonly rt: { readonly pid: number | undefined; readonly threadId: number | undefined };
}

export class UnitTracer {
  private readonly tracer: Tracer;
  /** Whether a tracer provider is registered, as last looked at (see live()). */
  private on = true;
  private checkedAt = -Infinity;

  constructor(private readonly otel: Api) {
    this.tracer = otel.trace.getTracer('corral');
  }

  /**
   * With the API but no SDK registered, every span would be a no-op costing ~0.2 µs to make: look at the
   * global provider once a second instead (an SDK registered later is seen within that second).
   */
  private live(now: number): boolean {
    if (now - this.checkedAt >= 1000) {
      this.checkedAt = now;
      const delegate = this.otel.trace.getTracerProvider().getDelegate?.();
      this.on = delegate?.constructor?.name !== 'NoopTracerProvider';
    }
    return this.on;
  }

  /**
   * A worker's peak RSS (VmHWM) when the pool does not sample it: read from /proc at most every
   * PEAK_READ_MS per worker, since a read costs tens of µs. The peak only grows, so a value that old
   * is a lower bound of the true one.
   */
  private readonly peaks = new WeakMap<TracedWorker, { at: number; value: number | undefined }>();
  private peakRss(w: TracedWorker): number | undefined {
    const now = performance.now();
    const seen = this.peaks.get(w);
    if (seen && now - seen.at < PEAK_READ_MS) return seen.value;
    const value = readPeakRss(w.rt.pid ?? 'self');
    this.peaks.set(w, { at: now, value });
    return value;
  }

  /** A span for a unit being queued; null when nothing records it and no trace goes on through it. */
  start(u: TracedUnit): TaskSpan | null {
    if (!this.live(u.queuedAt || performance.now())) return null;
    const span = this.tracer.startSpan(
      `corral ${u.name}`,
      {
        kind: this.otel.SpanKind.INTERNAL,
        attributes: {
          'corral.task': u.name,
          'corral.mode': MODES[u.mode] ?? 'apply',
          'corral.items': u.size,
        },
      },
      u.traceContext ?? this.otel.context.active(),
    );
    const sc = span.spanContext();
    if (!this.otel.isSpanContextValid(sc)) return null;
    const parent = `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
    const state = sc.traceState?.serialize();
    return new TaskSpan(span, state ? [parent, state] : [parent]);
  }

  /** The unit went to worker `w` after waiting in the queue. */
  sent(t: TaskSpan, u: TracedUnit, w: TracedWorker, now: number): void {
    t.sentAt = now;
    if (!t.span.isRecording()) return;
    t.span.addEvent('corral.run', { 'corral.worker.id': w.id, 'corral.attempt': u.attempts + 1 });
    t.span.setAttribute('corral.queue_wait_ms', now - u.queuedAt);
    t.span.setAttribute('corral.worker.id', w.id);
    if (w.rt.pid !== undefined) t.span.setAttribute('corral.worker.pid', w.rt.pid);
    if (w.rt.threadId !== undefined) t.span.setAttribute('corral.worker.thread_id', w.rt.threadId);
  }

  /** The unit settled: `error` undefined for a success, `runMs` as its worker measured it when known. */
  end(
    t: TaskSpan,
    u: TracedUnit,
    w: TracedWorker | undefined,
    error: Error | undefined,
    runMs?: number,
  ): void {
    const { span } = t;
    if (span.isRecording()) {
      const code = (error as { code?: string } | undefined)?.code ?? '';
      span.setAttribute('corral.outcome', error ? (OUTCOMES[code] ?? 'error') : 'ok');
      span.setAttribute('corral.attempts', Math.max(1, u.attempts));
      if (t.sentAt > 0) span.setAttribute('corral.run_ms', runMs ?? performance.now() - t.sentAt);
      const peak = u.usage?.peakRss || w?.peakRss || (w ? this.peakRss(w) : undefined);
      if (peak) span.setAttribute('corral.worker.peak_rss_bytes', peak);
      if (error) {
        span.recordException(error);
        span.setStatus({ code: this.otel.SpanStatusCode.ERROR, message: error.message });
      }
    }
    span.end();
  }
}
