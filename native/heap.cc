/*
 * corral's heap guard: ends a worker (process or thread) soon after its V8 heap fills; a process
 * with one line on stderr in place of V8's fatal-error dump.
 *
 * Why it is needed: under a heap limit V8 does not give up when the heap is full. It
 * shrinks the young generation and runs back-to-back mark-compacts (100-150 ms each for a
 * 128 MiB heap on a 2-core VM) until four in a row free almost nothing, and only then calls the
 * near-heap-limit callback and aborts, printing ~30 lines (a Worker: Node's callback ends it with
 * ERR_WORKER_OUT_OF_MEMORY). Measured on Node 20 and 22 that is 1.0-1.5 s after the heap filled
 * (more on a busy machine), long enough for a task timeout to fire first and misreport the
 * breach. So the callback alone only saves the dump (~50 ms).
 *
 * What it does instead: after every mark-compact V8 ran because the heap was full (forced
 * ones - gc(), heap snapshots, memory-pressure and last-resort collections - are skipped), it
 * looks at the old generation's live bytes against the limit the worker was started with:
 *  - "full": less room left than one semi-space, at most 12.5 % of the limit. That is V8's own
 *    test for switching to memory-reducing collections (a scavenge's survivors may no longer
 *    fit), after which it collects back to back until it gives up; measured, it also aborts
 *    workloads that merely hold 89 % of the heap while allocating. The cap keeps Node 24, whose
 *    semi-spaces are 64 MiB, from ending a 128 MiB heap half full; it equals one semi-space for
 *    Node 20/22 at 128 MiB.
 *  - "thrash": V8's own ineffective-GC test (old generation at >= 80 % of the limit and the
 *    mutator got < 40 % of the time since the previous mark-compact), twice in a row rather
 *    than V8's four times. Twice, so that one pause stretched by a busy machine does not count.
 * Either ends the worker. In a process the guard's near-heap-limit callback is the backstop for
 * what the GC test cannot see (an allocation too big for the room left, Node 24 promoting past
 * the limit in one scavenge): when V8 gives up, the guard ends the process the same way.
 *
 * Ending a process: one line "<marker> used=<bytes> limit=<bytes> by=<full|thrash|v8>\n" written
 * with write(2) to fd 2, then _exit(<exit code>). Both the marker and the code come from the
 * caller, which is the one that recognises them again in the parent. _exit skips atexit handlers
 * and Node's exit hooks, like the abort it replaces; nothing of the task can usefully run on a full
 * heap anyway.
 *
 * Ending a worker thread: the same three numbers go into a SharedArrayBuffer the pool handed the
 * thread, and node::Stop() ends the thread's environment, which is what Node's own near-heap-limit
 * callback for Workers does (ERR_WORKER_OUT_OF_MEMORY) when it comes, later. The pool reads the
 * buffer once the thread has exited. (TerminateExecution() alone is not enough: the Worker would
 * go on with its next message, its heap still full.) The thread's guard also takes over that
 * callback: Node's gives a stopping thread 16 MiB more, but one scavenge can promote more than
 * that past the limit (Node 24's semi-spaces are 64 MiB; seen on Node 22 too, on a busy machine),
 * and then V8 aborts the whole process, pool and all. Ours gives room for what is already
 * committed plus a quarter of the limit, a few times at most, while the thread stops.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <node.h>
#include <v8.h>

#include "addon-util.h"
#include "rss-stop.h"

namespace {

using corral::NowMs;
using corral::Throw;
using corral::ValidLimit;
using v8::Context;
using v8::FunctionCallbackInfo;
using v8::GCCallbackFlags;
using v8::GCType;
using v8::HeapSpaceStatistics;
using v8::HeapStatistics;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::Object;
using v8::String;
using v8::Value;

constexpr double kFullRoomShare = 0.125;
constexpr double kThrashHeapShare = 0.80;
constexpr double kThrashMutatorShare = 0.40;
constexpr int kThrashStrikes = 2;
// A stopping thread's heap may grow this many times by a quarter of its limit, then V8 may abort.
constexpr int kStoppingRaises = 4;

// GCs somebody asked for rather than ones the allocator needed: they say nothing about the
// task outgrowing its heap (a heap snapshot runs several in a row on purpose).
constexpr int kRequestedGc = v8::kGCCallbackFlagForced |
                             v8::kGCCallbackFlagCollectAllAvailableGarbage |
                             v8::kGCCallbackFlagCollectAllExternalMemory;

enum By { kFull = 1, kThrash = 2, kV8 = 3 };
const char* const kByName[] = {"", "full", "thrash", "v8"};

struct Guard {
  Isolate* isolate;
  size_t limit;      // bytes: the old-generation limit the worker was started with
  size_t full_room;  // less room than this after a mark-compact is "full"
  double gc_started_ms;
  double last_gc_ended_ms;  // of the previous counted mark-compact, or when armed
  int strikes;
  // A process: the report line's marker and the exit code.
  std::string marker;
  int exit_code;
  // A worker thread: its environment, and where the report goes (three doubles).
  node::Environment* env;
  std::shared_ptr<v8::BackingStore> report;
  bool stopped;
  int raises;
};

// One guard per thread: a process's main thread, or a Worker's.
thread_local Guard* t_guard = nullptr;

bool IsYoungSpace(const char* name) { return strncmp(name, "new_", 4) == 0; }

// Bytes of the old generation (every space but the young ones): live, or committed. Right after a
// mark-compact the spaces' used sizes are the marked bytes (what --trace-gc prints after "->").
size_t OldGeneration(Isolate* isolate, bool committed) {
  size_t bytes = 0;
  HeapSpaceStatistics space;
  for (size_t i = 0; i < isolate->NumberOfHeapSpaces(); i++) {
    if (!isolate->GetHeapSpaceStatistics(&space, i)) continue;
    if (IsYoungSpace(space.space_name())) continue;
    bytes += committed ? space.space_size() : space.space_used_size();
  }
  return bytes;
}

size_t OldGenerationUsed(Isolate* isolate) { return OldGeneration(isolate, false); }

[[noreturn]] void ExitProcess(const Guard& g, size_t used, By by) {
  char line[512];
  int n = snprintf(line, sizeof line, "%s used=%zu limit=%zu by=%s\n", g.marker.c_str(), used,
                   g.limit, kByName[by]);
  if (n < 0) n = 0;
  if (static_cast<size_t>(n) >= sizeof line) n = sizeof line - 1;
  for (int off = 0; off < n;) {
    ssize_t w = write(2, line + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;  // stderr gone: the exit code still says it
    off += static_cast<int>(w);
  }
  _exit(g.exit_code);
}

void End(Guard& g, size_t used, By by) {
  if (g.env == nullptr) ExitProcess(g, used, by);
  if (g.stopped) return;
  g.stopped = true;
  double* report = static_cast<double*>(g.report->Data());
  report[0] = static_cast<double>(used);
  report[1] = static_cast<double>(g.limit);
  report[2] = by;
  node::Stop(g.env);
}

void OnGcStart(Isolate*, GCType, GCCallbackFlags, void* data) {
  static_cast<Guard*>(data)->gc_started_ms = NowMs();
}

void OnGcEnd(Isolate* isolate, GCType, GCCallbackFlags flags, void* data) {
  Guard& g = *static_cast<Guard*>(data);
  // A requested GC's pause is left in the mutator's share of the next interval: that errs
  // towards letting the task live.
  if ((flags & kRequestedGc) || g.stopped) return;
  double now = NowMs();
  size_t used = OldGenerationUsed(isolate);
  if (used + g.full_room > g.limit) return End(g, used, kFull);
  double span = now - g.last_gc_ended_ms;
  double mutator = span > 0 ? (g.gc_started_ms - g.last_gc_ended_ms) / span : 1.0;
  g.last_gc_ended_ms = now;
  if (used >= kThrashHeapShare * g.limit && mutator < kThrashMutatorShare) {
    if (++g.strikes >= kThrashStrikes) End(g, used, kThrash);
  } else {
    g.strikes = 0;
  }
}

// Processes only. V8 calls this when it would otherwise abort (or right before its last-resort
// collection, after an allocation failed even so). Not raising the limit here would let it print
// the dump.
size_t OnNearHeapLimit(void* data, size_t current_heap_limit, size_t initial_heap_limit) {
  Guard& g = *static_cast<Guard*>(data);
  ExitProcess(g, OldGenerationUsed(g.isolate), kV8);
}

// Threads only, in place of Node's own (see the header): stops the thread like the GC test does and
// raises the limit past what the heap has committed already.
size_t OnThreadNearHeapLimit(void* data, size_t current_heap_limit, size_t initial_heap_limit) {
  Guard& g = *static_cast<Guard*>(data);
  End(g, OldGenerationUsed(g.isolate), kV8);
  if (g.raises >= kStoppingRaises) return current_heap_limit;
  g.raises++;
  size_t committed = OldGeneration(g.isolate, true);
  size_t base = committed > current_heap_limit ? committed : current_heap_limit;
  size_t more = initial_heap_limit / 4 > (16u << 20) ? initial_heap_limit / 4 : (16u << 20);
  return base + more;
}

void Disarm(void* data) {
  Guard* g = static_cast<Guard*>(data);
  g->isolate->RemoveGCPrologueCallback(OnGcStart, g);
  g->isolate->RemoveGCEpilogueCallback(OnGcEnd, g);
  g->isolate->RemoveNearHeapLimitCallback(g->env == nullptr ? OnNearHeapLimit : OnThreadNearHeapLimit, 0);
  if (t_guard == g) t_guard = nullptr;
  delete g;
}

// The part of arming both kinds share; false when this thread is armed already.
Guard* NewGuard(Isolate* isolate, double limit) {
  if (t_guard != nullptr) return nullptr;
  Guard* g = new Guard();
  g->isolate = isolate;
  g->limit = static_cast<size_t>(limit);
  // heap_size_limit is the old-generation limit plus the young generation's reservation, which
  // is three semi-spaces (two for the scavenger, one for young large objects) on Node 20-24.
  HeapStatistics stats;
  isolate->GetHeapStatistics(&stats);
  size_t young = stats.heap_size_limit() > g->limit ? stats.heap_size_limit() - g->limit : 0;
  size_t semi = young / 3;
  size_t share = static_cast<size_t>(kFullRoomShare * limit);
  g->full_room = semi > 0 && semi < share ? semi : share;
  g->last_gc_ended_ms = NowMs();
  g->gc_started_ms = g->last_gc_ended_ms;
  t_guard = g;
  return g;
}

void Watch(Guard* g) {
  g->isolate->AddGCPrologueCallback(OnGcStart, g, v8::kGCTypeMarkSweepCompact);
  g->isolate->AddGCEpilogueCallback(OnGcEnd, g, v8::kGCTypeMarkSweepCompact);
  node::AddEnvironmentCleanupHook(g->isolate, Disarm, g);
}

// arm(limitBytes, exitCode, marker), in a process's main thread: true when armed now, false
// when it was already.
void Arm(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 3 || !args[0]->IsNumber() || !args[1]->IsInt32() || !args[2]->IsString()) {
    return Throw(isolate, "arm(limitBytes: number, exitCode: integer, marker: string)");
  }
  double limit = args[0].As<v8::Number>()->Value();
  int exit_code = args[1].As<v8::Int32>()->Value();
  if (!ValidLimit(limit) || exit_code < 1 || exit_code > 255) {
    return Throw(isolate, "arm: limitBytes must be at least 1 MiB and exitCode within 1..255");
  }
  Guard* g = NewGuard(isolate, limit);
  if (g == nullptr) return args.GetReturnValue().Set(false);
  String::Utf8Value marker(isolate, args[2]);
  g->marker = *marker ? *marker : "";
  g->exit_code = exit_code;
  Watch(g);
  isolate->AddNearHeapLimitCallback(OnNearHeapLimit, g);
  args.GetReturnValue().Set(true);
}

// armThread(limitBytes, report), in a Worker: report is a SharedArrayBuffer of at least three
// doubles, which get [used, limit, 1 full | 2 thrash | 3 v8] when the guard stops the thread.
void ArmThread(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 2 || !args[0]->IsNumber() || !args[1]->IsSharedArrayBuffer()) {
    return Throw(isolate, "armThread(limitBytes: number, report: SharedArrayBuffer)");
  }
  double limit = args[0].As<v8::Number>()->Value();
  std::shared_ptr<v8::BackingStore> report =
      args[1].As<v8::SharedArrayBuffer>()->GetBackingStore();
  if (!ValidLimit(limit) || report->ByteLength() < 3 * sizeof(double)) {
    return Throw(isolate, "armThread: limitBytes must be at least 1 MiB, report at least 24 bytes");
  }
  node::Environment* env = node::GetCurrentEnvironment(isolate->GetCurrentContext());
  if (env == nullptr) return Throw(isolate, "armThread: no Node environment in this thread");
  Guard* g = NewGuard(isolate, limit);
  if (g == nullptr) return args.GetReturnValue().Set(false);
  g->env = env;
  g->report = std::move(report);
  Watch(g);
  isolate->AddNearHeapLimitCallback(OnThreadNearHeapLimit, g);
  args.GetReturnValue().Set(true);
}


}  // namespace

NODE_MODULE_INIT() {
  Isolate* isolate = context->GetIsolate();
  Local<Object> target = exports.As<Object>();
  target
      ->Set(context, String::NewFromUtf8Literal(isolate, "arm"),
            v8::FunctionTemplate::New(isolate, Arm)->GetFunction(context).ToLocalChecked())
      .Check();
  target
      ->Set(context, String::NewFromUtf8Literal(isolate, "armThread"),
            v8::FunctionTemplate::New(isolate, ArmThread)->GetFunction(context).ToLocalChecked())
      .Check();
  corral::RegisterRssStop(isolate, context, target);
  target
      ->Set(context, String::NewFromUtf8Literal(isolate, "abi"),
            Integer::New(isolate, NODE_MODULE_VERSION))
      .Check();
}
