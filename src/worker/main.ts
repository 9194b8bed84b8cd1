/**
 * Entry point of every worker, thread or process: learns its set-up, guards and limits a process,
 * loads the task module and its initializer, then hands the units the pool sends to the Runner.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { FromWorker, ToWorker, WorkerInit } from '../runtime/protocol.js';
import { probeEveryUnit, toWireError } from '../runtime/protocol.js';
import { loadExtras, Runner, type ShmModule, type Task, type Transport } from './runner.js';

function transport(): Transport {
  if (!isMainThread && parentPort) {
    const port = parentPort;
    return {
      post: (m, transfer) => port.postMessage(m, transfer),
      listen: (h) => port.on('message', h),
      // A port's messages are the receiver's once posted.
      exit: () => process.exit(0),
    };
  }
  if (process.send) {
    const send = process.send.bind(process);
    return {
      post: (m) => {
        send(m);
      },
      listen: (h) => process.on('message', (m) => h(m as ToWorker)),
      // process.exit() drops what process.send has queued and not yet written (a teardown's last
      // queue puts were lost so): the link writes in order, so once `bye` is written all is.
      exit: () => {
        try {
          send({ t: 'bye' } satisfies FromWorker, undefined, {}, () => process.exit(0));
        } catch {
          process.exit(0); // the link is gone: nothing left to write
        }
      },
    };
  }
  throw new Error('corral worker entry was started neither as a worker thread nor as a forked child process');
}

async function loadTasks(moduleUrl: string): Promise<Map<string, Task>> {
  const mod = (await import(moduleUrl)) as Record<string, unknown>;
  const tasks = new Map<string, Task>();
  for (const [key, value] of Object.entries(mod))
    if (typeof value === 'function') tasks.set(key, value as Task);
  // A CommonJS module arrives as { default: module.exports }; its functions are the tasks too.
  const def = mod.default;
  if (def !== null && typeof def === 'object') {
    for (const [key, value] of Object.entries(def)) {
      if (typeof value === 'function' && !tasks.has(key)) tasks.set(key, value as Task);
    }
  }
  return tasks;
}

async function main(): Promise<void> {
  const io = transport();
  const init = await new Promise<WorkerInit>((resolve) => {
    if (!isMainThread) return resolve(workerData as WorkerInit);
    const onFirst = (m: unknown): void => {
      const msg = m as ToWorker;
      if (msg.t === 'init') {
        process.off('message', onFirst);
        resolve(msg.init);
      }
    };
    process.on('message', onFirst);
  });
  for (const [key, value] of Object.entries(init.envRestore ?? {})) {
    if (value === null) delete process.env[key];
    else process.env[key] = value;
  }
  // A child must not outlive the pool, even one that dies while this worker starts.
  if (isMainThread) (await import('./orphan.js')).guardAgainstOrphaning(init.parentPid);
  // Before the rlimits (loading the addon needs a descriptor and memory) and the task module
  // (which may fill the heap as it loads).
  if (init.heapGuardMb !== undefined)
    (await import('./limits.js')).armHeapGuard(init.heapGuardMb, init.heapGuardReport);
  const rssGuard =
    init.rssGuard !== undefined && isMainThread
      ? (await import('./limits.js')).armRssGuard(init.rssGuard, init.rssStopKey !== undefined)
      : false;
  const { rlimits, cpuTime } = init.limits;
  const limited = isMainThread && (rlimits.length > 0 || cpuTime !== undefined);
  // Loaded before the rlimits when there are any: under a descriptor or memory limit the task may
  // use up, a later import could fail (EMFILE) where the task cannot see it.
  const extras = probeEveryUnit(init.limits) || limited ? await loadExtras(io) : undefined;
  if (limited) {
    // Before the task module loads: no task starts unlimited.
    try {
      (await import('./limits.js')).applyRlimits(init.limits);
    } catch (error) {
      io.post({ t: 'fatal', phase: 'limits', error: toWireError(error) });
      return;
    }
  }

  let tasks: Map<string, Task>;
  try {
    tasks = await loadTasks(init.module);
  } catch (error) {
    io.post({ t: 'fatal', phase: 'load', error: toWireError(error) });
    return;
  }
  let teardown: Task | undefined;
  if (init.teardown !== undefined) {
    teardown = tasks.get(init.teardown);
    if (!teardown) {
      const error = new Error(
        `teardown '${init.teardown}' is not a function export of the task module; it exports: ${[...tasks.keys()].join(', ')}`,
      );
      io.post({ t: 'fatal', phase: 'teardown', error: toWireError(error) });
      return;
    }
  }
  if (init.initializer !== undefined) {
    try {
      const fn = tasks.get(init.initializer);
      if (!fn) {
        throw new Error(
          `initializer '${init.initializer}' is not a function export of the task module; it exports: ${[...tasks.keys()].join(', ')}`,
        );
      }
      await fn(...init.initArgs);
    } catch (error) {
      io.post({ t: 'fatal', phase: 'init', error: toWireError(error) });
      return;
    }
  }

  // A process worker's claim board lives in a shared segment the pool created for it.
  const segment = init.boardSegment;
  let board = init.board;
  let shm: ShmModule | undefined;
  if (segment) {
    shm = await import('../shm/shared-memory.js');
    const { internalSegment, SharedMemory } = shm;
    board = internalSegment(() => SharedMemory.attach(segment).buffer);
  }
  // Only the runner's calls: a breach in the initializer or teardown ends the process as before.
  const run =
    rssGuard === 'in-place'
      ? (await import('./limits.js')).stoppable(tasks, init.rssGuard!, init.rssStopKey!)
      : tasks;
  const runner = new Runner(init.workerId, run, init.concurrency, io, init.limits, board, extras, shm);
  if (init.captureOutput) runner.captureOutput();
  io.listen((msg) => {
    if (msg.t === 'run') runner.accept(msg.units);
    else if (msg.t === 'arena') runner.arena(msg.segment);
    else if (msg.t === 'chan') runner.channel(msg);
    else if (msg.t === 'cancel') runner.cancel(msg.seq, msg.why);
    else if (msg.t === 'credit') runner.credit(msg.seq, msg.n);
    else if (msg.t === 'stop') void runner.stop(teardown);
  });
  io.post({
    t: 'ready',
    exports: [...tasks.keys()],
    heap: process.memoryUsage().heapUsed,
    ...(rssGuard === 'in-place' ? { rssInPlace: true } : {}),
  });
}

void main();
