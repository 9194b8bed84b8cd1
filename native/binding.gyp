# One Node-API (NAPI_VERSION 8) build serves Node 20, 22 and 24 alike, so there is
# no per-version rebuild. Linux-only: prctl and prlimit have no portable twins.
{
  'targets': [
    {
      'target_name': 'corral',
      'sources': ['corral.c'],
      'defines': ['NAPI_VERSION=8', '_GNU_SOURCE'],
      'cflags_c': ['-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter'],
      'libraries': ['-lm', '-lpthread'],
    },
  ],
}
