// Compile-time tests: `tsc` fails if the typed API accepts what it should refuse (@ts-expect-error
// lines that are no longer errors fail the build too).
import { Pool } from '../../src/index.js';

type Tasks = {
  square(x: number): number;
  add(a: number, b: number): number;
  greet(name: string): Promise<string>;
  VERSION: string;
};

export async function typedPool(): Promise<void> {
  const pool = new Pool<Tasks>({
    module: new URL('../fixtures/tasks.mjs', import.meta.url),
    initializer: 'square',
  });
  const n: number = await pool.apply('square', [3]);
  const s: string = await pool.apply('greet', ['x']);
  const squares: number[] = await pool.map('square', [1, 2, 3]);
  const sums: number[] = await pool.starmap('add', [
    [1, 2],
    [3, 4],
  ]);
  for await (const r of pool.imapUnordered('square', [1, 2])) {
    const x: number = r;
    void x;
  }
  const viaProxy: number = await pool.proxy().add(1, 2);
  // @ts-expect-error unknown task name
  await pool.apply('cube', [3]);
  // @ts-expect-error wrong argument type
  await pool.apply('square', ['3']);
  // @ts-expect-error wrong number of arguments
  await pool.apply('add', [1]);
  // @ts-expect-error not a function export
  await pool.apply('VERSION', []);
  // @ts-expect-error result is a number, not a string
  const wrong: string = await pool.apply('square', [3]);
  // @ts-expect-error map items are the first parameter
  await pool.map('square', ['a']);
  // @ts-expect-error initializer must be a task name
  new Pool<Tasks>({ module: 'x.mjs', initializer: 'nope' });
  // map and imap pass one item per call: a two-argument task is starmap's (it returned [NaN, NaN])
  // @ts-expect-error add takes two arguments
  await pool.map('add', [1, 2]);
  // @ts-expect-error add takes two arguments
  pool.imap('add', [1, 2]);
  // @ts-expect-error add takes two arguments
  pool.imapUnordered('add', [1, 2]);
  // Durations are a number of ms (Infinity: none) or a number with a unit
  await pool.apply('square', [3], { timeout: '30s' });
  await pool.map('square', [3], { timeout: 1500 });
  await pool.map('square', [3], { timeout: Infinity });
  new Pool<Tasks>({ module: 'x.mjs', taskTimeout: '2.5m', idleTimeout: '500ms' });
  // @ts-expect-error not a duration
  await pool.apply('square', [3], { timeout: 'soon' });
  // @ts-expect-error a unit is needed after the number, and only ms, s, m or h
  new Pool<Tasks>({ module: 'x.mjs', taskTimeout: '30 sec' });
  // An untyped pool takes any task name and any items
  const untyped = new Pool({ module: 'x.mjs' });
  const anything: unknown[] = await untyped.map('whatever', [1, 'two']);
  const one: unknown = await untyped.apply('whatever', [1, 2]);
  void [anything, one];
  void [n, s, squares, sums, viaProxy, wrong];
  await pool.close();
}
