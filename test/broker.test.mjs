// The queue broker (channel/broker.ts) driven frame by frame through fake worker links: orderings that
// real workers reach only by chance, made to happen every time.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { Broker } from '../dist/src/channel/broker.js';
import { DEFAULT_BATCH } from '../dist/src/channel/check.js';
import { sleep, test } from './helpers.mjs';

/** A fake worker link: what the broker sends it, in order. */
function fakeLink(pid) {
  const frames = [];
  return {
    frames,
    st: {
      link: { pid, send: (f) => frames.push(f) },
      board: undefined,
      segment: undefined,
      boardTried: true,
      brokers: new Set(),
    },
  };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A broker whose events no test here expects (no worker exits), and a sender of frames from a fake link. */
function quietBroker(id, { maxsize = Infinity, joinable = false } = {}) {
  const broker = new Broker(
    id,
    { maxsize, batch: DEFAULT_BATCH },
    joinable,
    { consumerLost: () => assert.fail('no worker exited'), error: (e) => assert.fail(e) },
    () => {},
  );
  const frame = (who, f) => broker.onFrame(who.st, { t: 'chan', id, ...f });
  return { broker, frame };
}

describe('queue broker', () => {
  test('a lone consumer recalled while its acknowledgements lag is not ended by a close before its items come back', async () => {
    const errors = [];
    const broker = new Broker(
      'q1',
      { maxsize: Infinity, batch: DEFAULT_BATCH },
      false,
      {
        consumerLost: () => assert.fail('no worker exited'),
        error: (e) => errors.push(e),
      },
      () => {},
    );
    const producer = fakeLink(101);
    const consumer = fakeLink(102);
    const put = (items) => broker.onFrame(producer.st, { t: 'chan', op: 'put', id: 'q1', items });
    const frame = (f) => broker.onFrame(consumer.st, { t: 'chan', id: 'q1', ...f });

    frame({ op: 'want', n: 4, taken: 0, done: 0 });
    put([1, 2, 3, 4]);
    await flush();
    assert.deepEqual(
      consumer.frames.map((f) => [f.op, f.items]),
      [['items', [1, 2, 3, 4]]],
    );
    // It asks for more before its acknowledgement of the four caught up: the broker sees a waiter and
    // a holder in one, and after RECALL_MS asks it for what it holds.
    frame({ op: 'want', n: 4, taken: 0, done: 0 });
    await sleep(40);
    assert.deepEqual(consumer.frames.at(-1), { t: 'chan', op: 'recall', id: 'q1' });
    // The producer is done and the queue closes while the consumer's return is on its way; the
    // producer answers the close (it has nothing more on the way).
    broker.close();
    broker.onFrame(producer.st, { t: 'chan', op: 'sealed', id: 'q1' });
    await flush();
    assert.ok(
      !consumer.frames.some((f) => f.end),
      'ended while its items travelled back: they would be lost',
    );
    // The return arrives (the consumer had handed none out), and it asks again in its new epoch.
    frame({ op: 'return', taken: 0, done: 0, epoch: 1 });
    frame({ op: 'want', n: 8, taken: 0, done: 0 });
    await flush();
    const after = consumer.frames.slice(consumer.frames.findIndex((f) => f.op === 'recall') + 1);
    const items = after.filter((f) => f.op === 'items' && f.epoch === 1).flatMap((f) => f.items);
    assert.deepEqual(items, [1, 2, 3, 4], 'every item it gave back reaches it again');
    assert.ok(after.at(-1).end, 'and then it ends: closed and drained');
    assert.deepEqual(errors, []);
  });

  test('items given back return to their place in the queue: a later sentinel given back after earlier items stays behind them', async () => {
    const { frame } = quietBroker('q2');
    const producer = fakeLink(201);
    const a = fakeLink(202);
    const b = fakeLink(203);
    const got = (who, epoch) =>
      who.frames.filter((f) => f.op === 'items' && f.epoch === epoch).flatMap((f) => f.items);
    frame(producer, { op: 'put', items: [1, 2, 3, 4, 5, 6, null, null] });
    // b fetches the first three and, slow, hands none out; a fetches the rest, both sentinels too.
    frame(b, { op: 'want', n: 3, taken: 0, done: 0 });
    await flush();
    frame(a, { op: 'want', n: 5, taken: 0, done: 0 });
    await flush();
    assert.deepEqual(got(b, 0), [1, 2, 3]);
    assert.deepEqual(got(a, 0), [4, 5, 6, null, null]);
    // b gives back its three (a recall), then a, stopped at its sentinel, gives back the other one.
    frame(b, { op: 'return', taken: 0, done: 0, epoch: 1 });
    frame(a, { op: 'return', taken: 4, done: 0, epoch: 1 });
    frame(b, { op: 'want', n: 8, taken: 0, done: 0 });
    await flush();
    assert.deepEqual(got(b, 1), [1, 2, 3, null], 'the sentinel comes after the items that were before it');
  });

  test('a close ends consumers only once every producer has sealed: puts that resolved before it heard still arrive', async () => {
    const { broker, frame } = quietBroker('q3', { joinable: true });
    const producer = fakeLink(301);
    const consumer = fakeLink(302);
    // A worker's first put asks first (for no room: the queue is unbounded) and resolves on the answer.
    frame(producer, { op: 'credit', n: 0, tok: 1, nowait: false });
    assert.deepEqual(producer.frames.at(-1), { t: 'chan', op: 'credit', id: 'q3', n: 0, tok: 1 });
    frame(producer, { op: 'put', items: [1, 2] });
    frame(consumer, { op: 'want', n: 8, taken: 0, done: 0 });
    await flush();
    broker.close();
    await flush();
    assert.deepEqual(producer.frames.at(-1), { t: 'chan', op: 'closed', id: 'q3' });
    assert.ok(!consumer.frames.some((f) => f.end), 'ended while the producer may still have puts on the way');
    // Puts it made before it heard, then its answer: they reach the consumer, and only then the end.
    frame(producer, { op: 'put', items: [3, 4] });
    frame(consumer, { op: 'want', n: 8, taken: 2, done: 0 });
    await flush();
    assert.ok(!consumer.frames.some((f) => f.end));
    frame(producer, { op: 'sealed' });
    frame(consumer, { op: 'want', n: 8, taken: 4, done: 4 });
    await flush();
    const items = consumer.frames.filter((f) => f.op === 'items').flatMap((f) => f.items);
    assert.deepEqual(items, [1, 2, 3, 4]);
    assert.ok(consumer.frames.at(-1).end, 'then it ends');
    assert.equal(broker.unfinished, 0, 'join() counts the late items too, and they were done');
  });

  test('a producer whose first ask arrives after the close is refused, and what it sent meanwhile is dropped', async () => {
    const { broker, frame } = quietBroker('q4');
    const late = fakeLink(401);
    broker.close();
    frame(late, { op: 'credit', n: 0, tok: 1, nowait: false });
    frame(late, { op: 'put', items: ['x'] });
    assert.deepEqual(
      late.frames.map((f) => [f.op, f.closed]),
      [
        ['closed', undefined],
        ['credit', true],
      ],
    );
    assert.equal(broker.size, 0, 'its put was rejected where it was made: the item is not here either');
    // Local consumers end at once: no producer is owed an answer.
    const done = await Promise.race([broker.get(2, 1, Infinity), sleep(200).then(() => 'waited')]);
    assert.deepEqual(done, { value: undefined, done: true });
  });

  test('under maxsize a close waits only for producers that still hold room: one that spent it all is not waited for', async () => {
    const { broker, frame } = quietBroker('q5', { maxsize: 4 });
    const spent = fakeLink(501);
    const holding = fakeLink(502);
    frame(spent, { op: 'credit', n: 2, tok: 1, nowait: false });
    frame(spent, { op: 'put', items: [1, 2] }); // both credits back: nothing of it can be on its way
    frame(holding, { op: 'credit', n: 2, tok: 1, nowait: false }); // room it may be putting into
    const got = [];
    const drained = (async () => {
      for (;;) {
        const step = await broker.get(2, 1, Infinity);
        if (step.done) return;
        got.push(step.value);
      }
    })();
    await flush();
    broker.close();
    await flush();
    assert.deepEqual(got, [1, 2]);
    const early = await Promise.race([drained.then(() => 'ended'), sleep(50).then(() => 'waits')]);
    assert.equal(early, 'waits', 'the producer holding room may have puts on their way');
    frame(holding, { op: 'put', items: [3] });
    frame(holding, { op: 'sealed' });
    await drained;
    assert.deepEqual(got, [1, 2, 3]);
  });
});
