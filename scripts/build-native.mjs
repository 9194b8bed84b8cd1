#!/usr/bin/env node
// Builds native/build/Release/corral.node with the node-gyp from node_modules.
//
// corral works without the addon (it only loses pdeathsig and prlimit-based limits), so
// this script never fails the surrounding install or test: it prints one line saying
// what happened and always exits 0. The full node-gyp output goes to a log file.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const addon = path.join(nativeDir, 'build', 'Release', 'corral.node');
const logFile = path.join(nativeDir, 'build', 'node-gyp.log');
const rel = (p) => path.relative(process.cwd(), p) || '.';

function done(line) {
  console.log(`corral native addon: ${line}`);
  process.exit(0);
}

function notBuilt(why) {
  done(`not built (${why}); corral still works, without setPdeathsig/prlimit`);
}

// Headers must come from disk: node-gyp's fallback downloads them from nodejs.org, which
// is unreachable on offline builders and would only fail after a long network timeout.
// npm passes its `nodedir` setting as npm_config_nodedir; a plain `node script` does not,
// so also look next to the running node binary (/usr, /usr/local, nvm's prefix).
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(path.dirname(process.execPath), '..')];
  for (const dir of candidates) {
    if (dir && existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  return undefined;
}

// node-gyp keeps its own header cache; a populated one also makes an offline build possible.
function hasCachedHeaders() {
  const base = process.env.npm_config_devdir ?? path.join(process.env.HOME ?? '', '.cache', 'node-gyp');
  return existsSync(path.join(base, process.versions.node, 'include', 'node', 'node_api.h'));
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

if (process.platform !== 'linux') notBuilt(`it is Linux-only and this is ${process.platform}`);

let nodeGyp;
try {
  nodeGyp = createRequire(path.join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
} catch {
  notBuilt('node-gyp is not installed in node_modules; run npm install first');
}

const nodeDir = findNodeDir();
if (!nodeDir && !hasCachedHeaders()) {
  notBuilt(
    `no Node ${process.versions.node} headers found (looked for include/node/node_api.h next to ` +
      `${process.execPath} and in node-gyp's cache); install them or set npm_config_nodedir`,
  );
}

const args = [nodeGyp, 'rebuild', '--directory', nativeDir];
if (nodeDir) args.push(`--nodedir=${nodeDir}`);
const result = spawnSync(process.execPath, args, {
  cwd: nativeDir,
  encoding: 'utf8',
  // A hung compiler or a header download that never times out must not hang the caller.
  timeout: 5 * 60_000,
  killSignal: 'SIGKILL',
  maxBuffer: 64 * 1024 * 1024,
});
const output = `$ ${process.execPath} ${args.join(' ')}\n${result.stdout ?? ''}${result.stderr ?? ''}`;
try {
  mkdirSync(path.dirname(logFile), { recursive: true });
  writeFileSync(logFile, output);
} catch {
  // The log is a courtesy; its absence must not turn into a failure.
}

if (result.error) {
  const why = result.error.code === 'ETIMEDOUT' ? 'node-gyp timed out after 5 minutes' : result.error.message;
  notBuilt(`${why}; see ${rel(logFile)}`);
}
if (result.status !== 0) {
  const how = result.signal ? `signal ${result.signal}` : `exit code ${result.status}`;
  notBuilt(`node-gyp failed with ${how}: ${firstError(output)}; see ${rel(logFile)}`);
}
if (!existsSync(addon)) notBuilt(`node-gyp succeeded but ${rel(addon)} is missing; see ${rel(logFile)}`);

// Prove the result loads in this Node, in a child so that a crashing addon cannot take
// this script (and the exit-0 promise) down with it.
const probe = spawnSync(
  process.execPath,
  ['-e', 'const n = require(process.argv[1]); if (typeof n.prlimit !== "function") process.exit(3)', addon],
  { encoding: 'utf8', timeout: 30_000 },
);
if (probe.status !== 0) {
  const why = (probe.stderr ?? '').split('\n').find((l) => /Error/.test(l)) ?? `exit code ${probe.status}`;
  notBuilt(`built ${rel(addon)} but it does not load in Node ${process.versions.node}: ${why.trim()}`);
}
done(`built ${rel(addon)} (Node-API 8, loads in Node ${process.versions.node})`);
