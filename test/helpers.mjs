// Helpers shared by the pool test files (crash, errors, lifecycle, timeout-abort, map). Not a test file
// itself: the name does not end in .test.mjs, so `node --test test/*.test.mjs` does not run it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, test as nodeTest } from 'node:test';
import { Pool } from '../dist/src/index.js';

export const RUNTIMES = ['thread', 'process'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Whether a process with this pid exists (a zombie counts: use the /proc stat where that matters). */
export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every test has a deadline: a task that never settles fails its test instead of stalling the file. */
export const test = (name, options, fn) =>
  typeof options === 'function'
    ? nodeTest(name, { timeout: 20_000 }, options)
    : nodeTest(name, { timeout: 20_000, ...options }, fn);
test.skip = nodeTest.skip;

/**
 * Registers, in the calling test file, an afterEach that terminates every pool made since the last test,
 * and returns `makePool(options)`: a Pool of `module` (unless options.module says otherwise) with its
 * worker events recorded in `events.starts`, `events.exits` and `events.errors`.
 */
export function usePools(module) {
  const pools = new Set();
  afterEach(async () => {
    for (const pool of pools) await pool.terminate();
    pools.clear();
  });
  return function makePool(options) {
    const pool = new Pool({ module, ...options });
    pools.add(pool);
    const events = { starts: [], exits: [], errors: [] };
    pool.on('workerStart', (info) => events.starts.push(info));
    pool.on('workerExit', (info) => events.exits.push(info));
    pool.on('workerError', (error) => events.errors.push(error));
    return { pool, events };
  };
}

/** Waits until `n` workers have reported ready, so ids and pids are known. */
export async function ready(events, n) {
  const deadline = Date.now() + 10_000;
  while (events.starts.length < n) {
    assert.ok(Date.now() < deadline, `only ${events.starts.length} of ${n} workers started`);
    await sleep(10);
  }
}

/** The value of a promise that must settle soon; fails (instead of hanging the test) when it does not. */
export async function settles(promise, what, limitMs = 5000) {
  let timer;
  const hung = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${limitMs} ms`)), limitMs);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** The rejection reason of a promise that must reject soon; fails if it resolves or does not settle. */
export async function rejection(promise, what = 'the task', limitMs = 5000) {
  try {
    const value = await settles(promise, what, limitMs);
    assert.fail(`expected ${what} to reject, got ${JSON.stringify(value)}`);
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    assert.doesNotMatch(String(error?.message), /did not settle within/);
    return error;
  }
}

/**
 * Makes a temporary directory (removed after the calling file's tests) and returns `newFile()`, which
 * names a fresh, not yet existing file in it: `<stem>-1.txt`, `<stem>-2.txt`, ...
 */
export function useTempDir(prefix, stem) {
  const tmp = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  let fileSeq = 0;
  return () => join(tmp, `${stem}-${++fileSeq}.txt`);
}

/** The non-empty lines of a file; none if it does not exist. */
export const lines = (file) =>
  existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];

/** Ids appended by the `record` fixture, one line per execution. */
export function executions(file) {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {}
  const counts = new Map();
  for (const line of text.split('\n').filter(Boolean)) counts.set(line, (counts.get(line) ?? 0) + 1);
  return counts;
}

export function assertRanExactlyOnce(file, ids) {
  const counts = executions(file);
  for (const id of ids)
    assert.equal(counts.get(String(id)), 1, `task ${id} ran ${counts.get(String(id)) ?? 0} times`);
  assert.equal(counts.size, ids.length, `unexpected ids in ${file}: ${[...counts.keys()]}`);
}

/** GET over a fresh connection: { status, type (content-type), body }. */
export function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}
