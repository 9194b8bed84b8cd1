// Queue, JoinableQueue and Pipe within one thread: the contract (FIFO, back pressure, timeouts,
// close, bad items, options) without workers. The same behaviours across workers are in
// channel-workers.test.mjs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ConfigError,
  JoinableQueue,
  Pipe,
  Queue,
  QueueClosedError,
  QueueEmptyError,
  QueueFullError,
  SerializationError,
} from '../dist/src/index.js';

const settledWithin = (promise, ms) =>
  Promise.race([promise.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);

describe('Queue in one thread', () => {
  test('FIFO, put/get, putMany/getMany, size', async () => {
    const q = new Queue();
    await q.put(1);
    await q.putMany([2, 3, 4]);
    assert.equal(q.size, 4);
    assert.equal(await q.get(), 1);
    assert.deepEqual(await q.getMany(2), [2, 3]);
    assert.deepEqual(await q.getMany(10), [4], 'getMany returns what is there, at least one');
    assert.equal(q.size, 0);
  });

  test('get waits for a put', async () => {
    const q = new Queue();
    const got = q.get();
    assert.equal(await settledWithin(got, 30), false);
    await q.put('x');
    assert.equal(await got, 'x');
  });

  test('maxsize: put waits while full, { wait: false } and timeout reject with QueueFullError', async () => {
    const q = new Queue({ maxsize: 2 });
    await q.put(1);
    await q.put(2);
    await assert.rejects(
      q.put(3, { wait: false }),
      (e) => e instanceof QueueFullError && e.code === 'ERR_QUEUE_FULL',
    );
    const t = performance.now();
    await assert.rejects(q.put(3, { timeout: 50 }), QueueFullError);
    assert.ok(performance.now() - t >= 45);
    const waiting = q.put(3);
    assert.equal(await settledWithin(waiting, 30), false, 'put waits while the queue is full');
    assert.equal(await q.get(), 1);
    await waiting;
    assert.deepEqual(await q.getMany(5), [2, 3]);
  });

  test('get timeout and { wait: false } reject with QueueEmptyError', async () => {
    const q = new Queue();
    await assert.rejects(
      q.get({ wait: false }),
      (e) => e instanceof QueueEmptyError && e.code === 'ERR_QUEUE_EMPTY',
    );
    const t = performance.now();
    await assert.rejects(q.get({ timeout: '40ms' }), (e) => e instanceof QueueEmptyError && e.waited === 40);
    assert.ok(performance.now() - t >= 35);
    await q.put(5);
    assert.equal(await q.get({ wait: false }), 5);
  });

  test('close: puts rejected (waiting ones too), the rest drained, then iteration ends', async () => {
    const q = new Queue({ maxsize: 2 });
    await q.putMany(['a', 'b']);
    const blocked = q.put('c');
    q.close();
    assert.equal(q.closed, true);
    await assert.rejects(blocked, (e) => e instanceof QueueClosedError && e.code === 'ERR_QUEUE_CLOSED');
    await assert.rejects(q.put('d'), QueueClosedError);
    const seen = [];
    for await (const x of q) seen.push(x);
    assert.deepEqual(seen, ['a', 'b']);
    await assert.rejects(q.get(), QueueClosedError);
  });

  test('close wakes a waiting get and ends a waiting iteration', async () => {
    const q = new Queue();
    const get = q.get();
    const it = q[Symbol.asyncIterator]().next();
    q.close();
    await assert.rejects(get, QueueClosedError);
    assert.deepEqual(await it, { value: undefined, done: true });
  });

  test('an item that cannot be cloned rejects its put with SerializationError; the queue goes on', async () => {
    const q = new Queue();
    await q.put(1);
    for (const bad of [
      () => 1,
      { f() {} },
      [1, { deep: Symbol('s') }],
      new (class Sock {
        fn = () => 0;
      })(),
    ]) {
      await assert.rejects(
        q.put(bad),
        (e) => e instanceof SerializationError && e.code === 'ERR_SERIALIZATION' && e.direction === 'item',
      );
    }
    await assert.rejects(q.putMany([2, () => 3]), SerializationError);
    await q.put(4);
    assert.deepEqual(await q.getMany(10), [1, 4], 'putMany checks every item before putting any');
    // Values structured clone accepts go through: Map, Set, Date, typed arrays, class instances (as data).
    const rich = {
      m: new Map([[1, 'a']]),
      s: new Set([2]),
      d: new Date(0),
      b: new Uint8Array([1, 2]),
      e: new Error('x'),
    };
    await q.put(rich);
    assert.equal(await q.get(), rich);
  });

  test('a queue cannot travel inside an item', async () => {
    const q = new Queue();
    await assert.rejects(q.put({ inner: new Queue() }), /cannot travel inside a queue item/);
  });

  test('options are validated', () => {
    assert.throws(() => new Queue({ maxsize: -1 }), ConfigError);
    assert.throws(() => new Queue({ maxsize: 1.5 }), ConfigError);
    assert.throws(() => new Queue({ batch: { size: 0 } }), ConfigError);
    assert.throws(() => new Queue({ batch: { delay: 'soon' } }), ConfigError);
    assert.throws(() => new Queue({ batch: { sise: 3 } }), /batch.sise/);
    assert.throws(() => new Queue({ maxsise: 3 }), /maxsise/);
    assert.equal(new Queue({ maxsize: 0 }).maxsize, Infinity);
    assert.equal(new Queue({ batch: false }).maxsize, Infinity);
    return Promise.all([
      assert.rejects(new Queue().get({ timeout: 'x' }), ConfigError),
      assert.rejects(new Queue().getMany(0), ConfigError),
      assert.rejects(new Queue().put(1, { wiat: false }), ConfigError),
    ]);
  });
});

describe('JoinableQueue in one thread', () => {
  test('join waits for every item to be marked done', async () => {
    const q = new JoinableQueue();
    await q.putMany([1, 2, 3]);
    const joined = q.join();
    assert.equal(await settledWithin(joined, 20), false);
    await q.getMany(3);
    q.taskDone(2);
    assert.equal(await settledWithin(joined, 20), false);
    q.taskDone();
    await joined;
    assert.throws(() => q.taskDone(), ConfigError, 'more taskDone() than items got');
    await q.join();
  });
});

describe('Pipe in one thread', () => {
  test('duplex ends: send/recv both ways, close ends the other side after draining', async () => {
    const [a, b] = Pipe();
    await a.send('ping');
    assert.equal(await b.recv(), 'ping');
    await b.send({ pong: 1 });
    assert.deepEqual(await a.recv(), { pong: 1 });
    await a.send(1);
    await a.send(2);
    a.close();
    const seen = [];
    for await (const x of b) seen.push(x);
    assert.deepEqual(seen, [1, 2]);
    await assert.rejects(b.send(3), QueueClosedError);
    await assert.rejects(b.recv(), QueueClosedError);
  });

  test('Pipe({ duplex: false }) gives [receiver, sender]', async () => {
    const [r, w] = Pipe({ duplex: false });
    assert.equal(r.writable, false);
    assert.equal(w.readable, false);
    await w.send('x');
    assert.equal(await r.recv(), 'x');
    await assert.rejects(r.send('y'), QueueClosedError);
    await assert.rejects(w.recv(), QueueClosedError);
  });
});
