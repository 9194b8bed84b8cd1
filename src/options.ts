/**
 * Parsing and validation of everything a user can pass in. Each failure is a ConfigError that
 * names the option, shows what was given and says what is allowed, so the fix is obvious.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError } from './errors.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object') return String(value);
  try {
    return JSON.stringify(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * A duration in ms: a number of milliseconds, or a string like '500ms', '30s', '2m', '1h', '7d';
 * `Infinity` (or 'Infinity') means no limit. Any length is fine: timers come from the deadline service
 * (deadline.ts), which never hands a user value to setTimeout. `positive`: 0 is refused (a timeout of
 * 0 would fail every task).
 */
export function parseDuration(option: string, value: unknown, positive = false): number {
  let ms: number | undefined;
  if (typeof value === 'number') {
    if (value >= 0) ms = value;
  } else if (typeof value === 'string') {
    if (/^\s*infinity\s*$/i.test(value)) ms = Infinity;
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(value);
    if (m) ms = Number(m[1]) * DURATION_UNITS[(m[2] ?? 'ms').toLowerCase()]!;
  }
  if (ms !== undefined && !(positive && ms === 0)) return ms;
  throw new ConfigError(
    option,
    `expected a duration: milliseconds as a number ${positive ? '> 0' : '>= 0'}, a string like '500ms', '30s', '2m', '1h', ` +
      `or Infinity for no limit; got ${show(value)}`,
  );
}

/** A size in bytes: a number, or a string like '256MiB', '1GiB', '512MB' (MB = 10^6, MiB = 2^20). */
export function parseSize(option: string, value: unknown): number {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value > 0) return value;
  } else if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
    const unit = SIZE_UNITS[(m?.[2] || 'b').toLowerCase()];
    if (m && unit !== undefined) {
      const bytes = Math.floor(Number(m[1]) * unit);
      if (bytes > 0) return bytes;
    }
  }
  throw new ConfigError(
    option,
    `expected a size: a positive number of bytes, or a string like '256MiB', '1GiB', '512MB'; got ${show(value)}`,
  );
}

export function parseCount(option: string, value: unknown, min: number, allowInfinity = false): number {
  if (
    typeof value === 'number' &&
    ((Number.isInteger(value) && value >= min) || (allowInfinity && value === Infinity))
  )
    return value;
  throw new ConfigError(
    option,
    `expected an integer >= ${min}${allowInfinity ? ' (or Infinity)' : ''}; got ${show(value)}`,
  );
}

export function parseChoice<T extends string>(option: string, value: unknown, choices: readonly T[]): T {
  if (typeof value === 'string' && (choices as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(
    option,
    `expected one of ${choices.map((c) => `'${c}'`).join(', ')}; got ${show(value)}`,
  );
}

const MODULE_EXTENSIONS = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts'];

/** Node versions that run TypeScript files without a flag (type stripping unflagged in 22.18 and 23.6). */
export function nodeRunsTypeScript(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);
}

/** Resolves the task module to a file URL and checks that it exists and can be loaded by this Node. */
export function resolveModule(value: unknown): string {
  let path: string;
  if (value instanceof URL) {
    if (value.protocol !== 'file:')
      throw new ConfigError('module', `only file: URLs can be loaded; got ${value.href}`);
    path = fileURLToPath(value);
  } else if (typeof value === 'string' && value.length > 0) {
    path = value.startsWith('file:') ? fileURLToPath(value) : isAbsolute(value) ? value : resolve(value);
  } else {
    throw new ConfigError(
      'module',
      `expected the path or file URL of the task module, e.g. new URL('./tasks.js', import.meta.url); got ${show(value)}`,
    );
  }
  const ext = MODULE_EXTENSIONS.find((e) => path.endsWith(e));
  if (!ext) {
    throw new ConfigError('module', `${path} must end in one of ${MODULE_EXTENSIONS.join(', ')}`);
  }
  if (!existsSync(path)) throw new ConfigError('module', `no such file: ${path}`);
  if (ext.endsWith('ts') && !nodeRunsTypeScript()) {
    throw new ConfigError(
      'module',
      `${path} is TypeScript, which Node ${process.versions.node} cannot run (needs >= 22.18); compile it to .js first`,
    );
  }
  return pathToFileURL(path).href;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Rejects misspelled options early: a typo silently ignored is a limit silently not enforced. */
export function checkKnownKeys(
  where: string,
  value: Record<string, unknown>,
  known: readonly string[],
): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key) && value[key] !== undefined) {
      throw new ConfigError(`${where}.${key}`, `unknown option; the options are: ${known.join(', ')}`);
    }
  }
}
