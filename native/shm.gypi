# The shared-memory addon, its tracker and the heap guard, built once per Node major by
# scripts/build-native.mjs (the addon uses the V8 C++ API, whose ABI changes with every
# major; see shm.cc). Included from a generated binding.gyp in a scratch directory, so
# paths here are relative to this file and the build output never lands in the source tree.
{
  'targets': [
    {
      'target_name': 'corral_shm',
      'sources': ['shm.cc'],
      'defines': ['_GNU_SOURCE'],
      'cflags_cc': ['-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-cast-function-type'],
      'libraries': ['-lrt'],
      # Never unloaded: a SharedArrayBuffer made in a Worker outlives it in the threads it was
      # shared with, and V8 calls our deleter (Unmap) when the last one goes, even at the
      # process's exit; had Node unloaded the addon with the Worker, that call would land in
      # unmapped code (SIGSEGV at exit, seen with a thread pool task returning a segment).
      'ldflags': ['-Wl,-z,nodelete'],
    },
    {
      # The heap guard (heap.cc): V8 API for the same reason, so built here, once per ABI, as
      # its own addon: a worker loads it without the shared-memory machinery.
      'target_name': 'corral_heap',
      'sources': ['heap.cc', 'rss-stop.cc'],
      'cflags_cc': ['-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-cast-function-type'],
      # Never unloaded either: a Worker's isolate may run a GC after Node unloads what the Worker
      # loaded, and our GC callbacks must not then point into unmapped code.
      'ldflags': ['-Wl,-z,nodelete'],
    },
    {
      'target_name': 'corral-shm-tracker',
      'type': 'executable',
      'sources': ['shm-tracker.c'],
      'cflags_c': ['-std=gnu11', '-Wall', '-Wextra', '-O2'],
      'libraries': ['-lrt'],
    },
  ],
}
