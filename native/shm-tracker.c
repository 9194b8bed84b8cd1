/*
 * corral-shm-tracker: unlinks the POSIX shared-memory segments a process created when
 * that process is gone, however it went (SIGKILL and OOM kills included).
 *
 * One tracker serves one creating process (started lazily, on its first non-persistent
 * segment). Its stdin is a pipe whose only write end lives in that process (O_CLOEXEC, so
 * no other child holds it): end-of-file therefore means the process has exited. The
 * process writes one line per change:
 *
 *   +<inode> <name>\n   a segment it created (name without the leading '/')
 *   -<name>\n           it unlinked that segment itself (close(), unlink(), thread end)
 *   *\n                 forget every name: the live ones follow (the process keeps what we
 *                       have not read yet short this way while we are stopped or slow)
 *
 * At end-of-file the tracker unlinks every name still listed *if the name still refers
 * to the inode it was told about* (a name removed and re-created by someone else is not
 * ours any more), then exits. It never touches a name it was not told about, so segments
 * a process merely attached are never unlinked on its behalf. It prints nothing: a
 * tracker that finds nothing to clean up has nothing to report.
 *
 * It runs in its own session (spawned detached), so the terminal's Ctrl-C that kills the
 * creator's process group does not kill the tracker before it has cleaned up; terminal
 * signals are ignored for the same reason.
 */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct entry {
  char *name;
  unsigned long long ino;
};

static struct entry *entries;
static size_t count, capacity;

static void add(const char *name, unsigned long long ino) {
  for (size_t i = 0; i < count; i++) {
    if (strcmp(entries[i].name, name) == 0) {
      entries[i].ino = ino;
      return;
    }
  }
  if (count == capacity) {
    size_t next = capacity ? capacity * 2 : 64;
    struct entry *grown = realloc(entries, next * sizeof *entries);
    if (!grown) return; /* Out of memory: this one name can leak, the rest stay covered. */
    entries = grown;
    capacity = next;
  }
  char *copy = strdup(name);
  if (!copy) return;
  entries[count].name = copy;
  entries[count].ino = ino;
  count++;
}

static void removeName(const char *name) {
  for (size_t i = 0; i < count; i++) {
    if (strcmp(entries[i].name, name) == 0) {
      free(entries[i].name);
      entries[i] = entries[--count];
      return;
    }
  }
}

static void handle(char *line) {
  if (line[0] == '+') {
    char *end = NULL;
    errno = 0;
    unsigned long long ino = strtoull(line + 1, &end, 10);
    if (errno == 0 && end && *end == ' ' && end[1] != '\0' && !strchr(end + 1, '/')) add(end + 1, ino);
  } else if (line[0] == '-' && line[1] != '\0') {
    removeName(line + 1);
  } else if (line[0] == '*' && line[1] == '\0') {
    for (size_t i = 0; i < count; i++) free(entries[i].name);
    count = 0;
  }
}

static void cleanup(void) {
  char path[300];
  for (size_t i = 0; i < count; i++) {
    struct stat st;
    if (snprintf(path, sizeof path, "/dev/shm/%s", entries[i].name) >= (int)sizeof path) continue;
    if (stat(path, &st) != 0 || (unsigned long long)st.st_ino != entries[i].ino) continue;
    char shm_name[300];
    snprintf(shm_name, sizeof shm_name, "/%s", entries[i].name);
    shm_unlink(shm_name);
  }
}

/* Descriptors the creator inherited without O_CLOEXEC (a shell's or a job runner's pipes)
 * would otherwise stay open here: whoever waits for their EOF would wait for us too. */
static void closeInherited(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
#endif
  DIR *dir = opendir("/proc/self/fd");
  if (!dir) return;
  int self = dirfd(dir);
  struct dirent *e;
  int fds[1024];
  size_t n = 0;
  while ((e = readdir(dir)) != NULL && n < sizeof fds / sizeof fds[0]) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != self) fds[n++] = fd;
  }
  closedir(dir);
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

int main(void) {
  closeInherited();
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  if (chdir("/") != 0) {
    /* Not fatal: only keeps the tracker from pinning a directory. */
  }
  prctl(PR_SET_NAME, "corral-shm-trk", 0, 0, 0);

  char buf[4096];
  char line[512];
  size_t used = 0;
  int overlong = 0;
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EOF: the creating process has exited; an error means the same. */
    for (ssize_t i = 0; i < n; i++) {
      char c = buf[i];
      if (c == '\n') {
        if (!overlong) {
          line[used] = '\0';
          handle(line);
        }
        used = 0;
        overlong = 0;
      } else if (used + 1 < sizeof line) {
        line[used++] = c;
      } else {
        overlong = 1; /* Names are at most 250 bytes; ignore anything longer. */
      }
    }
  }
  cleanup();
  return 0;
}
