#!/usr/bin/env node
// Builds corral's native pieces into prebuilds/<platform>-<arch>/, the one place the loader
// (src/native/index.ts) looks:
//
//   corral.napi.node        native/binding.gyp (corral.c): Node-API 8, one build for every
//                           Node: setPdeathsig, getrlimit/setrlimit/prlimit.
//   corral_shm.abi<N>.node  native/shm.gypi (shm.cc): SharedMemory's shm_open/mmap addon. It
//                           needs the V8 C++ API (no Node-API can wrap foreign memory in a
//                           SharedArrayBuffer before Node 26), so one build per Node ABI
//                           (process.versions.modules: 115 = Node 20, 127 = 22, 137 = 24).
//   corral-shm-tracker      native/shm.gypi (shm-tracker.c): the segment cleanup process.
//   corral_heap.abi<N>.node native/shm.gypi (heap.cc): the heap guard, which ends a worker soon
//                           after its V8 heap fills; V8 API too, so built beside the shm addon.
//
// Usage:
//   node scripts/build-native.mjs                  this Node, this machine (what `prepare` runs)
//   node scripts/build-native.mjs --node=22,24     the shm addon for more Node majors too
//   node scripts/build-native.mjs --node=20,22,24 --arch=x64,arm64 --strict --clean
//                                                  the published set (what `prepack` runs)
//   CORRAL_NATIVE_NODES=24 node scripts/build-native.mjs
//
// Other majors' Node binaries come from `npx -y node@<major>` and their headers from the npm
// package node-linux-<arch>@<version> (the official binary distribution, include/node
// included), so only the npm registry is needed. Another architecture (arm64 on x64) is
// cross-compiled with aarch64-linux-gnu-g++ and load-tested under qemu-aarch64 with that
// architecture's own Node, when qemu is installed.
//
// Without --strict the script never fails the surrounding install or test: corral works
// without the addons (it refuses rlimits and cross-process SharedMemory, saying why), so it
// prints one line per build and exits 0. With --strict (`corral build-native`, prepack) a
// build that did not happen exits 1. Full node-gyp output goes to native/build/logs/.

import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const prebuilds = path.join(root, 'prebuilds');
const logDir = path.join(nativeDir, 'build', 'logs');
const rel = (p) => path.relative(process.cwd(), p) || '.';
const exe = (name) => (process.platform === 'win32' ? `${name}.cmd` : name);

// --- arguments -------------------------------------------------------------------

function listArg(name, envName) {
  const out = new Set();
  const add = (list) => {
    for (const v of String(list).split(',')) if (v.trim()) out.add(v.trim());
  };
  for (const arg of process.argv.slice(2)) {
    const short = new RegExp(`^--${name}(\\d+)$`).exec(arg);
    if (short) add(short[1]);
    else if (arg.startsWith(`--${name}=`)) add(arg.slice(name.length + 3));
  }
  if (envName && process.env[envName]) add(process.env[envName]);
  return [...out];
}

const flag = (name) => process.argv.includes(`--${name}`);
const strict = flag('strict');
const hostMajor = Number(process.versions.node.split('.')[0]);
const majors = [
  ...new Set([
    hostMajor,
    ...listArg('node', 'CORRAL_NATIVE_NODES')
      .filter((m) => /^\d+$/.test(m))
      .map(Number),
  ]),
].sort((a, b) => a - b);
const arches = listArg('arch', 'CORRAL_NATIVE_ARCHES');
if (arches.length === 0) arches.push(process.arch);

// --- helpers shared by every build -------------------------------------------------

class Skip extends Error {}

// Cross compilers per target architecture (Debian/Ubuntu package names in the hint).
const CROSS = {
  arm64: { triple: 'aarch64-linux-gnu', apt: 'g++-aarch64-linux-gnu', qemu: 'qemu-aarch64' },
  x64: { triple: 'x86_64-linux-gnu', apt: 'g++-x86-64-linux-gnu', qemu: 'qemu-x86_64' },
};

function onPath(cmd) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && existsSync(path.join(dir, cmd)));
}

/**
 * node-gyp, from wherever it is: corral's own devDependency (a clone), the one npm points its
 * scripts at (npm_config_node_gyp), or the copy bundled with npm itself, which every Node
 * install has (an installed corral has no devDependencies).
 */
function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(createRequire(path.join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a clone with devDependencies: try npm's own copy
  }
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) {
    candidates.push(
      path.resolve(
        path.dirname(process.env.npm_execpath),
        '..',
        'node_modules',
        'node-gyp',
        'bin',
        'node-gyp.js',
      ),
    );
  }
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  for (const lib of [path.join(prefix, 'lib'), prefix]) {
    candidates.push(path.join(lib, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  return candidates.find((c) => existsSync(c));
}

// Local headers avoid node-gyp's download from nodejs.org, unreachable on offline builders.
// npm passes its `nodedir` setting as npm_config_nodedir; a plain `node script` does not, so
// also look next to the node binary (/usr, /usr/local, nvm's prefix).
function findNodeDir(execPath, { allowNpmConfig }) {
  const candidates = [
    allowNpmConfig ? process.env.npm_config_nodedir : undefined,
    path.resolve(path.dirname(execPath), '..'),
  ];
  for (const dir of candidates) {
    if (dir && existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  return undefined;
}

// The most useful single line of a failed build: the compiler's first error, else node-gyp's
// own complaint (missing python/make/compiler), else its last word.
function firstError(output) {
  const lines = output.split('\n').map((l) => l.trim());
  const compiler = lines.find((l) => /\berror:/.test(l) && !l.startsWith('gyp'));
  if (compiler) return compiler;
  const boring = /^gyp ERR! (System|command|cwd|node -v|node-gyp -v|not ok|configure error|build error)\b/;
  const gyp = lines.find((l) => l.startsWith('gyp ERR!') && !boring.test(l));
  if (gyp) return gyp.replace(/^gyp ERR! (stack )?/, '');
  return lines.filter(Boolean).at(-1) ?? 'no output';
}

/** What a build needs from the machine, checked before node-gyp so the reason reads plainly. */
function checkToolchain(arch) {
  const missing = [];
  if (!onPath('make')) missing.push('make');
  if (!onPath('python3') && !onPath('python')) missing.push('python3');
  if (arch === process.arch) {
    const cc = process.env.CC ?? 'cc';
    const cxx = process.env.CXX ?? 'g++';
    if (!onPath(cc) && !onPath('gcc')) missing.push(`a C compiler (${cc})`);
    if (!onPath(cxx) && !onPath('c++')) missing.push(`a C++ compiler (${cxx})`);
  } else {
    const cross = CROSS[arch];
    if (!cross) throw new Skip(`no cross-compiler known for ${arch}; build on a ${arch} machine instead`);
    if (!onPath(`${cross.triple}-g++`)) missing.push(`${cross.triple}-g++ (apt-get install ${cross.apt})`);
  }
  if (missing.length > 0) throw new Skip(`missing ${missing.join(', ')}`);
}

function crossEnv(arch) {
  if (arch === process.arch) return {};
  const t = CROSS[arch].triple;
  return { CC: `${t}-gcc`, CXX: `${t}-g++`, LINK: `${t}-g++`, AR: `${t}-ar` };
}

/** Runs node-gyp; throws Skip with the reason when it fails. Writes the full output to `log`. */
function nodeGyp(nodeGypJs, args, cwd, log, extraEnv) {
  // npm run exports its config as npm_config_* (here nodedir=/usr, the running Node's headers),
  // and node-gyp lets those win over our --nodedir/--target: building for another Node needs
  // them gone.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !/^npm_config_(nodedir|target|runtime|dist_url|arch)$/i.test(k),
    ),
  );
  const result = spawnSync(process.execPath, [nodeGypJs, ...args], {
    cwd,
    env: { ...env, ...extraEnv },
    encoding: 'utf8',
    // A hung compiler or a header download that never times out must not hang the caller.
    timeout: 5 * 60_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  const output = `$ ${process.execPath} ${nodeGypJs} ${args.join(' ')}\n${result.stdout ?? ''}${result.stderr ?? ''}`;
  try {
    mkdirSync(path.dirname(log), { recursive: true });
    writeFileSync(log, output);
  } catch {
    // The log is a courtesy (an installed package may be read-only); its absence is no failure.
  }
  if (result.error) {
    const why =
      result.error.code === 'ETIMEDOUT' ? 'node-gyp timed out after 5 minutes' : result.error.message;
    throw new Skip(`${why}; see ${rel(log)}`);
  }
  if (result.status !== 0) {
    const how = result.signal ? `signal ${result.signal}` : `exit code ${result.status}`;
    throw new Skip(`node-gyp failed with ${how}: ${firstError(output)}; see ${rel(log)}`);
  }
}

// --- Node binaries and headers per (major, arch) -------------------------------------

/** The host's node binary, version and ABI for `major`, via `npx -y node@<major>`. */
const hostNodes = new Map();
function hostNode(major) {
  if (major === hostMajor) {
    return { execPath: process.execPath, version: process.version, abi: process.versions.modules };
  }
  if (!hostNodes.has(major)) {
    const r = spawnSync(
      exe('npx'),
      [
        '-y',
        `node@${major}`,
        '-p',
        'JSON.stringify([process.execPath, process.version, process.versions.modules])',
      ],
      { encoding: 'utf8', timeout: 10 * 60_000 },
    );
    if (r.status !== 0) {
      const why = (r.stderr || r.error?.message || `exit code ${r.status}`).trim().split('\n').at(-1);
      hostNodes.set(major, new Skip(`\`npx -y node@${major}\` failed: ${why}`));
    } else {
      const [execPath, version, abi] = JSON.parse(r.stdout.trim().split('\n').at(-1));
      hostNodes.set(major, { execPath, version, abi });
    }
  }
  const got = hostNodes.get(major);
  if (got instanceof Skip) throw got;
  return got;
}

/** Unpacks `parts` of the npm package node-<platform>-<arch>@<version> into `dir` (once). */
function officialNode(version, arch, dir, parts) {
  const pkg = `node-${process.platform}-${arch}@${version.replace(/^v/, '')}`;
  const pack = spawnSync(exe('npm'), ['pack', pkg, '--pack-destination', dir, '--silent'], {
    encoding: 'utf8',
    timeout: 10 * 60_000,
  });
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (pack.status !== 0 || !tgz) {
    const why = (pack.stderr || pack.error?.message || '').trim().split('\n').at(-1);
    throw new Skip(`\`npm pack ${pkg}\` failed${why ? `: ${why}` : ''}`);
  }
  const untar = spawnSync(
    'tar',
    ['-xzf', path.join(dir, tgz), '-C', dir, ...parts.map((p) => `package/${p}`)],
    {
      encoding: 'utf8',
      timeout: 5 * 60_000,
    },
  );
  rmSync(path.join(dir, tgz), { force: true });
  if (untar.status !== 0) {
    throw new Skip(
      `${pkg} did not unpack ${parts.join(', ')}: ${(untar.stderr ?? '').trim() || `tar exit ${untar.status}`}`,
    );
  }
  return path.join(dir, 'package');
}

const scratchRoot = mkdtempSync(path.join(os.tmpdir(), 'corral-native-'));
const headerDirs = new Map();
/** A --nodedir for `node` (headers do not depend on the target architecture). */
function headersFor(node) {
  if (node.execPath === process.execPath) {
    const local = findNodeDir(node.execPath, { allowNpmConfig: true });
    if (local) return local;
    // A user's machine: node-gyp downloads the headers for the running Node itself.
    return undefined;
  }
  const local = findNodeDir(node.execPath, { allowNpmConfig: false });
  if (local) return local;
  if (!headerDirs.has(node.version)) {
    const dir = mkdtempSync(path.join(scratchRoot, 'headers-'));
    headerDirs.set(node.version, officialNode(node.version, process.arch, dir, ['include/node']));
  }
  return headerDirs.get(node.version);
}

/** How to run code under `arch`'s Node of `node.version`: [command, ...args], or undefined. */
const foreignNodes = new Map();
function runnerFor(node, arch) {
  if (arch === process.arch) return [node.execPath];
  const cross = CROSS[arch];
  if (!cross || !onPath(cross.qemu) || !existsSync(`/usr/${cross.triple}`)) return undefined;
  if (!foreignNodes.has(node.version)) {
    const dir = mkdtempSync(path.join(scratchRoot, `node-${arch}-`));
    foreignNodes.set(
      node.version,
      path.join(officialNode(node.version, arch, dir, ['bin/node']), 'bin', 'node'),
    );
  }
  return [cross.qemu, '-L', `/usr/${cross.triple}`, foreignNodes.get(node.version)];
}

// ELF e_machine of each architecture we build for.
const ELF_MACHINE = { x64: 62, arm64: 183 };

/**
 * Loads `file` in that architecture's Node (a child, so a crashing addon cannot take this
 * script down): natively, or under qemu for another architecture. Without qemu, checks the
 * ELF header names the right machine. Returns a note for the report line; throws Skip when
 * the build is unusable.
 */
function verify(file, node, arch, check) {
  const runner = runnerFor(node, arch);
  if (!runner) {
    const elf = readFileSync(file);
    const machine = elf.readUInt16LE(18);
    if (elf.readUInt32BE(0) !== 0x7f454c46 || machine !== ELF_MACHINE[arch]) {
      throw new Skip(`${rel(file)} is not an ELF object for ${arch} (e_machine ${machine})`);
    }
    return `ELF ${arch}; not load-tested (no ${CROSS[arch]?.qemu ?? 'emulator'})`;
  }
  const [cmd, ...pre] = runner;
  const r = spawnSync(
    cmd,
    [...pre, '-e', `const n = require(process.argv[1]); if (!(${check})) process.exit(3)`, file],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status !== 0) {
    const why = (r.stderr ?? '').split('\n').find((l) => /Error/.test(l)) ?? `exit code ${r.status}`;
    throw new Skip(
      `built ${rel(file)} but it does not load in Node ${node.version} (${arch}): ${why.trim()}`,
    );
  }
  return `loads in Node ${node.version}${arch === process.arch ? '' : ` (${arch}, under ${cmd})`}`;
}

/**
 * Builds the gyp file `gyp` (native/binding.gyp or native/shm.gypi) for `node` on `arch` in
 * a scratch project whose binding.gyp only includes it: node-gyp insists on ./build and
 * ./binding.gyp, and building elsewhere keeps one target's objects from clobbering
 * another's and the source tree free of build output. Returns build/Release.
 */
function gypBuild(nodeGypJs, gyp, node, arch, logName) {
  checkToolchain(arch);
  const project = mkdtempSync(path.join(scratchRoot, 'project-'));
  writeFileSync(
    path.join(project, 'binding.gyp'),
    `{ 'includes': [${JSON.stringify(path.join(nativeDir, gyp))}] }\n`,
  );
  const nodeDir = headersFor(node);
  const args = [
    'rebuild',
    '--directory',
    project,
    `--target=${node.version.replace(/^v/, '')}`,
    `--arch=${arch}`,
  ];
  if (nodeDir) args.push(`--nodedir=${nodeDir}`);
  nodeGyp(nodeGypJs, args, project, path.join(logDir, logName), crossEnv(arch));
  return path.join(project, 'build', 'Release');
}

function install(built, file, outDir, as = file) {
  const from = path.join(built, file);
  if (!existsSync(from)) throw new Skip(`node-gyp succeeded but ${file} is missing`);
  mkdirSync(outDir, { recursive: true });
  copyFileSync(from, path.join(outDir, as));
  return path.join(outDir, as);
}

// --- the builds ---------------------------------------------------------------------

function buildCorral(nodeGypJs, arch) {
  const node = hostNode(hostMajor);
  const outDir = path.join(prebuilds, `${process.platform}-${arch}`);
  const built = gypBuild(nodeGypJs, 'binding.gyp', node, arch, `corral-${arch}.log`);
  const file = install(built, 'corral.node', outDir, 'corral.napi.node');
  const note = verify(file, node, arch, 'typeof n.prlimit === "function"');
  return `built ${rel(file)} (Node-API 8; ${note})`;
}

function buildShm(nodeGypJs, major, arch) {
  const node = hostNode(major);
  const outDir = path.join(prebuilds, `${process.platform}-${arch}`);
  const built = gypBuild(nodeGypJs, 'shm.gypi', node, arch, `shm-${arch}-abi${node.abi}.log`);
  install(built, 'corral-shm-tracker', outDir);
  const files = [];
  let note = '';
  for (const [name, fn] of [
    ['corral_shm', 'create'],
    ['corral_heap', 'arm'],
  ]) {
    const file = install(built, `${name}.node`, outDir, `${name}.abi${node.abi}.node`);
    note = verify(
      file,
      node,
      arch,
      `n.abi === Number(process.versions.modules) && typeof n.${fn} === 'function'`,
    );
    files.push(rel(file));
  }
  return `built ${files.join(', ')} and corral-shm-tracker for Node ${node.version}, ABI ${node.abi} (${note})`;
}

let failures = 0;
function report(what, fn, consequence) {
  try {
    console.log(`${what}: ${fn()}`);
  } catch (err) {
    if (!(err instanceof Skip)) throw err;
    failures++;
    console.log(`${what}: not built (${err.message}); ${consequence}`);
  }
}

function main() {
  const noCorral = 'corral still works, but refuses rlimits (addressSpace, data, openFiles, cpuTime)';
  const noShm =
    'SharedMemory still works between threads, not across processes, and a worker over its heap limit dies as slowly as V8 lets it';
  if (process.platform !== 'linux') {
    console.log(
      `corral native addons: not built (they are Linux-only and this is ${process.platform}); ${noCorral}; ${noShm}`,
    );
    failures++;
    return;
  }
  const nodeGypJs = findNodeGyp();
  if (!nodeGypJs) {
    console.log(
      'corral native addons: not built (node-gyp not found: neither in node_modules nor bundled with npm; ' +
        `\`npm install -g node-gyp\` provides it); ${noCorral}; ${noShm}`,
    );
    failures++;
    return;
  }
  if (flag('clean')) rmSync(prebuilds, { recursive: true, force: true });
  for (const arch of arches) {
    report(`corral native addon (linux-${arch})`, () => buildCorral(nodeGypJs, arch), noCorral);
    for (const major of majors) {
      report(
        `corral shm addon (linux-${arch}, Node ${major})`,
        () => buildShm(nodeGypJs, major, arch),
        `${noShm} under Node ${major}`,
      );
    }
  }
}

try {
  main();
} catch (err) {
  failures++;
  // Without --strict the exit-0 promise holds even for a bug in this script.
  console.log(`corral native build: unexpected failure: ${err instanceof Error ? err.stack : String(err)}`);
} finally {
  rmSync(scratchRoot, { recursive: true, force: true });
}
process.exit(strict && failures > 0 ? 1 : 0);
