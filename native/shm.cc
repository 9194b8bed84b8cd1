/*
 * corral's shared-memory addon: POSIX segments (shm_open + mmap) exposed to JavaScript as
 * SharedArrayBuffers, and the process-wide bookkeeping behind the cleanup tracker.
 *
 * Why the V8 C++ API and not Node-API like native/corral.c: no Node-API function can wrap
 * foreign memory in a SharedArrayBuffer on Node 20-24 (node_api_create_external_
 * sharedarraybuffer arrives in Node 26). SharedArrayBuffer::NewBackingStore(ptr, len,
 * deleter, data) can, and is stable across those majors at the source level, but the
 * binary is tied to one NODE_MODULE_VERSION: scripts/build-native.mjs builds one copy per
 * Node major into native/build-shm/abi<NODE_MODULE_VERSION>/ and the loader picks the one
 * matching process.versions.modules.
 *
 * Lifetimes:
 *  - An address range stays mapped exactly as long as some SharedArrayBuffer over it does,
 *    in any thread of this process: V8 calls Unmap() once the last one is collected, so
 *    JavaScript can never touch an unmapped range (no use-after-unmap, no SIGSEGV).
 *    V8 does not count shared backing stores towards GC pressure and may keep a dropped
 *    one for a long time (measured: 1000 x 16 MiB create/unlink cycles kept all 1000
 *    mappings, 16 GiB of tmpfs, until exit), so close() calls release(), which swaps the
 *    segment's pages for private zero pages at once when this isolate is the only holder.
 *  - A *tracked* name (created here, not persistent) is recorded in `g_tracked` with the
 *    environment (main thread or Worker) that created it. It is unlinked by unlink(), by
 *    that environment's teardown (cleanup hook: a Worker that ends or is terminated), and
 *    - if the whole process dies, SIGKILL included - by the tracker process, which learns
 *    every tracked name through a pipe whose only write end lives here (O_CLOEXEC, so no
 *    child inherits it) and unlinks what is left when the pipe reaches EOF.
 *  - Nothing waits for the tracker with g_mutex held: the pipe is non-blocking, and what it
 *    does not take at once waits in a backlog that a thread of our own writes out as the
 *    tracker reads (see TrackerWrite). A stalled tracker (stopped, starved) therefore never
 *    blocks create(), unlink(), a thread's teardown or V8's Unmap(); the backlog it leaves
 *    stays as small as the set of live names.
 *
 * Errors: failed system calls throw node::ErrnoException (code 'ENOENT', 'EEXIST', ...,
 * errno, syscall, path), which the TypeScript layer maps to corral's typed errors.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <node.h>
#include <v8.h>

namespace {

using v8::Array;
using v8::Boolean;
using v8::Context;
using v8::External;
using v8::FunctionCallbackInfo;
using v8::FunctionTemplate;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::Number;
using v8::Object;
using v8::SharedArrayBuffer;
using v8::String;
using v8::Value;

// 2^53 - 1: the largest length a JavaScript number states exactly (and V8's own limit on
// 64-bit hosts).
constexpr double kMaxSize = 9007199254740991.0;

struct EnvState;

struct Tracked {
  std::string name;  // without the leading '/'
  uint64_t ino;
  EnvState* owner;
};

// Process-wide, shared by the main thread and every Worker that loads the addon. Allocated and
// never freed: V8 may release a SharedArrayBuffer shared between threads (and so call Unmap, which
// takes the mutex) after static destructors ran at exit, which crashed the process with SIGSEGV.
std::mutex& g_mutex = *new std::mutex();
std::vector<Tracked>& g_tracked = *new std::vector<Tracked>();
int g_tracker_fd = -1;
int g_tracker_pid = 0;

// Protocol bytes the tracker's pipe did not take at once, in order, guarded by g_mutex.
// Never freed: the writer thread may still wait on them while the process exits.
struct Backlog {
  std::string bytes;
  // The first bytes finish a line that was partly written already.
  bool midLine = false;
  // Past this size the backlog is rewritten as "forget all, then every live name".
  size_t compactAt = 64 * 1024;
  bool writerStarted = false;
  std::condition_variable pending;
};
Backlog* const g_backlog = new Backlog();
// Every mapping this addon made and V8 has not released yet, by address.
std::unordered_map<void*, size_t>& g_mappings = *new std::unordered_map<void*, size_t>();

// One per environment (main thread or Worker) that loaded the addon.
struct EnvState {
  Isolate* isolate;
};

void Throw(Isolate* isolate, int err, const char* syscall, const std::string& name) {
  std::string path = "/" + name;
  isolate->ThrowException(node::ErrnoException(isolate, err, syscall, nullptr, path.c_str()));
}

void ThrowType(Isolate* isolate, const char* message) {
  isolate->ThrowException(v8::Exception::TypeError(
      String::NewFromUtf8(isolate, message).ToLocalChecked()));
}

void ThrowRange(Isolate* isolate, const char* message) {
  isolate->ThrowException(v8::Exception::RangeError(
      String::NewFromUtf8(isolate, message).ToLocalChecked()));
}

// Segment names reach us validated by the TypeScript layer; this is the last line of
// defence for the invariants the tracker protocol and shm_open rely on.
bool GetName(Isolate* isolate, Local<Value> v, std::string* out) {
  if (!v->IsString()) {
    ThrowType(isolate, "The \"name\" argument must be of type string");
    return false;
  }
  String::Utf8Value utf8(isolate, v);
  std::string s(*utf8, utf8.length());
  if (s.empty() || s.size() > 250 || s.find_first_of(std::string("/\n\r\0", 4)) != std::string::npos ||
      s == "." || s == "..") {
    ThrowType(isolate, "The \"name\" argument must be 1-250 characters without '/', NUL or newlines");
    return false;
  }
  *out = std::move(s);
  return true;
}

bool GetSize(Isolate* isolate, Local<Value> v, bool allow_zero, size_t* out) {
  if (!v->IsNumber()) {
    ThrowType(isolate, "The \"size\" argument must be of type number");
    return false;
  }
  double d = v.As<Number>()->Value();
  if (!(d == std::floor(d)) || d < (allow_zero ? 0 : 1) || d > kMaxSize) {
    ThrowRange(isolate, "The \"size\" argument must be a positive safe integer");
    return false;
  }
  *out = static_cast<size_t>(d);
  return true;
}

void Unmap(void* data, size_t length, void* /*deleter_data*/) {
  // May run on any thread, after the last SharedArrayBuffer over the range is collected.
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_mappings.erase(data);
  }
  munmap(data, length);
}

// The mapping is charged to the isolate that made it as external memory, so that V8's
// GC heuristics see it (V8 does not count shared backing stores on its own); release()
// and forget() give the charge back.
Local<SharedArrayBuffer> Wrap(Isolate* isolate, void* addr, size_t size) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_mappings[addr] = size;
  }
  std::shared_ptr<v8::BackingStore> store = SharedArrayBuffer::NewBackingStore(addr, size, Unmap, nullptr);
  isolate->AdjustAmountOfExternalAllocatedMemory(static_cast<int64_t>(size));
  return SharedArrayBuffer::New(isolate, std::move(store));
}

// The tracker is gone (EPIPE: Node ignores SIGPIPE, or any other write error): forget it and
// what it was still owed. The next create() learns it from TrackerWrite's result and starts a
// new one, which is then told every tracked name again. Called with g_mutex held.
void TrackerGone() {
  close(g_tracker_fd);
  g_tracker_fd = -1;
  g_tracker_pid = 0;
  g_backlog->bytes.clear();
  g_backlog->midLine = false;
}

std::string AddLine(const Tracked& t);

// Writes what the backlog holds as the tracker takes it. The only writer while the backlog is
// not empty (so the only one that may find the tracker gone then), and the only code that
// waits for the pipe, which it does with g_mutex released.
void WriterLoop() {
  Backlog& b = *g_backlog;
  std::unique_lock<std::mutex> lock(g_mutex);
  for (;;) {
    b.pending.wait(lock, [&] { return !b.bytes.empty(); });
    ssize_t n = write(g_tracker_fd, b.bytes.data(), b.bytes.size());
    if (n > 0) {
      b.midLine = b.bytes[static_cast<size_t>(n) - 1] != '\n';
      b.bytes.erase(0, static_cast<size_t>(n));
      if (b.bytes.empty()) b.midLine = false;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p = {g_tracker_fd, POLLOUT, 0};
      lock.unlock();
      poll(&p, 1, -1);
      lock.lock();
    } else if (n < 0 && errno != EINTR) {
      TrackerGone();
    }
  }
}

// Keeps the backlog no bigger than the set of live names: "*" tells the tracker to forget
// everything it was told, and every live name follows. The rest of a line the tracker has
// the beginning of goes first. Called with g_mutex held.
void Compact() {
  Backlog& b = *g_backlog;
  size_t keep = b.midLine ? b.bytes.find('\n') + 1 : 0;
  std::string next = b.bytes.substr(0, keep) + "*\n";
  for (const Tracked& t : g_tracked) next += AddLine(t);
  if (next.size() < b.bytes.size()) b.bytes = std::move(next);
  b.compactAt = std::max<size_t>(64 * 1024, 2 * b.bytes.size());
}

// Sends one protocol line to the tracker. Called with g_mutex held; never blocks. A line the
// pipe does not take at once (the tracker is behind or stopped) goes to the backlog, after
// which every line does until the writer thread has emptied it, so the order holds. Returns
// false when no tracker is attached or it is found gone.
bool TrackerWrite(const std::string& line) {
  if (g_tracker_fd < 0) return false;
  Backlog& b = *g_backlog;
  size_t done = 0;
  if (b.bytes.empty()) {
    // A line is far below PIPE_BUF, so a non-blocking write takes all of it or none.
    ssize_t n;
    do n = write(g_tracker_fd, line.data(), line.size());
    while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(line.size())) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      TrackerGone();
      return false;
    }
    done = n > 0 ? static_cast<size_t>(n) : 0;
    b.midLine = done > 0;
  }
  b.bytes.append(line, done, std::string::npos);
  if (b.bytes.size() > b.compactAt) Compact();
  if (!b.writerStarted) {
    b.writerStarted = true;
    std::thread(WriterLoop).detach();
  }
  b.pending.notify_one();
  return true;
}

std::string AddLine(const Tracked& t) { return "+" + std::to_string(t.ino) + " " + t.name + "\n"; }

std::string RemoveLine(const std::string& name) { return "-" + name + "\n"; }

// Removes `name` from the namespace only while it still refers to inode `ino` (0: any):
// a name we unlinked earlier may since have been reused by someone else's segment.
int UnlinkIfSame(const std::string& name, uint64_t ino) {
  if (ino != 0) {
    std::string path = "/dev/shm/" + name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return errno;
    if (static_cast<uint64_t>(st.st_ino) != ino) return ENOENT;
  }
  std::string shm_name = "/" + name;
  return shm_unlink(shm_name.c_str()) == 0 ? 0 : errno;
}

// Forgets `name` (if tracked) and tells the tracker. Called with g_mutex held.
void Untrack(const std::string& name) {
  for (size_t i = 0; i < g_tracked.size(); i++) {
    if (g_tracked[i].name == name) {
      g_tracked[i] = std::move(g_tracked.back());
      g_tracked.pop_back();
      TrackerWrite(RemoveLine(name));
      return;
    }
  }
}

Local<Object> Result(Isolate* isolate, Local<Context> context, Local<SharedArrayBuffer> buffer, size_t size,
                     uint64_t ino, bool tracked) {
  Local<Object> out = Object::New(isolate);
  out->Set(context, String::NewFromUtf8Literal(isolate, "buffer"), buffer).Check();
  out->Set(context, String::NewFromUtf8Literal(isolate, "size"), Number::New(isolate, static_cast<double>(size)))
      .Check();
  out->Set(context, String::NewFromUtf8Literal(isolate, "ino"), Number::New(isolate, static_cast<double>(ino)))
      .Check();
  out->Set(context, String::NewFromUtf8Literal(isolate, "tracked"), Boolean::New(isolate, tracked)).Check();
  return out;
}

// create(name, size, reserve, track) -> { buffer, size, ino, tracked }
// O_CREAT|O_EXCL with mode 0600. The name is registered with the tracker right after it
// comes into existence and before the (possibly slow) sizing, so the window in which a
// SIGKILL leaks it is a few microseconds. `reserve` allocates the pages now
// (posix_fallocate): a full /dev/shm then fails here with ENOSPC instead of killing a
// later writer with SIGBUS.
void Create(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  EnvState* env = static_cast<EnvState*>(info.Data().As<External>()->Value());
  std::string name;
  size_t size;
  if (!GetName(isolate, info[0], &name) || !GetSize(isolate, info[1], false, &size)) return;
  bool reserve = info[2]->IsTrue();
  bool track = info[3]->IsTrue();

  std::string shm_name = "/" + name;
  int fd = shm_open(shm_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Throw(isolate, errno, "shm_open", name);

  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    shm_unlink(shm_name.c_str());
    return Throw(isolate, err, "fstat", name);
  }
  uint64_t ino = static_cast<uint64_t>(st.st_ino);
  bool tracked = false;
  if (track) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_tracked.push_back(Tracked{name, ino, env});
    tracked = TrackerWrite(AddLine(g_tracked.back()));
  }

  auto fail = [&](int err, const char* syscall) {
    close(fd);
    shm_unlink(shm_name.c_str());
    if (track) {
      std::lock_guard<std::mutex> lock(g_mutex);
      Untrack(name);
    }
    Throw(isolate, err, syscall, name);
  };

  if (ftruncate(fd, static_cast<off_t>(size)) != 0) return fail(errno, "ftruncate");
  if (reserve) {
    int err = posix_fallocate(fd, 0, static_cast<off_t>(size));
    // Filesystems without fallocate (EOPNOTSUPP) just stay lazily allocated.
    if (err != 0 && err != EOPNOTSUPP && err != ENOSYS && err != EINVAL) return fail(err, "posix_fallocate");
  }
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return fail(errno, "mmap");
  close(fd);
  info.GetReturnValue().Set(Result(isolate, context, Wrap(isolate, addr, size), size, ino, tracked));
}

// attach(name, size) -> { buffer, size, ino, tracked: false }
// size 0 maps the whole segment; otherwise the segment must hold at least `size` bytes
// (mapping past its end would turn the first access there into SIGBUS).
void Attach(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  std::string name;
  size_t want;
  if (!GetName(isolate, info[0], &name) || !GetSize(isolate, info[1], true, &want)) return;

  std::string shm_name = "/" + name;
  int fd = shm_open(shm_name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return Throw(isolate, errno, "shm_open", name);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Throw(isolate, err, "fstat", name);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Throw(isolate, EINVAL, "fstat", name);
  }
  size_t actual = static_cast<size_t>(st.st_size);
  if (actual == 0 || want > actual) {
    close(fd);
    // The TypeScript layer re-checks sizes with fstat's figure for a precise message;
    // EINVAL is what mmap itself would say about an empty object.
    Local<Object> err = node::ErrnoException(isolate, EINVAL, "fstat", nullptr, shm_name.c_str()).As<Object>();
    err->Set(context, String::NewFromUtf8Literal(isolate, "actualSize"),
             Number::New(isolate, static_cast<double>(actual)))
        .Check();
    isolate->ThrowException(err);
    return;
  }
  size_t size = want == 0 ? actual : want;
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (addr == MAP_FAILED) return Throw(isolate, err, "mmap", name);
  info.GetReturnValue().Set(
      Result(isolate, context, Wrap(isolate, addr, size), size, static_cast<uint64_t>(st.st_ino), false));
}

// unlink(name, ino) -> boolean: whether this call removed the name. ino 0 removes
// whatever the name refers to. Also forgets the name if this process tracks it.
void Unlink(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  std::string name;
  if (!GetName(isolate, info[0], &name)) return;
  double ino_d = info[1]->IsNumber() ? info[1].As<Number>()->Value() : 0;
  uint64_t ino = ino_d > 0 ? static_cast<uint64_t>(ino_d) : 0;
  // Unlink first, then forget: dying in between leaves the tracker to try a name that is
  // already gone (a no-op), never a leak.
  int err = UnlinkIfSame(name, ino);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const Tracked& t : g_tracked) {
      if (t.name == name && (ino == 0 || t.ino == ino)) {
        Untrack(name);
        break;
      }
    }
  }
  if (err == 0) return info.GetReturnValue().Set(true);
  if (err == ENOENT) return info.GetReturnValue().Set(false);
  Throw(isolate, err, "shm_unlink", name);
}

// release(buffer, size) -> boolean: close() of the SharedMemory that owns `buffer` in
// this isolate. Gives back the external-memory charge and, when no other isolate (Worker)
// and no message in flight holds the buffer, replaces the shared pages with private
// zero pages at the same address right away: the segment's memory is freed now (once
// unlinked and unmapped elsewhere) instead of whenever V8 collects the buffer, while
// views that outlive close() stay valid memory and read zeros rather than crash. Returns
// whether the pages were dropped.
void Release(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  if (!info[0]->IsSharedArrayBuffer()) return ThrowType(isolate, "release(buffer, size)");
  size_t charge = 0;
  if (info[1]->IsNumber() && !GetSize(isolate, info[1], true, &charge)) return;
  if (charge > 0) isolate->AdjustAmountOfExternalAllocatedMemory(-static_cast<int64_t>(charge));
  std::shared_ptr<v8::BackingStore> store = info[0].As<SharedArrayBuffer>()->GetBackingStore();
  void* addr = store->Data();
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_mappings.find(addr);
  // use_count: this local plus the buffer object we were given. Anything more is another
  // isolate's buffer object or a postMessage in flight: leave the pages to V8's GC.
  if (it == g_mappings.end() || store.use_count() > 2) return info.GetReturnValue().Set(false);
  void* again = mmap(addr, it->second, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
  info.GetReturnValue().Set(again == addr);
}

// forget(size): gives back the external-memory charge of a SharedMemory that was
// garbage-collected without close() (its pages go when V8 frees the buffer).
void Forget(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  size_t charge = 0;
  if (!GetSize(isolate, info[0], true, &charge)) return;
  if (charge > 0) isolate->AdjustAmountOfExternalAllocatedMemory(-static_cast<int64_t>(charge));
}

// pipe() -> [readFd, writeFd], both O_CLOEXEC.
void Pipe(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    isolate->ThrowException(node::ErrnoException(isolate, errno, "pipe2"));
    return;
  }
  Local<Array> out = Array::New(isolate, 2);
  out->Set(context, 0, Integer::New(isolate, fds[0])).Check();
  out->Set(context, 1, Integer::New(isolate, fds[1])).Check();
  info.GetReturnValue().Set(out);
}

// trackerAttach(writeFd, pid) -> boolean. Adopts a freshly started tracker's pipe unless
// another thread got there first (false: the fd stays the caller's to close, which lets
// that tracker exit at once). Re-announces every tracked name, so names registered with a
// tracker that has died since are covered again.
void TrackerAttach(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  if (!info[0]->IsInt32() || !info[1]->IsInt32()) return ThrowType(isolate, "trackerAttach(fd, pid)");
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_tracker_fd >= 0) return info.GetReturnValue().Set(false);
  g_tracker_fd = info[0].As<Integer>()->Value();
  g_tracker_pid = static_cast<int>(info[1].As<Integer>()->Value());
  // Only this process writes to it; see TrackerWrite for why it must never block.
  fcntl(g_tracker_fd, F_SETFL, fcntl(g_tracker_fd, F_GETFL) | O_NONBLOCK);
  for (const Tracked& t : g_tracked) {
    if (!TrackerWrite(AddLine(t))) break;
  }
  // Adopted: the fd is ours now even if that tracker already died (TrackerWrite closed it
  // then, and the next create() notices and starts another).
  info.GetReturnValue().Set(true);
}

// trackerState() -> { pid, tracked }: pid 0 when no tracker is attached.
void TrackerState(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int pid;
  size_t tracked;
  {
    // Never allocate JS values with g_mutex held: a GC they trigger can free a backing
    // store on this thread, and Unmap() takes g_mutex too.
    std::lock_guard<std::mutex> lock(g_mutex);
    pid = g_tracker_pid;
    tracked = g_tracked.size();
  }
  Local<Object> out = Object::New(isolate);
  out->Set(context, String::NewFromUtf8Literal(isolate, "pid"), Integer::New(isolate, pid)).Check();
  out->Set(context, String::NewFromUtf8Literal(isolate, "tracked"), Integer::New(isolate, static_cast<int32_t>(tracked)))
      .Check();
  info.GetReturnValue().Set(out);
}

// Environment teardown (a Worker ending or terminated, or the main thread's orderly
// exit): the names this environment created and did not unlink die with it.
void Cleanup(void* arg) {
  EnvState* env = static_cast<EnvState*>(arg);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (size_t i = 0; i < g_tracked.size();) {
      if (g_tracked[i].owner == env) {
        UnlinkIfSame(g_tracked[i].name, g_tracked[i].ino);
        std::string name = g_tracked[i].name;
        g_tracked[i] = std::move(g_tracked.back());
        g_tracked.pop_back();
        TrackerWrite(RemoveLine(name));
      } else {
        i++;
      }
    }
  }
  delete env;
}

void SetMethod(Isolate* isolate, Local<Context> context, Local<Object> exports, Local<External> data,
               const char* name, v8::FunctionCallback fn) {
  Local<FunctionTemplate> tpl = FunctionTemplate::New(isolate, fn, data);
  Local<String> key = String::NewFromUtf8(isolate, name).ToLocalChecked();
  tpl->SetClassName(key);
  exports->Set(context, key, tpl->GetFunction(context).ToLocalChecked()).Check();
}

}  // namespace

// Context-aware: loads in the main thread and in every Worker.
NODE_MODULE_INIT() {
  Isolate* isolate = context->GetIsolate();
  EnvState* env = new EnvState{isolate};
  node::AddEnvironmentCleanupHook(isolate, Cleanup, env);
  Local<External> data = External::New(isolate, env);
  SetMethod(isolate, context, exports, data, "create", Create);
  SetMethod(isolate, context, exports, data, "attach", Attach);
  SetMethod(isolate, context, exports, data, "unlink", Unlink);
  SetMethod(isolate, context, exports, data, "release", Release);
  SetMethod(isolate, context, exports, data, "forget", Forget);
  SetMethod(isolate, context, exports, data, "pipe", Pipe);
  SetMethod(isolate, context, exports, data, "trackerAttach", TrackerAttach);
  SetMethod(isolate, context, exports, data, "trackerState", TrackerState);
  exports
      ->Set(context, String::NewFromUtf8Literal(isolate, "abi"),
            Integer::New(isolate, NODE_MODULE_VERSION))
      .Check();
  (void)module;
}
