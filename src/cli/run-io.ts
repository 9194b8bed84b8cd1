/**
 * Where `corral run` reads items and writes results: input lines to items, the --output and --errors files,
 * and keeping task output off stdout so that stdout holds results only.
 */
import { createWriteStream, openSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { UsageError } from './args.js';
import type { SourceItem } from './engine.js';
import { type LineSource, LineTooLong } from './io.js';
import type { RunConfig } from './run-args.js';

/** Lines to items: JSON parsing (or raw strings with --lines); blank lines are skipped in JSON mode. */
export async function* itemsFromLines(source: LineSource, raw: boolean): AsyncGenerator<SourceItem[]> {
  let index = 0;
  for await (const lines of source.batches()) {
    const items: SourceItem[] = [];
    for (const line of lines) {
      const i = index++;
      if (line instanceof LineTooLong) {
        items.push({
          index: i,
          raw: `${line.head}...`,
          error: {
            code: 'ERR_INPUT_TOO_LONG',
            message: `input line ${i + 1} is longer than the ${line.limit.toLocaleString('en-US')} characters a JavaScript string can hold (${line.length.toLocaleString('en-US')} characters); split the item, or pass a file path and read the file in the task`,
          },
        });
        continue;
      }
      if (raw) {
        items.push({ index: i, value: line });
        continue;
      }
      if (line.trim() === '') continue;
      try {
        items.push({ index: i, value: JSON.parse(line) });
      } catch (error) {
        items.push({
          index: i,
          raw: line,
          error: {
            code: 'ERR_INPUT_JSON',
            message: `input line ${i + 1} is not valid JSON (${(error as Error).message}); use --lines to pass raw text`,
          },
        });
      }
    }
    if (items.length > 0) yield items;
  }
}

export interface RunOutput {
  stream: NodeJS.WritableStream & Writable;
  /** true for an --output file, which is ours to close; false for stdout. */
  owned: boolean;
}

/** Opens --output and tries --errors; a path that cannot be written is a usage error (the source is closed). */
export function openOutputs(config: RunConfig, source: LineSource): RunOutput {
  let stream: RunOutput['stream'];
  let owned = false;
  if (config.output !== undefined && config.output !== '-') {
    let fd: number;
    try {
      fd = openSync(config.output, 'w');
    } catch (error) {
      source.close();
      throw new UsageError(`cannot write --output ${config.output}: ${(error as Error).message}`);
    }
    stream = createWriteStream('', { fd });
    owned = true;
  } else stream = process.stdout;
  if (config.errors) {
    try {
      openSync(config.errors, 'w');
    } catch (error) {
      source.close();
      throw new UsageError(`cannot write --errors ${config.errors}: ${(error as Error).message}`);
    }
  }
  return { stream, owned };
}

export interface DivertedStdout {
  write: (chunk: string, cb: (e?: Error | null) => void) => boolean;
  restore(): void;
}

/** Sends writes to process.stdout (task output of worker threads lands there) to stderr; returns the real write. */
export function divertStdout(): DivertedStdout {
  const stdout = process.stdout;
  const real = stdout.write.bind(stdout) as (chunk: string, cb: (e?: Error | null) => void) => boolean;
  const own = Object.getOwnPropertyDescriptor(stdout, 'write');
  stdout.write = ((...args: Parameters<typeof process.stderr.write>) =>
    process.stderr.write(...args)) as typeof process.stdout.write;
  return {
    write: real,
    restore() {
      if (own) Object.defineProperty(stdout, 'write', own);
      else delete (stdout as { write?: unknown }).write;
    },
  };
}
