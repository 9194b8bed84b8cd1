/**
 * `corral run --journal FILE` and `--resume`: a run killed by SIGKILL or a reboot finishes the rest
 * later without redoing work, and its output holds each item exactly once.
 *
 * The journal is JSON Lines: a header (what run it belongs to), then one record per commit. A commit
 * first makes the output and errors durable up to a length (their writes done, then fsync), and only
 * then appends the record saying which items those lengths hold (then fsync). So whatever the moment
 * of a kill, the last complete record never claims more than the files hold; what the files hold past
 * its lengths belongs to items it does not list, and a resume cuts it off and runs those items again.
 * Ordered runs write in input order, so a record is the next input line (`n`); unordered ones list the
 * finished lines as ranges (`d`). Commits come at most every COMMIT_MS (batched fsync) and at the end.
 */
import {
  closeSync,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UsageError } from './args.js';
import type { RunConfig } from './run-args.js';

const COMMIT_MS = 200;

interface Header {
  corral: 'run-journal';
  version: 1;
  task: string;
  ordered: boolean;
  lines: boolean;
  withIndex: boolean;
  output: string;
  errors: string | null;
  input: string | null;
  inputSize: number | null;
  /**
   * When the input was last modified: a file rewritten with other lines of the same size passed the
   * size check, and the resume skipped the wrong lines. (Absent in older journals: not compared.)
   */
  inputMtimeMs?: number | null;
}

interface Record {
  /** Bytes of the output and of the errors file that hold the items below. */
  o: number;
  e: number;
  /** Items finished in all runs so far. */
  c: number;
  /** Of them, failed (absent in journals written before it was kept: none known). */
  f?: number;
  /** Ordered: every input line before this one is finished. */
  n?: number;
  /** Unordered: input lines finished since the last record, as [first, last] ranges. */
  d?: [number, number][];
}

/** A file whose bytes can be made durable up to what was handed to it. */
export interface DurableOutput {
  readonly fd: number;
  /** Bytes handed to it so far. */
  readonly bytes: number;
  /** Resolves once everything handed to it so far is written (not yet synced). */
  settled(): Promise<void>;
}

/** Input lines a resumed run skips. */
class Done {
  private bits = new Uint8Array(1024);
  next = 0;
  constructor(readonly ordered: boolean) {}

  add(first: number, last: number): void {
    if (last >= this.bits.length * 8) {
      const grown = new Uint8Array(Math.max(this.bits.length * 2, (last >> 3) + 1));
      grown.set(this.bits);
      this.bits = grown;
    }
    for (let i = first; i <= last; i++) this.bits[i >> 3]! |= 1 << (i & 7);
  }

  has(index: number): boolean {
    if (this.ordered) return index < this.next;
    return index < this.bits.length * 8 && (this.bits[index >> 3]! & (1 << (index & 7))) !== 0;
  }
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((res, rej) => fsync(fd, (e) => (e ? rej(e) : res())));
}

/** [first, last] ranges of sorted-or-not indices. */
function ranges(indices: number[]): [number, number][] {
  indices.sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (const i of indices) {
    const last = out[out.length - 1];
    if (last && i === last[1] + 1) last[1] = i;
    else out.push([i, i]);
  }
  return out;
}

export interface JournalStart {
  /** Where the output and errors files must be cut back to and appended to; undefined for a fresh run. */
  resumeAt: { output: number; errors: number } | undefined;
  /** Lines the run skips: finished by the runs before. */
  skip: ((index: number) => boolean) | undefined;
  /** Items finished by the runs before. */
  skipped: number;
  /** Of them, failed: a resumed run exits as the whole run would have (1 if any item failed). */
  failedBefore: number;
  open(out: DurableOutput, errors: DurableOutput | undefined): Journal;
}

function headerFor(config: RunConfig): Header {
  let inputSize: number | null = null;
  let inputMtimeMs: number | null = null;
  if (config.input !== undefined && config.input !== '-') {
    try {
      const st = statSync(config.input);
      if (st.isFile()) {
        inputSize = st.size;
        inputMtimeMs = st.mtimeMs;
      }
    } catch {
      // openLineSource says what is wrong with it
    }
  }
  return {
    corral: 'run-journal',
    version: 1,
    task: `${config.modulePath}#${config.task}`,
    ordered: config.ordered,
    lines: config.lines,
    withIndex: config.withIndex,
    output: resolve(config.output!),
    errors: config.errors ? resolve(config.errors) : null,
    input: config.input === undefined || config.input === '-' ? null : resolve(config.input),
    inputSize,
    inputMtimeMs,
  };
}

/** Reads the journal of `config` (if --resume and it exists) and says how the run starts. */
export function startJournal(config: RunConfig): JournalStart {
  const path = config.journal!;
  const header = headerFor(config);
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new UsageError(`cannot read --journal ${path}: ${(error as Error).message}`);
    }
  }
  if (text !== '' && !config.resume) {
    throw new UsageError(
      `--journal ${path} holds an earlier run: add --resume to finish it, or remove the file to start over`,
    );
  }
  if (text === '') {
    return {
      resumeAt: undefined,
      skip: undefined,
      skipped: 0,
      failedBefore: 0,
      open: (out, errors) => Journal.create(path, header, out, errors),
    };
  }
  // A record cut short by the kill is not one: the journal ends at its last line end.
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  const lines = complete.split('\n').filter((l) => l !== '');
  let old: Header;
  const records: Record[] = [];
  try {
    old = JSON.parse(lines[0] ?? '') as Header;
    for (const line of lines.slice(1)) records.push(JSON.parse(line) as Record);
  } catch {
    throw new UsageError(`--journal ${path} is not a corral run journal, or it is damaged`);
  }
  if (old.corral !== 'run-journal' || old.version !== 1) {
    throw new UsageError(`--journal ${path} is not a corral run journal`);
  }
  for (const key of ['task', 'ordered', 'lines', 'withIndex', 'output', 'errors', 'input'] as const) {
    if (old[key] !== header[key]) {
      throw new UsageError(
        `--journal ${path} belongs to a run with ${key} ${JSON.stringify(old[key])}, not ${JSON.stringify(header[key])}: resume with the same command`,
      );
    }
  }
  if (old.inputSize !== null && header.inputSize !== null && old.inputSize !== header.inputSize) {
    throw new UsageError(
      `the input changed since --journal ${path} was written (${old.inputSize} bytes then, ${header.inputSize} now): a resume would skip the wrong lines`,
    );
  }
  if (
    typeof old.inputMtimeMs === 'number' &&
    header.inputMtimeMs !== null &&
    old.inputMtimeMs !== header.inputMtimeMs
  ) {
    throw new UsageError(
      `the input was modified since --journal ${path} was written (${new Date(old.inputMtimeMs).toISOString()} then, ${new Date(header.inputMtimeMs!).toISOString()} now): a resume would skip the wrong lines; remove the journal to start over`,
    );
  }
  const done = new Done(header.ordered);
  let last: Record = { o: 0, e: 0, c: 0, f: 0 };
  for (const r of records) {
    if (r.n !== undefined) done.next = r.n;
    for (const [first, lastIndex] of r.d ?? []) done.add(first, lastIndex);
    last = r;
  }
  return {
    resumeAt: { output: last.o, errors: last.e },
    skip: (index) => done.has(index),
    skipped: last.c,
    failedBefore: last.f ?? 0,
    open: (out, errors) => Journal.append(path, complete.length, header, last, out, errors),
  };
}

export class Journal {
  private finishedSince: number[] = [];
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private failed: Error | undefined;

  private constructor(
    private readonly fd: number,
    /** Where the next record goes: records are written at explicit offsets, after the last whole line. */
    private position: number,
    private readonly ordered: boolean,
    private next: number,
    private count: number,
    private failedCount: number,
    private readonly out: DurableOutput,
    private readonly errors: DurableOutput | undefined,
    /** Bytes the files held when this run began appending (a resume's): theirs count from there. */
    private readonly base = { o: 0, e: 0 },
  ) {
    this.timer = setInterval(() => void this.commit(), COMMIT_MS);
    this.timer.unref();
  }

  /** A fresh journal: its header is durable (the directory entry too) before any item runs. */
  static create(
    path: string,
    header: Header,
    out: DurableOutput,
    errors: DurableOutput | undefined,
  ): Journal {
    let fd: number;
    try {
      fd = openSync(path, 'w');
    } catch (error) {
      throw new UsageError(`cannot write --journal ${path}: ${(error as Error).message}`);
    }
    const head = Buffer.from(`${JSON.stringify(header)}\n`);
    writeSync(fd, head, 0, head.length, 0);
    fsyncSyncQuiet(fd);
    const dir = openSync(dirname(resolve(path)), 'r');
    fsyncSyncQuiet(dir);
    closeSync(dir);
    return new Journal(fd, head.length, header.ordered, 0, 0, 0, out, errors);
  }

  /** The journal of a resumed run: a record cut short by the kill is cut off, and records follow. */
  static append(
    path: string,
    length: number,
    header: Header,
    last: Record,
    out: DurableOutput,
    errors: DurableOutput | undefined,
  ): Journal {
    const fd = openSync(path, 'r+');
    if (fstatSync(fd).size !== length) ftruncateSync(fd, length);
    return new Journal(fd, length, header.ordered, last.n ?? 0, last.c, last.f ?? 0, out, errors, {
      o: last.o,
      e: last.e,
    });
  }

  /** An item (input line `index`) is written to the output or, `failed`, to the errors file. */
  finished(index: number, failed = false): void {
    this.count++;
    if (failed) this.failedCount++;
    if (this.ordered) this.next = index + 1;
    else this.finishedSince.push(index);
    this.dirty = true;
  }

  /** Makes what is finished so far durable; commits run one after the other. */
  commit(): Promise<void> {
    this.chain = this.chain.then(() => this.commitNow());
    return this.chain;
  }

  private async commitNow(): Promise<void> {
    if (!this.dirty || this.failed) return;
    this.dirty = false;
    // Taken together, synchronously: these lengths hold exactly these items.
    const record: Record = {
      o: this.base.o + this.out.bytes,
      e: this.base.e + (this.errors?.bytes ?? 0),
      c: this.count,
      f: this.failedCount,
    };
    if (this.ordered) record.n = this.next;
    else record.d = ranges(this.finishedSince.splice(0));
    try {
      await Promise.all([this.out.settled(), this.errors?.settled()]);
      await Promise.all([fsyncAsync(this.out.fd), this.errors && fsyncAsync(this.errors.fd)]);
      const line = Buffer.from(`${JSON.stringify(record)}\n`);
      writeSync(this.fd, line, 0, line.length, this.position);
      this.position += line.length;
      await fsyncAsync(this.fd);
    } catch (error) {
      this.failed = error as Error;
      clearInterval(this.timer);
      process.stderr.write(
        `corral: the journal cannot be written (${(error as Error).message}); the run goes on, but a resume would run again what finished since its last record\n`,
      );
    }
  }

  /** The last commit, then the file is closed. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.commit();
    closeSync(this.fd);
  }
}

function fsyncSyncQuiet(fd: number): void {
  try {
    fsyncSync(fd);
  } catch {
    // a file system without fsync for directories: the header line is still written
  }
}
