/*
 * corral's native helpers: the few Linux process controls Node has no API for.
 *
 * Written against Node-API only (NAPI_VERSION 8, set in binding.gyp) so that one
 * build loads unchanged on Node 20, 22 and 24: no V8, NAN or libuv symbols.
 *
 * Error conventions follow Node's own: a wrong type is a TypeError with code
 * ERR_INVALID_ARG_TYPE, an unknown name ERR_INVALID_ARG_VALUE (TypeError), a number
 * out of range a RangeError with ERR_OUT_OF_RANGE, and a failed system call an Error
 * whose code is the errno name ('EPERM'), errno is the negated errno and syscall
 * names the call, so callers can treat them like fs/child_process errors.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <node_api.h>

#include "rss-watch.h"

/* Bail out of a binding when a Node-API call fails, surfacing the failure as a JS
 * exception unless one is already pending (then JS sees the original one). */
#define NAPI_CALL(env, call)                                                            \
  do {                                                                                  \
    napi_status status_ = (call);                                                       \
    if (status_ != napi_ok) {                                                           \
      report_napi_failure((env), status_);                                              \
      return NULL;                                                                      \
    }                                                                                   \
  } while (0)

static void report_napi_failure(napi_env env, napi_status status) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[160];
  snprintf(msg, sizeof msg, "corral native: Node-API call failed (status %d%s%s)", (int)status,
           info && info->error_message ? ": " : "", info && info->error_message ? info->error_message : "");
  napi_throw_error(env, NULL, msg);
}

/* Only the errnos prctl/getrlimit/setrlimit/prlimit can produce need names; a table
 * keeps us off strerrorname_np, which needs glibc 2.32 and does not exist on musl. */
static const char *errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ESRCH: return "ESRCH";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EACCES: return "EACCES";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case ENOSYS: return "ENOSYS";
    case EBADF: return "EBADF";
    default: return "UNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s, %s(%s)", errno_name(err), strerror(err), syscall, detail);
  napi_value code, message, error, errno_value, syscall_value;
  NAPI_CALL(env, napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code));
  NAPI_CALL(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message));
  NAPI_CALL(env, napi_create_error(env, code, message, &error));
  NAPI_CALL(env, napi_create_int32(env, -err, &errno_value));
  NAPI_CALL(env, napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value));
  NAPI_CALL(env, napi_set_named_property(env, error, "errno", errno_value));
  NAPI_CALL(env, napi_set_named_property(env, error, "syscall", syscall_value));
  napi_throw(env, error);
  return NULL;
}

static const char *type_name(napi_valuetype t) {
  switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
    default: return "unknown";
  }
}

static napi_value throw_type(napi_env env, const char *name, const char *expected, napi_valuetype got) {
  char msg[200];
  snprintf(msg, sizeof msg, "The \"%s\" argument must be %s. Received type %s", name, expected, type_name(got));
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *name, const char *expected, double got) {
  char msg[200];
  char received[32];
  /* printf spells these 'nan'/'inf'; match what JS shows the caller. */
  if (isnan(got)) {
    snprintf(received, sizeof received, "NaN");
  } else if (isinf(got)) {
    snprintf(received, sizeof received, got > 0 ? "Infinity" : "-Infinity");
  } else {
    snprintf(received, sizeof received, "%.17g", got);
  }
  snprintf(msg, sizeof msg, "The value of \"%s\" is out of range. It must be %s. Received %s", name, expected,
           received);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

/* Returns false with a JS exception pending when the argument is not an integer in [min, max]. */
static bool get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return report_napi_failure(env, napi_generic_failure), false;
  if (t != napi_number) return throw_type(env, name, "of type number", t), false;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return report_napi_failure(env, napi_generic_failure), false;
  if (!(d == floor(d)) || d < (double)min || d > (double)max) {
    char expected[96];
    snprintf(expected, sizeof expected, "an integer >= %lld and <= %lld", (long long)min, (long long)max);
    return throw_range(env, name, expected, d), false;
  }
  *out = (int64_t)d;
  return true;
}

/* null (or Infinity) means RLIM_INFINITY. Finite values must be exact non-negative
 * integers below 2^64 - this also rejects NaN and fractions. */
static bool get_limit(napi_env env, napi_value v, const char *name, rlim_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return report_napi_failure(env, napi_generic_failure), false;
  if (t == napi_null) {
    *out = RLIM_INFINITY;
    return true;
  }
  if (t != napi_number) return throw_type(env, name, "a number or null (unlimited)", t), false;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return report_napi_failure(env, napi_generic_failure), false;
  if (d == INFINITY) {
    *out = RLIM_INFINITY;
    return true;
  }
  if (!(d >= 0) || d != floor(d) || d >= 18446744073709551616.0) {
    return throw_range(env, name, "a non-negative integer, Infinity or null", d), false;
  }
  *out = (rlim_t)d;
  return true;
}

static napi_value limit_value(napi_env env, rlim_t v) {
  napi_value out;
  if (v == RLIM_INFINITY) {
    NAPI_CALL(env, napi_get_null(env, &out));
  } else {
    NAPI_CALL(env, napi_create_double(env, (double)v, &out));
  }
  return out;
}

static napi_value rlimit_object(napi_env env, const struct rlimit *rl) {
  napi_value obj, soft, hard;
  NAPI_CALL(env, napi_create_object(env, &obj));
  if ((soft = limit_value(env, rl->rlim_cur)) == NULL) return NULL;
  if ((hard = limit_value(env, rl->rlim_max)) == NULL) return NULL;
  NAPI_CALL(env, napi_set_named_property(env, obj, "soft", soft));
  NAPI_CALL(env, napi_set_named_property(env, obj, "hard", hard));
  return obj;
}

struct resource {
  const char *name;
  const char *constant;
  int id;
};

static const struct resource resources[] = {
    {"as", "RLIMIT_AS", RLIMIT_AS},         {"data", "RLIMIT_DATA", RLIMIT_DATA},
    {"nofile", "RLIMIT_NOFILE", RLIMIT_NOFILE}, {"cpu", "RLIMIT_CPU", RLIMIT_CPU},
    {"rss", "RLIMIT_RSS", RLIMIT_RSS},       {"stack", "RLIMIT_STACK", RLIMIT_STACK},
    {"core", "RLIMIT_CORE", RLIMIT_CORE},     {"nproc", "RLIMIT_NPROC", RLIMIT_NPROC},
};

static const struct resource *get_resource(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return report_napi_failure(env, napi_generic_failure), NULL;
  if (t != napi_string) return throw_type(env, "resource", "of type string", t), NULL;
  char buf[16];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, sizeof buf, &len) != napi_ok) {
    return report_napi_failure(env, napi_generic_failure), NULL;
  }
  /* A name longer than the buffer is truncated, so compare lengths too. */
  for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++) {
    if (len == strlen(resources[i].name) && strcmp(buf, resources[i].name) == 0) return &resources[i];
  }
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                        "The \"resource\" argument must be one of 'as', 'data', 'nofile', 'cpu', 'rss', "
                        "'stack', 'core', 'nproc'");
  return NULL;
}

static void format_limit(char *buf, size_t size, rlim_t v) {
  if (v == RLIM_INFINITY) {
    snprintf(buf, size, "unlimited");
  } else {
    snprintf(buf, size, "%llu", (unsigned long long)v);
  }
}

static void format_call(char *buf, size_t size, const char *prefix, const struct resource *r,
                        const struct rlimit *rl) {
  char soft[24], hard[24];
  format_limit(soft, sizeof soft, rl->rlim_cur);
  format_limit(hard, sizeof hard, rl->rlim_max);
  snprintf(buf, size, "%s%s, soft=%s, hard=%s", prefix, r->constant, soft, hard);
}

static bool check_argc(napi_env env, size_t argc, size_t want, const char *usage) {
  if (argc >= want) return true;
  char msg[160];
  snprintf(msg, sizeof msg, "expected %zu argument%s: %s", want, want == 1 ? "" : "s", usage);
  napi_throw_type_error(env, "ERR_MISSING_ARGS", msg);
  return false;
}

static napi_value set_pdeathsig(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!check_argc(env, argc, 1, "setPdeathsig(signal)")) return NULL;
  int64_t sig;
  /* 0 would silently clear the setting; callers that mean that can be added later. */
  if (!get_int(env, argv[0], "signal", 1, SIGRTMAX, &sig)) return NULL;
  if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) != 0) {
    char detail[48];
    snprintf(detail, sizeof detail, "PR_SET_PDEATHSIG, %lld", (long long)sig);
    return throw_errno(env, errno, "prctl", detail);
  }
  return NULL;
}

static napi_value get_ppid(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  NAPI_CALL(env, napi_create_int32(env, (int32_t)getppid(), &out));
  return out;
}

static napi_value get_rlimit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!check_argc(env, argc, 1, "getrlimit(resource)")) return NULL;
  const struct resource *r = get_resource(env, argv[0]);
  if (r == NULL) return NULL;
  struct rlimit rl;
  if (getrlimit(r->id, &rl) != 0) return throw_errno(env, errno, "getrlimit", r->constant);
  return rlimit_object(env, &rl);
}

static napi_value set_rlimit(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!check_argc(env, argc, 3, "setrlimit(resource, soft, hard)")) return NULL;
  const struct resource *r = get_resource(env, argv[0]);
  if (r == NULL) return NULL;
  struct rlimit rl;
  if (!get_limit(env, argv[1], "soft", &rl.rlim_cur)) return NULL;
  if (!get_limit(env, argv[2], "hard", &rl.rlim_max)) return NULL;
  if (setrlimit(r->id, &rl) != 0) {
    int err = errno;
    char detail[128];
    format_call(detail, sizeof detail, "", r, &rl);
    return throw_errno(env, err, "setrlimit", detail);
  }
  return NULL;
}

/* prlimit(pid, resource) only reads; with soft and hard it sets them. Either way the
 * limit in force before the call is returned, as prlimit(2) does. */
static napi_value pr_limit(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!check_argc(env, argc, 2, "prlimit(pid, resource[, soft, hard])")) return NULL;
  int64_t pid;
  /* pid 0 is the caller itself, as in prlimit(2). */
  if (!get_int(env, argv[0], "pid", 0, INT32_MAX, &pid)) return NULL;
  const struct resource *r = get_resource(env, argv[1]);
  if (r == NULL) return NULL;

  bool set = false;
  struct rlimit new_rl;
  if (argc > 2) {
    napi_valuetype t2, t3 = napi_undefined;
    NAPI_CALL(env, napi_typeof(env, argv[2], &t2));
    if (argc > 3) NAPI_CALL(env, napi_typeof(env, argv[3], &t3));
    /* Both undefined is the read-only form; one alone is almost certainly a forgotten
     * hard limit, and guessing it could lower a hard limit for good. */
    if (t2 != napi_undefined || t3 != napi_undefined) {
      if (!check_argc(env, argc, 4, "prlimit(pid, resource, soft, hard)")) return NULL;
      if (!get_limit(env, argv[2], "soft", &new_rl.rlim_cur)) return NULL;
      if (!get_limit(env, argv[3], "hard", &new_rl.rlim_max)) return NULL;
      set = true;
    }
  }

  struct rlimit old_rl;
  if (prlimit((pid_t)pid, r->id, set ? &new_rl : NULL, &old_rl) != 0) {
    int err = errno;
    char detail[160];
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%lld, ", (long long)pid);
    if (set) {
      format_call(detail, sizeof detail, prefix, r, &new_rl);
    } else {
      snprintf(detail, sizeof detail, "%s%s", prefix, r->constant);
    }
    return throw_errno(env, err, "prlimit", detail);
  }
  return rlimit_object(env, &old_rl);
}

/*
 * The rss guard: a thread of its own that watches this process's resident memory and ends the
 * process the moment it passes a limit, with one line on stderr. A worker whose heap addon loaded
 * arms rss-stop.cc's guard instead, which first tries to stop the running task in place; this one is
 * for Node versions without that addon (Node-API: it loads everywhere).
 *
 * Why it is needed: the pool samples its workers' RSS from outside every sampleInterval (100 ms by
 * default), so a task that touches memory fast is seen tens of milliseconds (and tens of MiB) past
 * the limit, later still on a busy machine, and the pool then has to kill it and wait for the exit.
 * From inside, the check is one read of /proc/self/statm (a few microseconds), so it can run often:
 * it sleeps as long as the room left under the limit takes to fill at 32 GB/s (clamped to 0.25-20
 * ms, rss-watch.h), so a worker far below its limit costs ~50 reads a second and one near it is
 * checked every quarter of a millisecond. /proc/self/statm's resident count is what VmRSS says,
 * which the pool's sampler reads.
 *
 * Ending the process: "<marker> rss=<bytes> limit=<bytes>\n" written with write(2) to fd 2, then
 * _exit(<exit code>), like the heap guard (heap.cc): the marker and the code come from the caller,
 * the one that recognises them again in the parent. The descriptor is opened when the guard is armed,
 * before the task module loads: a task at its descriptor limit must not blind it.
 */
static struct {
  int fd;
  uint64_t limit;
  int exit_code;
  char marker[64];
} rss_guard = {-1, 0, 0, ""};

static void *rss_guard_main(void *unused) {
  rss_watch_prompt();
  for (;;) {
    uint64_t rss = rss_watch_read(rss_guard.fd);
    if (rss > rss_guard.limit) rss_watch_exit(rss_guard.marker, rss, rss_guard.limit, rss_guard.exit_code);
    rss_watch_nap(rss == 0 ? 0 : rss_guard.limit - rss);
  }
  return NULL;
}

/* armRssGuard(limitBytes, exitCode, marker): starts the guard once per process; false if it was already armed. */
static napi_value arm_rss_guard(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!check_argc(env, argc, 3, "armRssGuard(limitBytes, exitCode, marker)")) return NULL;
  int64_t limit, code;
  if (!get_int(env, argv[0], "limitBytes", 1, INT64_C(9007199254740991), &limit)) return NULL;
  if (!get_int(env, argv[1], "exitCode", 1, 255, &code)) return NULL;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[2], &t));
  if (t != napi_string) return throw_type(env, "marker", "of type string", t);
  napi_value result;
  if (rss_guard.fd >= 0) {
    NAPI_CALL(env, napi_get_boolean(env, false, &result));
    return result;
  }
  size_t len;
  NAPI_CALL(env, napi_get_value_string_utf8(env, argv[2], rss_guard.marker, sizeof rss_guard.marker, &len));
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", "/proc/self/statm");
  rss_guard.fd = fd;
  rss_guard.limit = (uint64_t)limit;
  rss_guard.exit_code = (int)code;
  int err = rss_watch_start(rss_guard_main, NULL);
  if (err != 0) {
    close(fd);
    rss_guard.fd = -1;
    return throw_errno(env, err, "pthread_create", "rss guard");
  }
  NAPI_CALL(env, napi_get_boolean(env, true, &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"setPdeathsig", NULL, set_pdeathsig, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getppid", NULL, get_ppid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getrlimit", NULL, get_rlimit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setrlimit", NULL, set_rlimit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"prlimit", NULL, pr_limit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"armRssGuard", NULL, arm_rss_guard, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
