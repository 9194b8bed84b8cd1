/**
 * Image-sized payloads (issue 16): a 3×3 box blur of a 4096×4096 8-bit image, several passes, on 2
 * thread workers, corral against piscina, the rows passed two ways:
 *  - by copy: each task gets its band of rows (plus a halo row above and below) as a fresh
 *    Uint8Array, which is cloned to the worker, and sends the blurred band back, cloned again;
 *  - by shared memory: source and destination images are SharedArrayBuffers every task sees; a
 *    task gets only its row range and writes in place.
 *
 *   npm run build && node bench/image.mjs          # 4096², 6 passes, 64 bands, 5 runs
 *   node bench/image.mjs --quick                   # 2048², 4 passes
 *
 * Every run is a fresh child process whose whole tree's RSS this parent samples from /proc every
 * 10 ms (and the child's own VmHWM at the end): the peak is what the run cost in memory. Pools are
 * started and ready before the clock starts. Medians of --runs runs, `uptime` load with each round.
 *
 * One untimed pass comes first (its time is reported apart, as "first pass"): in a fresh process the
 * first pass measures glibc's malloc more than the pool. Its mmap threshold starts at 128 KiB and
 * rises only when a larger mapped block is freed; piscina's process happened to free one while it
 * loaded, so its 270 KB band slices came from the heap, while in corral's the first pass's 64 slices
 * were each a fresh mmap, 64 page faults apiece (strace: 64 mmaps of 274,432 bytes against 2). With
 * GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432 both first passes ran alike.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { load, median } from './stats.mjs';

const TASKS = new URL('./contain-tasks.mjs', import.meta.url);
const SELF = fileURLToPath(import.meta.url);
const WORKERS = 2;
const MiB = 2 ** 20;

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    child: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const SIZE = flags.quick ? 2048 : 4096;
const PASSES = flags.quick ? 4 : 6;
const BANDS = 64;

async function open(kind) {
  if (kind === 'piscina') {
    const { Piscina } = await import('piscina');
    const pool = new Piscina({ filename: TASKS.href, minThreads: WORKERS, maxThreads: WORKERS });
    await Promise.all([pool.run({}, { name: 'hello' }), pool.run({}, { name: 'hello' })]);
    return { run: (arg) => pool.run(arg, { name: 'blurRows' }), close: () => pool.destroy() };
  }
  const { Pool } = await import('../dist/src/index.js');
  const pool = new Pool({ module: TASKS, workers: WORKERS, runtime: 'thread' });
  await Promise.all([pool.apply('hello', [{}]), pool.apply('hello', [{}])]);
  return { run: (arg) => pool.apply('blurRows', [arg]), close: () => pool.close() };
}

async function childRun(runner) {
  const [peer, how] = runner.split(':');
  const w = SIZE;
  const h = SIZE;
  const rows = h / BANDS;
  const pool = await open(peer);
  let src;
  let dst;
  if (how === 'shared') {
    src = new Uint8Array(new SharedArrayBuffer(w * h));
    dst = new Uint8Array(new SharedArrayBuffer(w * h));
  } else {
    src = new Uint8Array(w * h);
  }
  for (let i = 0; i < src.length; i++) src[i] = (i * 2654435761) >>> 24;
  const seed = [src, dst]; // the first pass only reads src: the timed passes start from it again
  let t = performance.now();
  let cold = 0;
  for (let pass = -1; pass < PASSES; pass++) {
    if (pass === 0) {
      // The untimed first pass: see the header. Its result is dropped, the timed passes start over.
      cold = performance.now() - t;
      [src, dst] = seed;
      t = performance.now();
    }
    const calls = [];
    if (how === 'shared') {
      for (let y0 = 0; y0 < h; y0 += rows) calls.push(pool.run({ src, dst, w, h, y0, y1: y0 + rows }));
      await Promise.all(calls);
      [src, dst] = [dst, src];
    } else {
      const out = new Uint8Array(w * h);
      for (let y0 = 0; y0 < h; y0 += rows) {
        const y1 = y0 + rows;
        const from = Math.max(0, y0 - 1);
        const to = Math.min(h, y1 + 1);
        const band = src.slice(from * w, to * w); // the rows this task needs, copied
        calls.push(
          pool.run({ src: band, w, h, y0, y1, srcY0: from }).then((rowsOut) => out.set(rowsOut, y0 * w)),
        );
      }
      await Promise.all(calls);
      src = out;
    }
  }
  const wall = performance.now() - t;
  let sum = 0;
  for (let i = 0; i < src.length; i += 4099) sum += src[i];
  await pool.close();
  process.stdout.write(`${JSON.stringify({ runner, wall, cold, sum, selfPeak: peakOf('self') })}\n`);
}

function peakOf(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function treeRss(pid) {
  let total = 0;
  try {
    total += Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * 4096;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(' ')) total += treeRss(Number(k));
    }
  } catch {
    // gone meanwhile
  }
  return total;
}

function runChild(runner) {
  return new Promise((resolve, reject) => {
    const args = [SELF, '--child', runner, ...(flags.quick ? ['--quick'] : [])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let peak = 0;
    const timer = setInterval(() => {
      peak = Math.max(peak, treeRss(child.pid));
    }, 10);
    let text = '';
    child.stdout.on('data', (d) => {
      text += d;
    });
    child.on('exit', (code) => {
      clearInterval(timer);
      if (code !== 0) return reject(new Error(`${runner} run exited with ${code}`));
      const out = JSON.parse(text.trim().split('\n').pop());
      out.peak = Math.max(peak, out.selfPeak);
      resolve(out);
    });
  });
}

async function main() {
  if (flags.help) {
    console.log(
      'usage: node bench/image.mjs [--quick] [--runs N] [--only corral:copy,piscina:copy,corral:shared,piscina:shared]',
    );
    return;
  }
  if (flags.child) return childRun(flags.child);
  const runs = Number(flags.runs ?? 5);
  const chosen = flags.only
    ? flags.only.split(',')
    : ['corral:copy', 'piscina:copy', 'corral:shared', 'piscina:shared'];
  console.log(
    `image: ${SIZE}² 8-bit box blur, ${PASSES} passes of ${BANDS} bands, ${WORKERS} thread workers; medians of ${runs} runs; node ${process.version}`,
  );
  const results = Object.fromEntries(chosen.map((r) => [r, []]));
  for (let run = 0; run < runs; run++) {
    const before = load();
    const line = [];
    for (const r of chosen) {
      const out = await runChild(r);
      results[r].push(out);
      line.push(`${r} ${(out.wall / 1000).toFixed(2)}s ${(out.peak / MiB).toFixed(0)}MiB`);
    }
    console.log(`  run ${run + 1}: ${line.join(', ')}  (load before ${before}, after ${load()})`);
  }
  const med = (r, k) => median(results[r].map((o) => o[k]));
  console.table(
    chosen.map((r) => ({
      runner: r,
      'wall s': (med(r, 'wall') / 1000).toFixed(2),
      'first pass s': (med(r, 'cold') / 1000).toFixed(2),
      'peak tree RSS MiB': (med(r, 'peak') / MiB).toFixed(0),
      checksum: results[r][0].sum,
    })),
  );
  for (const how of ['copy', 'shared']) {
    const c = `corral:${how}`;
    const p = `piscina:${how}`;
    if (!results[c] || !results[p]) continue;
    console.log(
      `${how}: corral / piscina wall ${(med(c, 'wall') / med(p, 'wall')).toFixed(2)}, peak RSS ${(med(c, 'peak') / med(p, 'peak')).toFixed(2)} (target ≤ 1); first pass ${(med(c, 'cold') / med(p, 'cold')).toFixed(2)}`,
    );
  }
  console.log(`load now: ${load()}`);
}

await main();
