/** corral's public face: re-exports only. */
// The declarations use Node's types (NodeJS.ProcessEnv, node:fs handles, Disposable). `preserve`
// keeps this line in index.d.ts, so a consumer's compiler loads @types/node (a dependency of
// corral) whatever its own `types` setting: TypeScript 6+ no longer includes @types by default.
/// <reference types="node" preserve="true" />

export { WorkerHost, type WorkerHostOptions } from './backend/bullmq/host.js';
export type { BullmqOptions, RedisConnection } from './backend/bullmq/options.js';
export * from './channel/index.js';
export * from './errors.js';
export { type RlimitInfo, type SystemInfo, systemInfo } from './limits/info.js';
export type { LimitsOptions, RecycleOptions } from './limits/limits.js';
export {
  openFile,
  openFileSync,
  type ScopedDir,
  type ScopedFd,
  type ScopedFileHandle,
  scoped,
  tempDir,
} from './limits/scoped.js';
export { type CpuInfo, cpuCount, type MemoryInfo, probeCpus, probeMemory } from './limits/system.js';
export {
  type MetricsFormat,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
} from './metrics/exposition.js';
export type { HistogramSnapshot } from './metrics/histogram.js';
export type { UnitOutcome, UnitRecord } from './metrics/meter.js';
export type { DashboardOptions, DashboardServer } from './observe/dashboard.js';
export type { ObserveServer, ServeOptions } from './observe/serve.js';
export type {
  AnyModule,
  CallOptions,
  Duration,
  MapOptions,
  MapTaskNames,
  PoolOptions,
  StreamNames,
  StreamOptions,
  TaskArgs,
  TaskItem,
  TaskNames,
  TaskResult,
  TaskYield,
} from './pool/config.js';
export type { PoolState } from './pool/lifecycle.js';
export type { MetricsSample, PoolMetrics, TaskMetrics, WorkerMetrics } from './pool/metrics.js';
export {
  type BroadcastOutcome,
  Pool,
  type PoolEvents,
  type PoolProxy,
  type WithUsage,
} from './pool/pool.js';
export type { MemoryStats, PoolStats, WorkerStats } from './pool/stats.js';
export type { WorkerState } from './pool/worker.js';
export type { TaskUsage } from './runtime/protocol.js';
export {
  type AttachOptions,
  type CreateOptions,
  type FromOptions,
  SharedMemory,
  type ShmStatus,
  shmStatus,
  type ViewConstructor,
} from './shm/index.js';
export type { Cloneable, TaskContext } from './task.js';
