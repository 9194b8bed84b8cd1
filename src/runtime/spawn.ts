/** Starts corral's worker entry under either runtime: the one place that knows both. */
import { readFileSync, statSync } from 'node:fs';
import { spawnProcess } from './process.js';
import type { WorkerInit } from './protocol.js';
import { spawnThread } from './thread.js';
import type { RuntimeEvents, RuntimeKind, RuntimeWorker } from './types.js';

/**
 * Where workers start: the entry bundled into one module (scripts/bundle-worker.mjs, part of `npm run
 * build`), with which a fresh worker starts ~6 ms sooner than from worker/main.js and the eight modules
 * it imports. Without the bundle (a build by tsc alone), or with one older than any module it was made
 * from (a `tsc --watch` rebuilt that module since), from main.js: the same code, never stale code.
 */
function workerEntry(): URL {
  const main = new URL('../worker/main.js', import.meta.url);
  const bundle = new URL('../worker/entry.js', import.meta.url);
  try {
    const inputs = JSON.parse(readFileSync(new URL('../worker/entry.inputs.json', import.meta.url), 'utf8'));
    const built = statSync(bundle).mtimeMs;
    for (const input of inputs as string[]) if (statSync(new URL(input, bundle)).mtimeMs > built) return main;
    return bundle;
  } catch {
    return main;
  }
}

const WORKER_ENTRY = workerEntry();

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
  // A task may post on its worker's port, or process.send, itself: only corral's frames (objects with
  // a string `t`) go on to the pool or Process; anything else is ignored here, for both.
  const message = events.message;
  const frames: RuntimeEvents = {
    ...events,
    message: (m) => {
      if (m !== null && typeof m === 'object' && typeof (m as { t?: unknown }).t === 'string') message(m);
    },
  };
  return spawn({ entry: WORKER_ENTRY, init, execArgv, env, heapMb }, frames);
}
