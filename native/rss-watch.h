/*
 * What both rss guards share (corral.c's, which ends the process, and rss-stop.cc's, which can stop
 * the running task in place first): reading this process's resident bytes, pacing the reads, asking
 * the scheduler to wake the watcher promptly, and the exit the parent recognises. C and C++ alike; every function is static, one copy per addon.
 */
#ifndef CORRAL_RSS_WATCH_H
#define CORRAL_RSS_WATCH_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Resident bytes from /proc/self/statm (opened by the caller: a task at its descriptor limit must
 * not blind the guard), or 0 when it cannot be read. statm's resident count is what VmRSS says,
 * which the pool's own sampler reads. */
static uint64_t rss_watch_read(int fd) {
  char buf[128];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long size, resident;
  if (sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Sleeps as long as `room` bytes take to fill at 32 GB/s, clamped to 0.25-20 ms: faster than this
 * VM (or most machines) can fault pages in, so a worker far below its limit costs ~50 reads a second
 * and one within 8 MB of it is read 4,000 times a second (a read of statm costs ~2 us). Fresh memory
 * in 2 MiB pages, as process workers' malloc asks for, faulted in at ~11 GB/s on the 2-core VM: with
 * 8 GB/s assumed and reads at least 1 ms apart, a read could come 11-17 MiB past the limit. */
static void rss_watch_sleep(uint64_t ns) {
  struct timespec ts = {0, (long)ns};
  nanosleep(&ts, NULL);
}

static void rss_watch_nap(uint64_t room) {
  uint64_t ns = room / 32;
  if (ns < 250000) ns = 250000;
  if (ns > 20000000) ns = 20000000;
  rss_watch_sleep(ns);
}

/* Asks the scheduler to run the calling (watcher) thread soon after it wakes: a fair-class slice of
 * 0.1 ms (sched_attr.sched_runtime, Linux 6.12+), which lets a waking thread preempt one with the
 * default slice (0.75 ms times 1 + log2 of the CPUs) instead of queueing behind it. Why: while a task
 * allocates, its thread and V8's GC threads can hold both cores of a small machine, and memory in
 * 2 MiB pages grows ~11 MiB a millisecond. On the 2-core VM (kernel 6.18) with three busy processes,
 * a thread sleeping 0.1 ms at a time woke at p99 0.53-0.61 ms late with the default slice and
 * 0.27-0.36 ms with this one; the rare long delays (6-18 ms, one sleep in a thousand) stay, which is
 * why the stop has a ceiling. Not a priority: the thread gets no more CPU than before (it sleeps
 * nearly all the time), and an unprivileged process may ask it. Older kernels ignore sched_runtime
 * for this class, one without sched_getattr refuses, and the thread runs as before. Policy and nice
 * value stay as they are: a niced worker stays niced. */
struct rss_watch_sched_attr {
  uint32_t size, policy;
  uint64_t flags;
  int32_t nice;
  uint32_t priority;
  uint64_t runtime, deadline, period;
};

static void rss_watch_prompt(void) {
#if defined(SYS_sched_getattr) && defined(SYS_sched_setattr)
  struct rss_watch_sched_attr attr;
  memset(&attr, 0, sizeof attr);
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0) return;
  if (attr.policy != 0) return; /* SCHED_OTHER only: BATCH and IDLE were chosen by someone */
  attr.size = sizeof attr;
  attr.flags &= 1; /* SCHED_FLAG_RESET_ON_FORK kept; the others would need fields this struct has not */
  attr.runtime = 100000;
  attr.deadline = 0;
  attr.period = 0;
  (void)syscall(SYS_sched_setattr, 0, &attr, 0);
#endif
}

/* Ends the process: "<marker> rss=<bytes> limit=<bytes>\n" with write(2) on fd 2, then
 * _exit(code). The marker and the code come from the pool, which recognises them in the parent. */
static void rss_watch_exit(const char *marker, uint64_t rss, uint64_t limit, int code) {
  char line[160];
  int len = snprintf(line, sizeof line, "%s rss=%llu limit=%llu\n", marker, (unsigned long long)rss,
                     (unsigned long long)limit);
  if (len > 0) {
    ssize_t w = write(2, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    (void)w;
  }
  _exit(code);
}

/* Starts the watcher thread, detached, on a 64 KiB stack; 0 or pthread_create's error. It takes no
 * signal meant for the process: all are blocked while it is created, so it inherits that mask. */
static int rss_watch_start(void *(*watch)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, watch, arg);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return err;
}

#endif
