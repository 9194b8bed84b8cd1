/**
 * What the commands that drive a pool (`corral run`, `corral demo`) share: exit statuses, setup errors,
 * the --workers flag, making the pool (with errors that name the flag), Ctrl-C, and closing the pool.
 */

import { Pool, type PoolOptions } from '../index.js';
import { stdoutToStderr } from '../runtime/process.js';
import { parseIntFlag } from './args.js';
import type { CliPool, EngineState } from './engine.js';

/** Exit statuses: documented in --help. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

/** A problem with the setup rather than the items (module, export, pool options): exit status 2. */
export class SetupError extends Error {}

/** `--workers N|auto`; 'auto' when not given. */
export function workersValue(raw: string | undefined): number | 'auto' {
  return raw === undefined ? 'auto' : parseIntFlag('workers', raw, 1, true);
}

/** Flags whose values the pool validates, for messages that name the flag rather than the option. */
const OPTION_FLAGS: [RegExp, string][] = [
  [/^(options\.)?limits\.heap/, '--heap'],
  [/^(options\.)?limits\.rss/, '--rss'],
  [/^(options\.)?limits\.addressSpace/, '--address-space'],
  [/^(options\.)?limits\.data/, '--data'],
  [/^(options\.)?limits\.openFiles/, '--open-files'],
  [/^(options\.)?limits\.cpuTime/, '--cpu-time'],
  [/^(options\.)?limits/, 'the limit flags'],
  [/^(options\.)?memoryBudget/, '--memory-budget'],
  [/^(options\.)?taskTimeout/, '--timeout'],
  [/^(options\.)?workers/, '--workers'],
  [/^(options\.)?concurrency/, '--concurrency'],
  [/^(options\.)?retries/, '--retries'],
  [/^(options\.)?maxTasksPerWorker/, '--max-tasks-per-worker'],
  [/^(options\.)?runtime/, '--runtime'],
  [/^(options\.)?module/, '<module>'],
];

export function flagForOption(option: string | undefined): string | undefined {
  if (!option) return undefined;
  return OPTION_FLAGS.find(([re]) => re.test(option))?.[1];
}

/** Creates the pool, turning a refused option into a setup error that names the flag. */
export function createPool(options: Record<string, unknown>, describeFlag: (f: string) => string): CliPool {
  try {
    return new Pool(options as unknown as PoolOptions) as unknown as CliPool;
  } catch (error) {
    const e = error as { code?: string; option?: string; message?: string };
    if (e.code === 'ERR_INVALID_OPTION' || e.code === 'ERR_NATIVE_UNAVAILABLE') {
      const flag = flagForOption(e.option);
      if (flag === '<module>') {
        throw new SetupError(`cannot use the task module: ${(e.message ?? '').replace(/^module: /, '')}`);
      }
      const refused = flag ? `${describeFlag(flag)}: ` : '';
      const unsupported =
        /unknown option/.test(e.message ?? '') && /limits|memoryBudget/.test(e.option ?? '');
      throw new SetupError(
        `${refused}${e.message}${unsupported ? '\n  (this version of the corral library does not support that option yet)' : ''}`,
      );
    }
    throw error;
  }
}

/** The env of process workers: the preload that sends task stdout to stderr and ignores Ctrl-C. */
export function workerEnv(): NodeJS.ProcessEnv {
  stdoutToStderr();
  const preload = new URL('./worker-preload.js', import.meta.url).href;
  const existing = process.env.NODE_OPTIONS ? `${process.env.NODE_OPTIONS} ` : '';
  return { ...process.env, NODE_OPTIONS: `${existing}--import=${preload}` };
}

export interface SignalControl {
  /** First signal: stop taking input. */
  onStop(): void;
  /** Second signal: terminate now. */
  onTerminate(): void;
}

/** Listens for `signals` until the returned function is called. */
export function handleSignals(
  control: SignalControl,
  signals: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'],
): () => void {
  let count = 0;
  const handler = (): void => {
    count++;
    if (count === 1) control.onStop();
    else if (count === 2) control.onTerminate();
  };
  for (const signal of signals) process.on(signal, handler);
  return () => {
    for (const signal of signals) process.off(signal, handler);
  };
}

/** A terminated run (second Ctrl-C) ends its pool the same way; any other lets the workers finish and exit. */
export async function closePool(pool: CliPool, state: EngineState): Promise<void> {
  if (state.stopReason === 'terminated') await pool.terminate();
  else await pool.close();
}

/** Ended by Ctrl-C, once or twice. */
export function wasInterrupted(state: EngineState): boolean {
  return state.stopReason === 'interrupted' || state.stopReason === 'terminated';
}
