/**
 * Progress on stderr. On a terminal: one live line redrawn ten times a second (bar, done/total, rate,
 * ETA, failures, memory); anything else written to stderr meanwhile (task output, worker stderr, warnings)
 * is printed above it instead of tearing it. Not a terminal: a plain line every two seconds.
 */
import { formatBytes, formatClock, formatCount, formatRate } from './format.js';

export interface ProgressSnapshot {
  done: number;
  failed: number;
  read: number;
  inputDone: boolean;
  bytesRead: number;
  bytesTotal: number | null;
  /** Input lines split off so far (taken as items or not yet). */
  linesSeen?: number;
  /** Resident memory of this process and its worker processes, bytes. */
  memory: number;
  workers: number;
  /** Shown after the numbers, e.g. "stopping: finishing 12 in flight". */
  note?: string;
}

export type ProgressMode = 'bar' | 'plain' | 'off';

const SPINNER = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
const EIGHTHS = ' ▏▎▍▌▋▊▉█';

export function useColor(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
}

export const paint = {
  on: false,
  wrap(code: string, text: string): string {
    return this.on ? `\x1b[${code}m${text}\x1b[0m` : text;
  },
  dim(t: string) {
    return paint.wrap('2', t);
  },
  bold(t: string) {
    return paint.wrap('1', t);
  },
  red(t: string) {
    return paint.wrap('31', t);
  },
  green(t: string) {
    return paint.wrap('32', t);
  },
  yellow(t: string) {
    return paint.wrap('33', t);
  },
  cyan(t: string) {
    return paint.wrap('36', t);
  },
};

/** Rate over the last few seconds, so the ETA follows the current pace rather than the start-up. */
export class RateMeter {
  private samples: { t: number; done: number }[] = [];
  constructor(private readonly spanMs = 5000) {}
  add(done: number, t = performance.now()): number {
    this.samples.push({ t, done });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.spanMs) this.samples.shift();
    const first = this.samples[0]!;
    const dt = t - first.t;
    return dt > 200 ? ((done - first.done) / dt) * 1000 : 0;
  }
}

/** Best guess of the number of items: exact once the input is read, else extrapolated from bytes read. */
export function estimateTotal(s: ProgressSnapshot): { total: number | null; exact: boolean } {
  if (s.inputDone) return { total: s.read, exact: true };
  const lines = s.linesSeen ?? s.read;
  if (s.bytesTotal && s.bytesRead > 0 && lines > 0) {
    return { total: Math.max(s.read, Math.round((lines * s.bytesTotal) / s.bytesRead)), exact: false };
  }
  return { total: null, exact: false };
}

export function progressFields(s: ProgressSnapshot, rate: number) {
  const { total, exact } = estimateTotal(s);
  const fraction = total ? Math.min(1, s.done / Math.max(total, 1)) : null;
  const eta = total && rate > 0 ? (total - s.done) / rate : null;
  const count = total
    ? `${formatCount(s.done)}/${exact ? '' : '~'}${formatCount(total)}`
    : formatCount(s.done);
  return { fraction, eta, count };
}

/** One line: bar, percentage, done/total, rate, ETA, failures, memory; fitted to `width` columns. */
export function renderBarLine(s: ProgressSnapshot, rate: number, width: number, tick: number): string {
  const { fraction, eta, count } = progressFields(s, rate);
  const sep = paint.dim(' │ ');
  const parts = [count, formatRate(rate)];
  if (eta !== null) parts.push(`ETA ${formatClock(eta)}`);
  parts.push(s.failed > 0 ? paint.red(`${formatCount(s.failed)} failed`) : '0 failed');
  if (s.memory > 0) parts.push(`mem ${formatBytes(s.memory)}`);
  if (s.note) parts.push(paint.yellow(s.note));
  let right = parts.join(sep);
  const visible = (t: string) => stripAnsi(t).length;
  let head: string;
  if (fraction === null) {
    head = `${paint.cyan(SPINNER[tick % SPINNER.length]!)} `;
  } else {
    const pct = `${(fraction * 100).toFixed(0).padStart(3)}%`;
    const barWidth = Math.max(10, Math.min(40, width - visible(right) - pct.length - 4));
    head = `${paint.cyan(bar(fraction, barWidth))} ${pct} `;
  }
  // Drop fields from the right until the line fits the terminal (a wrapped line cannot be redrawn).
  while (visible(head) + visible(right) > width - 1 && parts.length > 1) {
    parts.pop();
    right = parts.join(sep);
  }
  return head + right;
}

function bar(fraction: number, width: number): string {
  const cells = fraction * width;
  const full = Math.floor(cells);
  const partial = full < width ? EIGHTHS[Math.floor((cells - full) * 8)]! : '';
  return `▕${'█'.repeat(full)}${partial}${' '.repeat(Math.max(0, width - full - partial.length))}▏`;
}

export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private readonly meter = new RateMeter();
  private tick = 0;
  private drawn = false;
  private partial = '';
  private readonly realWrite: typeof process.stderr.write;
  private readonly ownWrite: PropertyDescriptor | undefined;
  private lastPlain = 0;
  private rate = 0;
  private patched = false;

  constructor(
    readonly mode: ProgressMode,
    private readonly snapshot: () => ProgressSnapshot,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly plainEveryMs = 2000,
  ) {
    this.realWrite = stream.write.bind(stream) as typeof process.stderr.write;
    this.ownWrite = Object.getOwnPropertyDescriptor(stream, 'write');
  }

  start(): void {
    if (this.mode === 'off') return;
    if (this.mode === 'bar') {
      this.patched = true;
      // Everything else that writes to stderr while the bar is up goes above it, a whole line at a time.
      this.stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        this.partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
        const cut = this.partial.lastIndexOf('\n');
        if (cut >= 0) {
          const text = this.partial.slice(0, cut + 1);
          this.partial = this.partial.slice(cut + 1);
          this.above(text);
        }
        const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
        if (cb) queueMicrotask(cb);
        return true;
      }) as typeof process.stderr.write;
    }
    const every = this.mode === 'bar' ? 100 : 250;
    this.lastPlain = performance.now();
    this.timer = setInterval(() => this.update(), every);
    this.timer.unref();
    this.update();
  }

  private above(text: string): void {
    this.realWrite(`${this.drawn ? '\r\x1b[K' : ''}${text}`);
    this.drawn = false;
    this.draw();
  }

  /** Prints a line of our own above the bar (or as is, without one). */
  log(text: string): void {
    if (this.mode === 'bar') this.above(`${text}\n`);
    else this.realWrite(`${text}\n`);
  }

  private update(): void {
    const s = this.snapshot();
    this.rate = this.meter.add(s.done);
    this.tick++;
    if (this.mode === 'bar') this.draw(s);
    else if (this.mode === 'plain' && performance.now() - this.lastPlain >= this.plainEveryMs) {
      this.lastPlain = performance.now();
      this.realWrite(`${plainLine(s, this.rate)}\n`);
    }
  }

  private draw(s = this.snapshot()): void {
    if (this.mode !== 'bar' || !this.timer) return;
    const width = this.stream.columns || 80;
    this.realWrite(`\r${renderBarLine(s, this.rate, width, this.tick)}\x1b[K`);
    this.drawn = true;
  }

  /** Removes the bar and gives stderr back. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.patched) {
      this.patched = false;
      if (this.partial) this.realWrite(`${this.drawn ? '\r\x1b[K' : ''}${this.partial}\n`);
      else if (this.drawn) this.realWrite('\r\x1b[K');
      this.partial = '';
      this.drawn = false;
      if (this.ownWrite) Object.defineProperty(this.stream, 'write', this.ownWrite);
      else delete (this.stream as { write?: unknown }).write;
    }
  }
}

export function plainLine(s: ProgressSnapshot, rate: number): string {
  const { fraction, eta, count } = progressFields(s, rate);
  const parts = [`${count} done${fraction !== null ? ` (${(fraction * 100).toFixed(0)}%)` : ''}`];
  parts.push(formatRate(rate));
  if (eta !== null) parts.push(`ETA ${formatClock(eta)}`);
  parts.push(`${formatCount(s.failed)} failed`);
  if (s.memory > 0) parts.push(`mem ${formatBytes(s.memory)}`);
  if (s.note) parts.push(s.note);
  return `corral: ${parts.join(', ')}`;
}

const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');

/** Text without its colour codes: what the terminal shows. */
export function stripAnsi(text: string): string {
  return text.replace(ANSI, '');
}
