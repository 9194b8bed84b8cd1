/**
 * A process worker's stderr on its way to the parent's. The task's own lines pass through (users
 * rely on console.error); what Node and V8 print when the process dies (the heap-OOM report, fatal
 * errors, native stack traces) and the heap and rss guards' reports do not: one breach would otherwise put
 * ~30 lines on the user's terminal. Everything, dumps included, stays in the tail, which is what
 * the exit report carries and what deaths are classified by.
 *
 * Lines are recognised by the exact texts Node 20-24 print. A dump opens with a line no task
 * prints by accident ("<--- Last few GCs --->", "----- Native stack trace -----", "# Fatal ...");
 * once one has, the process is dying and nothing after it is forwarded (the GC lines inside can be
 * cut off mid-line, so they cannot be matched one by one). Blank lines, lone "#" and "FATAL ERROR:"
 * lines also come just before an opener, but a task may print them too: they wait for the next
 * line, or HOLD_MS, to tell which they are.
 */
import { HEAP_GUARD_MARKER } from '../limits/heap-guard.js';
import { RSS_GUARD_MARKER } from '../limits/rss-guard.js';

const TAIL_CHARS = 4096;
/** How long a line that may open a dump, or a line without its newline yet, waits. */
const HOLD_MS = 200;

const OPENS_DUMP =
  /^(<--- Last few GCs --->|<--- JS stacktrace --->|----- Native stack trace -----|==== JS stack trace =+|# Fatal .*|#FailureMessage Object: .*)$/;
const MAY_OPEN_DUMP = /^(|#|FATAL ERROR: .*)$/;

/** Where a guard's report starts in the line, if it holds one. */
function guardReportAt(line: string, from: number): number {
  const heap = line.indexOf(HEAP_GUARD_MARKER, from);
  const rss = line.indexOf(RSS_GUARD_MARKER, from);
  return heap < 0 ? rss : rss < 0 ? heap : Math.min(heap, rss);
}

export class StderrRelay {
  private kept = '';
  /** Text after the last newline, and how much of it went out already (flushed by the timer). */
  private partial = '';
  private partialSent = 0;
  private held: string[] = [];
  private dying = false;
  private timer: NodeJS.Timeout | undefined = undefined;

  constructor(private readonly forward: (text: string) => void) {}

  /** The last few KiB of everything the worker wrote, forwarded or not. */
  get tail(): string {
    return this.kept;
  }

  push(chunk: string): void {
    this.kept = (this.kept + chunk).slice(-TAIL_CHARS);
    if (this.dying) return;
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop()!;
    let out = '';
    for (let i = 0; i < lines.length; i++) {
      // A line whose start the timer sent already, unclassified: the rest follows it the same way.
      const from = i === 0 ? this.partialSent : 0;
      this.partialSent = 0;
      const line = lines[i]!;
      const guard = guardReportAt(line, from);
      if (guard >= 0) {
        // The guard's report is the process's last word; a task's unfinished line may precede it.
        out += this.release();
        if (guard > from) out += `${line.slice(from, guard)}\n`;
        this.dying = true;
        break;
      }
      if (from > 0) out += `${line.slice(from)}\n`;
      else if (OPENS_DUMP.test(line)) {
        this.held = [];
        this.dying = true;
        break;
      } else if (MAY_OPEN_DUMP.test(line)) this.held.push(line);
      else out += `${this.release()}${line}\n`;
    }
    if (this.dying) {
      this.stopTimer();
      this.partial = '';
      this.partialSent = 0;
    } else if (this.held.length > 0 || this.partial.length > this.partialSent) this.startTimer();
    if (out) this.forward(out);
  }

  /** The stream ended: whatever was waiting is the task's. */
  end(): void {
    this.flush();
  }

  private release(): string {
    if (this.held.length === 0) return '';
    const text = `${this.held.join('\n')}\n`;
    this.held = [];
    return text;
  }

  private flush(): void {
    this.stopTimer();
    if (this.dying) return;
    const text = this.release() + this.partial.slice(this.partialSent);
    this.partialSent = this.partial.length;
    if (text) this.forward(text);
  }

  private startTimer(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, HOLD_MS);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
