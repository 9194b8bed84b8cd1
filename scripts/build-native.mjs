#!/usr/bin/env node
// Builds corral's two native pieces with the node-gyp from node_modules:
//
//  1. native/build/Release/corral.node: Node-API 8 (native/corral.c), one build for every
//     Node version: setPdeathsig, getrlimit/setrlimit/prlimit.
//  2. native/build-shm/abi<N>/corral_shm.node + corral-shm-tracker: SharedMemory's
//     shm_open/mmap addon (native/shm.cc) and its cleanup tracker (native/shm-tracker.c).
//     The addon needs the V8 C++ API (no Node-API can wrap foreign memory in a
//     SharedArrayBuffer before Node 26), so it is built once per Node ABI
//     (process.versions.modules: 115 = Node 20, 127 = 22, 137 = 24) and the loader picks
//     the directory matching the running Node.
//
// By default (2) is built for the running Node only. More majors on request:
//   node scripts/build-native.mjs --node24        (or --node=22,24)
//   CORRAL_NATIVE_NODES=24 node scripts/build-native.mjs
// For those, the Node binary comes from `npx -y node@<major>` and its headers from the
// npm package node-linux-<arch>@<exact version> (the official binary distribution,
// which ships include/node): fetched with `npm pack`, so from the npm registry only.
//
// corral works without either addon (it loses pdeathsig/prlimit limits, and SharedMemory
// across processes), so this script never fails the surrounding install or test: it
// prints one line per build saying what happened and always exits 0. The full node-gyp
// output goes to a log file next to each build.

import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const addon = path.join(nativeDir, 'build', 'Release', 'corral.node');
const logFile = path.join(nativeDir, 'build', 'node-gyp.log');
const shmRoot = path.join(nativeDir, 'build-shm');
const rel = (p) => path.relative(process.cwd(), p) || '.';

// --- which extra Node majors the shm addon is wanted for ------------------------------

function requestedMajors() {
  const majors = new Set();
  const add = (list) => {
    for (const m of String(list).split(',')) if (/^\d+$/.test(m.trim())) majors.add(Number(m.trim()));
  };
  for (const arg of process.argv.slice(2)) {
    const short = /^--node(\d+)$/.exec(arg);
    if (short) add(short[1]);
    else if (arg.startsWith('--node=')) add(arg.slice('--node='.length));
  }
  if (process.env.CORRAL_NATIVE_NODES) add(process.env.CORRAL_NATIVE_NODES);
  majors.delete(Number(process.versions.node.split('.')[0]));
  return [...majors].sort((a, b) => a - b);
}

// --- helpers shared by both builds -------------------------------------------------

// Headers must come from disk: node-gyp's fallback downloads them from nodejs.org, which
// is unreachable on offline builders and would only fail after a long network timeout.
// npm passes its `nodedir` setting as npm_config_nodedir; a plain `node script` does not,
// so also look next to the node binary (/usr, /usr/local, nvm's prefix).
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

// node-gyp keeps its own header cache; a populated one also makes an offline build possible.
function hasCachedHeaders(version) {
  const base = process.env.npm_config_devdir ?? path.join(process.env.HOME ?? '', '.cache', 'node-gyp');
  return existsSync(path.join(base, version, 'include', 'node', 'node_api.h'));
}

// The most useful single line of a failed build: the compiler's first error, else
// node-gyp's own complaint (missing python/make/compiler), else its last word.
function firstError(output) {
  const lines = output.split('\n').map((l) => l.trim());
  const compiler = lines.find((l) => /\berror:/.test(l) && !l.startsWith('gyp'));
  if (compiler) return compiler;
  const boring = /^gyp ERR! (System|command|cwd|node -v|node-gyp -v|not ok|configure error|build error)\b/;
  const gyp = lines.find((l) => l.startsWith('gyp ERR!') && !boring.test(l));
  if (gyp) return gyp.replace(/^gyp ERR! (stack )?/, '');
  return lines.filter(Boolean).at(-1) ?? 'no output';
}

class Skip extends Error {}

/** Runs node-gyp; throws Skip with the reason when it fails. Writes the full output to `log`. */
function nodeGyp(nodeGypJs, args, cwd, log) {
  // npm run exports its config as npm_config_* (here nodedir=/usr, the running Node's headers), and
  // node-gyp lets those win over our --nodedir/--target: building for another Node needs them gone.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !/^npm_config_(nodedir|target|runtime|dist_url|arch)$/i.test(k),
    ),
  );
  const result = spawnSync(process.execPath, [nodeGypJs, ...args], {
    cwd,
    env,
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
    // The log is a courtesy; its absence must not turn into a failure.
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

/** Loads `file` in `nodeBin` (a child, so that a crashing addon cannot take this script down). */
function probe(nodeBin, file, check) {
  const r = spawnSync(
    nodeBin,
    ['-e', `const n = require(process.argv[1]); if (!(${check})) process.exit(3)`, file],
    { encoding: 'utf8', timeout: 30_000 },
  );
  if (r.status === 0) return undefined;
  const why = (r.stderr ?? '').split('\n').find((l) => /Error/.test(l)) ?? `exit code ${r.status}`;
  return why.trim();
}

// --- 1. corral.node (Node-API, any version) ---------------------------------------

function buildCorral(nodeGypJs) {
  const nodeDir = findNodeDir(process.execPath, { allowNpmConfig: true });
  if (!nodeDir && !hasCachedHeaders(process.versions.node)) {
    throw new Skip(
      `no Node ${process.versions.node} headers found (looked for include/node/node_api.h next to ` +
        `${process.execPath} and in node-gyp's cache); install them or set npm_config_nodedir`,
    );
  }
  const args = ['rebuild', '--directory', nativeDir];
  if (nodeDir) args.push(`--nodedir=${nodeDir}`);
  nodeGyp(nodeGypJs, args, nativeDir, logFile);
  if (!existsSync(addon))
    throw new Skip(`node-gyp succeeded but ${rel(addon)} is missing; see ${rel(logFile)}`);
  const bad = probe(process.execPath, addon, 'typeof n.prlimit === "function"');
  if (bad)
    throw new Skip(`built ${rel(addon)} but it does not load in Node ${process.versions.node}: ${bad}`);
  return `built ${rel(addon)} (Node-API 8, loads in Node ${process.versions.node})`;
}

// --- 2. corral_shm.node (V8 API, one per ABI) -------------------------------------

/** The node binary, version and ABI for `major`, via `npx -y node@<major>`. */
function nodeForMajor(major) {
  const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';
  const r = spawnSync(
    npx,
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
    throw new Skip(`\`npx -y node@${major}\` failed: ${why}`);
  }
  const [execPath, version, abi] = JSON.parse(r.stdout.trim().split('\n').at(-1));
  return { execPath, version, abi };
}

/**
 * Headers for `version` (e.g. 'v24.21.0'): next to its binary if installed that way,
 * else from the npm package node-<platform>-<arch>@<version> (the official binary
 * distribution, include/node included), unpacked into `scratch`.
 */
function headersFor(execPath, version, scratch) {
  const local = findNodeDir(execPath, { allowNpmConfig: false });
  if (local) return local;
  const pkg = `node-${process.platform}-${process.arch}@${version.replace(/^v/, '')}`;
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const pack = spawnSync(npm, ['pack', pkg, '--pack-destination', scratch, '--silent'], {
    encoding: 'utf8',
    timeout: 10 * 60_000,
  });
  const tgz = readdirSync(scratch).find((f) => f.endsWith('.tgz'));
  if (pack.status !== 0 || !tgz) {
    const why = (pack.stderr || pack.error?.message || '').trim().split('\n').at(-1);
    throw new Skip(`no headers for Node ${version}: \`npm pack ${pkg}\` failed${why ? `: ${why}` : ''}`);
  }
  const untar = spawnSync('tar', ['-xzf', path.join(scratch, tgz), '-C', scratch, 'package/include/node'], {
    encoding: 'utf8',
    timeout: 5 * 60_000,
  });
  rmSync(path.join(scratch, tgz), { force: true });
  const dir = path.join(scratch, 'package');
  if (untar.status !== 0 || !existsSync(path.join(dir, 'include', 'node', 'node.h'))) {
    throw new Skip(
      `${pkg} did not unpack include/node: ${(untar.stderr ?? '').trim() || `tar exit ${untar.status}`}`,
    );
  }
  return dir;
}

function buildShm(nodeGypJs, target) {
  const { execPath, version, abi } = target;
  const outDir = path.join(shmRoot, `abi${abi}`);
  const log = path.join(outDir, 'node-gyp.log');
  // A scratch project whose binding.gyp only includes native/shm.gypi: node-gyp insists on
  // ./build and ./binding.gyp, and building elsewhere keeps one ABI's objects from
  // clobbering another's and the source tree free of build output.
  const scratch = mkdtempSync(path.join(os.tmpdir(), `corral-shm-abi${abi}-`));
  try {
    const nodeDir =
      execPath === process.execPath
        ? (findNodeDir(execPath, { allowNpmConfig: true }) ?? headersFor(execPath, version, scratch))
        : headersFor(execPath, version, scratch);
    const project = path.join(scratch, 'project');
    mkdirSync(project);
    writeFileSync(
      path.join(project, 'binding.gyp'),
      `{ 'includes': [${JSON.stringify(path.join(nativeDir, 'shm.gypi'))}] }\n`,
    );
    nodeGyp(
      nodeGypJs,
      ['rebuild', '--directory', project, `--nodedir=${nodeDir}`, `--target=${version.replace(/^v/, '')}`],
      project,
      log,
    );
    mkdirSync(shmRoot, { recursive: true });
    // Build output, not source: keep it out of git and the linter without touching the
    // project's ignore files.
    writeFileSync(path.join(shmRoot, '.gitignore'), '*\n');
    mkdirSync(outDir, { recursive: true });
    for (const file of ['corral_shm.node', 'corral-shm-tracker']) {
      const built = path.join(project, 'build', 'Release', file);
      if (!existsSync(built)) throw new Skip(`node-gyp succeeded but ${file} is missing; see ${rel(log)}`);
      copyFileSync(built, path.join(outDir, file));
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const file = path.join(outDir, 'corral_shm.node');
  const bad = probe(
    execPath,
    file,
    `n.abi === Number(process.versions.modules) && typeof n.create === 'function'`,
  );
  if (bad) throw new Skip(`built ${rel(file)} but it does not load in Node ${version}: ${bad}`);
  return `built ${rel(outDir)}/{corral_shm.node,corral-shm-tracker} for Node ${version} (ABI ${abi})`;
}

// --- main ------------------------------------------------------------------------

function report(what, fn, consequence) {
  try {
    console.log(`${what}: ${fn()}`);
  } catch (err) {
    if (!(err instanceof Skip)) throw err;
    console.log(`${what}: not built (${err.message}); ${consequence}`);
  }
}

function main() {
  const corral = 'corral native addon';
  const shm = 'corral shm addon';
  const noCorral = 'corral still works, without setPdeathsig/prlimit';
  const noShm = 'SharedMemory still works between threads, not across processes';
  if (process.platform !== 'linux') {
    console.log(`${corral}: not built (it is Linux-only and this is ${process.platform}); ${noCorral}`);
    console.log(`${shm}: not built (it is Linux-only and this is ${process.platform}); ${noShm}`);
    return;
  }
  let nodeGypJs;
  try {
    nodeGypJs = createRequire(path.join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const why = 'node-gyp is not installed in node_modules; run npm install first';
    console.log(`${corral}: not built (${why}); ${noCorral}`);
    console.log(`${shm}: not built (${why}); ${noShm}`);
    return;
  }
  report(corral, () => buildCorral(nodeGypJs), noCorral);
  const here = { execPath: process.execPath, version: process.version, abi: process.versions.modules };
  report(shm, () => buildShm(nodeGypJs, here), noShm);
  for (const major of requestedMajors()) {
    report(
      `${shm} (Node ${major})`,
      () => buildShm(nodeGypJs, nodeForMajor(major)),
      `${noShm} under Node ${major}`,
    );
  }
}

try {
  main();
} catch (err) {
  // The exit-0 promise holds even for a bug in this script.
  console.log(`corral native build: unexpected failure: ${err instanceof Error ? err.stack : String(err)}`);
}
process.exit(0);
