// The BullMQ backend end to end: a redis-server of this file's own, `corral worker` hosts as
// separate processes, and a producer Pool in this process. Skips without redis-server.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { serialize } from 'node:v8';
import {
  AbortError,
  BackendUnavailableError,
  MemoryLimitError,
  ModuleVersionError,
  NoHostError,
  NotSupportedError,
  PayloadTooLargeError,
  Pool,
  TaskError,
  TaskTimeoutError,
} from '../dist/src/index.js';
import {
  alive,
  CLI,
  cmdline,
  corral,
  freePort,
  SKIP,
  sleep,
  startHost,
  startRedis,
  TASKS,
  whenDone,
} from './bullmq-helpers.mjs';

test('bullmq and ioredis load only on first use; missing, they fail with DependencyMissingError', () => {
  const hook = new URL('./fixtures/hide-bullmq.mjs', import.meta.url).href;
  const index = new URL('../dist/src/index.js', import.meta.url).href;
  const program = `
    const { Pool } = await import(${JSON.stringify(index)});
    const local = new Pool({ module: ${JSON.stringify(TASKS)}, workers: 1 });
    const local9 = await local.apply('square', [3]);
    await local.close();
    const remote = new Pool({ module: ${JSON.stringify(TASKS)}, backend: { bullmq: { connection: 'redis://127.0.0.1:1', queue: 'q' } } });
    const error = await remote.apply('square', [3]).catch((e) => e);
    console.log(JSON.stringify({ local9, code: error.code, dependency: error.dependency, message: error.message }));`;
  const register = `import { register } from 'node:module'; register(${JSON.stringify(hook)});`;
  const run = spawnSync(
    process.execPath,
    [
      '--import',
      `data:text/javascript,${encodeURIComponent(register)}`,
      '--input-type=module',
      '-e',
      program,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(run.status, 0, run.stderr);
  const out = JSON.parse(run.stdout);
  assert.equal(out.local9, 9, 'a local pool never needs them');
  assert.equal(out.code, 'ERR_DEPENDENCY_MISSING');
  assert.equal(out.dependency, 'bullmq');
  assert.match(out.message, /npm install bullmq/);
});

describe('BullMQ backend', { skip: SKIP, timeout: 60_000 }, () => {
  let redis;
  const hosts = [];
  const pools = [];
  const producer = (queue, extra = {}) => {
    const pool = new Pool({ module: TASKS, backend: { bullmq: { connection: redis.url, queue, ...extra } } });
    pools.push(pool);
    return pool;
  };

  before(async () => {
    redis = await startRedis();
    // Three hosts, one local worker each: separate processes, as on three machines.
    hosts.push(...(await Promise.all([1, 2, 3].map(() => startHost(redis.url, 'main', ['--workers', '1'])))));
  });

  after(async () => {
    for (const pool of pools) await pool.terminate();
    const pids = hosts.flatMap((h) => [h.pid, ...h.children()]);
    await Promise.all(hosts.map((h) => h.kill('SIGTERM')));
    await redis?.stop();
    // No orphans: every host and every process it started is gone (a worker exits as its pipe closes).
    for (let i = 0; i < 100 && pids.some(alive); i++) await sleep(20);
    for (const pid of pids)
      assert.equal(alive(pid), false, `process ${pid} outlived its host: ${cmdline(pid)}`);
  });

  test('apply, map of 100k, imap, imapUnordered and starmap across three hosts, in order', async () => {
    const pool = producer('main');
    assert.equal(await pool.apply('square', [12]), 144);
    const n = 100_000;
    const items = Array.from({ length: n }, (_, i) => i);
    const t0 = performance.now();
    const squares = await pool.map('square', items);
    const ms = performance.now() - t0;
    assert.equal(squares.length, n);
    for (let i = 0; i < n; i++) if (squares[i] !== i * i) assert.fail(`item ${i}: ${squares[i]}`);
    const ordered = [];
    for await (const r of pool.imap('square', items.slice(0, 5000))) ordered.push(r);
    assert.deepEqual(
      ordered,
      items.slice(0, 5000).map((i) => i * i),
    );
    const unordered = [];
    for await (const r of pool.imapUnordered('square', items.slice(0, 3000))) unordered.push(r);
    assert.deepEqual(
      unordered.sort((a, b) => a - b),
      items.slice(0, 3000).map((i) => i * i),
    );
    assert.deepEqual(
      await pool.starmap('add', [
        [1, 2],
        [3, 4],
      ]),
      [3, 7],
    );
    // Every host took part: the tasks' ctx.key is the job id, attempt 1, and pids are the hosts'.
    const who = await Promise.all(Array.from({ length: 30 }, () => pool.apply('whoami', [])));
    assert.ok(who.every((w) => typeof w.key === 'string' && w.attempt === 1));
    assert.ok(new Set(who.map((w) => w.key)).size === 30, 'each job has its own key');
    assert.ok(pool.metrics().workers.length === 3, 'the producer sees three hosts by their heartbeats');
    process.stderr.write(`# map of ${n} tiny items over 3 hosts: ${ms.toFixed(0)} ms\n`);
    // close() waits for this pool's work and leaves the hosts running for the next producer.
    await pool.close();
    assert.equal(pool.state, 'closed');
    assert.ok(hosts.every((h) => h.proc.exitCode === null));
    assert.equal(await producer('main').apply('square', [6]), 36);
  });

  test("a task's error comes back as TaskError naming its host; a map's first failing item rejects it", async () => {
    const pool = producer('main');
    const error = await pool.apply('fail', ['boom']).catch((e) => e);
    assert.ok(error instanceof TaskError, String(error));
    assert.equal(error.cause.name, 'RangeError');
    assert.equal(error.cause.message, 'boom');
    assert.match(error.host, /:\d+$/);
    await assert.rejects(
      pool.map(
        'failOn',
        Array.from({ length: 100 }, (_, i) => i),
      ),
      (e) => {
        assert.ok(e instanceof TaskError);
        assert.match(e.message, /unlucky 13/);
        return true;
      },
    );
  });

  test('oversize arguments fail at the producer, oversize results at the host: PayloadTooLargeError', async () => {
    const pool = producer('main', { maxPayload: '64KiB' });
    await assert.rejects(pool.apply('square', ['x'.repeat(100_000)]), (e) => {
      assert.ok(e instanceof PayloadTooLargeError);
      assert.equal(e.direction, 'arguments');
      assert.equal(e.limit, 65536);
      return true;
    });
    // The hosts' limit is 16 MiB: a 17 MiB result is refused there and the error comes back.
    await assert.rejects(pool.apply('big', [17 * 2 ** 20]), (e) => {
      assert.ok(e instanceof PayloadTooLargeError, String(e));
      assert.equal(e.direction, 'result');
      return true;
    });
    assert.equal(await pool.apply('square', [3]), 9, 'the pool goes on');
  });

  test('a map chunk over maxPayload whose items fit goes as one job per item; only an item over it fails', async () => {
    const pool = producer('main', { maxPayload: '64KiB' });
    const items = Array.from({ length: 12 }, (_, i) => 'y'.repeat(20_000 + i));
    // 12 × 20 KB in one chunk is over 64 KiB: before, the whole map failed with PayloadTooLargeError.
    assert.deepEqual(
      await pool.map('len', items, { chunksize: 12 }),
      items.map((s) => s.length),
    );
    const withHuge = [...items.slice(0, 3), 'z'.repeat(100_000)];
    await assert.rejects(pool.map('len', withHuge, { chunksize: 4 }), (e) => {
      assert.ok(e instanceof PayloadTooLargeError, String(e));
      return true;
    });
  });

  test('a job built for another module version is refused by the hosts', async () => {
    const pool = producer('main', { moduleVersion: 'not-the-hosts-version' });
    await assert.rejects(pool.apply('square', [2]), (e) => {
      assert.ok(e instanceof ModuleVersionError, String(e));
      assert.equal(e.expected, 'not-the-hosts-version');
      return true;
    });
  });

  test('abort and timeout of a remote task', async () => {
    const pool = producer('main');
    const t0 = performance.now();
    await assert.rejects(pool.apply('sleep', [20_000], { signal: AbortSignal.timeout(200) }), AbortError);
    assert.ok(performance.now() - t0 < 2000);
    await assert.rejects(pool.apply('sleep', [20_000], { timeout: 300 }), (e) => {
      assert.ok(e instanceof TaskTimeoutError, String(e));
      return true;
    });
    assert.ok(performance.now() - t0 < 5000);
    // The aborted call's host was told: its worker is free again at once.
    const quick = await Promise.all([1, 2, 3].map((x) => pool.apply('square', [x])));
    assert.deepEqual(quick, [1, 4, 9]);
  });

  test('a task over its memory limit on a remote host: MemoryLimitError at the producer', async () => {
    const host = await startHost(redis.url, 'limited', [
      '--workers',
      '1',
      '--runtime',
      'process',
      '--heap',
      '64MiB',
    ]);
    hosts.push(host);
    const pool = producer('limited');
    await assert.rejects(pool.apply('heapBomb', []), (e) => {
      assert.ok(e instanceof MemoryLimitError, String(e));
      assert.equal(e.kind, 'heap');
      assert.equal(e.host, host.log.match(/worker: (\S+) serves/)[1]);
      return true;
    });
    assert.equal(await pool.apply('square', [5]), 25, 'the host replaced its worker');
  });

  test('corral run --redis maps JSON Lines over the hosts with the local exit codes', () => {
    const input = `${Array.from({ length: 500 }, (_, i) => i).join('\n')}\nnot json\n`;
    const run = spawnSync(
      process.execPath,
      [CLI, 'run', '--redis', redis.url, '--queue', 'main', `${TASKS}#square`],
      {
        input,
        encoding: 'utf8',
      },
    );
    assert.equal(run.status, 1, run.stderr); // one item failed
    const out = run.stdout.trim().split('\n').map(Number);
    assert.deepEqual(
      out,
      Array.from({ length: 500 }, (_, i) => i * i),
    );
    assert.match(run.stderr, /500 ok, 1 failed/);
    const typo = spawnSync(
      process.execPath,
      [CLI, 'run', '--redis', redis.url, '--queue', 'main', `${TASKS}#nope`],
      {
        input: '1\n',
        encoding: 'utf8',
      },
    );
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /no function export named 'nope'; it exports: add, big/);
    const alone = spawnSync(process.execPath, [CLI, 'run', '--redis', redis.url, `${TASKS}#square`], {
      input: '1\n',
    });
    assert.equal(alone.status, 2, '--redis without --queue is a usage error');
  });

  test('corral run --redis: one Ctrl-C stops the input and lets the jobs out finish, a second cancels them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-bullmq-'));
    try {
      // One SIGINT: exit 130, report 'interrupted', the output a whole prefix of the input, in order.
      const input = Array.from({ length: 5000 }, (_, i) => 20 + (i % 7));
      const args = (name) => [
        'run',
        '--redis',
        redis.url,
        '--queue',
        'main',
        `${TASKS}#sleep`,
        '--output',
        join(dir, `${name}.jsonl`),
        '--report',
        join(dir, `${name}.json`),
      ];
      const once = await corral(args('once'), {
        input: `${input.join('\n')}\n`,
        onStderr: whenDone(10, (child) => child.kill('SIGINT')),
      });
      assert.equal(once.code, 130, once.stderr);
      assert.match(once.stderr, /stopped by Ctrl-C/);
      const text = readFileSync(join(dir, 'once.jsonl'), 'utf8');
      assert.ok(text.endsWith('\n'), 'no half-written last line');
      const got = text.trim().split('\n').map(Number);
      const r = JSON.parse(readFileSync(join(dir, 'once.json'), 'utf8'));
      assert.equal(r.stopped, 'interrupted');
      assert.ok(got.length >= 10 && got.length < 5000, `${got.length} lines`);
      assert.equal(r.items.done, got.length, 'every job out finished and was written');
      assert.equal(r.items.written, got.length);
      assert.deepEqual(got, input.slice(0, got.length));

      // Two SIGINTs: the jobs out are cancelled (every 10th item sleeps 5 s), exit 130, 'terminated'.
      const slow = Array.from({ length: 2000 }, (_, i) => (i % 10 === 9 ? 5000 : 20));
      let interrupted = 0;
      const twice = await corral(args('twice'), {
        input: `${slow.join('\n')}\n`,
        onStderr: whenDone(5, (child) => {
          interrupted = performance.now();
          child.kill('SIGINT');
          setTimeout(() => child.kill('SIGINT'), 200);
        }),
      });
      assert.equal(twice.code, 130, twice.stderr);
      const written = readFileSync(join(dir, 'twice.jsonl'), 'utf8');
      assert.ok(written === '' || written.endsWith('\n'), 'no half-written last line');
      const prefix = written === '' ? [] : written.trim().split('\n').map(Number);
      assert.deepEqual(prefix, slow.slice(0, prefix.length));
      const r2 = JSON.parse(readFileSync(join(dir, 'twice.json'), 'utf8'));
      assert.equal(r2.stopped, 'terminated');
      assert.ok(r2.items.cancelled > 0, 'the jobs out were abandoned');
      assert.equal(r2.resumeLine, prefix.length + 1);
      const ms = performance.now() - interrupted;
      assert.ok(
        ms < 3000,
        `exited ${ms.toFixed(0)} ms after the first Ctrl-C: nobody waited for the 5 s items`,
      );
      // The hosts were told: they are free for the next producer at once.
      assert.deepEqual(await producer('main').map('square', [1, 2, 3]), [1, 4, 9]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('imap keeps a bounded number of jobs out: a slow consumer holds the input back', async () => {
    const pool = producer('main');
    let read = 0;
    function* endless() {
      for (;;) yield read++;
    }
    let taken = 0;
    for await (const r of pool.imap('square', endless())) {
      assert.equal(r, taken * taken);
      if (++taken === 2000) break;
      if (taken % 500 === 0) await sleep(100);
    }
    await sleep(300);
    assert.ok(read < 200_000, `read ${read} items ahead of a consumer that took 2000`);
  });

  test("imap holds back while other producers' jobs fill the queue, and reads again once they are gone", async () => {
    // Another producer fills the queue: each host (one slot, two jobs taken) is busy for 20 s, the rest wait.
    const other = producer('main');
    const theirs = Array.from({ length: 80 }, () => other.apply('sleep', [20_000]).catch((e) => e));
    const { Queue } = await import('bullmq');
    const queue = new Queue('main', {
      connection: { host: '127.0.0.1', port: redis.port },
      prefix: 'corral',
    });
    try {
      for (let i = 0; i < 200 && (await queue.getWaitingCount()) < 60; i++) await sleep(20);
      assert.ok((await queue.getWaitingCount()) >= 60, 'the other producer filled the queue');
      const pool = producer('main');
      let read = 0;
      function* input() {
        for (; read < 40; ) yield read++;
      }
      const results = [];
      const consumed = (async () => {
        for await (const r of pool.imap('square', input(), { chunksize: 1 })) results.push(r);
      })();
      await sleep(1000);
      assert.equal(read, 0, 'nothing read while >= 60 jobs of others wait (maxWaiting auto: 16)');
      // The other producer goes: its jobs leave the queue (and its hosts' running ones are cancelled).
      await other.terminate();
      await consumed;
      assert.deepEqual(
        results,
        Array.from({ length: 40 }, (_, i) => i * i),
      );
      assert.equal((await Promise.all(theirs)).filter((e) => e instanceof Error).length, 80);
      // Every job of theirs was cancelled, also one a host took just after its cancel was published.
      let active = await queue.getActiveCount();
      for (let i = 0; i < 100 && active > 0; i++) active = await sleep(20).then(() => queue.getActiveCount());
      assert.equal(active, 0, 'no job of the terminated producer runs on');
    } finally {
      await queue.close();
    }
  });

  test('no live host on the queue: calls fail with NoHostError after hostWait; the pool serves hosts that come later', async () => {
    const pool = producer('nohost', { hostWait: 500 });
    const t0 = performance.now();
    const [one, many] = await Promise.all([
      pool.apply('square', [3]).catch((e) => e),
      pool.map('square', [1, 2, 3]).catch((e) => e),
    ]);
    const ms = performance.now() - t0;
    for (const e of [one, many]) {
      assert.ok(e instanceof NoHostError, String(e));
      assert.ok(e instanceof BackendUnavailableError, 'a kind of BackendUnavailableError');
      assert.equal(e.queue, 'nohost');
      assert.match(e.message, /no corral worker has a heartbeat on queue 'nohost'/);
      assert.match(e.message, /corral worker --redis redis:\/\/127\.0\.0\.1:\d+ --queue nohost <module>/);
    }
    assert.ok(ms >= 450 && ms < 3000, `failed after ${ms.toFixed(0)} ms`);
    assert.equal(pool.state, 'open', 'not broken: a host may still come');
    // corral run --redis --host-wait: the run stops with the same words, exit 2.
    const run = spawnSync(
      process.execPath,
      [CLI, 'run', '--redis', redis.url, '--queue', 'nohost-cli', '--host-wait', '300ms', `${TASKS}#square`],
      { input: '1\n2\n', encoding: 'utf8' },
    );
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /no corral worker has a heartbeat on queue 'nohost-cli'/);
    const host = await startHost(redis.url, 'nohost', ['--workers', '1']);
    try {
      assert.equal(await pool.apply('square', [4]), 16);
    } finally {
      await host.kill('SIGTERM');
    }
  });

  test('a duplicate reply is dropped: the first outcome of a job settles its call, later ones are ignored', async () => {
    const { Redis } = await import('ioredis');
    const redisClient = new Redis(redis.url);
    try {
      const pool = producer('dup'); // no host serves 'dup' yet: the job waits in the queue
      const call = pool.apply('square', [9]);
      let jobKey;
      for (let i = 0; i < 100 && !jobKey; i++) {
        [jobKey] = await redisClient.keys('corral:dup:*-1');
        if (!jobKey) await sleep(20);
      }
      const id = jobKey.slice('corral:dup:'.length);
      const replyKey = `corral:dup:corral:reply:${id.slice(0, id.lastIndexOf('-'))}`;
      const reply = (value) =>
        serialize({ id, ok: true, value, itemErrors: undefined, ms: 1, usage: undefined, host: 'h' });
      await redisClient.rpush(replyKey, reply(81), reply(-1));
      assert.equal(await call, 81);
      // A host now runs the queued job too and answers it again: dropped as well.
      hosts.push(await startHost(redis.url, 'dup', ['--workers', '1']));
      assert.equal(await pool.apply('square', [4]), 16);
      await sleep(200);
      assert.equal(pool.stats().completed, 2);
      assert.equal(pool.stats().running, 0);
    } finally {
      redisClient.disconnect();
    }
  });

  test('a cancel that overtakes its job: the host that takes the job later skips it', async () => {
    const { Queue } = await import('bullmq');
    const { Redis } = await import('ioredis');
    const { encodePayload, decodeReply } = await import('../dist/src/backend/bullmq/codec.js');
    const connection = { host: '127.0.0.1', port: redis.port };
    const queue = new Queue('main', { connection, prefix: 'corral' });
    const client = new Redis(connection);
    try {
      const r = 'corral:main:corral:reply:overtaken';
      const data = (x) => ({
        v: '',
        n: 'square',
        m: 0,
        f: 0,
        s: 1,
        p: encodePayload('square', [x], 1e6),
        r,
        t: -1,
        y: 0,
        a: 0,
      });
      // The producer's cancel is published before any host has the job (its remove came too late).
      await client.publish('corral:main:corral:cancel', 'overtaken-1');
      await queue.add('square', data(7), { jobId: 'overtaken-1', removeOnComplete: true });
      await queue.add('square', data(8), { jobId: 'overtaken-2', removeOnComplete: true });
      const got = [];
      for (let reply = await client.blpopBuffer(r, 2); reply; reply = await client.blpopBuffer(r, 0.5))
        got.push(decodeReply(reply[1]));
      assert.deepEqual(
        got.map((x) => [x.id, x.value]),
        [['overtaken-2', 64]],
        'only the job not cancelled ran',
      );
    } finally {
      client.disconnect();
      await queue.close();
    }
  });

  test('what this backend does not have yet says so with NotSupportedError', async () => {
    const pool = producer('main');
    assert.throws(() => pool.stream('square', [1]), NotSupportedError);
    await assert.rejects(pool.broadcast('square', [1]), NotSupportedError);
  });

  test('Redis unreachable: BackendUnavailableError', async () => {
    const port = await freePort();
    const pool = new Pool({
      module: TASKS,
      backend: { bullmq: { connection: `redis://127.0.0.1:${port}`, queue: 'q', connectTimeout: 1000 } },
    });
    pools.push(pool);
    await assert.rejects(pool.apply('square', [1]), (e) => {
      assert.ok(e instanceof BackendUnavailableError, String(e));
      assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      return true;
    });
    assert.equal(pool.state, 'broken');
  });
});
