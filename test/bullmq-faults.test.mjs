// The BullMQ backend under faults: a host SIGKILLed mid-run, a job lost past its stall budget, Redis
// restarted mid-run. Hosts use short locks (1 s) and stall checks (0.5 s) so losses show fast.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BackendUnavailableError, ConfigError, Pool, WorkerLostError } from '../dist/src/index.js';
import { alive, SKIP, sleep, startHost, startRedis, TASKS } from './bullmq-helpers.mjs';

const LOCK = 1000;
const STALL = 500;
const FAST = ['--workers', '1', '--lock-duration', String(LOCK), '--stalled-interval', String(STALL)];

describe('BullMQ backend under faults', { skip: SKIP, timeout: 60_000 }, () => {
  let redis;
  const hosts = [];
  const pools = [];
  const host = async (queue, extra = []) => {
    const h = await startHost(redis.url, queue, [...FAST, ...extra]);
    hosts.push(h);
    return h;
  };
  const producer = (queue) => {
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue, reconnectFor: 10_000 } },
    });
    pools.push(pool);
    return pool;
  };

  before(async () => {
    redis = await startRedis();
  });

  after(async () => {
    for (const pool of pools) await pool.terminate();
    await Promise.all(hosts.map((h) => h.kill('SIGKILL')));
    await redis?.stop();
    for (let i = 0; i < 100 && hosts.some((h) => alive(h.pid)); i++) await sleep(20);
    for (const h of hosts) assert.equal(alive(h.pid), false);
  });

  test('a host SIGKILLed mid-run: every item delivered once, its jobs re-run elsewhere within the stall time', async () => {
    const [a, b] = await Promise.all([host('kill'), host('kill')]);
    const pool = producer('kill');
    const n = 400;
    const seen = new Map();
    let killedAt;
    let lastRerunAt;
    for await (const [x, pid, attempt] of pool.imapUnordered(
      'tag',
      Array.from({ length: n }, (_, i) => i),
    )) {
      assert.ok(!seen.has(x), `item ${x} delivered twice`);
      seen.set(x, { pid, attempt });
      if (attempt > 1) lastRerunAt = performance.now();
      if (killedAt === undefined && seen.size >= n * 0.3) {
        assert.ok(
          [...seen.values()].some((s) => s.pid === a.pid),
          'host A took part before its death',
        );
        await a.kill('SIGKILL');
        killedAt = performance.now();
      }
    }
    assert.equal(seen.size, n);
    for (let i = 0; i < n; i++) assert.ok(seen.has(i), `item ${i} missing`);
    const reruns = [...seen.values()].filter((s) => s.attempt > 1);
    assert.ok(reruns.length > 0, 'the dead host held jobs: they ran again');
    assert.ok(
      reruns.every((s) => s.pid === b.pid),
      're-runs ran on the live host',
    );
    const took = lastRerunAt - killedAt;
    process.stderr.write(
      `# SIGKILL to the last re-run item: ${took.toFixed(0)} ms (lock ${LOCK} + stall check ${STALL})\n`,
    );
    assert.ok(took < LOCK + STALL + 1500, `re-run took ${took} ms`);
  });

  test("a pool's stallBudget travels with its jobs and wins over the host's (it was accepted and ignored)", async () => {
    const a = await host('budget');
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue: 'budget', stallBudget: 0 } },
    });
    pools.push(pool);
    const call = pool.apply('sleep', [5000]);
    await sleep(300); // host A has it
    await host('budget'); // the host's own budget: the default 1, which would run it again
    await a.kill('SIGKILL');
    await assert.rejects(call, (e) => e instanceof WorkerLostError);
  });

  test('a job whose host is lost past its stall budget fails with WorkerLostError', async () => {
    const a = await host('lost');
    const pool = producer('lost');
    const call = pool.apply('sleep', [5000]);
    await sleep(300); // host A has it
    await host('lost', ['--stall-budget', '0']);
    await a.kill('SIGKILL');
    const t0 = performance.now();
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof WorkerLostError, String(e));
      assert.equal(e.stalls, 1);
      return true;
    });
    assert.ok(performance.now() - t0 < LOCK + STALL + 1500);
  });

  test('corral worker: SIGTERM drains (its running job answers), a second signal leaves the job to another host', async () => {
    const a = await host('drain');
    const pool = producer('drain');
    const call = pool.apply('sleep', [800]);
    await sleep(300);
    const exit = a.kill('SIGTERM');
    assert.equal(await call, 800, 'the running job finished and answered');
    assert.deepEqual(await exit, { code: 0, sig: null });
    assert.match(a.log, /draining/);

    const b = await host('drain');
    const second = pool.apply('whoami', []);
    const slow = pool.apply('sleep', [1500]);
    await second;
    await sleep(200);
    process.kill(b.pid, 'SIGTERM');
    await sleep(100);
    const t0 = performance.now();
    const exit2 = b.kill('SIGTERM');
    assert.deepEqual(await exit2, { code: 130, sig: null });
    assert.ok(performance.now() - t0 < 1000, 'the second signal stops at once');
    await host('drain');
    assert.equal(await slow, 1500, 'the abandoned job ran again on another host');
  });

  test('Redis restarted mid-run: the run recovers (every item once) or fails typed; nothing silently lost', async () => {
    await Promise.all([host('restart'), host('restart')]);
    const pool = producer('restart');
    const n = 400;
    const seen = new Set();
    let restarted = false;
    let outcome = 'complete';
    try {
      for await (const [x] of pool.imapUnordered(
        'tag',
        Array.from({ length: n }, (_, i) => i),
        { chunksize: 4 },
      )) {
        assert.ok(!seen.has(x), `item ${x} delivered twice`);
        seen.add(x);
        if (!restarted && seen.size >= n * 0.3) {
          restarted = true;
          await redis.restart(300);
        }
      }
    } catch (error) {
      assert.ok(error instanceof BackendUnavailableError || error instanceof WorkerLostError, String(error));
      outcome = error.name;
    }
    process.stderr.write(`# Redis restarted mid-run: ${outcome}, ${seen.size} of ${n} items\n`);
    if (outcome === 'complete') assert.equal(seen.size, n);
  });

  // Last: it leaves Redis down.
  test('a map started before the connection fails, and a map held with no chunk out at terminate(), both settle', async () => {
    const unreachable = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: 'redis://127.0.0.1:1', queue: 'nowhere', connectTimeout: 500 } },
    });
    pools.push(unreachable);
    const mapped = unreachable.map('square', [1, 2, 3]);
    await assert.rejects(mapped, (e) => e instanceof BackendUnavailableError);
    await unreachable.close(); // and close() returns

    const pool = producer('held');
    async function* never() {
      await new Promise(() => {});
    }
    const held = pool.map('square', never()).then(
      () => 'resolved',
      (e) => e.code,
    );
    await sleep(200);
    await pool.terminate();
    assert.equal(await held, 'ERR_POOL_CLOSED');
  });

  test('Redis that refuses the write (maxmemory): the call fails typed instead of waiting forever', async () => {
    await host('oom');
    const pool = producer('oom');
    assert.equal(await pool.apply('square', [3]), 9);
    const { createConnection } = await import('node:net');
    const say = (cmd) =>
      new Promise((resolve, reject) => {
        const socket = createConnection(redis.port, '127.0.0.1', () => socket.end(cmd));
        socket.on('data', () => {});
        socket.on('close', resolve);
        socket.on('error', reject);
      });
    await say('CONFIG SET maxmemory 1\r\nCONFIG SET maxmemory-policy noeviction\r\n');
    try {
      await assert.rejects(pool.apply('square', [4]), (e) => {
        assert.ok(e instanceof BackendUnavailableError, String(e));
        assert.match(e.message, /refused to queue the call \(OOM/);
        return true;
      });
    } finally {
      await say('CONFIG SET maxmemory 0\r\n');
    }
  });

  test('durations a timer cannot hold, and host settings given to a pool, are ConfigErrors', () => {
    const bad = (bullmq) => () =>
      new Pool({ module: TASKS, backend: { bullmq: { connection: redis.url, queue: 'x', ...bullmq } } });
    assert.throws(bad({ connectTimeout: Infinity }), ConfigError);
    assert.throws(bad({ reconnectFor: '30d' }), ConfigError);
    assert.throws(bad({ lockDuration: '5s' }), /a setting of the hosts/);
    assert.throws(bad({ stalledInterval: 500 }), /a setting of the hosts/);
    const forever = bad({ reconnectFor: Infinity })();
    pools.push(forever);
  });

  test("a host whose clock runs 7 s behind the producer's is live: its calls are served, not NoHostError", async () => {
    const skew = new URL('./fixtures/skew-clock.mjs', import.meta.url).href;
    const h = await startHost(redis.url, 'skew', FAST, TASKS, { env: { NODE_OPTIONS: `--import=${skew}` } });
    hosts.push(h);
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue: 'skew', hostWait: 2000 } },
    });
    pools.push(pool);
    assert.equal(await pool.apply('sleep', [3000]), 3000);
  });

  // Last: it stops Redis for good.
  test('Redis gone for longer than reconnectFor: waiting calls fail with BackendUnavailableError', async () => {
    await host('gone');
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: redis.url, queue: 'gone', reconnectFor: 800 } },
    });
    pools.push(pool);
    assert.equal(await pool.apply('square', [4]), 16);
    const call = pool.apply('sleep', [5000]);
    await sleep(200);
    await redis.stop();
    const t0 = performance.now();
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof BackendUnavailableError, String(e));
      assert.match(e.message, /did not come back within 800 ms/);
      return true;
    });
    assert.ok(performance.now() - t0 < 3000);
    assert.equal(pool.state, 'broken');
    await assert.rejects(pool.apply('square', [1]), BackendUnavailableError);
  });
});
