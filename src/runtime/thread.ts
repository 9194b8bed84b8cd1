import { Worker } from 'node:worker_threads';
import { HEAP_GUARD_REPORT_BYTES, heapGuardLine, readHeapGuardReport } from '../limits/heap-guard.js';
import { heapGuardNative } from '../native/index.js';
import type { RuntimeEvents, RuntimeWorker, SpawnSpec } from './types.js';

export function spawnThread(spec: SpawnSpec, events: RuntimeEvents): RuntimeWorker {
  // The heap guard (native/heap.cc) ends the thread soon after its heap fills and says so here;
  // Node's own ERR_WORKER_OUT_OF_MEMORY comes as late as V8 gives up. Loading the addon here
  // also keeps it mapped while threads use it.
  const report =
    spec.heapMb !== undefined && heapGuardNative()
      ? new SharedArrayBuffer(HEAP_GUARD_REPORT_BYTES)
      : undefined;
  const worker = new Worker(spec.entry, {
    workerData: report ? { ...spec.init, heapGuardMb: spec.heapMb, heapGuardReport: report } : spec.init,
    execArgv: spec.execArgv,
    // A key set to undefined is left out, as fork() leaves it out of a process worker's environment
    // (Worker would give the thread the string "undefined").
    env: spec.env
      ? Object.fromEntries(Object.entries(spec.env).filter(([, v]) => v !== undefined))
      : process.env,
    resourceLimits: spec.heapMb !== undefined ? { maxOldGenerationSizeMb: spec.heapMb } : {},
    // The task module may call process.exit(); in a thread that ends the thread, not the pool.
  });
  let death: Error | undefined;
  worker.on('message', events.message);
  worker.on('error', (error) => {
    death = error;
  });
  worker.on('exit', (exitCode) => {
    const guard = report && readHeapGuardReport(report);
    if (guard) {
      // The same breach Node reports as ERR_WORKER_OUT_OF_MEMORY, only sooner.
      events.exit({ exitCode, signal: null, detail: heapGuardLine(guard), code: 'ERR_WORKER_OUT_OF_MEMORY' });
      return;
    }
    const code = (death as { code?: unknown } | undefined)?.code;
    events.exit({
      exitCode,
      signal: null,
      detail: death ? `${death.name}: ${death.message}` : undefined,
      code: typeof code === 'string' ? code : undefined,
    });
  });
  return {
    pid: undefined,
    threadId: worker.threadId,
    send: (message) => worker.postMessage(message),
    kill: () => {
      void worker.terminate();
    },
  };
}
