/**
 * Command-line flags: one table per command drives both parsing and `--help`, so the help can never
 * list a flag that does not exist or a default that is not the real one.
 */
import { parseArgs } from 'node:util';
import type { Duration } from '../index.js';
import { closest } from './format.js';

/** A mistake of the person typing the command: printed with a hint, exit status 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command = '',
  ) {
    super(message);
  }
}

export interface FlagSpec {
  name: string;
  short?: string;
  type: 'string' | 'boolean';
  /** Placeholder shown in the help, e.g. 'N|auto'. */
  value?: string;
  /** Shown in the help after "default:". */
  default?: string;
  help: string;
  /** Heading this flag is listed under. */
  group?: string;
}

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseFlags(command: string, argv: string[], specs: readonly FlagSpec[]): Parsed {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const s of specs) options[s.name] = s.short ? { type: s.type, short: s.short } : { type: s.type };
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Parsed['values'], positionals };
  } catch (error) {
    throw new UsageError(explainParseError(error, specs), command);
  }
}

function explainParseError(error: unknown, specs: readonly FlagSpec[]): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: string }).code;
  const unknown = /Unknown option '(-{1,2}[^']+)'/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    const name = unknown.replace(/^-+/, '').split('=')[0]!;
    const guess = closest(
      name,
      specs.map((s) => s.name),
    );
    return `unknown option ${unknown}${guess ? ` (did you mean --${guess}?)` : ''}`;
  }
  const missing =
    /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(message)?.[1] ??
    /Option '(?:-\w, )?(--[\w-]+)' argument is ambiguous/.exec(message)?.[1];
  if (missing) {
    const spec = specs.find((s) => `--${s.name}` === missing);
    return `${missing} needs a value${spec?.value ? ` (${spec.value})` : ''}`;
  }
  const noValue = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(message)?.[1];
  if (noValue) return `${noValue} is a switch and takes no value`;
  return message;
}

export function formatHelp(usage: string, about: string, specs: readonly FlagSpec[], footer = ''): string {
  const lines = [`usage: ${usage}`, '', about, ''];
  const groups = new Map<string, FlagSpec[]>();
  for (const s of specs) {
    const g = s.group ?? 'Options';
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(s);
  }
  const left = (s: FlagSpec): string =>
    `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.value ? ` ${s.value}` : ''}`;
  const width = Math.max(...specs.map((s) => left(s).length)) + 2;
  const columns = Math.max(80, Math.min(120, process.stdout.columns || 100));
  for (const [group, list] of groups) {
    lines.push(`${group}:`);
    for (const s of list) {
      const def = s.default !== undefined ? ` (default: ${s.default})` : '';
      const text = wrap(`${s.help}${def}`, Math.max(30, columns - width - 2));
      lines.push(`  ${left(s).padEnd(width)}${text[0]}`);
      for (const more of text.slice(1)) lines.push(`  ${' '.repeat(width)}${more}`);
    }
    lines.push('');
  }
  if (footer) lines.push(footer, '');
  return lines.join('\n');
}

/** Splits text into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  out.push(line);
  return out;
}

/** `--workers 4` / `auto`. */
export function parseIntFlag(flag: string, raw: string, min: number, allowAuto = false): number | 'auto' {
  if (allowAuto && raw === 'auto') return 'auto';
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(
      `--${flag} expects an integer >= ${min}${allowAuto ? " or 'auto'" : ''}, got '${raw}'`,
    );
  }
  return n;
}

export function parseChoiceFlag<T extends string>(flag: string, raw: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(raw)) return raw as T;
  const guess = closest(raw, choices);
  throw new UsageError(
    `--${flag} expects one of ${choices.join(', ')}, got '${raw}'${guess ? ` (did you mean ${guess}?)` : ''}`,
  );
}

/** Sizes go to the library as given ('256MiB') or as a number of bytes; the pool validates them. */
export function sizeValue(raw: string): string | number {
  return /^\d+$/.test(raw.trim()) ? Number(raw) : raw;
}

/**
 * Durations: a bare number is milliseconds, as in the library; '30s', '2m' otherwise, any length (the
 * pool validates them: the cast passes on what the type does not know, and the pool's ConfigError then
 * names the option and the forms). 'none' or 'Infinity': no limit, which is the pool's default
 * (undefined).
 */
export function durationValue(raw: string): Duration | undefined {
  if (/^\s*(none|infinity)\s*$/i.test(raw)) return undefined;
  return /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : (raw as Duration);
}
