// pool.dashboard() (issue 14) as its page sees it, without a browser: the page, the server-sent events
// (an init, then ticks of bars, memory, counters and events), and what it costs the pool when nobody
// looks. test/dashboard-browser.test.mjs drives the page in Chromium.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { afterEach, describe } from 'node:test';
import { get, rejection, sleep, test, usePools } from './helpers.mjs';

const makePool = usePools(new URL('./fixtures/dashboard-tasks.mjs', import.meta.url));

/** Streams and dashboards a test opened: a failed test must not leave them holding the process. */
const open = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

/** Opens /events; `events` fills with { event, data } as they come; close() hangs up. */
function subscribe(url) {
  const events = [];
  let closeIt;
  open.push({ close: () => closeIt?.() });
  const opened = new Promise((resolve, reject) => {
    const req = request(`${url}events`, { agent: false }, (res) => {
      assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
      let buffer = '';
      res.setEncoding('utf8').on('data', (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data !== undefined) events.push({ event, data: JSON.parse(data) });
        }
      });
      res.on('error', () => {});
      resolve();
    });
    closeIt = () => req.destroy();
    req.on('error', reject);
    req.end();
  });
  return { events, opened, close: () => closeIt() };
}

async function until(condition, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('pool.dashboard()', () => {
  test('one self-contained page on 127.0.0.1: no external assets', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    const dash = await pool.dashboard({ title: 'a <b> job' });
    open.push(dash);
    assert.match(dash.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await get(dash.url);
    assert.equal(page.status, 200);
    assert.equal(page.type, 'text/html; charset=utf-8');
    assert.match(page.body, /<title>a &#60;b&#62; job - corral<\/title>/);
    assert.doesNotMatch(page.body, /(src|href)=["'](https?:)?\/\//, 'nothing is loaded from elsewhere');
    assert.equal((await get(`${dash.url}metrics`)).status, 200);
    assert.equal((await get(dash.url, { host: 'evil.example' })).status, 403);
    await dash.close();
  });

  test('ticks carry every unit in its lane, counters, memory per worker, and a breach as it happens', {
    timeout: 30_000,
  }, async () => {
    const { pool } = makePool({ runtime: 'process', workers: 2, limits: { heap: '96MiB' } });
    await Promise.all([pool.apply('tiny', [1]), pool.apply('tiny', [2])]);
    const dash = await pool.dashboard({ total: 1000 });
    open.push(dash);
    const feed = subscribe(dash.url);
    await feed.opened;
    await until(() => feed.events.length >= 2, 'the init and the first tick');
    assert.equal(feed.events[0].event, 'init');
    const init = feed.events[0].data;
    assert.equal(init.limits.heap, 96 * 2 ** 20);
    assert.equal(dash.clients, 1);

    await pool.map(
      'tiny',
      Array.from({ length: 1000 }, (_, i) => i),
      { chunksize: 10 },
    );
    await Promise.all(Array.from({ length: 20 }, () => pool.apply('work', [5])));
    await rejection(pool.apply('fail', [7]));
    const breach = await rejection(pool.apply('bomb', []), 'the bomb', 15_000);
    assert.equal(breach.code, 'ERR_MEMORY_LIMIT');
    await sleep(300); // a tick or two

    const ticks = feed.events.filter((e) => e.event === 'message').map((e) => e.data);
    const bars = ticks.flatMap((t) => t.bars);
    const items = (task) => bars.filter((b) => b[7] === task).reduce((n, b) => n + b[4], 0);
    assert.equal(items('tiny'), 1000, 'every item of the map is in a bar');
    assert.equal(items('work'), 20);
    assert.equal(bars.filter((b) => b[7] === 'fail' && b[5] === 1 && b[6] === 'error').length, 1);
    const bombBar = bars.find((b) => b[7] === 'bomb');
    assert.equal(bombBar?.[6], 'breach');
    const workerIds = new Set(ticks.flatMap((t) => t.workers.map((w) => w[0])));
    assert.ok(
      workerIds.size >= 2 && workerIds.has(breach.workerId),
      'the workers, the bombed one among them',
    );
    for (const b of bars) assert.ok(workerIds.has(b[0]), `bar of worker ${b[0]}, one of the pool's`);
    for (const b of bars) assert.ok(b[2] >= b[1], 'a bar ends after it starts');

    const last = ticks.at(-1);
    assert.equal(last.stats.total, 1000);
    assert.equal(last.stats.breaches, 1);
    assert.ok(last.stats.items >= 1022);
    assert.ok(ticks.some((t) => t.stats.rate > 0));
    // Each worker's RSS is measured (a worker starting or gone may have none in some tick).
    const mem = ticks.flatMap((t) => t.mem);
    for (const id of workerIds) {
      assert.ok(
        mem.some(([w, rss]) => w === id && rss > 10 * 2 ** 20),
        `worker ${id} has its RSS measured`,
      );
    }
    const events = ticks.flatMap((t) => t.events);
    const b = events.find((e) => e.kind === 'breach');
    assert.ok(b, `a breach event: ${JSON.stringify(events)}`);
    assert.equal(b.workerId, breach.workerId);
    await until(
      () =>
        feed.events.some((e) =>
          e.data.events?.some((x) => x.kind === 'exit' && x.workerId === breach.workerId),
        ),
      "the breached worker's end",
    );

    // A page that connects later gets the history: bars and the breach.
    const late = subscribe(dash.url);
    await late.opened;
    await until(() => late.events.length >= 1, 'the late init');
    assert.ok(late.events[0].data.bars.length >= 1);
    assert.ok(late.events[0].data.events.some((e) => e.kind === 'breach'));
    late.close();

    feed.close();
    await until(() => dash.clients === 0, 'the pages to go');
    await pool.close();
    await dash.close();
  });

  test('the last tick says the pool ended; closing the dashboard ends the stream', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    const dash = await pool.dashboard();
    open.push(dash);
    const feed = subscribe(dash.url);
    await feed.opened;
    await pool.apply('tiny', [1]);
    await pool.close();
    await until(() => feed.events.some((e) => e.data.ended === true), 'the ended tick');
    await dash.close();
    assert.equal(dash.clients, 0);
  });

  test('bad options are ConfigErrors', async () => {
    const { pool } = makePool({ runtime: 'thread', workers: 1 });
    await assert.rejects(pool.dashboard({ total: -1 }), { code: 'ERR_INVALID_OPTION', option: 'total' });
    await assert.rejects(pool.dashboard({ prot: 80 }), { code: 'ERR_INVALID_OPTION', option: 'prot' });
  });
});
