/**
 * The demo's live screen on a terminal: the picture filling in, a progress bar, the workers and the last
 * events, redrawn ten times a second in place.
 */
import type { Canvas } from './demo-canvas.js';
import { formatBytes, formatCount } from './format.js';
import { type ProgressSnapshot, paint, RateMeter, renderBarLine, stripAnsi } from './progress.js';
import type { WorkerTracker } from './workers.js';

export class LiveScreen {
  private timer: NodeJS.Timeout | undefined;
  private height = 0;
  private readonly meter = new RateMeter();
  private rate = 0;
  private tick = 0;
  private readonly log: string[] = [];
  private partial = '';
  private readonly realWrite: typeof process.stderr.write;
  private readonly own: PropertyDescriptor | undefined;

  constructor(
    private readonly canvas: Canvas,
    private readonly title: string,
    private readonly snapshot: () => ProgressSnapshot,
    private readonly workersLine: () => string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.realWrite = stream.write.bind(stream) as typeof process.stderr.write;
    this.own = Object.getOwnPropertyDescriptor(stream, 'write');
  }

  /** A line for the event area under the picture. */
  note(text: string): void {
    this.log.push(text);
    if (this.log.length > 2) this.log.shift();
  }

  start(): void {
    // Worker stderr (V8's out-of-memory report, for one) would tear the picture: show its gist instead.
    this.stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      this.partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      let cut = this.partial.indexOf('\n');
      while (cut >= 0) {
        const line = this.partial.slice(0, cut).trim();
        this.partial = this.partial.slice(cut + 1);
        if (/FATAL ERROR|out of memory|Error:/.test(line)) this.note(paint.dim(`worker stderr: ${line}`));
        cut = this.partial.indexOf('\n');
      }
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      if (cb) queueMicrotask(cb);
      return true;
    }) as typeof process.stderr.write;
    this.timer = setInterval(() => this.draw(), 100);
    this.timer.unref();
    this.draw();
  }

  private draw(): void {
    const s = this.snapshot();
    this.rate = this.meter.add(s.done);
    this.tick++;
    const width = this.stream.columns || 80;
    const frame = [
      this.title,
      ...this.canvas.lines(),
      renderBarLine(s, this.rate, width, this.tick),
      this.workersLine(),
      this.log[0] ?? '',
      this.log[1] ?? '',
    ].map((l) => fit(l, width));
    while (frame.length < this.height) frame.push('');
    // Rewrite only the lines that changed: a full picture ten times a second is a lot for a terminal.
    let text = this.height > 0 ? `\x1b[${this.height}F` : '';
    frame.forEach((line, i) => {
      text += line === this.shown[i] ? '\x1b[1E' : `\x1b[2K${line}\n`;
    });
    this.shown = frame;
    this.height = frame.length;
    this.realWrite(text);
  }
  private shown: string[] = [];

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.draw();
    if (this.own) Object.defineProperty(this.stream, 'write', this.own);
    else delete (this.stream as { write?: unknown }).write;
  }
}

/** Cuts a line with colour codes to `width` visible characters, so it never wraps. */
function fit(line: string, width: number): string {
  if (stripAnsi(line).length < width) return line;
  let visible = 0;
  let out = '';
  for (let i = 0; i < line.length; ) {
    if (line.charCodeAt(i) === 27) {
      const end = line.indexOf('m', i);
      out += line.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    if (visible >= width - 1) break;
    out += line[i];
    visible++;
    i++;
  }
  return `${out}\x1b[0m`;
}

/** The workers now running, with their tiles and memory: the line under the bar. */
export function workersLine(tracker: WorkerTracker): string {
  const live = tracker.list().filter((w) => !w.exit);
  return live
    .map((w) => `${paint.cyan(`worker ${w.id}`)} ${formatCount(w.tasks)} tiles ${formatBytes(w.rss)}`)
    .join(paint.dim(' │ '));
}
