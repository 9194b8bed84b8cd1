/**
 * `corral worker --redis URL --queue NAME <module> [--workers N] [limit flags]`: serves a BullMQ
 * queue from this machine. One local pool under the same flags as `corral run` (pool-flags.ts), one
 * BullMQ worker forwarding jobs to it. SIGTERM (or Ctrl-C) drains: no new jobs, running ones finish
 * and answer. A second signal stops at once: running jobs are left to other hosts (their locks lapse).
 */
import { BackendUnavailableError, WorkerHost } from '../index.js';
import { type FlagSpec, formatHelp, parseFlags, parseIntFlag, UsageError } from './args.js';
import { poolFlags, poolOptionsFromFlags } from './pool-flags.js';
import { EXIT, handleSignals, SetupError, workerEnv } from './pool-setup.js';

function workerFlags(): FlagSpec[] {
  const g = 'Queue';
  return [
    {
      name: 'redis',
      type: 'string',
      value: 'URL',
      help: 'the Redis server, e.g. redis://127.0.0.1:6379',
      group: g,
    },
    { name: 'queue', type: 'string', value: 'NAME', help: 'the queue producers send to', group: g },
    {
      name: 'prefix',
      type: 'string',
      value: 'P',
      default: 'corral',
      help: 'prefix of the Redis keys',
      group: g,
    },
    {
      name: 'name',
      type: 'string',
      value: 'HOST',
      default: 'hostname:pid',
      help: "this host's name in errors",
      group: g,
    },
    {
      name: 'lock-duration',
      type: 'string',
      value: 'DUR',
      default: '10s',
      help: 'how long a job stays locked to this host without renewal: with --stalled-interval, how soon a dead host is noticed',
      group: g,
    },
    {
      name: 'stalled-interval',
      type: 'string',
      value: 'DUR',
      default: '5s',
      help: 'how often this host looks for jobs whose host was lost',
      group: g,
    },
    {
      name: 'stall-budget',
      type: 'string',
      value: 'N',
      default: '1',
      help: 'times a job may lose its host and run again before it fails with WorkerLostError',
      group: g,
    },
    {
      name: 'max-payload',
      type: 'string',
      value: 'SIZE',
      default: '16MiB',
      help: 'largest result of a job',
      group: g,
    },
    {
      name: 'module-version',
      type: 'string',
      value: 'V',
      default: 'a hash of the module file',
      help: 'refuse jobs built for another version of the module',
      group: g,
    },
    ...poolFlags(),
    { name: 'help', short: 'h', type: 'boolean', help: 'show this help' },
  ];
}

const ABOUT = `Serves a BullMQ queue on Redis from this machine: jobs sent by a Pool with
backend: { bullmq: { connection, queue } } (or by corral run --redis) run in a local pool under the
limits given here. Start one per machine. SIGTERM or Ctrl-C drains (running jobs finish); a second
signal stops at once and leaves running jobs to other hosts.`;

export function workerHelp(): string {
  return formatHelp('corral worker --redis URL --queue NAME <module> [options]', ABOUT, workerFlags());
}

export async function workerCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseFlags('worker', argv, workerFlags());
  if (v.help) {
    process.stdout.write(workerHelp());
    return EXIT.ok;
  }
  const str = (k: string) => v[k] as string | undefined;
  if (positionals.length !== 1) {
    throw new UsageError(
      `expected one <module>, got ${positionals.length}: corral worker --redis URL --queue NAME ./tasks.mjs`,
    );
  }
  const redis = str('redis');
  const queue = str('queue');
  if (!redis) throw new UsageError('missing --redis URL, e.g. --redis redis://127.0.0.1:6379');
  if (!queue) throw new UsageError('missing --queue NAME');
  const { poolOptions } = poolOptionsFromFlags(v, positionals[0]!);
  const bullmq: Record<string, unknown> = { connection: redis, queue };
  if (str('prefix') !== undefined) bullmq.prefix = str('prefix');
  if (str('lock-duration') !== undefined) bullmq.lockDuration = str('lock-duration');
  if (str('stalled-interval') !== undefined) bullmq.stalledInterval = str('stalled-interval');
  if (str('stall-budget') !== undefined)
    bullmq.stallBudget = parseIntFlag('stall-budget', str('stall-budget')!, 0);
  if (str('max-payload') !== undefined) bullmq.maxPayload = str('max-payload');
  if (str('module-version') !== undefined) bullmq.moduleVersion = str('module-version');

  let host: WorkerHost;
  try {
    host = await WorkerHost.start({
      bullmq: bullmq as never,
      pool: { ...poolOptions, env: workerEnv() },
      ...(str('name') !== undefined ? { name: str('name')! } : {}),
      events: {
        workerExit: (info) => {
          if (info.reason !== 'retired' && info.reason !== 'closed')
            process.stderr.write(`corral worker: local worker ${info.workerId} exited (${info.reason})\n`);
        },
      },
    });
  } catch (error) {
    const e = error as { code?: string; message?: string };
    if (
      error instanceof BackendUnavailableError ||
      e.code === 'ERR_INVALID_OPTION' ||
      e.code === 'ERR_DEPENDENCY_MISSING'
    ) {
      throw new SetupError(e.message ?? String(error));
    }
    throw error;
  }
  process.stderr.write(
    `corral worker: ${host.name} serves queue '${queue}' with ${host.slots} slots` +
      ` (module version ${host.version || 'unchecked'})\n`,
  );
  let signals = 0;
  const stopped = new Promise<void>((resolve) => {
    const off = handleSignals({
      onStop: () => {
        signals = 1;
        process.stderr.write('corral worker: draining (running jobs finish; a second signal stops now)\n');
        void host.drain().then(() => {
          off();
          resolve();
        });
      },
      onTerminate: () => {
        signals = 2;
        process.stderr.write('corral worker: stopping now; running jobs go to other hosts\n');
        void host.cancel().then(() => {
          off();
          resolve();
        });
      },
    });
  });
  await stopped;
  process.stderr.write(`corral worker: stopped after ${host.done} jobs\n`);
  // Cancelled: BullMQ's own close may still wait for the abandoned jobs; nothing of ours is left to finish.
  if (signals === 2) process.exit(EXIT.interrupted);
  return EXIT.ok;
}
