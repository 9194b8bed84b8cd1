/*
 * Part of the heap addon (corral_heap, with heap.cc): it needs the V8 API, as the heap guard does.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

#include <node.h>
#include <v8.h>

#include "addon-util.h"
#include "rss-stop.h"
#include "rss-watch.h"

namespace {

using corral::NowMs;
using corral::Throw;
using corral::ValidLimit;
using v8::Context;
using v8::FunctionCallbackInfo;
using v8::Isolate;
using v8::Local;
using v8::String;
using v8::Value;

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
 *    at the next loop back edge or function entry), and there, if every frame above corral's is the
 *    task's own code, terminates it (TerminateExecution: uncatchable, no `finally` runs). With a
 *    `node:` frame among them, the interrupt is asked for again 0.1 ms later: a termination
 *    there could leave Node's timer lists or streams half-updated in a process that goes on. (It
 *    lands at V8's next check after the walk, usually in the task's code or at the entry of the next
 *    function it calls, before that body runs; in optimized code a small Node function inlined into
 *    the task's has no check of its own, so rarely inside one. corral's task-facing code counts
 *    itself in runtime/critical.ts, and a stop that lands inside it ends the process.) The call's TryCatch sees the
 *    termination, cancels it, and returns the `stopped` value; JS then calls reclaim(), a full GC
 *    plus malloc_trim(), which must bring the process back under `low` (3/4 of the limit). What a
 *    task leaves behind in module state does not go away: then the process ends as it always did,
 *    and the pool replaces it.
 *  - anywhere else (an async task's continuation, the worker's own code): the process ends at once.
 * The stop has to land within kLandMs, the reclaim within kReclaimMs, and resident memory may not
 * pass the ceiling (rssCeiling: limit + limit/4, within 32-128 MiB more) meanwhile: a call stuck in one long
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
  rss_watch_prompt();
  for (;;) {
    uint64_t rss = rss_watch_read(s.fd);
    uint64_t room = 0;
    bool stopping = false;
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
          stopping = true;
          break;
        case Phase::kReclaiming:
          if (rss > s.ceiling || now - s.since_ms > kReclaimMs) RssExit(s, rss);
          break;
      }
    }
    // While stopping, the stop is asked for again every 0.1 ms when Node's code is on the stack (a
    // Buffer.alloc of the task's): a millisecond let a loop of 8 MiB Buffers in 2 MiB pages add
    // ~20 MiB, past the ceiling of a 256 MiB limit, and end a process a stop would have kept.
    if (stopping) rss_watch_sleep(100000);
    else rss_watch_nap(room);
  }
  return nullptr;
}

// armRss(limitBytes, exitCode, marker, stopped, own, ceilingBytes), in a process's main thread: starts
// the watcher; false when it runs already. `stopped` is what call() returns for a call it stopped;
// `own` the URL prefix of corral's scripts, where a stop does not land; `ceilingBytes` where the
// process ends even while a stop is under way (rssCeiling in limits/rss-guard.ts says why and how
// much: one formula, which the pool's sampler uses too).
void ArmRss(const FunctionCallbackInfo<Value>& args) {
  Isolate* isolate = args.GetIsolate();
  if (args.Length() < 6 || !args[0]->IsNumber() || !args[1]->IsInt32() || !args[2]->IsString() ||
      !args[4]->IsString() || !args[5]->IsNumber()) {
    return Throw(isolate,
                 "armRss(limitBytes: number, exitCode: integer, marker: string, stopped: unknown, own: string, "
                 "ceilingBytes: number)");
  }
  double limit = args[0].As<v8::Number>()->Value();
  int exit_code = args[1].As<v8::Int32>()->Value();
  double ceiling = args[5].As<v8::Number>()->Value();
  if (!ValidLimit(limit) || !ValidLimit(ceiling) || ceiling <= limit || exit_code < 1 || exit_code > 255) {
    return Throw(isolate,
                 "armRss: limitBytes must be at least 1 MiB, ceilingBytes above it, and exitCode within 1..255");
  }
  if (g_rss != nullptr) return args.GetReturnValue().Set(false);
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Throw(isolate, "armRss: cannot open /proc/self/statm");
  RssStop* s = new RssStop();
  s->isolate = isolate;
  s->fd = fd;
  s->limit = static_cast<uint64_t>(limit);
  s->ceiling = static_cast<uint64_t>(ceiling);
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

namespace corral {

void RegisterRssStop(Isolate* isolate, Local<Context> context, Local<v8::Object> target) {
  for (auto [name, fn] : {std::pair<const char*, v8::FunctionCallback>{"armRss", ArmRss},
                          {"call", CallTask},
                          {"reclaim", Reclaim}}) {
    target
        ->Set(context, String::NewFromUtf8(isolate, name).ToLocalChecked(),
              v8::FunctionTemplate::New(isolate, fn)->GetFunction(context).ToLocalChecked())
        .Check();
  }
}

}  // namespace corral
