/** corral's public face: re-exports only. */
export * from './errors.js';
export { type CpuInfo, cpuCount, type MemoryInfo, probeCpus, probeMemory } from './limits/system.js';
export type {
  AnyModule,
  CallOptions,
  MapOptions,
  PoolOptions,
  TaskArgs,
  TaskItem,
  TaskNames,
  TaskResult,
} from './pool/config.js';
export { Pool, type PoolEvents, type PoolProxy } from './pool/pool.js';
export type { MemoryStats, PoolStats, WorkerStats } from './pool/stats.js';
export type { WorkerState } from './pool/worker.js';
