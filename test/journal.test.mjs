// corral run --journal / --resume (issue 14): a run SIGKILLed at random points (20 unless
// CORRAL_JOURNAL_KILLS says otherwise), resumed each time, ends
// with output (and --errors) identical to an uninterrupted run. The seed is printed; CORRAL_JOURNAL_SEED
// replays a failure.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../bench/rng.mjs';

const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const TASKS = fileURLToPath(new URL('./fixtures/journal-tasks.mjs', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'corral-journal-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const file = (name) => join(tmp, `${++seq}-${name}`);
/** Kill points of the first test: 20 (the number) unless CI asks for fewer on other Nodes. */
const KILLS = Number(process.env.CORRAL_JOURNAL_KILLS ?? 20);

/**
 * Runs the command; `killWhen()` resolves when to SIGKILL it (`killAfter` ms: a fixed time). Resolves
 * with { code, signal, stderr }.
 */
function corral(args, { killAfter, killWhen } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.stdout.resume();
    let exited = false;
    const killer = killAfter === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfter);
    killWhen?.(() => exited).then(() => exited || child.kill('SIGKILL'));
    const limit = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`corral ${args.join(' ')} did not finish\n${stderr}`));
    }, 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      exited = true;
      clearTimeout(killer);
      clearTimeout(limit);
      resolve({ code, signal, stderr });
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Items the journal's last complete record holds. */
const committed = (journal) => {
  if (!existsSync(journal)) return 0; // killed before the run began
  const text = readFileSync(journal, 'utf8');
  const lines = text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean);
  return lines.length > 1 ? JSON.parse(lines.at(-1)).c : 0;
};

function input(n) {
  const path = file('in.jsonl');
  writeFileSync(path, `${Array.from({ length: n }, (_, i) => i + 1).join('\n')}\n`);
  return path;
}

describe('corral run --journal --resume', () => {
  test(`${KILLS} SIGKILLs at random points, each resumed: output and errors identical to an uninterrupted run`, {
    timeout: 240_000,
  }, async (t) => {
    const seed = Number(process.env.CORRAL_JOURNAL_SEED ?? Date.now() % 1e9);
    t.diagnostic(`seed ${seed} (CORRAL_JOURNAL_SEED=${seed} replays it)`);
    const next = mulberry32(seed); // the kill points, from a printed seed
    const inPath = input(KILLS * 300);
    const task = `${TASKS}#jitter`;
    const base = { out: file('base.jsonl'), err: file('base-errors.jsonl') };
    const whole = await corral(['run', task, '-i', inPath, '-o', base.out, '-e', base.err, '-q']);
    assert.equal(whole.code, 1, whole.stderr); // multiples of 13 fail
    const out = file('out.jsonl');
    const err = file('errors.jsonl');
    const journal = file('journal.jsonl');
    const args = ['run', task, '-i', inPath, '-o', out, '-e', err, '--journal', journal, '--resume', '-q'];
    const progress = [];
    for (let kill = 0; kill < KILLS; kill++) {
      // Process workers now and then: a journal does not care which runtime wrote it.
      const runtime = kill % 4 === 3 ? 'process' : 'thread';
      // A kill point: one run in five while it starts (0-400 ms); the others once the journal holds
      // 30-230 more items, then 0-150 ms later: anywhere between two commits, or in the middle of one.
      const before = committed(journal);
      const early = next() < 0.2;
      const wait = early ? next() * 400 : next() * 150;
      const more = 30 + Math.floor(next() * 200);
      const r = await corral([...args, '--runtime', runtime], {
        async killWhen(exited) {
          while (!early && !exited() && committed(journal) < before + more) await sleep(10);
          await sleep(wait);
        },
      });
      if (r.signal !== 'SIGKILL') break; // it finished before its kill point
      progress.push(committed(journal));
    }
    t.diagnostic(`items committed at each kill: ${progress.join(' ')}`);
    assert.equal(progress.length, KILLS, `every run was killed before it finished`);
    assert.ok(new Set(progress).size >= KILLS / 2, 'the killed runs made progress');
    const last = await corral([...args.slice(0, -1)]);
    assert.equal(last.code, 1, last.stderr);
    assert.match(last.stderr, /resumed: [\d,]+ items finished before were skipped/);
    assert.equal(readFileSync(out, 'utf8'), readFileSync(base.out, 'utf8'));
    assert.equal(readFileSync(err, 'utf8'), readFileSync(base.err, 'utf8'));
  });

  test('--unordered: each item exactly once after kills and resumes', { timeout: 120_000 }, async () => {
    const inPath = input(3000);
    const out = file('out.jsonl');
    const journal = file('journal.jsonl');
    const args = ['run', `${TASKS}#jitter`, '-i', inPath, '-o', out, '--journal', journal, '--resume'];
    const flags = ['--unordered', '--with-index', '-q'];
    const began = performance.now();
    await corral([...args.slice(0, 5), file('whole.jsonl'), ...flags]);
    const wholeMs = performance.now() - began;
    for (const share of [0.2, 0.35, 0.25, 0.4])
      await corral([...args, ...flags], { killAfter: wholeMs * share });
    assert.ok(committed(journal) > 0);
    const r = await corral([...args, ...flags]);
    assert.equal(r.code, 1, r.stderr);
    const indices = readFileSync(out, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).index);
    const expected = Array.from({ length: 3000 }, (_, i) => i).filter((i) => (i + 1) % 13 !== 0);
    assert.deepEqual(
      indices.sort((a, b) => a - b),
      expected,
    );
  });

  test('a record cut short by the kill is ignored; the finished journal skips everything', async () => {
    const inPath = input(300);
    const out = file('out.jsonl');
    const journal = file('journal.jsonl');
    const args = ['run', `${TASKS}#jitter`, '-i', inPath, '-o', out, '--journal', journal, '-q'];
    assert.equal((await corral(args)).code, 1);
    const whole = readFileSync(out, 'utf8');
    appendFileSync(journal, '{"o":99999,"e":0,"c":9'); // as if the machine died mid-write
    appendFileSync(out, '{"x": "half a li');
    const again = await corral([...args.slice(0, -1), '--resume']);
    // Nothing left to run, and it exits as the whole run did: items failed in it.
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /resumed: 300 items finished before were skipped .*; \d+ of them had failed/);
    assert.equal(readFileSync(out, 'utf8'), whole);
  });

  test('refusals: no --output, a journal without --resume, another command, a changed input', async () => {
    const inPath = input(50);
    const journal = file('journal.jsonl');
    const task = `${TASKS}#jitter`;
    let r = await corral(['run', task, '-i', inPath, '--journal', journal]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--journal needs --output FILE/);
    r = await corral(['run', task, '-i', inPath, '--resume']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--resume needs the --journal FILE/);
    const out = file('out.jsonl');
    await corral(['run', task, '-i', inPath, '-o', out, '--journal', journal, '-q']);
    r = await corral(['run', task, '-i', inPath, '-o', out, '--journal', journal]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /holds an earlier run: add --resume/);
    r = await corral(['run', `${TASKS}#slow`, '-i', inPath, '-o', out, '--journal', journal, '--resume']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /belongs to a run with task/);
    appendFileSync(inPath, '51\n');
    r = await corral(['run', task, '-i', inPath, '-o', out, '--journal', journal, '--resume']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /the input changed/);
  });
});
