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

#include <dlfcn.h>
#include <fcntl.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <node.h>
#include <v8.h>

#include "rss-watch.h"

namespace {

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

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

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

void Throw(Isolate* isolate, const char* message) {
  isolate->ThrowException(v8::Exception::TypeError(
      String::NewFromUtf8(isolate, message).ToLocalChecked()));
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

bool ValidLimit(double limit) { return limit >= 1 << 20 && limit <= 9007199254740991.0; }

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


/*
 * The rss stop: limits.rss for a process worker, enforced from inside like corral.c's guard, but a
 * breach during a synchronous call of the task stops that call instead of the process.
 *
 * Why: ending the process throws away more than the task. On the 2-core VM a contained run with 2 %
 * greedy items lost ~600 ms of pool time per breach against an unlimited pool (issue 16): a new
 * Node process (230-270 ms of CPU the workers share), its cold JIT (~90 ms), and pages the old
 * process had faulted in already and a new one faults again (4 ms per MiB here). Stopping the call
 * keeps the process, its JIT and its pages.
 *
 * How: the task's calls go through call(fn, args). A watcher thread reads /proc/self/statm as the
 * corral.c guard does. When resident memory passes the limit:
 *  - inside call(): it asks V8 for an interrupt (RequestInterrupt: the callback runs on the JS thread
 *    at the next loop back edge or function entry), and there, if the JS running is the task's own
 *    code, terminates it (TerminateExecution: uncatchable, no `finally` runs). When the JS running is
 *    Node's (a `node:` script) or corral's (a script under `own`), the interrupt is asked for again
 *    a millisecond later: a termination there could leave Node's timer lists or streams, or corral's
 *    channel state, half-updated in a process that goes on. (It lands at the next check after the
 *    interrupt, which is in the task's code or at the entry of the next function it calls, before
 *    that function's body runs; corral's task-facing code also counts itself in runtime/critical.ts,
 *    and a stop that lands inside it ends the process anyway.) The call's TryCatch sees the
 *    termination, cancels it, and returns the `stopped` value; JS then calls reclaim(), a full GC
 *    plus malloc_trim(), which must bring the process back under `low` (3/4 of the limit). What a
 *    task leaves behind in module state does not go away: then the process ends as it always did,
 *    and the pool replaces it.
 *  - anywhere else (an async task's continuation, the worker's own code): the process ends at once.
 * The stop has to land within kLandMs, the reclaim within kReclaimMs, and resident memory may not
 * pass the ceiling (limit + limit/16, at least 8 MiB more) meanwhile: a call stuck in one long
 * native function that keeps allocating still ends the process, just as late as the old guard.
 * A termination that lands after the call returned is cancelled too (at the end of call()).
 */
constexpr double kLandMs = 100;
constexpr double kReclaimMs = 2000;

/*
 * glibc's malloc tuning, looked up at run time (musl has none of it; the addon must load there too).
 *
 * Why: the pages a stopped call touched are worth keeping. A greedy task after a breach otherwise
 * faults every page in again (3.5 ms per MiB on the 2-core VM, against 0.7 ms for pages a long-lived
 * worker reuses): issue 16's contained mix spent most of its extra time there. So a worker under the
 * rss stop keeps up to half its limit of freed memory resident (M_TOP_PAD, trimmed only past it),
 * Buffers up to 32 MiB come from the heap rather than their own mmap, and the watcher hands the kept
 * memory back (malloc_trim) before it calls a crossing a breach: what a task is charged for is what it
 * holds, not what malloc kept for the next one.
 */
struct Malloc {
  int (*trim)(size_t) = nullptr;
  int (*opt)(int, int) = nullptr;
};

Malloc g_malloc;

void KeepFreedPages(uint64_t limit) {
  g_malloc.trim = reinterpret_cast<int (*)(size_t)>(dlsym(RTLD_DEFAULT, "malloc_trim"));
  g_malloc.opt = reinterpret_cast<int (*)(int, int)>(dlsym(RTLD_DEFAULT, "mallopt"));
  if (g_malloc.trim == nullptr || g_malloc.opt == nullptr) return;
  constexpr int kTrimThreshold = -1, kTopPad = -2, kMmapThreshold = -3;  // glibc's M_* values
  uint64_t pad = limit / 2 > (1u << 30) ? (1u << 30) : limit / 2;
  g_malloc.opt(kMmapThreshold, 32 << 20);
  g_malloc.opt(kTopPad, static_cast<int>(pad));
  g_malloc.opt(kTrimThreshold, static_cast<int>(pad + (1u << 20)));
}

// Hands freed memory malloc keeps back to the system; the resident bytes after.
uint64_t TrimFreed(int fd, uint64_t rss) {
  if (g_malloc.trim == nullptr) return rss;
  g_malloc.trim(0);
  return rss_watch_read(fd);
}

enum class Phase { kWatching, kStopping, kReclaiming };

struct RssStop {
  Isolate* isolate;
  int fd;
  uint64_t limit;
  uint64_t ceiling;
  uint64_t low;
  int exit_code;
  std::string marker;
  v8::Global<Value> stopped;
  std::mutex mu;
  std::string own;  // corral's own scripts start with this (a file: URL)
  int depth = 0;  // call()s running; only the outermost handles a stop
  bool asked = false;  // an interrupt asked for has not run yet
  Phase phase = Phase::kWatching;
  double since_ms = 0;
  uint64_t seen = 0;  // resident bytes when the stop was asked for
};

RssStop* g_rss = nullptr;

[[noreturn]] void RssExit(RssStop& s, uint64_t rss) {
  rss_watch_exit(s.marker.c_str(), rss > s.seen ? rss : s.seen, s.limit, s.exit_code);
  _exit(s.exit_code);  // not reached; tells the compiler so
}

bool StartsWith(const char* text, const std::string& prefix) {
  return !prefix.empty() && strncmp(text, prefix.c_str(), prefix.size()) == 0;
}

// On the JS thread, at an interrupt check: terminates the running call when the JS there is the task's.
void LandStop(Isolate* isolate, void* data) {
  RssStop& s = *static_cast<RssStop*>(data);
  std::lock_guard<std::mutex> lock(s.mu);
  s.asked = false;
  if (s.phase != Phase::kStopping || s.depth == 0) return;
  // Every frame from the top down to the first of corral's (the task wrapper in worker/limits.js, or
  // a corral step the task called, which counts itself) must be the task's: a `node:` frame anywhere
  // above it (an AsyncLocalStorage.run, a require() loading a module) would be cut off without its
  // cleanup. Otherwise, or deeper than kFrames, asked again soon.
  constexpr int kFrames = 256;
  v8::HandleScope scope(isolate);
  Local<v8::StackTrace> trace = v8::StackTrace::CurrentStackTrace(isolate, kFrames, v8::StackTrace::kScriptName);
  int frames = trace->GetFrameCount();
  for (int i = 0; i < frames; i++) {
    Local<Value> name = trace->GetFrame(isolate, i)->GetScriptName();
    if (name.IsEmpty() || !name->IsString()) continue;  // eval'd code, wasm: the task's
    String::Utf8Value script(isolate, name);
    const char* text = *script ? *script : "";
    if (StartsWith(text, s.own)) {
      isolate->TerminateExecution();
      return;
    }
    if (strncmp(text, "node:", 5) == 0) return;
  }
}

void* WatchRss(void* data) {
  RssStop& s = *static_cast<RssStop*>(data);
  for (;;) {
    uint64_t rss = rss_watch_read(s.fd);
    uint64_t room = 0;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      double now = NowMs();
      switch (s.phase) {
        case Phase::kWatching:
          if (rss > s.limit) rss = TrimFreed(s.fd, rss);
          if (rss <= s.limit) {
            room = rss == 0 ? 0 : s.limit - rss;
            break;
          }
          if (s.depth == 0) RssExit(s, rss);
          s.phase = Phase::kStopping;
          s.since_ms = now;
          s.seen = rss;
          s.asked = true;
          s.isolate->RequestInterrupt(LandStop, &s);
          break;
        case Phase::kStopping:
          if (rss > s.ceiling || now - s.since_ms > kLandMs) RssExit(s, rss);
          if (!s.asked) {
            s.asked = true;
            s.isolate->RequestInterrupt(LandStop, &s);
          }
          break;
        case Phase::kReclaiming:
          if (rss > s.ceiling || now - s.since_ms > kReclaimMs) RssExit(s, rss);
          break;
      }
    }
    rss_watch_nap(room);
  }
  return nullptr;
}

// armRss(limitBytes, exitCode, marker, stopped, own), in a process's main thread: starts the
// watcher; false when it runs already. `stopped` is what call() returns for a call it stopped; `own`
// the URL prefix of corral's scripts, where a stop does not land.
void ArmRss(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 5 || !args[0]->IsNumber() || !args[1]->IsInt32() || !args[2]->IsString() ||
      !args[4]->IsString()) {
    return Throw(isolate,
                 "armRss(limitBytes: number, exitCode: integer, marker: string, stopped: unknown, own: string)");
  }
  double limit = args[0].As<v8::Number>()->Value();
  int exit_code = args[1].As<v8::Int32>()->Value();
  if (!ValidLimit(limit) || exit_code < 1 || exit_code > 255) {
    return Throw(isolate, "armRss: limitBytes must be at least 1 MiB and exitCode within 1..255");
  }
  if (g_rss != nullptr) return args.GetReturnValue().Set(false);
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Throw(isolate, "armRss: cannot open /proc/self/statm");
  RssStop* s = new RssStop();
  s->isolate = isolate;
  s->fd = fd;
  s->limit = static_cast<uint64_t>(limit);
  uint64_t more = s->limit / 16 > (8u << 20) ? s->limit / 16 : (8u << 20);
  s->ceiling = s->limit + more;
  s->low = s->limit / 4 * 3;
  s->exit_code = exit_code;
  String::Utf8Value marker(isolate, args[2]);
  s->marker = *marker ? *marker : "";
  s->stopped.Reset(isolate, args[3]);
  KeepFreedPages(s->limit);
  String::Utf8Value own(isolate, args[4]);
  s->own = *own ? *own : "";
  if (rss_watch_start(WatchRss, s) != 0) {
    close(fd);
    delete s;
    return Throw(isolate, "armRss: cannot start its thread");
  }
  g_rss = s;  // never freed: the thread reads it until the process ends
  args.GetReturnValue().Set(true);
}

// call(fn, args): fn(...args), or `stopped` when the watcher stopped it (see above). Exceptions
// pass through.
void CallTask(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  RssStop* s = g_rss;
  if (s == nullptr || args.Length() < 2 || !args[0]->IsFunction() || !args[1]->IsArray()) {
    return Throw(isolate, "call(fn: function, args: array), after armRss()");
  }
  Local<Context> context = isolate->GetCurrentContext();
  Local<v8::Array> list = args[1].As<v8::Array>();
  uint32_t n = list->Length();
  std::vector<Local<Value>> argv(n);
  for (uint32_t i = 0; i < n; i++) {
    if (!list->Get(context, i).ToLocal(&argv[i])) return;  // a getter threw: pass it on
  }
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->depth++;
  }
  v8::TryCatch tc(isolate);
  v8::MaybeLocal<Value> result =
      args[0].As<v8::Function>()->Call(context, v8::Undefined(isolate), n, argv.data());
  // A call that returned a promise before the stop could land has work going on that nobody would
  // wait for: it is not stopped (its value goes back), and the watcher, which finds the process still
  // over its limit outside any call, ends the process as it did before stops in place.
  bool terminated = tc.HasTerminated();
  Local<Value> value;
  bool pending = !terminated && result.ToLocal(&value) && value->IsPromise();
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    stopped = --s->depth == 0 && s->phase == Phase::kStopping;
    if (stopped) {
      s->phase = pending ? Phase::kWatching : Phase::kReclaiming;
      s->since_ms = NowMs();
    }
  }
  if (stopped) {
    // Also when the call had returned before the termination landed: the request must not hit the
    // worker's own code next. A call that returned a value or threw is failed all the same: the
    // process went over its limit during it.
    isolate->CancelTerminateExecution();
    if (pending) return args.GetReturnValue().Set(value);
    return args.GetReturnValue().Set(s->stopped.Get(isolate));
  }
  if (tc.HasCaught()) {
    tc.ReThrow();
    return;
  }
  if (!value.IsEmpty() || result.ToLocal(&value)) args.GetReturnValue().Set(value);
}

// reclaim(goOn): after a stopped call, frees what it can; the bytes seen at the stop when the process
// is back under 3/4 of its limit. Otherwise, or when !goOn (the stop landed where the process cannot go
// on), the process ends here (exit code and line as a breach).
void Reclaim(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  RssStop* s = g_rss;
  if (s == nullptr || args.Length() < 1 || !args[0]->IsBoolean()) {
    return Throw(isolate, "reclaim(goOn: boolean), after armRss()");
  }
  if (!args[0].As<v8::Boolean>()->Value()) {
    std::lock_guard<std::mutex> lock(s->mu);
    RssExit(*s, s->seen);
  }
  isolate->LowMemoryNotification();
  uint64_t rss = rss_watch_read(s->fd);
  // Freed chunks malloc keeps for reuse count as resident: hand them back when they are in the way.
  if (rss > s->low) rss = TrimFreed(s->fd, rss);
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->phase != Phase::kReclaiming) return args.GetReturnValue().Set(0.0);
  if (rss > s->low) RssExit(*s, s->seen);
  s->phase = Phase::kWatching;
  args.GetReturnValue().Set(static_cast<double>(s->seen));
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
  for (auto [name, fn] : {std::pair<const char*, v8::FunctionCallback>{"armRss", ArmRss},
                          {"call", CallTask},
                          {"reclaim", Reclaim}}) {
    target
        ->Set(context, String::NewFromUtf8(isolate, name).ToLocalChecked(),
              v8::FunctionTemplate::New(isolate, fn)->GetFunction(context).ToLocalChecked())
        .Check();
  }
  target
      ->Set(context, String::NewFromUtf8Literal(isolate, "abi"),
            Integer::New(isolate, NODE_MODULE_VERSION))
      .Check();
}
