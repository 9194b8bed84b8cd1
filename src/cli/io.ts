/**
 * Streaming input and output for `corral run`. Input is read a stream chunk at a time and split into
 * lines as it arrives, so memory holds one chunk plus the items in flight however large the file is.
 * Output is written in whole lines only (a line is appended to the stream in one write, never split), and
 * the writer reports back pressure so the run stops reading input while the consumer is slow.
 */
import { constants } from 'node:buffer';
import { createReadStream, fstatSync, openSync, statSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { UsageError } from './args.js';

/** A line longer than a string can hold: only its length and its first characters are kept. */
export class LineTooLong {
  constructor(
    /** Characters, counted to the line end. */
    readonly length: number,
    readonly head: string,
    readonly limit: number,
  ) {}
}

export type Line = string | LineTooLong;

export interface LineSource {
  /** Batches of lines, in order, without their line ends. */
  batches(): AsyncGenerator<Line[], void, undefined>;
  /** Bytes consumed so far. */
  readonly bytesRead: number;
  /** Lines split off so far (handed out or not): with bytesRead and size, an estimate of the total. */
  readonly linesSeen: number;
  /** Size of the input when it is a regular file (known total for progress), else null. */
  readonly size: number | null;
  readonly name: string;
  /** Stops reading and releases the stream (after Ctrl-C, or when the run stops early). */
  close(): void;
}

const READ_CHUNK = 256 * 1024;

export function openLineSource(path: string | undefined): LineSource {
  let stream: Readable;
  let size: number | null = null;
  let name: string;
  if (path === undefined || path === '-') {
    stream = process.stdin;
    name = 'stdin';
    try {
      const st = fstatSync(0);
      if (st.isFile()) size = st.size;
    } catch {}
  } else {
    let fd: number;
    try {
      const st = statSync(path);
      if (st.isDirectory()) throw new UsageError(`--input ${path} is a directory; give a JSON Lines file`);
      if (st.isFile()) size = st.size;
      fd = openSync(path, 'r');
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new UsageError(`cannot read --input ${path}: ${(error as Error).message}`);
    }
    stream = createReadStream('', { fd, highWaterMark: READ_CHUNK });
    name = path;
  }
  return new StreamLines(stream, size, name);
}

class StreamLines implements LineSource {
  bytesRead = 0;
  linesSeen = 0;
  private closed = false;

  constructor(
    private readonly stream: Readable,
    readonly size: number | null,
    readonly name: string,
  ) {}

  async *batches(): AsyncGenerator<Line[], void, undefined> {
    const decoder = new StringDecoder('utf8');
    const splitter = new LineSplitter();
    // Pulling from the async iterator is the back pressure: the stream reads its next chunk only when
    // this generator is asked for more, which happens only when the run has room for more items.
    for await (const chunk of this.stream as AsyncIterable<Buffer | string>) {
      if (this.closed) return;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      this.bytesRead += buf.length;
      const lines = splitter.feed(decoder.write(buf));
      this.linesSeen += lines.length;
      if (lines.length > 0) yield lines;
    }
    const last = splitter.end(decoder.end());
    if (last !== undefined && !this.closed) {
      this.linesSeen++;
      yield [last];
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.stream === process.stdin) process.stdin.pause();
    this.stream.destroy();
  }
}

function stripCR(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

const HEAD_CHARS = 80;

/**
 * Cuts text into lines as it arrives. Each chunk is scanned once: a line that spans chunks is kept as
 * its pieces and joined when its end arrives, so a long line costs linear time (appending each chunk
 * to the partial line and splitting that again made one 32 MiB line take 8 s). A line longer than a
 * string can hold is not kept at all past that point: it comes out as a LineTooLong.
 */
export class LineSplitter {
  private pieces: string[] = [];
  /** Characters of the partial line so far. */
  private pending = 0;
  /** Set once the partial line went over the limit: its first characters. */
  private overlong: string | undefined = undefined;

  constructor(private readonly limit = constants.MAX_STRING_LENGTH) {}

  feed(text: string): Line[] {
    const lines: Line[] = [];
    let nl = text.indexOf('\n');
    if (nl < 0) {
      this.keep(text);
      return lines;
    }
    this.keep(text.slice(0, nl));
    lines.push(this.take());
    let start = nl + 1;
    while ((nl = text.indexOf('\n', start)) >= 0) {
      lines.push(stripCR(text.slice(start, nl)));
      start = nl + 1;
    }
    if (start < text.length) this.keep(text.slice(start));
    return lines;
  }

  /** The last line, when the input does not end with a line end. */
  end(text: string): Line | undefined {
    this.keep(text);
    return this.pending > 0 ? this.take() : undefined;
  }

  private keep(piece: string): void {
    if (piece.length === 0) return;
    this.pending += piece.length;
    if (this.overlong !== undefined) return;
    if (this.pending <= this.limit) {
      this.pieces.push(piece);
      return;
    }
    let head = '';
    for (const p of this.pieces) {
      head += p.slice(0, HEAD_CHARS - head.length);
      if (head.length === HEAD_CHARS) break;
    }
    this.overlong = head + piece.slice(0, HEAD_CHARS - head.length);
    this.pieces = [];
  }

  private take(): Line {
    let line: Line;
    if (this.overlong !== undefined) line = new LineTooLong(this.pending, this.overlong, this.limit);
    else line = stripCR(this.pieces.length === 1 ? this.pieces[0]! : this.pieces.join(''));
    this.pieces = [];
    this.pending = 0;
    this.overlong = undefined;
    return line;
  }
}

/** Coalesces lines into large writes and exposes back pressure. */
export class LineWriter {
  private buffer: string[] = [];
  private bufferedChars = 0;
  private scheduled = false;
  private failed: Error | undefined;
  /** Lines handed to the stream (in the order given), and their bytes with their line ends. */
  lines = 0;
  bytes = 0;

  constructor(
    private readonly stream: Writable,
    /** The write function to use (stdout's original one while task output is redirected to stderr). */
    private readonly writeFn: (chunk: string, cb: (error?: Error | null) => void) => boolean,
    private readonly ownsStream: boolean,
    private readonly onError: (error: Error) => void,
  ) {
    stream.on('error', (error) => this.fail(error));
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = error;
    this.buffer = [];
    this.onError(error);
  }

  get broken(): boolean {
    return this.failed !== undefined;
  }

  /** Queues one complete line (without its newline). */
  push(line: string): void {
    if (this.failed) return;
    this.buffer.push(line);
    this.bufferedChars += line.length + 1;
    this.lines++;
    this.bytes += Buffer.byteLength(line) + 1;
    if (this.bufferedChars >= 64 * 1024) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.buffer.length === 0 || this.failed) return;
    const chunk = this.buffer.join('\n') + '\n';
    this.buffer = [];
    this.bufferedChars = 0;
    this.writeFn(chunk, (error) => {
      if (error) this.fail(error);
    });
  }

  /** Resolves once every line pushed so far is written to the stream (see cli/journal.ts). */
  settled(): Promise<void> {
    this.flush();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.writeFn('', (error) => (error ? reject(error) : resolve()));
    });
  }

  get needsDrain(): boolean {
    return !this.failed && this.stream.writableNeedDrain;
  }

  drain(): Promise<void> {
    if (!this.needsDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('error', done);
        this.stream.off('close', done);
        resolve();
      };
      this.stream.on('drain', done);
      this.stream.on('error', done);
      this.stream.on('close', done);
    });
  }

  /** Writes what is buffered and waits until the stream has taken all of it (and closes a file). */
  async end(): Promise<void> {
    this.flush();
    if (this.failed) return;
    if (this.ownsStream) {
      await new Promise<void>((resolve) => {
        this.stream.once('close', resolve);
        this.stream.once('error', () => resolve());
        this.stream.end();
      });
      return;
    }
    await new Promise<void>((resolve) => {
      this.writeFn('', () => resolve());
    });
  }
}
