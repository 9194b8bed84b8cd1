/**
 * The worker's side of OpenTelemetry: a unit that carries its span's trace context (runtime/protocol.ts,
 * `trace`) runs its task inside that context, so that spans the task makes (with the task module's own
 * tracer provider) are children of the pool's `corral <task>` span, in the caller's trace. The API is
 * loaded on the first such unit; where the worker cannot load it, tasks run as they would without.
 */
import { createRequire } from 'node:module';
import type { TraceCarrier } from '../runtime/protocol.js';

interface Api {
  ROOT_CONTEXT: unknown;
  context: { with<T>(context: unknown, fn: () => T): T };
  trace: {
    setSpanContext(
      context: unknown,
      spanContext: {
        traceId: string;
        spanId: string;
        traceFlags: number;
        isRemote: boolean;
        traceState?: unknown;
      },
    ): unknown;
  };
  createTraceState?(raw: string): unknown;
}

let api: Api | null | undefined;

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Runs `fn` with the carried span as the active context (or just runs it, without the API). */
export function inTraceContext<T>(carrier: TraceCarrier, fn: () => T): T {
  if (api === undefined) {
    try {
      api = createRequire(import.meta.url)('@opentelemetry/api') as Api;
    } catch {
      api = null;
    }
  }
  const m = api && TRACEPARENT.exec(carrier[0]);
  if (!api || !m) return fn();
  const traceState = carrier[1] !== undefined ? api.createTraceState?.(carrier[1]) : undefined;
  const context = api.trace.setSpanContext(api.ROOT_CONTEXT, {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: Number.parseInt(m[3]!, 16),
    isRemote: true,
    ...(traceState ? { traceState } : {}),
  });
  return api.context.with(context, fn);
}
