// The classic producer/consumer: one producer Process, one consumer Process, a bounded batched
// queue between them and a sentinel to stop.   node examples/producer-consumer.mjs [thread|process] [items]
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import { Process, Queue } from 'corral';

export async function producer(queue, n) {
  for (let i = 0; i < n; i++) await queue.put({ id: i, square: i * i });
  await queue.put(null); // the sentinel
}

export async function consumer(queue) {
  let count = 0;
  for (let item = await queue.get(); item !== null; item = await queue.get()) count++;
  return count;
}

// This file is also the workers' task module: only the program itself runs what follows.
if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  const [runtime = 'thread', n = '1000000'] = process.argv.slice(2);
  const module = new URL(import.meta.url);
  const queue = new Queue({ maxsize: 10_000, batch: { size: 256, delay: '2ms' } });
  const start = performance.now();
  const producing = new Process({ module, fn: 'producer', args: [queue, Number(n)], runtime }).start();
  const consuming = new Process({ module, fn: 'consumer', args: [queue], runtime }).start();
  const [, count] = await Promise.all([producing.join(), consuming.join()]);
  const seconds = (performance.now() - start) / 1000;
  console.log(
    `${runtime}: ${count} items in ${seconds.toFixed(2)} s, ${Math.round(count / seconds)} items/s`,
  );
}
