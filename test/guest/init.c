/*
 * vmsnap test guest: a static PID 1 for the engine tests.
 *
 * It fills `vmsnap.fill_mib` MiB (default 64) of anonymous memory with a
 * deterministic pseudo-random pattern and then re-verifies every 8-byte word
 * forever, reporting on the serial console:
 *
 *   VMSNAP INFO init_ms=A fill_ms=B                     diagnostics, before READY
 *   VMSNAP READY fill_mib=N seed=S                      once, after the fill
 *   VMSNAP PASS n=K ok                                  after each clean sweep
 *   VMSNAP BAD word=I expected=0x.. got=0x..            first mismatch of a sweep
 *
 * K counts sweeps from 1 (BAD sweeps count too). Word I holds
 * splitmix64(I ^ splitmix64(S)). ~200 ms of sleep separate sweeps.
 * PID 1 must never exit (that panics the kernel), so every path ends in a loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int con = -1; /* console fd; -1 until opened */

static void say(const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  int fd = con >= 0 ? con : 1;
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, (size_t)n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= (int)w;
  }
  /* A tty write has already been handed to the driver; fsync is a no-op on a
     tty but harmless, and makes the intent explicit. */
  fsync(fd);
}

static uint64_t now_ms(clockid_t clk) {
  struct timespec ts;
  if (clock_gettime(clk, &ts) < 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void msleep(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static void hang(void) {
  for (;;) msleep(1000);
}

static inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Value of `key=<unsigned>` on the kernel command line, or `def`. */
static uint64_t cmdline_u64(const char *cmdline, const char *key, uint64_t def) {
  size_t klen = strlen(key);
  const char *p = cmdline;
  while (*p) {
    while (*p == ' ' || *p == '\n' || *p == '\t') p++;
    if (!*p) break;
    if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
      char *end;
      errno = 0;
      unsigned long long v = strtoull(p + klen + 1, &end, 0);
      if (errno == 0 && end != p + klen + 1) return (uint64_t)v;
      return def;
    }
    while (*p && *p != ' ' && *p != '\n' && *p != '\t') p++;
  }
  return def;
}

static void open_console(void) {
  mkdir("/dev", 0755);
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL); /* EBUSY if already there */
  /* ttyS0 first: that is where the test harness listens. /dev/console is the
     fallback (console=ttyS0 makes it the same port). */
  static const char *const paths[] = {"/dev/ttyS0", "/dev/console"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    int fd = open(paths[i], O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
      con = fd;
      return;
    }
  }
}

int main(void) {
  const uint64_t init_ms = now_ms(CLOCK_BOOTTIME); /* kernel boot time */
  open_console();
  mkdir("/proc", 0555);
  if (mount("proc", "/proc", "proc", 0, NULL) < 0 && errno != EBUSY)
    say("VMSNAP WARN mount /proc: %s", strerror(errno));

  char cmdline[4096] = "";
  int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
    cmdline[n > 0 ? n : 0] = '\0';
    close(fd);
  }
  uint64_t fill_mib = cmdline_u64(cmdline, "vmsnap.fill_mib", 64);
  uint64_t seed = cmdline_u64(cmdline, "vmsnap.seed", 1);

  size_t bytes = (size_t)fill_mib << 20;
  size_t words = bytes / sizeof(uint64_t);
  uint64_t *mem = NULL;
  if (bytes > 0) {
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      say("VMSNAP ERROR mmap fill_mib=%" PRIu64 ": %s", fill_mib, strerror(errno));
      hang();
    }
    mem = m;
    /* Under TCG every page fault is expensive: ask for transparent huge pages
       and fault the whole buffer in with one call (roughly halves the fill
       time). Both are hints; the fill below touches every page anyway. */
    madvise(m, bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    madvise(m, bytes, MADV_POPULATE_WRITE);
#endif
  }

  const uint64_t key = splitmix64(seed);
  for (size_t i = 0; i < words; i++) mem[i] = splitmix64((uint64_t)i ^ key);
  const uint64_t ready_ms = now_ms(CLOCK_BOOTTIME);

  /* Diagnostics only (boot and fill cost); tests should key on READY. */
  say("VMSNAP INFO init_ms=%" PRIu64 " fill_ms=%" PRIu64, init_ms, ready_ms - init_ms);
  say("VMSNAP READY fill_mib=%" PRIu64 " seed=%" PRIu64, fill_mib, seed);

  for (uint64_t pass = 1;; pass++) {
    msleep(200);
    /* Make the compiler assume the buffer may have changed behind its back
       (it has: the VM may have been saved and restored). */
    __asm__ volatile("" : : "r"(mem) : "memory");
    size_t bad = words;
    for (size_t i = 0; i < words; i++) {
      if (mem[i] != splitmix64((uint64_t)i ^ key)) {
        bad = i;
        break;
      }
    }
    if (bad == words) {
      say("VMSNAP PASS n=%" PRIu64 " ok", pass);
    } else {
      say("VMSNAP BAD word=%zu expected=0x%016" PRIx64 " got=0x%016" PRIx64, bad,
          splitmix64((uint64_t)bad ^ key), mem[bad]);
    }
  }
}
