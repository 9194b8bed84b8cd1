// Compile-time tests of the task side (corral/task) and of what issue 13 added to the pool's types:
// progress/emit take only what can be cloned, stream() yields the generator's item type and takes only
// generator exports, broadcast() gives one typed outcome per worker.
import { Pool } from '../../src/index.js';
import { context } from '../../src/task.js';

type Tasks = {
  rows(path: string): AsyncGenerator<{ id: number }, void, unknown>;
  letters(s: string): Generator<string>;
  square(x: number): number;
};

export function reports(): void {
  const ctx = context();
  ctx.progress(0.5);
  ctx.progress({ done: 3, of: [1, 2], when: new Date(), bytes: new Uint8Array(2), tags: new Set(['a']) });
  ctx.emit('phase', 'load');
  ctx.emit('nothing');
  // @ts-expect-error a function cannot be cloned
  ctx.progress(() => 1);
  // @ts-expect-error nor can an object holding one
  ctx.emit('x', { callback: () => 1 });
  // @ts-expect-error nor a symbol
  ctx.progress(Symbol('s'));
  const { signal, attempt, workerId } = ctx;
  void [signal.aborted, attempt + 1, workerId + 1];
}

export async function streams(pool: Pool<Tasks>): Promise<void> {
  for await (const row of pool.stream('rows', ['f.jsonl'], { window: 16 })) {
    const id: number = row.id;
    void id;
  }
  for await (const c of pool.stream('letters', ['abc'])) {
    const s: string = c;
    void s;
  }
  // @ts-expect-error square is not a generator
  pool.stream('square', [2]);
  // @ts-expect-error rows takes a path
  pool.stream('rows', [1]);
  const outcomes = await pool.broadcast('square', [2]);
  for (const o of outcomes) {
    if (o.status === 'fulfilled') {
      const n: number = o.value;
      void n;
    } else void o.reason.message;
  }
  await pool.apply('square', [2], { priority: 3, key: 'me', onProgress: (p, i) => void [p, i] });
  // @ts-expect-error a key is a string or a number
  await pool.apply('square', [2], { key: {} });
  new Pool<Tasks>({ module: 'x.mjs', workers: { min: 1, max: 'auto' }, teardown: 'square', poisonAfter: 3 });
  // @ts-expect-error teardown names an export
  new Pool<Tasks>({ module: 'x.mjs', teardown: 'nope' });
}
