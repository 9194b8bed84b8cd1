// corral run --metrics-port and --dashboard (issue 14): the endpoint is scraped during a run and read
// with the OpenMetrics reference parser; the dashboard serves its page and its event stream.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const TASKS = fileURLToPath(new URL('./fixtures/journal-tasks.mjs', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'corral-observe-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const input = join(tmp, 'in.jsonl');
writeFileSync(input, `${Array.from({ length: 400 }, (_, i) => i).join('\n')}\n`);

const PYTHON = '/usr/bin/python3';
const reference = (() => {
  try {
    execFileSync(PYTHON, ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' });
    return existsSync(PYTHON);
  } catch {
    return false;
  }
})();

/** Starts the command; `url(re)` resolves with the first stderr match of `re`. */
function start(args) {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const waiters = [];
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
    for (const w of waiters) w();
  });
  child.stdout.resume();
  const done = new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  const limit = setTimeout(() => child.kill('SIGKILL'), 60_000);
  done.then(() => clearTimeout(limit));
  return {
    done,
    match: (re) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(stderr);
          if (m) resolve(m[1]);
        };
        waiters.push(check);
        check();
        done.then(() => reject(new Error(`no ${re} in:\n${stderr}`)));
      }),
  };
}

function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => {
        body += d;
        if (res.headers['content-type']?.startsWith('text/event-stream') && body.includes('\n\n')) {
          req.destroy();
          resolve({ status: res.statusCode, type: res.headers['content-type'], body });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('corral run --metrics-port / --dashboard', () => {
  test('--metrics-port: /metrics scraped during the run, valid OpenMetrics, counts growing', {
    timeout: 60_000,
  }, async () => {
    const run = start([
      'run',
      `${TASKS}#slow`,
      '-i',
      input,
      '-o',
      join(tmp, 'out.jsonl'),
      '--metrics-port',
      '0',
      '-w',
      '2',
    ]);
    const url = await run.match(/metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/);
    const seen = [];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 400));
      const res = await get(url, { accept: 'application/openmetrics-text; version=1.0.0' });
      assert.equal(res.status, 200);
      if (reference)
        execFileSync(
          PYTHON,
          [
            '-c',
            'import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nlist(p(sys.stdin.read()))',
          ],
          { input: res.body },
        );
      seen.push(Number(/^corral_task_items_total\{task="slow"\} (\d+)$/m.exec(res.body)?.[1] ?? 0));
    }
    const { code, stderr } = await run.done;
    assert.equal(code, 0, stderr);
    assert.ok(seen[2] > seen[0] && seen[2] < 400, `scraped mid-run, growing: ${seen}`);
  });

  test('--dashboard (no port): the address is printed, the page and its stream are served', {
    timeout: 60_000,
  }, async () => {
    const run = start([
      'run',
      '--dashboard',
      `${TASKS}#slow`,
      '-i',
      input,
      '-o',
      join(tmp, 'out2.jsonl'),
      '-q',
    ]);
    const url = await run.match(/dashboard at (http:\/\/127\.0\.0\.1:\d+\/)/);
    const page = await get(url);
    assert.equal(page.status, 200);
    assert.match(page.body, /<title>corral run .*journal-tasks\.mjs#slow - corral<\/title>/);
    const events = await get(`${url}events`);
    assert.match(events.body, /^retry: 1000\nevent: init\ndata: \{/);
    const { code } = await run.done;
    assert.equal(code, 0);
  });

  test('a port in use is a setup error (exit 2) that names the flag', async () => {
    const busy = createServer();
    await new Promise((r) => busy.listen(0, '127.0.0.1', r));
    const { port } = busy.address();
    try {
      const run = start([
        'run',
        `${TASKS}#slow`,
        '-i',
        input,
        '-o',
        join(tmp, 'out3.jsonl'),
        '--dashboard',
        String(port),
      ]);
      const { code, stderr } = await run.done;
      assert.equal(code, 2);
      assert.match(stderr, /--dashboard: .*in use/);
    } finally {
      busy.close();
    }
  });
});
