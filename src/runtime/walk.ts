/**
 * The copy-on-write walk behind the handle codecs (SharedMemory, Queue, Pipe): replaces matching
 * values inside task arguments and results, copying only the containers it changes, within a budget
 * of visited values so a huge argument costs a bounded walk.
 */
import { isPlainObject } from '../options.js';

export interface Walk {
  /** Values still to visit. */
  left: number;
  /** Whether anything was replaced. */
  found: boolean;
}

/** Copy-on-write walk: `swap` returns a replacement for a value, or undefined to descend into it. */
export function rewrite(value: unknown, walk: Walk, swap: (v: object) => unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (walk.left-- <= 0) return value;
  const replaced = swap(value);
  if (replaced !== undefined) {
    walk.found = true;
    return replaced;
  }
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length && walk.left > 0; i++) {
      const item: unknown = value[i];
      if (item === null || typeof item !== 'object') {
        walk.left--;
        continue;
      }
      const next = rewrite(item, walk, swap);
      if (next !== item) {
        copy ??= value.slice();
        copy[i] = next;
      }
    }
    return copy ?? value;
  }
  if (isPlainObject(value)) {
    let copy: Record<string, unknown> | undefined;
    for (const key in value) {
      if (walk.left <= 0) break;
      if (!Object.hasOwn(value, key)) continue;
      const item = value[key];
      if (item === null || typeof item !== 'object') {
        walk.left--;
        continue;
      }
      const next = rewrite(item, walk, swap);
      if (next !== item) {
        copy ??= { ...value };
        copy[key] = next;
      }
    }
    return copy ?? value;
  }
  return value;
}
