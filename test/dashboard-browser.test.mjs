// The dashboard in a real browser (issue 14): headless Chromium (Debian's package) loads the page while
// a pool runs steady work, some failures and a heap bomb, and finds one lane per worker with its bars,
// the breach marker, and a memory line per worker under the heap limit line. The screenshot is kept as
// docs/dashboard.png. Skipped, saying why, where no Chromium is installed.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { after, describe } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Pool } from '../dist/src/index.js';
import { test } from './helpers.mjs';

const CHROMIUM = process.env.CORRAL_CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = fileURLToPath(new URL('../docs/dashboard.png', import.meta.url));
const skip = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM}: apt-get install chromium (.ci/run does), or set CORRAL_CHROMIUM`;

describe('the dashboard in headless Chromium', () => {
  const cleanup = [];
  after(async () => {
    for (const fn of cleanup.reverse()) await fn().catch(() => {});
  });

  test('lanes with bars, the breach marker and the memory lines, during a run with a breach', {
    skip,
    timeout: 90_000,
  }, async () => {
    const { chromium } = await import('playwright-core');
    const pool = new Pool({
      module: new URL('./fixtures/dashboard-tasks.mjs', import.meta.url),
      runtime: 'process',
      workers: 2,
      limits: { heap: '96MiB' },
    });
    cleanup.push(() => pool.terminate());
    const total = 4000;
    const dash = await pool.dashboard({ title: 'corral: browser test', total });
    cleanup.push(() => dash.close());

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    cleanup.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const problems = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    page.on('request', (r) => {
      if (!r.url().startsWith(dash.url)) problems.push(`request elsewhere: ${r.url()}`);
    });
    await page.goto(dash.url);
    await page.locator('#status.live').waitFor({ timeout: 10_000 });

    // The run: steady 6 ms tasks on both workers, a failure now and then, a heap bomb once the page
    // has seen some work.
    let stop = false;
    let bombed;
    const run = (async () => {
      for (let i = 0; !stop && i < total / 2; i++) {
        const calls = [pool.apply('work', [6]), pool.apply('work', [6])];
        if (i % 40 === 13) calls.push(pool.apply('fail', [i]));
        if (i === 60)
          bombed = pool.apply('bomb', []).then(
            () => assert.fail('the bomb must breach'),
            (e) => e,
          );
        await Promise.allSettled(calls);
      }
    })();
    cleanup.push(async () => {
      stop = true;
      await run;
    });

    const stream = page.locator('#stream');
    await stream.locator('.marker.breach').first().waitFor({ timeout: 30_000 });
    await page.waitForTimeout(2500); // the replacement worker's lane and memory line fill in
    const breach = await bombed;
    assert.equal(breach.code, 'ERR_MEMORY_LIMIT');

    const lanes = await stream.locator('g.lane').evaluateAll((gs) => gs.map((g) => Number(g.dataset.worker)));
    assert.ok(lanes.length >= 3, `two workers and the bombed one's replacement: lanes ${lanes}`);
    assert.ok(lanes.includes(breach.workerId), 'the breached worker keeps its lane');
    // After a death under a task the pool keeps a warm spare (issue 16): a process that runs no work
    // until it takes a dead worker's place. Its lane shows it as the spare, not as a worker without bars.
    const workers = (await pool.metrics()).workers;
    const live = workers.filter((w) => !w.spare).map((w) => w.id);
    const spares = workers.filter((w) => w.spare).map((w) => w.id);
    assert.ok(spares.length <= 1, `at most one spare: ${spares}`);
    for (const id of live) {
      const bars = await stream.locator(`g.lane[data-worker="${id}"] rect.bar.ok`).count();
      assert.ok(bars >= 3, `worker ${id} lane has ${bars} bars`);
      assert.equal(
        await stream.locator(`g.lane.spare[data-worker="${id}"]`).count(),
        0,
        `worker ${id} is no spare`,
      );
    }
    for (const id of spares) {
      const lane = stream.locator(`g.lane[data-worker="${id}"]`);
      assert.equal(await lane.count(), 1, `the spare ${id} has its lane`);
      assert.match(await lane.getAttribute('class'), /\bspare\b/, `the spare ${id}'s lane is marked as such`);
      assert.match(await lane.locator('text').first().textContent(), /^worker \d+ spare/);
      assert.equal(await lane.locator('rect.bar').count(), 0, `the spare ${id} ran nothing`);
    }
    assert.ok((await stream.locator('rect.bar.error').count()) >= 1, 'failures in colour');
    const marker = stream.locator(`g.lane[data-worker="${breach.workerId}"] .marker.breach`);
    assert.equal(await marker.count(), 1, 'the breach marker is in the lane of the worker that breached');
    assert.match(await marker.locator('title').textContent(), /heap limit/);

    const memory = page.locator('#memory');
    assert.equal(await memory.locator('line.limit.heap').count(), 1, 'the heap limit line');
    assert.ok((await memory.locator('.marker.breach').count()) >= 1, 'the breach on the memory chart');
    for (const id of live) {
      const d = await memory.locator(`path.mem.rss[data-worker="${id}"]`).getAttribute('d');
      assert.ok(d && d.split('L').length >= 5, `worker ${id} has a memory line: ${d}`);
    }
    const done = await page.locator('#stat-done').textContent();
    assert.match(done, /^[1-9]\d* \/ 4000$/);
    assert.notEqual(await page.locator('#stat-rate').textContent(), '0/s');
    assert.equal(await page.locator('#stat-breaches').textContent(), '1');

    mkdirSync(fileURLToPath(new URL('../docs/', import.meta.url)), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.deepEqual(problems, []);
  });
});
