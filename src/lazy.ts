/**
 * Node built-in modules that only some pools use, loaded on first use instead of with corral: a
 * static import loads a built-in, and the internal modules it brings, in every program that imports
 * corral. With them imported, corral's import took 12.3 MiB of RSS, 2.2 MiB of heap and loaded 77
 * built-in modules; loaded on demand, 10.6-10.8 MiB, 1.8 MiB and 32 (piscina's import: 10.5 MiB, 0.8
 * MiB, 45; 2-vCPU VM, Node 20). In a worker, node:v8 alone took ~3 ms of its start on Node 20.
 * process.getBuiltinModule loads one synchronously, as an import would, and caches it.
 */
type Lazy = {
  'node:child_process': typeof import('node:child_process');
  'node:crypto': typeof import('node:crypto');
  'node:fs/promises': typeof import('node:fs/promises');
  'node:v8': typeof import('node:v8');
};

export function builtin<K extends keyof Lazy>(id: K): Lazy[K] {
  return process.getBuiltinModule(id) as Lazy[K];
}
