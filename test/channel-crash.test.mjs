// A consumer worker killed mid-stream, for real, under both runtimes: SIGKILL of a process (and
// terminate() of a thread) by Process.kill(), and process.exit() inside a pool task. What it held
// and had not handed to its code goes back to the front of the queue and reaches the next
// consumer; nothing is lost, nothing is seen twice, and 'consumerLost' says which items went where.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test as nodeTest } from 'node:test';
import { JoinableQueue, Pool, Process, Queue, shmStatus, WorkerCrashedError } from '../dist/src/index.js';
import { settles } from './helpers.mjs';

const MODULE = new URL('./fixtures/channel-tasks.mjs', import.meta.url);
const test = (name, fn) => nodeTest(name, { timeout: 30_000 }, fn);
const tmp = mkdtempSync(join(tmpdir(), 'corral-chan-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
/** Every Process started here, killed at the end whatever happened (a failed test must not hang the file). */
const started = [];
after(() => {
  for (const p of started) p.kill();
});
const start = (options) => {
  const p = new Process({ module: MODULE, ...options }).start();
  started.push(p);
  return p;
};
const newFile = () => join(tmp, `got-${++seq}.jsonl`);

function lines(file) {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(JSON.parse);
  } catch {
    return [];
  }
}

async function until(check, ms = 10_000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const N = 2000;
const items = () => Array.from({ length: N }, (_, i) => ({ i }));

/** The dead consumer's items plus the survivor's are every item exactly once. */
function assertPartition(first, second) {
  const ids = [...first, ...second].map((x) => x.i).sort((a, b) => a - b);
  assert.deepEqual(
    ids,
    Array.from({ length: N }, (_, i) => i),
    'every item delivered exactly once',
  );
}

// Across processes, knowing exactly which held items a dead consumer never handed out takes the
// shared-memory addon; without it they are reported `uncertain` instead, which these tests do not expect.
const exactAcross = shmStatus().crossProcess ? false : `no shared-memory addon: ${shmStatus().reason}`;

for (const runtime of ['thread', 'process']) {
  describe(`a consumer dies mid-stream (${runtime})`, { skip: runtime === 'process' && exactAcross }, () => {
    const killHow = runtime === 'process' ? 'SIGKILL' : 'terminate()';

    test(`Process.kill() (${killHow}): the items it held and never handed out are re-delivered`, async () => {
      const q = new Queue({ batch: { size: 64, delay: '1ms' } });
      await q.putMany(items());
      const lost = [];
      q.on('consumerLost', (e) => lost.push(e));
      const file = newFile();
      const victim = start({ fn: 'consumeThenHang', args: [q, file, 50], runtime });
      await until(() => lines(file).length === 50);
      victim.kill();
      await assert.rejects(victim.join(), WorkerCrashedError);
      assert.equal(lost.length, 1);
      const [event] = lost;
      assert.ok(event.redelivered.length > 0, 'it held prefetched items');
      assert.deepEqual(event.unfinished, []);
      assert.deepEqual(event.uncertain, []);
      assert.equal(event.worker.pid, victim.pid);
      const taken = lines(file);
      assert.deepEqual(
        taken.map((x) => x.i),
        Array.from({ length: 50 }, (_, i) => i),
      );
      // The re-delivered items come first again, in their order.
      assert.deepEqual(
        event.redelivered.map((x) => x.i),
        Array.from({ length: event.redelivered.length }, (_, i) => 50 + i),
      );
      const survivor = start({ fn: 'drain', args: [q], runtime });
      await until(() => q.size === 0);
      q.close();
      const rest = await survivor.join();
      assert.equal(rest[0].i, 50, 'the survivor starts where the dead one stopped');
      assertPartition(taken, rest);
    });

    test('process.exit() inside a pool task: the task gets WorkerCrashedError, its held items go to the next consumer', async () => {
      const pool = new Pool({ module: MODULE, runtime, workers: 2 });
      try {
        const q = new Queue({ batch: { size: 100, delay: '1ms' } });
        await q.putMany(items());
        const lost = [];
        q.on('consumerLost', (e) => lost.push(e));
        const file = newFile();
        await assert.rejects(
          pool.apply('consumeThenExit', [q, file, 30]),
          (e) => e instanceof WorkerCrashedError && e.exitCode === 7,
        );
        assert.equal(lost.length, 1);
        assert.ok(lost[0].redelivered.length > 0);
        const taken = lines(file);
        assert.equal(taken.length, 30);
        const survivor = pool.apply('drain', [q]);
        await until(() => q.size === 0);
        q.close();
        const rest = await survivor;
        assertPartition(taken, rest);
      } finally {
        await pool.terminate();
      }
    });

    test('JoinableQueue: items got but not done are reported as unfinished, and join() still resolves', async () => {
      const q = new JoinableQueue({ batch: { size: 64, delay: '1ms' } });
      await q.putMany(items());
      const lost = [];
      q.on('consumerLost', (e) => lost.push(e));
      const file = newFile();
      // Takes 40, finishes 37: the last three were in its hands when it died.
      const victim = start({ fn: 'consumeThenHang', args: [q, file, 40, 37], runtime });
      await until(() => lines(file).length === 40);
      await new Promise((r) => setTimeout(r, 50));
      victim.kill();
      await victim.join().catch(() => {});
      assert.equal(lost.length, 1);
      assert.deepEqual(
        lost[0].unfinished.map((x) => x.i),
        [37, 38, 39],
      );
      assert.equal(lost[0].redelivered[0].i, 40);
      const survivor = start({ fn: 'drainDone', args: [q], runtime });
      await q.join(); // the rest done by the survivor; the three unfinished ones count as done
      q.close();
      const rest = await survivor.join();
      assertPartition(lines(file), rest);
    });

    test(`killed at a random moment while a producer streams: nothing lost, nothing twice`, async () => {
      const q = new Queue({ maxsize: 1000, batch: { size: 64, delay: '1ms' } });
      const lost = [];
      q.on('consumerLost', (e) => lost.push(e));
      const file = newFile();
      const producer = start({ fn: 'produce', args: [q, 20_000, 0], runtime });
      const victim = start({ fn: 'consumeForever', args: [q, file], runtime });
      await until(() => lines(file).length >= 2000 + Math.floor(Math.random() * 3000));
      victim.kill();
      await victim.join().catch(() => {});
      const survivor = start({ fn: 'drain', args: [q], runtime });
      await producer.join();
      q.close();
      const rest = await survivor.join();
      const first = lines(file);
      const ids = [...first, ...rest].map((x) => x.i);
      assert.equal(new Set(ids).size, ids.length, 'no item twice');
      const missing = [];
      const have = new Set(ids);
      for (let i = 0; i < 20_000; i++) if (!have.has(i)) missing.push(i);
      // The one item a kill can take from us is the one the victim had got but not yet written down.
      const last = first[first.length - 1].i;
      assert.ok(
        missing.length === 0 || (missing.length === 1 && missing[0] === last + 1),
        `missing ${missing}`,
      );
      // A consumer that keeps up with the producer may hold nothing when it dies: then there is
      // nothing to report. When it held items, they are the first the survivor gets.
      assert.ok(lost.length <= 1, `${lost.length} consumerLost events for one death`);
      if (lost.length === 1) {
        assert.ok(lost[0].redelivered.length > 0);
        assert.equal(rest[0].i, lost[0].redelivered[0].i);
      }
    });

    // taskDone() is acknowledged in a batch a moment later; a consumer that dies in between leaves
    // the broker with done counts it never heard of. They are on the board: join() must not wait for them.
    const deaths = [['process.exit() in a pool task', 'exit']];
    if (runtime === 'process') deaths.push(['a SIGKILL of its own process', 'kill']);
    for (const [how, kind] of deaths) {
      test(`JoinableQueue: taskDone() then at once ${how}: join() resolves`, async () => {
        const q = new JoinableQueue({ batch: { size: 64, delay: '1ms' } });
        await q.putMany(items());
        const lost = [];
        q.on('consumerLost', (e) => lost.push(e));
        const file = newFile();
        // Takes 40, finishes 37 and dies before the acknowledgement of those 37 can leave.
        if (kind === 'exit') {
          const pool = new Pool({ module: MODULE, runtime, workers: 1 });
          try {
            await assert.rejects(pool.apply('consumeThenExit', [q, file, 40, 37]), WorkerCrashedError);
          } finally {
            await pool.terminate();
          }
        } else {
          const victim = start({ fn: 'consumeThenKillSelf', args: [q, file, 40, 37], runtime });
          await assert.rejects(
            victim.join(),
            (e) => e instanceof WorkerCrashedError && e.signal === 'SIGKILL',
          );
        }
        await until(() => lost.length === 1);
        assert.deepEqual(
          lost[0].unfinished.map((x) => x.i),
          [37, 38, 39],
        );
        assert.deepEqual(lost[0].uncertain, []);
        assert.equal(lost[0].redelivered[0].i, 40);
        const survivor = start({ fn: 'drainDone', args: [q], runtime });
        await settles(q.join(), 'join() after the consumer died', 10_000);
        q.close();
        const rest = await survivor.join();
        assertPartition(lines(file), rest);
      });
    }

    test('a put-back listener makes it at-least-once: the unfinished items are processed again', async () => {
      const q = new JoinableQueue({ batch: { size: 16, delay: '1ms' } });
      await q.putMany(items().slice(0, 100));
      q.on('consumerLost', ({ unfinished }) => {
        for (const item of unfinished) void q.put(item);
      });
      const file = newFile();
      const victim = start({ fn: 'consumeThenHang', args: [q, file, 10, 8], runtime });
      await until(() => lines(file).length === 10);
      await new Promise((r) => setTimeout(r, 50));
      victim.kill();
      await victim.join().catch(() => {});
      const survivor = start({ fn: 'drainDone', args: [q], runtime });
      await q.join();
      q.close();
      const rest = await survivor.join();
      const ids = rest.map((x) => x.i).sort((a, b) => a - b);
      assert.deepEqual(ids, [8, 9, ...Array.from({ length: 90 }, (_, i) => 10 + i)]);
    });
  });
}

// Without the shared-memory addon a process consumer has no board: the parent knows only what the
// worker acknowledged. What it acknowledged taking and not finishing is `unfinished` (its taskDone()
// may have run unheard), what it was sent beyond that is `uncertain`; both count as done for join(),
// none is delivered twice.
test('JoinableQueue without the shm addon: a consumer SIGKILLed after taskDone() leaves join() resolving', async () => {
  const { runNode } = await import('./fixtures/shm-harness.mjs');
  const file = newFile();
  const code = `
    import { JoinableQueue, Process } from ${JSON.stringify(new URL('../dist/src/index.js', import.meta.url).href)};
    const module = ${JSON.stringify(MODULE.href)};
    const q = new JoinableQueue({ batch: { size: 64, delay: '1ms' } });
    await q.putMany(Array.from({ length: ${N} }, (_, i) => ({ i })));
    const lost = [];
    q.on('consumerLost', (e) => lost.push(e));
    const victim = new Process({ module, fn: 'consumeThenKillSelf', args: [q, ${JSON.stringify(file)}, 40, 37], runtime: 'process' }).start();
    const died = await victim.join().then(() => 'ok', (e) => e.signal);
    const survivor = new Process({ module, fn: 'drainDone', args: [q], runtime: 'process' }).start();
    await q.join();
    q.close();
    const rest = await survivor.join();
    const ids = (xs) => xs.map((x) => x.i);
    console.log(JSON.stringify({ died, lost: lost.map((e) => ({ unfinished: ids(e.unfinished), uncertain: ids(e.uncertain), redelivered: ids(e.redelivered) })), rest: ids(rest) }));
  `;
  const r = await runNode(code, { env: { ...process.env, CORRAL_NO_NATIVE: '1' }, timeout: 20_000 });
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal}: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1));
  assert.equal(out.died, 'SIGKILL');
  assert.equal(out.lost.length, 1);
  const [event] = out.lost;
  assert.deepEqual(event.redelivered, []);
  const gone = [...event.unfinished, ...event.uncertain];
  for (const x of lines(file)) assert.ok(gone.includes(x.i), `item ${x.i} it took is reported`);
  for (const i of [37, 38, 39]) assert.ok(gone.includes(i), `unfinished item ${i} is reported`);
  const all = [...gone, ...out.rest].sort((a, b) => a - b);
  assert.deepEqual(
    all,
    Array.from({ length: N }, (_, i) => i),
    'every item reported or delivered, exactly once',
  );
});
