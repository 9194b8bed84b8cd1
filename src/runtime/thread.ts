import { Worker } from 'node:worker_threads';
import type { RuntimeEvents, RuntimeWorker, SpawnSpec } from './types.js';

export function spawnThread(spec: SpawnSpec, events: RuntimeEvents): RuntimeWorker {
  const worker = new Worker(spec.entry, {
    workerData: spec.init,
    execArgv: spec.execArgv,
    env: spec.env ?? process.env,
    resourceLimits: spec.heapMb !== undefined ? { maxOldGenerationSizeMb: spec.heapMb } : {},
    // The task module may call process.exit(); in a thread that ends the thread, not the pool.
  });
  let death: Error | undefined;
  worker.on('message', events.message);
  worker.on('error', (error) => {
    death = error;
  });
  worker.on('exit', (exitCode) => {
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
