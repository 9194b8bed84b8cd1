/**
 * What containment costs (issue 16): a realistic mix of items, a few of which misbehave, run inline,
 * on piscina with no limit (greedy items simply succeed), on corral's process workers with no limit,
 * and on corral's process workers with `limits: { rss: '256MiB' }` (every greedy item is stopped).
 *
 *   npm run build && node bench/contain.mjs            # 2,000 items, 3 runs (~6 minutes here)
 *   node bench/contain.mjs --quick                     # 400 items, 3 runs
 *   node bench/contain.mjs --items 1000 --runs 5 --only corralRss,piscina
 *
 * Items: ~17 ms of CPU work each (calibrated here, warm); 2 % greedy (allocate and touch 320 MiB of
 * Buffers in 10 MiB steps), 1 % throw, 2 % leak a descriptor; shuffled with a fixed seed. Each item
 * is its own call, all submitted at once, awaited with Promise.allSettled. Pools are started and
 * ready before the clock starts.
 *
 * Every run is a fresh child process (so nothing one runner leaves behind, heap or page cache of
 * its own, weighs on the next), and this parent samples the peak RSS of the child's whole process
 * tree from /proc every 10 ms. A run reports: wall time, items ok / failed, peak tree RSS, breaches,
 * and (corral with the rss limit) the breach cost: for each breach, from the moment the greedy item
 * saw its process's RSS pass the limit to the moment a worker took work again in its place: the same
 * process when its rss guard stopped the call in place, else its replacement's first item.
 * Each round also measures a bare process-worker start: a fresh one-worker corral process pool, from
 * `new Pool` to its first item starting. Medians of --runs runs; `uptime` load with each round.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mulberry32 } from './rng.mjs';
import { load, median } from './stats.mjs';

const TASKS = new URL('./contain-tasks.mjs', import.meta.url);
const SELF = fileURLToPath(import.meta.url);
const WORKERS = 2;
const RSS_LIMIT = '256MiB';
const RSS_LIMIT_BYTES = 256 * 2 ** 20;
const ITEM_MS = 17;
const MiB = 2 ** 20;

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string' },
    items: { type: 'string' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    child: { type: 'string' },
    n: { type: 'string' },
    seed: { type: 'string', default: '16' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

// ── one run, in a child process ──────────────────────────────────────────────────────────────

function mix(count, n, seed) {
  const rand = mulberry32(seed);
  const items = [];
  for (let i = 0; i < count; i++) {
    const r = rand();
    const kind = r < 0.02 ? 'greedy' : r < 0.03 ? 'throw' : r < 0.05 ? 'leak' : 'good';
    items.push({ kind, n });
  }
  return items;
}

async function childRun(runner, count, n, seed) {
  const items = mix(count, n, seed);
  const out = { runner, items: count };
  if (runner === 'inline') {
    const { item } = await import(TASKS.href);
    const t = performance.now();
    let ok = 0;
    let failed = 0;
    for (const arg of items) {
      try {
        item(arg);
        ok++;
      } catch {
        failed++;
      }
    }
    out.wall = performance.now() - t;
    Object.assign(out, { ok, failed });
  } else if (runner === 'piscina') {
    const { Piscina } = await import('piscina');
    const pool = new Piscina({ filename: TASKS.href, minThreads: WORKERS, maxThreads: WORKERS });
    await Promise.all([pool.run({}, { name: 'hello' }), pool.run({}, { name: 'hello' })]);
    const t = performance.now();
    const settled = await Promise.allSettled(items.map((arg) => pool.run(arg, { name: 'item' })));
    out.wall = performance.now() - t;
    out.ok = settled.filter((s) => s.status === 'fulfilled').length;
    out.failed = settled.length - out.ok;
    await pool.destroy();
  } else if (runner === 'start') {
    const { Pool } = await import('../dist/src/index.js');
    const t0 = performance.timeOrigin + performance.now();
    const pool = new Pool({ module: TASKS, workers: 1, runtime: 'process' });
    const r = await pool.apply('hello', [{}]);
    out.start = r.start - t0;
    await pool.close();
  } else {
    const { Pool } = await import('../dist/src/index.js');
    const limited = runner === 'corralRss';
    // Greedy items leave their marks here (contain-tasks.mjs): in both corral runs how fast they
    // touch memory, and with the limit when their process crossed it.
    const traceDir = mkdtempSync(join(tmpdir(), 'corral-contain-'));
    const pool = new Pool({
      module: TASKS,
      workers: WORKERS,
      runtime: 'process',
      ...(limited ? { limits: { rss: RSS_LIMIT } } : {}),
    });
    const starts = [];
    pool.on('workerStart', (info) => starts.push(info.pid));
    let breaches = 0;
    let inPlace = 0;
    pool.on('breach', (error) => {
      breaches++;
      if (error.inPlace) inPlace++;
    });
    await Promise.all([pool.apply('hello', [{}]), pool.apply('hello', [{}])]);
    const initial = new Set(starts);
    let exits = 0;
    pool.on('workerExit', () => exits++);
    const args = items.map((a) => ({ ...a, ...(limited ? { rssLimit: RSS_LIMIT_BYTES } : {}), traceDir }));
    const t = performance.now();
    const settled = await Promise.allSettled(args.map((arg) => pool.apply('item', [arg])));
    out.wall = performance.now() - t;
    out.ok = settled.filter((s) => s.status === 'fulfilled').length;
    out.failed = settled.length - out.ok;
    out.breaches = breaches;
    out.inPlace = inPlace;
    out.replaced = exits; // workers that ended during the run (before close): each one was replaced
    const memoryErrors = settled.filter(
      (s) => s.status === 'rejected' && s.reason?.code === 'ERR_MEMORY_LIMIT',
    );
    out.memoryErrors = memoryErrors.length;
    await pool.close();
    const marks = (suffix) =>
      readdirSync(traceDir)
        .filter((f) => f.endsWith(suffix))
        .map((f) => ({ pid: Number(f.split('-')[0]), at: Number(readFileSync(join(traceDir, f), 'utf8')) }));
    out.pace = median(marks('.pace').map((m) => m.at));
    const crossings = marks('.cross').sort((a, b) => a.at - b.at);
    rmSync(traceDir, { recursive: true, force: true });
    if (limited) {
      // Breach cost: limit crossed (seen by the task) → a worker takes work in its place: the same
      // process's next item (stopped in place), or the replacement's first item.
      const firstStart = new Map();
      const startsOf = new Map();
      for (const s of settled) {
        if (s.status !== 'fulfilled') continue;
        const { pid, start } = s.value;
        if (!startsOf.has(pid)) startsOf.set(pid, []);
        startsOf.get(pid).push(start);
        if (!initial.has(pid) && !(firstStart.get(pid) <= start)) firstStart.set(pid, start);
      }
      const replacements = [...firstStart.values()].sort((a, b) => a - b);
      const costs = [];
      for (const { pid, at } of crossings) {
        const same = Math.min(...(startsOf.get(pid) ?? []).filter((t) => t > at));
        const j = replacements.findIndex((t) => t > at);
        const next = j >= 0 && replacements[j] < same ? replacements.splice(j, 1)[0] : same;
        if (Number.isFinite(next)) costs.push(next - at);
      }
      out.crossings = crossings.length;
      out.breachCost = median(costs);
      out.breachCostMean = costs.length ? costs.reduce((a, b) => a + b, 0) / costs.length : undefined;
      // A replacement's cold start: its first five good items against the run's median good item.
      const good = [];
      const byPid = new Map();
      settled.forEach((s, i) => {
        if (s.status !== 'fulfilled' || items[i].kind !== 'good') return;
        const { pid, start, end } = s.value;
        good.push(end - start);
        if (initial.has(pid)) return;
        if (!byPid.has(pid)) byPid.set(pid, []);
        byPid.get(pid).push([start, end - start]);
      });
      const typical = median(good);
      const extra = [...byPid.values()].map((xs) =>
        xs
          .sort((a, b) => a[0] - b[0])
          .slice(0, 5)
          .reduce((sum, [, ms]) => sum + ms - typical, 0),
      );
      out.coldExtra = median(extra);
    }
  }
  out.selfPeak = peakOf('self');
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function peakOf(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

// ── the parent: calibrates, runs each runner in a child, samples its process tree ────────────

const PAGE = 4096;
function treeRss(pid) {
  let total = 0;
  try {
    total += Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * PAGE;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(' ')) total += treeRss(Number(k));
    }
  } catch {
    // gone meanwhile
  }
  return total;
}

function runChild(runner, count, n, seed) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [SELF, '--child', runner, '--items', String(count), '--n', String(n), '--seed', String(seed)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
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

function calibrate() {
  // The work function, warm, in this process: n such that one item takes ITEM_MS.
  const src = readFileSync(fileURLToPath(TASKS), 'utf8');
  void src;
  const code = `import { work } from ${JSON.stringify(TASKS.href)};
    let n = 100000; for (let i = 0; i < 30; i++) work(n);
    for (;;) { const t = performance.now(); work(n); const ms = performance.now() - t; if (ms > 5) { n = Math.round(n * ${ITEM_MS} / ms); break; } n *= 2; }
    const ms = []; for (let i = 0; i < 15; i++) { const t = performance.now(); work(n); ms.push(performance.now() - t); }
    ms.sort((a, b) => a - b); n = Math.round(n * ${ITEM_MS} / ms[7]); console.log(n);`;
  return Number(
    execFileSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' }).trim(),
  );
}

async function main() {
  if (flags.help) {
    console.log(
      'usage: node bench/contain.mjs [--quick] [--items N] [--runs N] [--only inline,piscina,corral,corralRss]',
    );
    return;
  }
  if (flags.child) return childRun(flags.child, Number(flags.items), Number(flags.n), Number(flags.seed));
  const count = Number(flags.items ?? (flags.quick ? 400 : 2000));
  const runs = Number(flags.runs ?? 3);
  const all = ['inline', 'piscina', 'corral', 'corralRss'];
  const chosen = flags.only ? flags.only.split(',') : all;
  const n = calibrate();
  console.log(
    `contain: ${count} items of ~${ITEM_MS} ms (work n=${n}), 2 % greedy (320 MiB), 1 % throw, 2 % leak; ` +
      `${WORKERS} workers; medians of ${runs} runs; node ${process.version}`,
  );
  const results = Object.fromEntries([...chosen, 'start'].map((r) => [r, []]));
  for (let run = 0; run < runs; run++) {
    const before = load();
    const line = [];
    for (const r of [...chosen, 'start', 'start', 'start']) {
      const out = await runChild(r, count, n, Number(flags.seed));
      results[r].push(out);
      if (r !== 'start') line.push(`${r} ${(out.wall / 1000).toFixed(2)}s`);
    }
    console.log(`  run ${run + 1}: ${line.join(', ')}  (load before ${before}, after ${load()})`);
  }
  const med = (r, k) => median(results[r].map((o) => o[k]));
  const start = med('start', 'start');
  const rows = [];
  for (const r of chosen) {
    const wall = med(r, 'wall');
    rows.push({
      runner: r,
      'wall s': (wall / 1000).toFixed(2),
      'ok / failed': `${med(r, 'ok')} / ${med(r, 'failed')}`,
      'peak tree RSS MiB': (med(r, 'peak') / MiB).toFixed(0),
      breaches: med(r, 'breaches') ?? '',
      'in place / replaced': r.startsWith('corral')
        ? `${med(r, 'inPlace') ?? 0} / ${med(r, 'replaced') ?? 0}`
        : '',
      'breach cost ms': med(r, 'breachCost')?.toFixed(0) ?? '',
    });
  }
  console.table(rows);
  console.log(`bare process-worker start (new Pool → first item starts): ${start.toFixed(0)} ms (median)`);
  const w = (r) => med(r, 'wall');
  if (results.corralRss?.length) {
    const cost = med('corralRss', 'breachCost');
    console.log(`breach cost / bare start: ${(cost / start).toFixed(2)} (target ≤ 1.5)`);
    if (results.piscina?.length)
      console.log(
        `corral rss 256MiB / piscina unlimited wall: ${(w('corralRss') / w('piscina')).toFixed(2)} (target ≤ 1.15)`,
      );
    if (results.corral?.length)
      console.log(
        `corral rss 256MiB / corral unlimited wall: ${(w('corralRss') / w('corral')).toFixed(2)} (target ≤ 1.15)`,
      );
    if (results.inline?.length)
      console.log(
        `corral rss 256MiB / inline wall: ${(w('corralRss') / w('inline')).toFixed(2)} (target < 1)`,
      );
    if (results.corral?.length) {
      // Where a breach's pool time goes: what the run lost per breach against the unlimited run, and
      // the parts measured on their own.
      const breaches = med('corralRss', 'breaches');
      const lost = ((w('corralRss') - w('corral')) * WORKERS) / breaches;
      console.log(
        `pool time lost per breach (rss wall − unlimited wall) × ${WORKERS} / breaches: ${lost.toFixed(0)} ms; its parts, each measured on its own:`,
      );
      console.log(
        `  a greedy item's first 150 MiB: ${med('corralRss', 'pace').toFixed(0)} ms under the limit, ` +
          `${med('corral', 'pace').toFixed(0)} ms unlimited (the kernel's page faults; a fresh process faults every page in)`,
      );
      const replaced = med('corralRss', 'replaced');
      console.log(
        `  replacements: ${replaced} (of ${breaches} breaches), each a process start of ${start.toFixed(0)} ms (the bare start above; CPU the workers share)`,
      );
      const cold = med('corralRss', 'coldExtra');
      if (cold !== undefined)
        console.log(`  a replacement's first 5 items over a typical item (cold JIT): ${cold.toFixed(0)} ms`);
      console.log(
        `  the breach itself, limit crossed → a worker takes work again: ${cost?.toFixed(0) ?? 'n/a'} ms`,
      );
    }
  }
  console.log(`load now: ${load()}`);
}

await main();
