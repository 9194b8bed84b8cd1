// OpenTelemetry (issue 14): each unit is a span `corral <task>` under the caller's span, and the trace
// context travels into the worker, so spans a task makes join the caller's trace. The SDK's in-memory
// exporter holds the spans on both sides.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { RUNTIMES, rejection, test, usePools } from './helpers.mjs';

const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(
  new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
);
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const tracer = trace.getTracer('test');

const makePool = usePools(new URL('./fixtures/traced-tasks.mjs', import.meta.url));

/** Runs `fn` inside a root span 'caller'; returns its result and the span's context. */
async function inCaller(fn) {
  return tracer.startActiveSpan('caller', async (span) => {
    try {
      return { value: await fn(), caller: span.spanContext() };
    } finally {
      span.end();
    }
  });
}

const finished = (name) => exporter.getFinishedSpans().filter((s) => s.name === name);

for (const runtime of RUNTIMES) {
  describe(`OpenTelemetry spans (${runtime} workers)`, () => {
    test("a task's span is a child of the caller's, and spans made in the task are children of it", async () => {
      exporter.reset();
      const { pool } = makePool({ runtime, workers: 1 });
      const { value, caller } = await inCaller(() => pool.apply('work', [21]));
      assert.equal(value, 42);
      const [unit] = finished('corral work');
      assert.ok(unit, 'the pool made a span for the call');
      assert.equal(unit.spanContext().traceId, caller.traceId);
      assert.equal(unit.parentSpanContext?.spanId, caller.spanId);
      const a = unit.attributes;
      assert.equal(a['corral.task'], 'work');
      assert.equal(a['corral.outcome'], 'ok');
      assert.equal(typeof a['corral.worker.id'], 'number');
      assert.ok(a['corral.queue_wait_ms'] >= 0);
      assert.ok(a['corral.run_ms'] >= 4, `run ${a['corral.run_ms']} ms`);
      assert.ok(a['corral.worker.peak_rss_bytes'] > 10 * 2 ** 20);
      if (runtime === 'process') assert.equal(typeof a['corral.worker.pid'], 'number');
      assert.ok(unit.events.some((e) => e.name === 'corral.run'));

      const [inWorker] = await pool.broadcast('spans', []);
      const spans = inWorker.value;
      const inside = spans.find((s) => s.name === 'inside');
      const afterAwait = spans.find((s) => s.name === 'after-await');
      for (const s of [inside, afterAwait]) {
        assert.ok(s, `the worker made ${JSON.stringify(spans)}`);
        assert.equal(s.traceId, caller.traceId, `${s.name} is in the caller's trace`);
        assert.equal(s.parentSpanId, unit.spanContext().spanId, `${s.name} is a child of the task's span`);
      }
    });

    test('map chunks are spans of the caller too; a failed call records its error', async () => {
      exporter.reset();
      const { pool } = makePool({ runtime, workers: 2 });
      const { caller } = await inCaller(async () => {
        // Chunks after the first are queued from result callbacks, not from the caller's code.
        await pool.map(
          'square',
          Array.from({ length: 200 }, (_, i) => i),
          { chunksize: 10 },
        );
        await rejection(pool.apply('fail', []));
      });
      const chunks = finished('corral square');
      assert.equal(chunks.length, 20);
      for (const s of chunks) {
        assert.equal(s.spanContext().traceId, caller.traceId);
        assert.equal(s.parentSpanContext?.spanId, caller.spanId);
        assert.equal(s.attributes['corral.items'], 10);
      }
      const [failed] = finished('corral fail');
      assert.equal(failed.status.code, 2); // SpanStatusCode.ERROR
      assert.equal(failed.attributes['corral.outcome'], 'error');
      assert.ok(failed.events.some((e) => e.name === 'exception'));
    });
  });
}

describe('without @opentelemetry/api', () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-no-otel-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a pool runs as before and loads nothing of OpenTelemetry', { timeout: 30_000 }, () => {
    // A copy of the built library where no node_modules can be found from: the API is absent.
    const root = fileURLToPath(new URL('..', import.meta.url));
    cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(root, 'package.json'), join(dir, 'package.json'));
    writeFileSync(join(dir, 'tasks.mjs'), 'export const square = (x) => x * x;\n');
    writeFileSync(
      join(dir, 'main.mjs'),
      `import { createRequire } from 'node:module';
import { Pool } from './dist/src/index.js';
const pool = new Pool({ module: new URL('./tasks.mjs', import.meta.url), workers: 1 });
const squares = await pool.map('square', [1, 2, 3]);
const one = await pool.apply('square', [4]);
await pool.close();
let resolvable = true;
try { createRequire(import.meta.url).resolve('@opentelemetry/api'); } catch { resolvable = false; }
console.log(JSON.stringify({ squares, one, resolvable, loaded: Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('opentelemetry')) }));
`,
    );
    const out = JSON.parse(
      execFileSync(process.execPath, [join(dir, 'main.mjs')], { cwd: dir, encoding: 'utf8' }),
    );
    assert.deepEqual(out, { squares: [1, 4, 9], one: 16, resolvable: false, loaded: [] });
  });
});

describe('with @opentelemetry/api installed', () => {
  const index = new URL('../dist/src/index.js', import.meta.url).href;
  const tasks = new URL('./fixtures/tasks.mjs', import.meta.url).href;
  /** Runs ES module code in a fresh Node from this repository, where the API resolves; stdout parsed. */
  const fresh = (body) =>
    JSON.parse(
      execFileSync(process.execPath, ['--input-type=module', '-e', body], {
        cwd: fileURLToPath(new URL('..', import.meta.url)),
        encoding: 'utf8',
      }),
    );

  test('nothing registered with it: a pool runs without loading it', { timeout: 30_000 }, () => {
    const out = fresh(`
      import { createRequire } from 'node:module';
      const { Pool } = await import(${JSON.stringify(index)});
      const require = createRequire(${JSON.stringify(index)});
      const pool = new Pool({ module: ${JSON.stringify(tasks)}, workers: 1 });
      const one = await pool.apply('square', [4]);
      await pool.close();
      console.log(JSON.stringify({ one, resolvable: !!require.resolve('@opentelemetry/api'),
        loaded: Object.keys(require.cache).filter((k) => k.includes('opentelemetry')) }));`);
    assert.deepEqual(out, { one: 16, resolvable: true, loaded: [] });
  });

  test('an SDK registered after the pool was made: the units queued after it are spans', {
    timeout: 30_000,
  }, () => {
    const out = fresh(`
      const { Pool } = await import(${JSON.stringify(index)});
      const pool = new Pool({ module: ${JSON.stringify(tasks)}, workers: 1 });
      await pool.apply('square', [2]);
      const { trace } = await import('@opentelemetry/api');
      const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
      const exporter = new InMemorySpanExporter();
      trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
      await pool.apply('square', [3]);
      await pool.close();
      console.log(JSON.stringify(exporter.getFinishedSpans().map((s) => [s.name, s.attributes['corral.outcome']])));`);
    assert.deepEqual(out, [['corral square', 'ok']]);
  });
});
