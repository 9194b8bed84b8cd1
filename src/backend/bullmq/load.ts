/**
 * bullmq and ioredis are optional peer dependencies: loaded here, on first use, so users who never
 * use the distributed backend never load them, and those who do without installing them get an error
 * naming the package.
 */
import { DependencyMissingError } from '../../errors.js';
import type { RedisConnection } from './options.js';

type BullmqModule = typeof import('bullmq');
type IORedisModule = { Redis: typeof import('ioredis').Redis };
export type Redis = import('ioredis').Redis;

let bullmq: Promise<BullmqModule> | undefined;
let ioredis: Promise<IORedisModule> | undefined;

async function load<T>(name: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new DependencyMissingError(name, 'the BullMQ backend (backend: { bullmq }) and corral worker', {
        cause: error,
      });
    }
    throw error;
  }
}

export function loadBullmq(): Promise<BullmqModule> {
  const loaded = (bullmq ??= load('bullmq', () => import('bullmq')));
  return loaded;
}

export function loadIORedis(): Promise<IORedisModule> {
  const loaded = (ioredis ??= load('ioredis', async () => ({ Redis: (await import('ioredis')).Redis })));
  return loaded;
}

/**
 * A new connection. BullMQ needs maxRetriesPerRequest null (its blocking commands wait across
 * reconnects); lazyConnect so the caller sees the first connection fail.
 */
export async function connect(connection: RedisConnection, connectTimeout: number): Promise<Redis> {
  const { Redis } = await loadIORedis();
  const options = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    lazyConnect: true,
    connectTimeout,
    retryStrategy: (times: number) => Math.min(50 * 2 ** times, 1000),
  };
  return typeof connection === 'string'
    ? new Redis(connection, options)
    : new Redis({ ...connection, ...options });
}
