/** Channels between the main thread and workers (Queue, JoinableQueue, Pipe) and Process, which runs their producers and consumers. */

export { Process, type ProcessEvents, type ProcessOptions } from '../pool/process.js';
export type { ConsumerLost, WorkerInfo } from './broker.js';
export type { QueueOptions } from './check.js';
export { Connection, Pipe, type PipeOptions } from './pipe.js';
export { JoinableQueue, Queue, type QueueEvents, type WaitOptions } from './queue.js';
