/** Starts corral's worker entry under either runtime: the one place that knows both. */
import { spawnProcess } from './process.js';
import type { WorkerInit } from './protocol.js';
import { spawnThread } from './thread.js';
import type { RuntimeEvents, RuntimeKind, RuntimeWorker } from './types.js';

const WORKER_ENTRY = new URL('../worker/main.js', import.meta.url);

export interface StartOptions {
  runtime: RuntimeKind;
  execArgv: string[];
  env: NodeJS.ProcessEnv | undefined;
  /** V8 heap limit in MiB (threads: resourceLimits; processes: --max-old-space-size). */
  heapMb: number | undefined;
}

export function startWorker(options: StartOptions, init: WorkerInit, events: RuntimeEvents): RuntimeWorker {
  const { runtime, execArgv, env, heapMb } = options;
  const spawn = runtime === 'thread' ? spawnThread : spawnProcess;
  return spawn({ entry: WORKER_ENTRY, init, execArgv, env, heapMb }, events);
}
