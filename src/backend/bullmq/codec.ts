/**
 * What travels through Redis, in one place: a job's data (the unit: task, mode, items, budget), a
 * reply (its outcome, pushed by the host onto the producer's reply list), errors (rebuilt at the
 * producer as the typed error the host saw, with the host's name), the size policy and the module
 * version. Payloads are V8-serialised (the structured clone a local pool uses), so typed arrays, Maps,
 * Dates and errors travel as they do between local workers.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as errors from '../../errors.js';
import { PayloadTooLargeError, SerializationError, TaskError } from '../../errors.js';
import { builtin } from '../../lazy.js';
import type { TaskUsage, UnitMode, WireError } from '../../runtime/protocol.js';
import { fromWireError, toWireError } from '../../runtime/protocol.js';

const v8 = (): typeof import('node:v8') => builtin('node:v8');

/** A job's data, as BullMQ stores it (JSON): `p` is the V8-serialised payload in base64. */
export interface JobData {
  /** The module version it was built for ('' = any). */
  v: string;
  /** Task name, UnitMode, UNIT_* flags (only UNIT_USAGE travels), item count. */
  n: string;
  m: UnitMode;
  f: number;
  s: number;
  p: string;
  /** The reply list to push the outcome onto. */
  r: string;
  /** Timeout of the whole unit in ms (-1: none) and retries on the host. */
  t: number;
  y: number;
  /** Runs the producer already made of it (its attempts so far). */
  a: number;
  /** The pool's stallBudget, when it set one: it wins over the host's. */
  b?: number;
}

/** The outcome of one job, as pushed on the reply list. */
export type Reply =
  | {
      id: string;
      ok: true;
      value: unknown;
      itemErrors: [number, WireError][] | undefined;
      ms: number;
      usage: TaskUsage | undefined;
      host: string;
    }
  | { id: string; ok: false; error: WireError; host: string };

/** Encodes a unit's payload, or throws the typed error its call fails with. */
export function encodePayload(task: string, payload: unknown, limit: number): string {
  let bytes: Buffer;
  try {
    bytes = v8().serialize(payload);
  } catch (error) {
    throw new SerializationError(task, 'arguments', error);
  }
  if (bytes.length > limit) throw new PayloadTooLargeError(task, 'arguments', bytes.length, limit);
  return bytes.toString('base64');
}

export function decodePayload(p: string): unknown {
  return v8().deserialize(Buffer.from(p, 'base64'));
}

/** A reply as bytes; an ok reply too large (or not serialisable) becomes the typed error instead. */
export function encodeReply(reply: Reply, task: string, limit: number): Buffer {
  if (!reply.ok) return v8().serialize(reply);
  let bytes: Buffer;
  try {
    bytes = v8().serialize(reply);
  } catch (error) {
    return v8().serialize(errorReply(reply.id, reply.host, new SerializationError(task, 'result', error)));
  }
  if (bytes.length > limit) {
    const error = new PayloadTooLargeError(task, 'result', bytes.length, limit);
    return v8().serialize(errorReply(reply.id, reply.host, error));
  }
  return bytes;
}

export function decodeReply(bytes: Buffer): Reply {
  return v8().deserialize(bytes) as Reply;
}

export function errorReply(id: string, host: string, error: unknown): Reply {
  return { id, ok: false, error: toWireError(error), host };
}

const CLASSES = new Map<string, new (...args: never[]) => Error>();
for (const value of Object.values(errors)) {
  if (typeof value === 'function' && value.prototype instanceof Error) {
    CLASSES.set(value.name, value as unknown as new (...args: never[]) => Error);
  }
}

/**
 * The error a host reported, as the producer's caller gets it: corral's own typed errors keep their
 * class (instanceof works), code and fields; anything else became a TaskError on the host already.
 * `host` is added to each, and the message says where it happened.
 */
export function reviveError(wire: WireError, host: string): Error {
  const Class = CLASSES.get(wire.name);
  let error: Error;
  if (Class && Class !== Error) {
    error = Object.create(Class.prototype) as Error;
    Object.defineProperty(error, 'message', { value: `${wire.message} (on host ${host})`, writable: true });
    if (wire.stack !== undefined)
      Object.defineProperty(error, 'stack', { value: wire.stack, writable: true });
    Object.assign(error, wire.props);
    if (wire.cause) {
      const cause = 'value' in wire.cause ? wire.cause.value : fromWireError(wire.cause);
      Object.defineProperty(error, 'cause', { value: cause, writable: true, configurable: true });
    }
  } else {
    error = new TaskError(String(wire.props.task ?? '?'), fromWireError(wire));
  }
  Object.defineProperty(error, 'host', { value: host, enumerable: true, writable: true });
  return error;
}

/**
 * The module's version: the one given, else a hash of the module file's bytes (12 hex digits), else
 * '' (the file is not readable here: hosts then accept the job whatever they run).
 */
export function moduleVersionOf(module: string, given: string | undefined): string {
  if (given !== undefined) return given;
  try {
    const path = module.startsWith('file:') ? fileURLToPath(module) : module;
    return builtin('node:crypto').createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 12);
  } catch {
    return '';
  }
}

/** Redis keys of a queue: the producers' reply lists, the hosts' heartbeats, the cancel channel. */
export function keys(prefix: string, queue: string) {
  const base = `${prefix}:${queue}:corral`;
  return {
    reply: (pool: string) => `${base}:reply:${pool}`,
    hosts: `${base}:hosts`,
    cancel: `${base}:cancel`,
  };
}
