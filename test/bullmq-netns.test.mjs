// The BullMQ backend across network namespaces: three `corral worker` hosts, each in a network
// namespace this file creates (joined to the root namespace by a veth pair with a /30 of its own)
// and removes, a redis-server listening only on the root ends of those links, and a producer here.
// What crosses is real TCP between namespaces, as between machines. Skips, saying why, without
// root, `ip`, or the right to create namespaces (a container without CAP_NET_ADMIN).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { Pool } from '../dist/src/index.js';
import { alive, CLI, HAVE_REDIS, sleep, startHost, startRedis, TASKS } from './bullmq-helpers.mjs';

const ip = (...args) => spawnSync('ip', args, { encoding: 'utf8' });
const PREFIX = 'corral-t';
const K = 3;
// Names carry this process's pid (concurrent runs never share one); the subnets 10.213.<o>.0/30
// are spread by pid too, so two runs at once rarely pick the same.
const links = Array.from({ length: K }, (_, k) => {
  const o = (process.pid % 84) * 3 + k;
  return {
    ns: `${PREFIX}${process.pid}-${k}`,
    root: `crl${process.pid}r${k}`,
    peer: `crl${process.pid}n${k}`,
    rootAddr: `10.213.${o}.1`,
    nsAddr: `10.213.${o}.2`,
  };
});

/** Namespaces left by a run that died without its `after` (its pid is gone): removed. */
function removeStale() {
  for (const line of ip('netns', 'list').stdout.split('\n')) {
    const m = line.match(new RegExp(`^(${PREFIX}(\\d+)-\\d+)\\b`));
    if (m && !alive(Number(m[2]))) ip('netns', 'del', m[1]);
  }
}

/** Why this machine cannot run the test, or false. Tries a namespace and a veth pair, and removes them. */
function whyNot() {
  if (!HAVE_REDIS) return 'redis-server is not installed (apt-get install redis-server)';
  if (process.getuid?.() !== 0) return 'not root: network namespaces need root (CAP_NET_ADMIN)';
  if (ip('-V').error) return '`ip` is missing (apt-get install iproute2)';
  removeStale();
  const probe = `${PREFIX}${process.pid}-probe`;
  const add = ip('netns', 'add', probe);
  if (add.status !== 0) return `\`ip netns add\` fails here (no CAP_NET_ADMIN?): ${add.stderr.trim()}`;
  const veth = ip('link', 'add', `crl${process.pid}p`, 'type', 'veth', 'peer', 'name', 'p', 'netns', probe);
  ip('netns', 'del', probe);
  if (veth.status !== 0) return `cannot create a veth pair here: ${veth.stderr.trim()}`;
  return false;
}

function must(...args) {
  const r = ip(...args);
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** Removes what this file created; synchronous, so it also runs on exit whatever way it comes. */
function removeLinks() {
  for (const l of links) {
    ip('netns', 'del', l.ns); // takes its veth pair with it
    ip('link', 'del', l.root); // in case the namespace never got its end
  }
}
process.on('exit', removeLinks);

const SKIP = whyNot();

describe('BullMQ backend across network namespaces', { skip: SKIP, timeout: 30_000 }, () => {
  let redis;
  let pool;
  const hosts = [];

  before(async () => {
    for (const l of links) {
      must('netns', 'add', l.ns);
      must('link', 'add', l.root, 'type', 'veth', 'peer', 'name', l.peer, 'netns', l.ns);
      must('addr', 'add', `${l.rootAddr}/30`, 'dev', l.root);
      must('link', 'set', l.root, 'up');
      must('-n', l.ns, 'addr', 'add', `${l.nsAddr}/30`, 'dev', l.peer);
      must('-n', l.ns, 'link', 'set', l.peer, 'up');
      must('-n', l.ns, 'link', 'set', 'lo', 'up');
    }
    // Listening on the root ends only: not 127.0.0.1, not eth0.
    redis = await startRedis({ bind: links.map((l) => l.rootAddr) });
    hosts.push(
      ...(await Promise.all(
        links.map((l, k) =>
          startHost(
            `redis://${l.rootAddr}:${redis.port}`,
            'netns',
            ['--workers', '1', '--name', `ns-host-${k}`],
            TASKS,
            { netns: l.ns },
          ),
        ),
      )),
    );
  });

  after(async () => {
    await pool?.terminate();
    await Promise.all(hosts.map((h) => h.kill('SIGKILL')));
    await redis?.stop();
    // A namespace goes once no process is left in it: the hosts' local workers exit as their pipes close.
    const pids = hosts.flatMap((h) => h.children());
    for (let i = 0; i < 100 && pids.some(alive); i++) await sleep(20);
    removeLinks();
    const left = ip('netns', 'list').stdout;
    for (const l of links) {
      assert.ok(!left.includes(l.ns), `namespace ${l.ns} is left`);
      assert.notEqual(ip('link', 'show', l.root).status, 0, `link ${l.root} is left`);
    }
  });

  test('map over three namespaced hosts: ordered results, every host served, traffic on the veths', async () => {
    pool = new Pool({ module: TASKS, backend: { bullmq: { connection: redis.url, queue: 'netns' } } });
    const rx = links.map((l) => Number(readFileSync(`/sys/class/net/${l.root}/statistics/rx_bytes`, 'utf8')));
    const n = 3000;
    const results = await pool.map(
      'where',
      Array.from({ length: n }, (_, i) => i),
    );
    assert.equal(results.length, n);
    for (let i = 0; i < n; i++) if (results[i][0] !== i * i) assert.fail(`item ${i}: ${results[i]}`);
    const served = new Map();
    for (const [, at] of results) served.set(at, (served.get(at) ?? 0) + 1);
    for (const l of links) assert.ok(served.get(l.nsAddr) > 0, `no item ran in ${l.ns}: ${[...served]}`);
    assert.deepEqual([...served.keys()].sort(), links.map((l) => l.nsAddr).sort(), 'items ran nowhere else');

    // Redis sees each host's connections come from its namespace's end, in on the root end of that link.
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    let list;
    try {
      await admin.connect();
      list = String(await admin.client('LIST'));
    } finally {
      admin.disconnect();
    }
    const conns = list
      .trim()
      .split('\n')
      .map((line) => Object.fromEntries(line.split(' ').map((kv) => kv.split('=', 2))));
    for (const c of conns) assert.doesNotMatch(c.addr, /^127\./, `a connection from loopback: ${c.addr}`);
    for (const l of links) {
      const from = conns.filter((c) => c.addr.startsWith(`${l.nsAddr}:`));
      assert.ok(from.length > 0, `no connection from ${l.nsAddr}: ${conns.map((c) => c.addr)}`);
      for (const c of from) assert.equal(c.laddr.split(':')[0], l.rootAddr, 'in on its own link');
    }
    const ours = new Set([...links.map((l) => l.nsAddr), ...links.map((l) => l.rootAddr)]);
    for (const c of conns) assert.ok(ours.has(c.addr.split(':')[0]), `a connection from ${c.addr}`);
    // And the bytes crossed each veth pair.
    links.forEach((l, k) => {
      const now = Number(readFileSync(`/sys/class/net/${l.root}/statistics/rx_bytes`, 'utf8'));
      assert.ok(now - rx[k] > 1000, `${l.root} carried ${now - rx[k]} bytes during the map`);
    });
  });

  test("inside a namespace the root's 127.0.0.1 is out of reach: a host pointed there fails to start", async () => {
    const child = spawn(
      'ip',
      [
        ...['netns', 'exec', links[0].ns, process.execPath, CLI, 'worker'],
        ...['--redis', `redis://127.0.0.1:${redis.port}`, '--queue', 'netns', TASKS],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('timeout');
      }, 8000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.notEqual(code, 0, err);
    assert.notEqual(code, 'timeout', `still trying after 8 s: ${err}`);
    assert.match(err, /127\.0\.0\.1/);
  });
});
