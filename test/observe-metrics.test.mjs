// pool.metricsText() and pool.serveMetrics() (issue 14): the text is read back by real parsers, the
// OpenMetrics reference parser (Python's prometheus_client, Debian's python3-prometheus-client) and
// parse-prometheus-text-format for the 0.0.4 text, and the endpoint is scraped while a map runs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import { OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE } from '../dist/src/index.js';
import { get, rejection, test, usePools } from './helpers.mjs';

const misbehave = new URL('./fixtures/misbehave.mjs', import.meta.url);
const makePool = usePools(misbehave);

const PYTHON = '/usr/bin/python3';
const PARSER = `
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({'name': f.name, 'type': f.type, 'unit': f.unit, 'help': f.documentation,
                'samples': [[s.name, s.labels, repr(s.value)] for s in f.samples]})
print(json.dumps(out))
`;
function hasReferenceParser() {
  if (!existsSync(PYTHON)) return false;
  try {
    execFileSync(PYTHON, ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const reference = hasReferenceParser();
const NO_PARSER =
  'the OpenMetrics reference parser is missing: apt-get install python3-prometheus-client (.ci/run does)';

/** Families as the OpenMetrics reference parser reads them; throws what it throws on invalid text. */
function parseOpenMetrics(text) {
  const families = JSON.parse(execFileSync(PYTHON, ['-c', PARSER], { input: text, encoding: 'utf8' }));
  return new Map(
    families.map((f) => [
      f.name,
      { ...f, samples: f.samples.map(([n, l, v]) => [n, l, Number(v.replace('inf', 'Infinity'))]) },
    ]),
  );
}

const sample = (family, name, labels = {}) =>
  family?.samples.find(
    ([n, l]) => n === name && Object.entries(labels).every(([k, v]) => l[k] === String(v)),
  )?.[2];

describe('pool.metricsText()', () => {
  test('OpenMetrics: the reference parser reads it, and it says what metrics() says', {
    skip: !reference && NO_PARSER,
  }, async () => {
    const { pool } = makePool({ runtime: 'process', workers: 2, limits: { heap: '256MiB' } });
    await pool.map(
      'square',
      Array.from({ length: 2000 }, (_, i) => i),
    );
    await Promise.all(Array.from({ length: 10 }, () => pool.apply('spinFor', [5, 1])));
    await rejection(pool.apply('throwCustom', ['boom']));
    await rejection(pool.apply('exit', [3]));
    const text = pool.metricsText();
    const m = pool.metrics();
    assert.ok(text.endsWith('# EOF\n'));
    const families = parseOpenMetrics(text);

    const run = families.get('corral_task_run_seconds');
    assert.equal(run.type, 'histogram');
    assert.equal(run.unit, 'seconds');
    assert.equal(sample(run, 'corral_task_run_seconds_count', { task: 'spinFor' }), 10);
    assert.equal(sample(run, 'corral_task_run_seconds_bucket', { task: 'spinFor', le: '+Inf' }), 10);
    assert.ok(
      sample(run, 'corral_task_run_seconds_bucket', { task: 'spinFor', le: '0.001' }) === 0,
      'no 5 ms spin under 1 ms',
    );
    assert.ok(
      Math.abs(sample(run, 'corral_task_run_seconds_sum', { task: 'spinFor' }) - m.tasks.spinFor.run.sum) <
        0.1,
    );
    const wait = families.get('corral_task_wait_seconds');
    assert.equal(
      sample(wait, 'corral_task_wait_seconds_count', { task: 'square' }),
      m.tasks.square.wait.count,
    );

    const units = families.get('corral_task_units');
    assert.equal(units.type, 'counter');
    assert.equal(sample(units, 'corral_task_units_total', { task: 'throwCustom', outcome: 'failed' }), 1);
    assert.equal(
      sample(families.get('corral_task_items'), 'corral_task_items_total', { task: 'square' }),
      2000,
    );
    assert.equal(sample(families.get('corral_worker_crashes'), 'corral_worker_crashes_total'), 1);
    assert.equal(sample(families.get('corral_queue_depth'), 'corral_queue_depth'), 0);

    const rss = families.get('corral_worker_rss_bytes');
    assert.equal(rss.type, 'gauge');
    assert.equal(rss.samples.length, m.workers.length);
    for (const w of m.workers) {
      assert.ok(
        sample(rss, 'corral_worker_rss_bytes', { worker: w.id }) > 10 * 2 ** 20,
        `worker ${w.id} rss`,
      );
      assert.equal(
        sample(families.get('corral_worker_heap_limit_bytes'), 'corral_worker_heap_limit_bytes', {
          worker: w.id,
        }),
        256 * 2 ** 20,
      );
    }
  });

  test('the reference parser refuses what is not OpenMetrics (so the test above can fail)', {
    skip: !reference && NO_PARSER,
  }, () => {
    assert.throws(() => parseOpenMetrics('# TYPE a counter\na 1\n'), /Command failed/);
  });

  test("{ format: 'prometheus' }: the 0.0.4 text, as parse-prometheus-text-format reads it", async () => {
    const { pool } = makePool({ runtime: 'process', workers: 1 });
    await pool.map(
      'square',
      Array.from({ length: 300 }, (_, i) => i),
    );
    const text = pool.metricsText({ format: 'prometheus' });
    assert.doesNotMatch(text, /# EOF|# UNIT/);
    const families = new Map(parsePrometheus(text).map((f) => [f.name, f]));
    const run = families.get('corral_task_run_seconds');
    assert.equal(run.type, 'HISTOGRAM');
    // This parser folds a histogram's series into one (one task here) and keeps only its buckets.
    const [square] = run.metrics;
    assert.equal(square.buckets['+Inf'], String(pool.metrics().tasks.square.run.count));
    assert.equal(Object.keys(square.buckets).length, 20);
    const items = families.get('corral_task_items_total');
    assert.equal(items.type, 'COUNTER');
    assert.equal(items.metrics[0].value, '300');
    const rss = families.get('corral_worker_rss_bytes');
    assert.equal(rss.type, 'GAUGE');
    assert.deepEqual(
      rss.metrics.map((s) => s.labels.worker),
      pool.metrics().workers.map((w) => String(w.id)),
    );
  });

  test('an unknown format is refused with a ConfigError', () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    assert.throws(() => pool.metricsText({ format: 'json' }), {
      code: 'ERR_INVALID_OPTION',
      option: 'format',
    });
  });
});

describe('pool.serveMetrics()', () => {
  test('scraped while a map runs: counts grow between scrapes; OpenMetrics when asked for it', {
    skip: !reference && NO_PARSER,
  }, async () => {
    const { pool } = makePool({ runtime: 'process', workers: 2 });
    const server = await pool.serveMetrics({ port: 0 });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const running = pool.map(
      'spinFor',
      Array.from({ length: 300 }, () => 4),
      { chunksize: 2 },
    );
    const seen = [];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 150));
      const res = await get(`${server.url}metrics`, {
        accept: 'application/openmetrics-text; version=1.0.0',
      });
      assert.equal(res.status, 200);
      assert.equal(res.type, OPENMETRICS_CONTENT_TYPE);
      const families = parseOpenMetrics(res.body);
      seen.push(
        sample(families.get('corral_task_items'), 'corral_task_items_total', { task: 'spinFor' }) ?? 0,
      );
    }
    await running;
    assert.ok(seen[2] > seen[0], `items grew between scrapes: ${seen}`);
    assert.ok(seen[2] < 300, `the scrapes came during the run: ${seen}`);
    const plain = await get(`${server.url}metrics`);
    assert.equal(plain.type, PROMETHEUS_CONTENT_TYPE);
    assert.match(plain.body, /^corral_task_items_total\{task="spinFor"\} 300$/m);
    assert.equal((await get(`${server.url}nothing`)).status, 404);
    await server.close();
    await assert.rejects(get(`${server.url}metrics`), { code: 'ECONNREFUSED' });
  });

  test('loopback only: a request naming another host (DNS rebinding) is refused; a busy port is a ConfigError', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    const server = await pool.serveMetrics();
    const foreign = await get(`${server.url}metrics`, { host: 'attacker.example:80' });
    assert.equal(foreign.status, 403);
    const local = await get(`http://localhost:${server.port}/metrics`);
    assert.equal(local.status, 200);
    await assert.rejects(pool.serveMetrics({ port: server.port }), {
      code: 'ERR_INVALID_OPTION',
      message: /in use/,
    });
    await assert.rejects(pool.serveMetrics({ port: 70000 }), { code: 'ERR_INVALID_OPTION', option: 'port' });
    await server.close();
  });
});
