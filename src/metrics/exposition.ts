/**
 * pool.metricsText(): PoolMetrics as OpenMetrics 1.0 text (the default) or the Prometheus text format
 * 0.0.4, named by Prometheus conventions (`corral_` prefix, base units in the name, `_total` counters).
 *
 * Written here rather than with prom-client: that would be a runtime dependency, and its metric types
 * are fed one observation at a time into buckets of its own, while the pool's histograms are already
 * counted (metrics/histogram.ts) and need only be printed. The two formats differ in three places:
 * OpenMetrics names a counter's family without `_total`, has `# UNIT` lines and ends with `# EOF`.
 */

import type { PoolMetrics } from '../pool/metrics.js';
import type { HistogramSnapshot } from './histogram.js';

export type MetricsFormat = 'openmetrics' | 'prometheus';

/** The Content-Type of each format, for an HTTP response. */
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string | number>;
type Sample = [labels: Labels, value: number];

/** Label values escaped as both formats want: backslash, double quote and line feed. */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabel(String(labels[k]))}"`).join(',')}}`;
}

function number(value: number): string {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  if (Number.isNaN(value)) return 'NaN';
  return String(value);
}

class Writer {
  private readonly lines: string[] = [];
  constructor(private readonly format: MetricsFormat) {}

  private head(family: string, type: string, help: string, unit: string | undefined): void {
    this.lines.push(`# TYPE ${family} ${type}`);
    this.lines.push(`# HELP ${family} ${help}`);
    if (unit && this.format === 'openmetrics') this.lines.push(`# UNIT ${family} ${unit}`);
  }

  private samples(name: string, samples: Sample[]): void {
    for (const [labels, value] of samples) this.lines.push(`${name}${labelText(labels)} ${number(value)}`);
  }

  gauge(name: string, help: string, samples: Sample[], unit?: string): void {
    if (samples.length === 0) return;
    this.head(name, 'gauge', help, unit);
    this.samples(name, samples);
  }

  /** `name` without `_total`: OpenMetrics names the family so, and the samples get the suffix. */
  counter(name: string, help: string, samples: Sample[]): void {
    if (samples.length === 0) return;
    this.head(this.format === 'openmetrics' ? name : `${name}_total`, 'counter', help, undefined);
    this.samples(`${name}_total`, samples);
  }

  histogram(name: string, help: string, series: [Labels, HistogramSnapshot][], unit: string): void {
    if (series.length === 0) return;
    this.head(name, 'histogram', help, unit);
    for (const [labels, h] of series) {
      for (const [le, count] of h.buckets) {
        this.lines.push(`${name}_bucket${labelText({ ...labels, le: number(le) })} ${count}`);
      }
      this.lines.push(`${name}_count${labelText(labels)} ${h.count}`);
      this.lines.push(`${name}_sum${labelText(labels)} ${number(h.sum)}`);
    }
  }

  text(): string {
    if (this.format === 'openmetrics') this.lines.push('# EOF');
    return `${this.lines.join('\n')}\n`;
  }
}

const defined = (samples: [Labels, number | undefined][]): Sample[] =>
  samples.filter((s): s is Sample => s[1] !== undefined);

export function formatMetrics(m: PoolMetrics, format: MetricsFormat = 'openmetrics'): string {
  const out = new Writer(format);
  const tasks = Object.entries(m.tasks);
  out.histogram(
    'corral_task_wait_seconds',
    'Time a unit (an apply call or a map chunk) waited in the queue before a worker took it.',
    tasks.map(([task, t]) => [{ task }, t.wait]),
    'seconds',
  );
  out.histogram(
    'corral_task_run_seconds',
    'Time a unit ran in its worker.',
    tasks.map(([task, t]) => [{ task }, t.run]),
    'seconds',
  );
  out.counter(
    'corral_task_units',
    'Units answered, by task and outcome (failed: the task threw, or some items of a chunk did).',
    tasks.flatMap(([task, t]): Sample[] => [
      [{ task, outcome: 'completed' }, t.completed],
      [{ task, outcome: 'failed' }, t.failed],
    ]),
  );
  out.counter(
    'corral_task_items',
    'Map items and apply calls answered, by task.',
    tasks.map(([task, t]) => [{ task }, t.items]),
  );
  out.counter('corral_retries', 'Units run again after a failure.', [[{}, m.retries]]);
  out.counter('corral_timeouts', 'Units whose timeout passed.', [[{}, m.timeouts]]);
  out.counter('corral_aborts', "Units whose caller's AbortSignal fired.", [[{}, m.aborts]]);
  out.counter('corral_worker_crashes', 'Workers that died on their own (crashes and breaches).', [
    [{}, m.crashes],
  ]);
  out.counter(
    'corral_results_salvaged',
    "Results taken off a worker's claim board (it died, or a long task held them).",
    [[{}, m.salvaged]],
  );
  out.counter('corral_breaches', 'Tasks failed by a memory or CPU-time limit.', [[{}, m.breaches]]);
  out.counter('corral_worker_recycles', 'Workers retired and replaced (recycle thresholds, leaks).', [
    [{}, m.recycles],
  ]);
  out.counter('corral_leaked_fds', 'Descriptors tasks left open (detectLeaks).', [[{}, m.leakedFds]]);
  out.gauge('corral_queue_depth', 'Units waiting in the queue.', [[{}, m.queued]]);
  out.gauge('corral_running_units', 'Units held by workers that a caller waits for.', [[{}, m.running]]);
  out.gauge('corral_workers', 'Workers alive or starting.', [[{}, m.workers.length]]);
  out.gauge('corral_uptime_seconds', 'Seconds since the pool was made.', [[{}, m.uptimeSeconds]], 'seconds');
  out.gauge('corral_memory_bytes', 'Memory of the pool (its workers and this process) as last measured.', [
    [{}, m.memory.total],
  ]);
  out.gauge(
    'corral_memory_budget_bytes',
    'The memoryBudget the pool keeps under.',
    defined([[{}, m.memory.budget]]),
  );
  const ws = m.workers;
  const per = (f: (w: PoolMetrics['workers'][number]) => number | undefined) =>
    defined(ws.map((w) => [{ worker: w.id }, f(w)]));
  out.gauge(
    'corral_worker_utilization_ratio',
    'Share of its life a worker spent running tasks (0..1).',
    per((w) => w.utilization),
  );
  out.counter(
    'corral_worker_tasks',
    'Units a worker answered.',
    per((w) => w.tasksDone),
  );
  out.gauge(
    'corral_worker_rss_bytes',
    'Resident memory of a worker (of the whole process for thread workers).',
    per((w) => w.rss),
  );
  out.gauge(
    'corral_worker_peak_rss_bytes',
    'Highest resident memory seen of a worker.',
    per((w) => w.peakRss),
  );
  out.gauge(
    'corral_worker_heap_used_bytes',
    'V8 heap in use, as the worker last reported it.',
    per((w) => w.heapUsed),
  );
  out.gauge(
    'corral_worker_heap_limit_bytes',
    'The V8 heap limit a worker runs under.',
    per((w) => w.heapLimit),
  );
  out.gauge(
    'corral_worker_rss_limit_bytes',
    'The resident memory limit a worker runs under.',
    per((w) => w.rssLimit),
  );
  return out.text();
}
