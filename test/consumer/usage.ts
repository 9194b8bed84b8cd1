// A TypeScript consumer of the installed package (module NodeNext, strict, no `types` setting):
// scripts/check-package.mjs compiles it with TypeScript 5.x and 7.x. The good calls must compile
// and every @ts-expect-error line must be an error, or the compile fails.
import { type Duration, MemoryLimitError, Pool, SharedMemory, systemInfo } from 'corral';
import { context } from 'corral/task';

type Tasks = {
  square(x: number): number;
  add(a: number, b: number): number;
  greet(name: string, punctuation?: string): Promise<string>;
};

export async function good(): Promise<void> {
  await using pool = new Pool<Tasks>({
    module: new URL('./tasks.mjs', import.meta.url),
    runtime: 'process',
    taskTimeout: '30s',
    idleTimeout: Infinity,
    limits: { heap: '256MiB', openFiles: 256 },
  });
  const n: number = await pool.apply('square', [3]);
  const squares: number[] = await pool.map('square', [1, 2, 3], { timeout: 500, chunksize: 'auto' });
  const sums: number[] = await pool.starmap('add', [[1, 2]]);
  const hello: string[] = await pool.map('greet', ['a', 'b']);
  for await (const x of pool.imap('square', [1, 2])) void (x satisfies number);
  for await (const x of pool.imapUnordered('square', [1, 2], { timeout: '2m' })) void (x satisfies number);
  const d: Duration = '250ms';
  using shm = SharedMemory.create({ size: 1024 });
  const view: Float64Array = shm.view(Float64Array);
  const error: unknown = new Error();
  if (error instanceof MemoryLimitError) void error.kind;
  void [n, squares, sums, hello, d, view, systemInfo().native.available];
}

/** A task that reads its own context (corral/task): its signal cancels the work on timeout. */
export async function crawl(url: string): Promise<number> {
  const { signal, attempt } = context();
  const res = await fetch(url, { signal });
  return (await res.text()).length + attempt;
}

export async function bad(pool: Pool<Tasks>): Promise<void> {
  // @ts-expect-error add takes two arguments: map would call add(item) and return NaN; use starmap
  await pool.map('add', [1, 2]);
  // @ts-expect-error the same for imap
  pool.imap('add', [1, 2]);
  // @ts-expect-error and imapUnordered
  pool.imapUnordered('add', [1, 2]);
  // @ts-expect-error not a duration
  await pool.apply('square', [3], { timeout: 'soon' });
  // @ts-expect-error not a duration either
  new Pool<Tasks>({ module: 'x.mjs', taskTimeout: '5 minutes' });
  // @ts-expect-error wrong item type
  await pool.map('square', ['3']);
  // @ts-expect-error unknown task
  await pool.apply('cube', [3]);
}
