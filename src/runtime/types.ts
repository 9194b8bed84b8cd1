import type { FromWorker, ToWorker, WorkerInit } from './protocol.js';

/** How a worker ended, as seen from the pool, after every message it sent has been delivered. */
export interface RuntimeExit {
  exitCode: number | null;
  signal: string | null;
  /** The error a thread died of, or the tail of a process's stderr. */
  detail: string | undefined;
  /** Node's code for the death when it gives one, e.g. ERR_WORKER_OUT_OF_MEMORY. */
  code: string | undefined;
}

export interface SpawnSpec {
  entry: URL;
  init: WorkerInit;
  execArgv: string[];
  env: NodeJS.ProcessEnv | undefined;
  /** V8 heap limit in MiB (threads: resourceLimits; processes: --max-old-space-size). */
  heapMb: number | undefined;
}

/** One worker, thread or process; the pool sees nothing else of the runtime. */
export interface RuntimeWorker {
  readonly pid: number | undefined;
  readonly threadId: number | undefined;
  /** Throws synchronously when the message cannot be serialised. */
  send(message: ToWorker): void;
  /** Stops the worker now. onExit still fires, once. */
  kill(): void;
}

export interface RuntimeEvents {
  message(message: FromWorker): void;
  exit(exit: RuntimeExit): void;
}

export type RuntimeKind = 'thread' | 'process';
