/*
 * What the V8-API addon's two parts (heap.cc's heap guard, rss-stop.cc) share: a monotonic clock, the
 * TypeError their bindings throw, and the range a byte limit must be in.
 */
#ifndef CORRAL_ADDON_UTIL_H
#define CORRAL_ADDON_UTIL_H

#include <time.h>

#include <v8.h>

namespace corral {

inline double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

inline void Throw(v8::Isolate* isolate, const char* message) {
  isolate->ThrowException(v8::Exception::TypeError(
      v8::String::NewFromUtf8(isolate, message).ToLocalChecked()));
}

inline bool ValidLimit(double limit) { return limit >= 1 << 20 && limit <= 9007199254740991.0; }

}  // namespace corral

#endif
