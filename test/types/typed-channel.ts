// Compile-time tests for channels and Process: item types flow through put/get/iteration, and a
// typed Process checks its function name and arguments.
import { JoinableQueue, Pipe, Process, Queue } from '../../src/index.js';

type Tasks = {
  producer(q: Queue<number>, n: number): Promise<void>;
  consumer(q: Queue<number>): Promise<number>;
};

export async function typedChannels(): Promise<void> {
  const q = new Queue<number>({ maxsize: 10, batch: { size: 256, delay: '2ms' } });
  await q.put(1);
  // @ts-expect-error items are numbers
  await q.put('one');
  const x: number = await q.get({ timeout: '1s' });
  const xs: number[] = await q.getMany(10);
  for await (const y of q) {
    const z: number = y;
    void z;
  }
  const jq = new JoinableQueue<string>();
  jq.taskDone();
  await jq.join();
  const [a, b] = Pipe<{ id: number }>();
  await a.send({ id: 1 });
  const got: { id: number } = await b.recv();
  const p = new Process<Tasks, 'consumer'>({
    module: new URL('./x.js', import.meta.url),
    fn: 'consumer',
    args: [q],
  });
  const count: number = await p.start().join();
  // @ts-expect-error unknown function
  new Process<Tasks>({ module: 'x.js', fn: 'nope' });
  void [x, xs, got, count];
}
