// Fake /proc and /sys trees are built per test in a tmp dir, so each case states its whole layout in one place.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../dist/src/errors.js';
import { cpuCount, ioPoolSize, probeCpus, probeMemory } from '../dist/src/limits/system.js';

const tmp = mkdtempSync(join(os.tmpdir(), 'corral-cgroup-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ap = os.availableParallelism();
const MiB = 1024 * 1024;
let seq = 0;

/**
 * Writes `proc` files under <tree>/proc and `sys` files (absolute paths as mountinfo lists them) under
 * <tree>/root, and returns the ProbeOptions that point at them. A wide affinity mask is the default so that
 * only the quota can lower the count below availableParallelism.
 */
function tree({
  cgroup,
  mountinfo,
  status = 'Name:\tnode\nCpus_allowed_list:\t0-63\n',
  meminfo,
  sys = {},
  env = {},
}) {
  const base = join(tmp, String(++seq));
  const files = {
    [join(base, 'proc/self/cgroup')]: cgroup,
    [join(base, 'proc/self/mountinfo')]: mountinfo,
    [join(base, 'proc/self/status')]: status,
    [join(base, 'proc/meminfo')]: meminfo,
  };
  for (const [path, text] of Object.entries(sys)) files[join(base, 'root', path)] = text;
  for (const [path, text] of Object.entries(files)) {
    if (text == null) continue; // null also overrides a default: "this file does not exist"
    mkdirSync(dirname(path), { recursive: true });
    // A trailing slash asks for a directory only (a cgroup that exists but has no limit files).
    if (path.endsWith('/')) mkdirSync(path, { recursive: true });
    else writeFileSync(path, text);
  }
  return {
    options: { procRoot: join(base, 'proc'), sysfsRoot: join(base, 'root'), env },
    root: join(base, 'root'),
  };
}

const V2_MOUNT = '30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n';
const V2_CONTROLLERS = { '/sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids\n' };

const expectedFor = (limit) => Math.max(1, Math.floor(Math.min(ap, 64, limit)));

describe('cgroup v2 CPU quota', () => {
  test('cpu.max "150000 100000" is 1.5 cores and floors to 1', () => {
    const { options, root } = tree({
      cgroup: '0::/app.slice/job\n',
      mountinfo: V2_MOUNT,
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/app.slice/job/cpu.max': '150000 100000\n' },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 1.5);
    assert.equal(info.effective, expectedFor(1.5));
    assert.equal(info.effective, 1);
    assert.equal(info.decidedBy, ap >= 2 ? 'quota' : 'cores');
    assert.deepEqual(info.cgroup, { version: 2, path: join(root, 'sys/fs/cgroup/app.slice/job') });
    assert.equal(info.affinity, 64);
    assert.equal(cpuCount(options), info.effective);
  });

  test('cpu.max "max 100000" is no quota', () => {
    const { options, root } = tree({
      cgroup: '0::/app.slice/job\n',
      mountinfo: V2_MOUNT,
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/app.slice/job/cpu.max': 'max 100000\n' },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, null);
    assert.equal(info.effective, Math.min(ap, 64));
    assert.equal(info.decidedBy, ap < os.cpus().length ? 'affinity' : 'cores');
    assert.deepEqual(info.cgroup, { version: 2, path: join(root, 'sys/fs/cgroup/app.slice/job') });
  });

  test('a stricter parent wins over a looser child', () => {
    const { options, root } = tree({
      cgroup: '0::/app.slice/job\n',
      mountinfo: V2_MOUNT,
      sys: {
        ...V2_CONTROLLERS,
        '/sys/fs/cgroup/app.slice/cpu.max': '50000 100000\n',
        '/sys/fs/cgroup/app.slice/job/cpu.max': '400000 100000\n',
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 0.5);
    assert.equal(info.effective, 1);
    assert.equal(info.cgroup.path, join(root, 'sys/fs/cgroup/app.slice'));
  });

  test('a stricter child wins over a looser parent (not simply the top-most limit)', () => {
    const { options } = tree({
      cgroup: '0::/app.slice/job\n',
      mountinfo: V2_MOUNT,
      sys: {
        ...V2_CONTROLLERS,
        '/sys/fs/cgroup/app.slice/cpu.max': '800000 100000\n',
        '/sys/fs/cgroup/app.slice/job/cpu.max': '250000 100000\n',
      },
    });
    assert.equal(probeCpus(options).quota, 2.5);
  });

  test('a private cgroup namespace path is resolved relative to the mount root', () => {
    const { options, root } = tree({
      cgroup: '0::/kubepods/pod1/sub\n',
      mountinfo: '30 22 0:27 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n',
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/sub/cpu.max': '300000 200000\n' },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 1.5);
    assert.equal(info.cgroup.path, join(root, 'sys/fs/cgroup/sub'));
  });

  test('a host path that does not exist in the container falls back to the mount point', () => {
    const { options, root } = tree({
      cgroup: '0::/system.slice/docker-abc.scope\n',
      mountinfo: V2_MOUNT,
      sys: {
        ...V2_CONTROLLERS,
        '/sys/fs/cgroup/cpu.max': '100000 100000\n',
        '/sys/fs/cgroup/memory.current': `${5 * MiB}\n`,
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 1);
    assert.equal(info.cgroup.path, join(root, 'sys/fs/cgroup'));
    // Usage is read from the process's own directory only, so this shows which directory that resolved to.
    assert.equal(probeMemory(options).cgroupUsage, 5 * MiB);
  });
});

describe('cgroup v1 CPU quota', () => {
  test('N:cpu:/ layout (cpu mounted alone)', () => {
    const { options, root } = tree({
      cgroup: '2:cpuacct:/\n1:cpu:/batch\n0::/\n',
      mountinfo:
        '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu\n' +
        '32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime shared:6 - cgroup cgroup rw,cpuacct\n',
      sys: {
        '/sys/fs/cgroup/cpu/batch/cpu.cfs_quota_us': '50000\n',
        '/sys/fs/cgroup/cpu/batch/cpu.cfs_period_us': '100000\n',
        '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n',
        '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 0.5);
    assert.equal(info.effective, 1);
    assert.deepEqual(info.cgroup, { version: 1, path: join(root, 'sys/fs/cgroup/cpu/batch') });
  });

  test('N:cpu,cpuacct:/path layout', () => {
    const { options } = tree({
      cgroup: '5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n',
      mountinfo: '40 30 0:40 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n',
      sys: {
        '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us': '150000\n',
        '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n',
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 1.5);
    assert.equal(info.effective, expectedFor(1.5));
    assert.equal(info.cgroup.version, 1);
  });

  test('cfs_quota_us -1 everywhere is no quota', () => {
    const { options } = tree({
      cgroup: '1:cpu:/\n',
      mountinfo: '31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n',
      sys: {
        '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n',
        '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, null);
    assert.equal(info.cgroup.version, 1);
  });

  test('hybrid host: a unified mount carrying only hugetlb is ignored, v1 cpu is used', () => {
    const { options, root } = tree({
      cgroup: '9:name=systemd:/\n1:cpu:/\n0::/\n',
      mountinfo:
        '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n' +
        '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n',
      sys: {
        '/sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n',
        // A decoy: if v2 were trusted despite its controller list the quota would read 1.
        '/sys/fs/cgroup/unified/cpu.max': '100000 100000\n',
        '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '250000\n',
        '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
      },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, 2.5);
    assert.deepEqual(info.cgroup, { version: 1, path: join(root, 'sys/fs/cgroup/cpu') });
  });
});

describe('missing or unreadable information', () => {
  test('a cgroup directory without limit files is no quota', () => {
    const { options } = tree({
      cgroup: '0::/app\n',
      mountinfo: V2_MOUNT,
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/app/': '' },
    });
    const info = probeCpus(options);
    assert.equal(info.quota, null);
    assert.equal(info.effective, Math.min(ap, 64));
  });

  test('no /proc files at all: no quota, no affinity, no cgroup, no throw', () => {
    const { options } = tree({ cgroup: null, mountinfo: null, status: null });
    const info = probeCpus(options);
    assert.deepEqual(
      { quota: info.quota, affinity: info.affinity, cgroup: info.cgroup, effective: info.effective },
      { quota: null, affinity: null, cgroup: null, effective: Math.max(1, ap) },
    );
    const mem = probeMemory(options);
    assert.equal(mem.cgroupLimit, null);
    assert.equal(mem.cgroupVersion, null);
    assert.equal(mem.limit, os.totalmem());
  });

  test('garbage in cpu.max is no quota', () => {
    const { options } = tree({
      cgroup: '0::/\n',
      mountinfo: V2_MOUNT,
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/cpu.max': 'lots\n' },
    });
    assert.equal(probeCpus(options).quota, null);
  });

  test('affinity mask counts a comma/range list and can decide', () => {
    const { options } = tree({
      cgroup: null,
      mountinfo: null,
      status: 'Cpus_allowed:\tf\nCpus_allowed_list:\t0,2-5,7\n',
    });
    const info = probeCpus(options);
    assert.equal(info.affinity, 6);
    assert.equal(info.effective, Math.min(ap, 6));
  });
});

describe('memory', () => {
  test('v2 memory.max in bytes, stricter parent, usage from memory.current', () => {
    const { options } = tree({
      cgroup: '0::/app/job\n',
      mountinfo: V2_MOUNT,
      meminfo: 'MemTotal:       8000000 kB\nMemFree:  100 kB\nMemAvailable:    1234 kB\n',
      sys: {
        ...V2_CONTROLLERS,
        '/sys/fs/cgroup/app/memory.max': `${256 * MiB}\n`,
        '/sys/fs/cgroup/app/job/memory.max': `${512 * MiB}\n`,
        '/sys/fs/cgroup/app/job/memory.current': `${100 * MiB}\n`,
      },
    });
    const mem = probeMemory(options);
    assert.equal(mem.cgroupVersion, 2);
    assert.equal(mem.cgroupLimit, 256 * MiB);
    assert.equal(mem.cgroupUsage, 100 * MiB);
    assert.equal(mem.available, 1234 * 1024);
    assert.equal(mem.total, os.totalmem());
    assert.equal(mem.limit, Math.min(os.totalmem(), 256 * MiB));
    assert.equal(mem.decidedBy, os.totalmem() > 256 * MiB ? 'cgroup' : 'physical');
  });

  test('v2 memory.max "max" is no limit', () => {
    const { options } = tree({
      cgroup: '0::/app\n',
      mountinfo: V2_MOUNT,
      sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/app/memory.max': 'max\n' },
    });
    const mem = probeMemory(options);
    assert.equal(mem.cgroupVersion, 2);
    assert.equal(mem.cgroupLimit, null);
    assert.equal(mem.limit, os.totalmem());
    assert.equal(mem.decidedBy, 'physical');
  });

  test('v1 unlimited sentinel 9223372036854771712 is no limit', () => {
    const { options } = tree({
      cgroup: '4:memory:/job\n1:cpu:/\n',
      mountinfo: '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n',
      sys: {
        '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n',
        '/sys/fs/cgroup/memory/job/memory.limit_in_bytes': '9223372036854771712\n',
        '/sys/fs/cgroup/memory/job/memory.usage_in_bytes': '3137536\n',
      },
    });
    const mem = probeMemory(options);
    assert.equal(mem.cgroupVersion, 1);
    assert.equal(mem.cgroupLimit, null);
    assert.equal(mem.cgroupUsage, 3137536);
    assert.equal(mem.limit, os.totalmem());
    assert.equal(mem.decidedBy, 'physical');
  });

  test('v1 memory.limit_in_bytes in bytes', () => {
    const { options } = tree({
      cgroup: '4:memory:/job\n',
      mountinfo: '34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n',
      sys: { '/sys/fs/cgroup/memory/job/memory.limit_in_bytes': `${64 * MiB}\n` },
    });
    const mem = probeMemory(options);
    assert.equal(mem.cgroupLimit, 64 * MiB);
    assert.equal(mem.limit, 64 * MiB);
    assert.equal(mem.decidedBy, 'cgroup');
  });
});

describe('CORRAL_CPU_COUNT', () => {
  const base = {
    cgroup: '0::/\n',
    mountinfo: V2_MOUNT,
    sys: { ...V2_CONTROLLERS, '/sys/fs/cgroup/cpu.max': '100000 100000\n' },
  };

  test('a positive integer wins over the quota', () => {
    const { options } = tree({ ...base, env: { CORRAL_CPU_COUNT: '7' } });
    const info = probeCpus(options);
    assert.equal(info.effective, 7);
    assert.equal(info.decidedBy, 'env');
    assert.equal(info.quota, 1);
    assert.equal(cpuCount(options), 7);
  });

  for (const bad of ['x', '0', '-2', '1.5', '3cpus', '1e3']) {
    test(`"${bad}" throws ConfigError`, () => {
      const { options } = tree({ ...base, env: { CORRAL_CPU_COUNT: bad } });
      assert.throws(
        () => probeCpus(options),
        (err) =>
          err instanceof ConfigError &&
          err.code === 'ERR_INVALID_OPTION' &&
          err.option === 'CORRAL_CPU_COUNT' &&
          err.message === `CORRAL_CPU_COUNT: must be a positive integer, got "${bad}"`,
      );
      assert.throws(() => cpuCount(options), ConfigError);
    });
  }
});

test('ioPoolSize is 2 x cpus, at least 2', () => {
  assert.deepEqual([0, 1, 2, 3, 16].map(ioPoolSize), [2, 2, 4, 6, 32]);
  assert.throws(() => ioPoolSize(Number.NaN), ConfigError);
});

test('the real machine', {
  skip: process.env.CORRAL_CPU_COUNT !== undefined && 'CORRAL_CPU_COUNT is set',
}, () => {
  const n = cpuCount();
  assert.ok(Number.isInteger(n));
  assert.ok(n >= 1 && n <= Math.max(1, os.cpus().length), `cpuCount() = ${n}, cores = ${os.cpus().length}`);
  assert.equal(cpuCount(), n);
  assert.equal(probeCpus().effective, n);
  const mem = probeMemory();
  assert.ok(mem.limit > 0 && mem.limit <= mem.total);
  assert.ok(mem.available > 0);
});
