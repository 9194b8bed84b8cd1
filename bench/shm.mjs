/**
 * Shared memory vs copying: tasks that each read (sum) a Float64Array, handed to 2 workers by
 * structured clone, by transfer (threads only) or as a SharedMemory handle, under worker
 * threads and under forked processes ('advanced' serialization, the only way processes can
 * send binary without JSON).
 *
 *   npm run build && node bench/shm.mjs            # 8 MiB x 32 tasks and 128 MiB x 8 tasks
 *   node bench/shm.mjs --runs 3 --only 8           # fewer runs, one payload size
 *
 * Plain worker_threads / child_process.fork with one task in flight per worker (what a pool
 * does), until the pool passes SharedMemory arguments itself. Workers start once per runtime
 * and stay up for all methods, so startup is not timed; each configuration gets one warm-up
 * run (which also lets a worker map a segment once: it keeps the mapping for later tasks,
 * as the pool's workers will) and then --runs timed runs; medians are printed.
 *
 * Columns: MiB/s = payload bytes the workers read per second of wall time; x clone = that
 * throughput over the structured-clone row's; overhead/task = median round trip of a task
 * as the parent sees it minus the worker's own summing time: what it costs to get the data
 * there and the answer back (serialize, send, deserialize, page faults on fresh copies; or
 * handle + cached mapping). That is the part that should be flat in the payload size for
 * shared memory. (Measured on the parent's clock only: process clocks' origins differ.)
 */

import { fork } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { fromHandle, SharedMemory, toHandle } from '../dist/src/shm/index.js';

const MiB = 2 ** 20;

// ---------------------------------------------------------------------------------------------
// Worker side (a thread or a forked process running this same file)

function sum(a) {
  let total = 0;
  for (let i = 0; i < a.length; i++) total += a[i];
  return total;
}

function serve(send, on) {
  on((msg) => {
    let view;
    if (msg.method === 'clone') view = msg.data;
    else if (msg.method === 'transfer') view = new Float64Array(msg.data);
    else view = fromHandle(msg.data).view(Float64Array, 0, msg.length);
    const ready = performance.now();
    const total = sum(view);
    const reply = { id: msg.id, sum: total, compute: performance.now() - ready };
    // A transferred buffer goes back to the parent for the next task: zero copies either way.
    if (msg.method === 'transfer') send({ ...reply, data: msg.data }, [msg.data]);
    else send(reply);
  });
}

if (!isMainThread) {
  serve(
    (m, transfer) => parentPort.postMessage(m, transfer),
    (fn) => parentPort.on('message', fn),
  );
} else if (process.argv[2] === '--worker') {
  serve(
    (m) => process.send(m),
    (fn) => process.on('message', fn),
  );
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// Parent side

function startThread() {
  const worker = new Worker(new URL(import.meta.url));
  return {
    send: (m, transfer) => worker.postMessage(m, transfer),
    on: (fn) => worker.on('message', fn),
    stop: () => worker.terminate(),
  };
}

function startProcess() {
  const child = fork(new URL(import.meta.url), ['--worker'], { serialization: 'advanced' });
  return {
    send: (m) => child.send(m),
    on: (fn) => child.on('message', fn),
    stop: async () => {
      child.kill();
      await once(child, 'exit');
    },
  };
}

/**
 * One run: `tasks` tasks over the workers, one in flight per worker. `payload(worker)` gives
 * the message body for a task on that worker and its transfer list.
 */
function runOnce(workers, tasks, method, payload, expected) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let done = 0;
    const overheads = [];
    const t0 = performance.now();
    const dispatch = (w, index) => {
      const id = sent++;
      w.sentAt = performance.now();
      const { data, length, transfer } = payload(index);
      w.send({ id, method, data, length }, transfer);
    };
    workers.forEach((w, index) => {
      w.handler = (msg) => {
        if (msg.sum !== expected)
          reject(new Error(`${method}: worker summed ${msg.sum}, expected ${expected}`));
        if (msg.data) w.buffer = msg.data; // a transferred buffer coming home
        overheads.push(performance.now() - w.sentAt - msg.compute);
        if (++done === tasks) resolve({ ms: performance.now() - t0, overhead: median(overheads) });
        else if (sent < tasks) dispatch(w, index);
      };
    });
    for (let i = 0; i < workers.length && sent < tasks; i++) dispatch(workers[i], i);
  });
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function measure(workers, { tasks, runs }, method, payload, expected) {
  await runOnce(workers, Math.max(workers.length, 4), method, payload, expected); // warm-up
  const results = [];
  for (let r = 0; r < runs; r++) results.push(await runOnce(workers, tasks, method, payload, expected));
  return { ms: median(results.map((x) => x.ms)), overhead: median(results.map((x) => x.overhead)) };
}

async function main() {
  const { values: flags } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      workers: { type: 'string', default: '2' },
      only: { type: 'string' },
    },
  });
  const runs = Number(flags.runs);
  const nWorkers = Number(flags.workers);
  const sizes = [
    { mib: 8, tasks: 32 },
    { mib: 128, tasks: 8 },
  ].filter((s) => !flags.only || flags.only.split(',').map(Number).includes(s.mib));

  console.log(
    `# shared memory vs copy: ${nWorkers} workers, medians of ${runs} runs after 1 warm-up; ` +
      `Node ${process.versions.node}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()})`,
  );
  const rows = [];
  for (const runtime of ['thread', 'process']) {
    const workers = Array.from({ length: nWorkers }, runtime === 'thread' ? startThread : startProcess);
    for (const w of workers) w.on((msg) => w.handler?.(msg));
    try {
      for (const { mib, tasks } of sizes) {
        const length = (mib * MiB) / 8;
        const data = new Float64Array(length);
        for (let i = 0; i < length; i++) data[i] = i % 10;
        const expected = sum(data);
        const config = { tasks, runs };
        const add = (method, result) => {
          const mibPerS = (tasks * mib) / (result.ms / 1000);
          rows.push({ runtime, mib, tasks, method, ms: result.ms, mibPerS, overhead: result.overhead });
          console.log(
            `#   ${runtime} ${mib} MiB ${method}: ${result.ms.toFixed(1)} ms, ${mibPerS.toFixed(0)} MiB/s, ` +
              `overhead ${fmtMs(result.overhead)}/task`,
          );
        };

        add('clone', await measure(workers, config, 'clone', () => ({ data }), expected));

        if (runtime === 'thread') {
          // One buffer per worker, transferred there and back: the zero-copy best case.
          for (const w of workers) w.buffer = data.buffer.slice(0);
          add(
            'transfer',
            await measure(
              workers,
              config,
              'transfer',
              (index) => ({ data: workers[index].buffer, transfer: [workers[index].buffer] }),
              expected,
            ),
          );
        }

        const shm = SharedMemory.from(data);
        try {
          const handle = toHandle(shm, { runtime });
          add(
            'shared memory',
            await measure(workers, config, 'shm', () => ({ data: handle, length }), expected),
          );
        } finally {
          shm.close();
        }
      }
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  }
  printTable(rows);
}

function fmtMs(ms) {
  return ms >= 1 ? `${ms.toFixed(1)} ms` : `${(ms * 1000).toFixed(0)} µs`;
}

function printTable(rows) {
  const header = ['runtime', 'payload', 'tasks', 'method', 'median ms', 'MiB/s', 'x clone', 'overhead/task'];
  const lines = rows.map((r) => {
    const clone = rows.find((c) => c.runtime === r.runtime && c.mib === r.mib && c.method === 'clone');
    return [
      r.runtime === 'thread' ? 'threads' : 'processes',
      `${r.mib} MiB`,
      String(r.tasks),
      r.method,
      r.ms.toFixed(1),
      r.mibPerS.toFixed(0),
      `${(r.mibPerS / clone.mibPerS).toFixed(1)}x`,
      fmtMs(r.overhead),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const row = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  console.log('');
  console.log(row(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const l of lines) console.log(row(l));
  console.log('');
  console.log(
    'processes cannot transfer (no transfer list across processes), so that row exists for threads only.',
  );
}
