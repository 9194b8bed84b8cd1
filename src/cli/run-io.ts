/**
 * Where `corral run` reads items and writes results: input lines to items, the --output and --errors files,
 * and keeping task output off stdout so that stdout holds results only.
 */
import fs, {
  closeSync,
  createWriteStream,
  fstatSync,
  ftruncateSync,
  openSync,
  statSync,
  type WriteStream,
} from 'node:fs';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { UsageError } from './args.js';
import type { SourceItem } from './engine.js';
import { type LineSource, LineTooLong } from './io.js';
import type { RunConfig } from './run-args.js';

/**
 * Lines to items: JSON parsing (or raw strings with --lines); blank lines are skipped in JSON mode, and
 * so are the lines `skip` names (finished by the run a --resume finishes), unparsed.
 */
export async function* itemsFromLines(
  source: LineSource,
  raw: boolean,
  skip?: (index: number) => boolean,
): AsyncGenerator<SourceItem[]> {
  let index = 0;
  for await (const lines of source.batches()) {
    const items: SourceItem[] = [];
    for (const line of lines) {
      const i = index++;
      if (skip?.(i)) continue;
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
  /** --errors, opened here so that a path that cannot be written fails before any worker starts. */
  errors: { path: string; stream: WriteStream; fd: number } | undefined;
  /** The --output file's descriptor (undefined for stdout). */
  outFd: number | undefined;
  /** Releases both files when the run ends before it could use them. */
  abandon(): void;
}

/**
 * The run's files must be different files: `-o` naming the input truncated it before it was read (the
 * run then did nothing and exited 0), and results and journal in one file interleaved. Compared by
 * device and inode where the file exists (links and other spellings too), else by path. Devices
 * (/dev/null for both outputs) are left alone.
 */
export function checkDistinctFiles(config: RunConfig): void {
  const files: [string, string][] = [];
  for (const [flag, path] of [
    ['--input', config.input],
    ['--output', config.output],
    ['--errors', config.errors],
    ['--journal', config.journal],
    ['--report', config.report],
  ] as const) {
    if (path === undefined || path === '-') continue;
    let id = `path:${resolve(path)}`;
    try {
      const st = statSync(path);
      if (!st.isFile()) continue;
      id = `inode:${st.dev}:${st.ino}`;
    } catch {
      // Not there yet: its path is what names it.
    }
    const same = files.find(([, other]) => other === id);
    if (same) {
      throw new UsageError(
        `${same[0]} and ${flag} name the same file (${path}): ${flag === '--output' || same[0] === '--input' ? 'writing it would destroy the input' : 'their lines would interleave'}; give each its own file`,
      );
    }
    files.push([flag, id]);
  }
}

/**
 * Opens --output and --errors; a path that cannot be written is a usage error (the source is closed).
 * `resumeAt` (--resume): both are cut back to these lengths and appended to (cli/journal.ts).
 */
export function openOutputs(
  config: RunConfig,
  source: LineSource,
  resumeAt?: { output: number; errors: number },
): RunOutput {
  const fds: number[] = [];
  const open = (flag: string, path: string): number => {
    const at = resumeAt && (flag === 'output' ? resumeAt.output : resumeAt.errors);
    try {
      let fd: number;
      if (at === undefined) fd = openSync(path, 'w');
      else {
        fd = openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND);
        const size = fstatSync(fd).size;
        if (size < at) {
          closeSync(fd);
          throw new UsageError(
            `--${flag} ${path} holds ${size} bytes, fewer than the ${at} the journal recorded: it was changed since; remove the journal to start over`,
          );
        }
        ftruncateSync(fd, at);
      }
      fds.push(fd);
      return fd;
    } catch (error) {
      source.close();
      for (const fd of fds) closeSync(fd);
      if (error instanceof UsageError) throw error;
      throw new UsageError(`cannot write --${flag} ${path}: ${(error as Error).message}`);
    }
  };
  const outFd =
    config.output !== undefined && config.output !== '-' ? open('output', config.output) : undefined;
  const errFd = config.errors ? open('errors', config.errors) : undefined;
  const stream = outFd === undefined ? process.stdout : createWriteStream('', { fd: outFd });
  const errors =
    errFd === undefined
      ? undefined
      : { path: config.errors!, stream: createWriteStream('', { fd: errFd }), fd: errFd };
  return {
    stream,
    owned: outFd !== undefined,
    errors,
    outFd,
    abandon() {
      if (outFd !== undefined) stream.destroy();
      errors?.stream.destroy();
    },
  };
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
