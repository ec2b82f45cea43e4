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
 *
 * With `vmsnap.disk=1` it also loads the virtio block modules packed in
 * /lib/modules, mounts /dev/vda (ext4) on /mnt and takes one-line commands
 * from the second serial port (ttyS1), answering on the console:
 *
 *   VMSNAP DISK MOUNTED                                 before READY
 *   write NAME   -> VMSNAP DISK WROTE NAME              64 KiB file, fsync'd
 *   list TAG     -> VMSNAP DISK LIST TAG a:ok,b:BAD     from the disk (caches dropped)
 *   umount TAG   -> VMSNAP DISK UMOUNTED TAG            file system clean on disk
 *
 * A file's bytes are a pattern derived from its name, so `list` proves the
 * contents as well as the names.
 *
 * Live-capture mode, for the pause a live save imposes on a busy guest:
 * `vmsnap.dirty_mib=N` starts a writer thread that rewrites a region of N MiB
 * of its own (apart from the verified pattern) at `vmsnap.dirty_mibps=R` MiB/s,
 * or as fast as it can with R=0 (the default). `vmsnap.tick=1` starts a ticker
 * thread (SCHED_FIFO, above the writer) that wakes every millisecond and
 * reports, once a second of its own clock:
 *
 *   VMSNAP TICKER pa=0x..                               once, before READY
 *   VMSNAP TICK n=T max_gap_us=G written_mib=W          each second
 *
 * T ticks in that second, G the longest gap between two of them (guest clock),
 * W MiB the writer wrote. The guest clock stands still while QEMU has the VM
 * stopped, so G shows stalls of a running guest (vCPU throttling, a busy host),
 * not the final pause: for that, the ticker also counts its ticks in the 64-bit
 * word at guest-physical address pa+8 (pa holds "VMSNAPTK"), which a host that
 * maps the guest's RAM can watch with its own clock.
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
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
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

/* ---- disk mode ---- */

#define DISK_FILE_BYTES (64 * 1024)
static const char *const disk_modules[] = {"virtio_ring", "virtio", "virtio_pci_modern_dev",
                                           "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"};
static int ctl = -1;      /* ttyS1, commands from the host */
static int mounted = 0;

static void name_pattern(const char *name, unsigned char *buf, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = splitmix64(h ^ i);
    memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
  }
}

static int disk_setup(void) {
  char path[64];
  for (size_t i = 0; i < sizeof disk_modules / sizeof disk_modules[0]; i++) {
    snprintf(path, sizeof path, "/lib/modules/%s.ko", disk_modules[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) < 0) {
      if (errno != EEXIST) {
        say("VMSNAP ERROR module %s: %s", disk_modules[i], strerror(errno));
        return -1;
      }
    }
    if (fd >= 0) close(fd);
  }
  struct stat st;
  for (int i = 0; stat("/dev/vda", &st) < 0; i++) {
    if (i > 200) {
      say("VMSNAP ERROR no /dev/vda");
      return -1;
    }
    msleep(50);
  }
  mkdir("/mnt", 0755);
  if (mount("/dev/vda", "/mnt", "ext4", 0, NULL) < 0) {
    say("VMSNAP ERROR mount /dev/vda: %s", strerror(errno));
    return -1;
  }
  mounted = 1;
  ctl = open("/dev/ttyS1", O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (ctl < 0) {
    say("VMSNAP ERROR open ttyS1: %s", strerror(errno));
    return -1;
  }
  struct termios t;
  if (tcgetattr(ctl, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(ctl, TCSANOW, &t);
  }
  say("VMSNAP DISK MOUNTED");
  return 0;
}

static void disk_write(const char *name) {
  static unsigned char buf[DISK_FILE_BYTES];
  char path[128];
  snprintf(path, sizeof path, "/mnt/%s", name);
  name_pattern(name, buf, sizeof buf);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fsync(fd) < 0) {
    say("VMSNAP DISK ERROR write %s: %s", name, strerror(errno));
  } else {
    int dfd = open("/mnt", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    say("VMSNAP DISK WROTE %s", name);
  }
  if (fd >= 0) close(fd);
}

/* Lists /mnt as the disk has it: caches are dropped first, so a name or a
   byte that only lives in this guest's memory would not be seen. */
static void disk_list(const char *tag) {
  static unsigned char want[DISK_FILE_BYTES], got[DISK_FILE_BYTES + 1];
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (write(fd, "3", 1) < 0) say("VMSNAP WARN drop_caches: %s", strerror(errno));
    close(fd);
  }
  char out[200] = "";
  size_t used = 0;
  DIR *d = opendir("/mnt");
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "lost+found") == 0) continue;
    char path[300];
    snprintf(path, sizeof path, "/mnt/%s", e->d_name);
    name_pattern(e->d_name, want, sizeof want);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = f >= 0 ? read(f, got, sizeof got) : -1;
    if (f >= 0) close(f);
    int ok = n == (ssize_t)sizeof want && memcmp(want, got, sizeof want) == 0;
    int w = snprintf(out + used, sizeof out - used, "%s%s:%s", used ? "," : "", e->d_name, ok ? "ok" : "BAD");
    if (w > 0 && used + (size_t)w < sizeof out) used += (size_t)w;
  }
  if (d) closedir(d);
  say("VMSNAP DISK LIST %s %s", tag, used ? out : "-");
}

static void disk_command(char *line) {
  char *arg = strchr(line, ' ');
  if (arg) *arg++ = '\0';
  if (!arg || !*arg || strlen(arg) > 60 || strchr(arg, '/')) {
    say("VMSNAP DISK ERROR bad command '%s'", line);
  } else if (strcmp(line, "write") == 0 && mounted) {
    disk_write(arg);
  } else if (strcmp(line, "list") == 0 && mounted) {
    disk_list(arg);
  } else if (strcmp(line, "umount") == 0 && mounted) {
    sync();
    if (umount("/mnt") < 0) {
      say("VMSNAP DISK ERROR umount: %s", strerror(errno));
    } else {
      mounted = 0;
      say("VMSNAP DISK UMOUNTED %s", arg);
    }
  } else {
    say("VMSNAP DISK ERROR unknown command '%s'", line);
  }
}

/* Sleeps ~ms, running every complete command line that arrives meanwhile. */
static void disk_wait(long ms) {
  static char line[128];
  static size_t len = 0;
  uint64_t end = now_ms(CLOCK_MONOTONIC) + (uint64_t)ms;
  for (;;) {
    uint64_t now = now_ms(CLOCK_MONOTONIC);
    if (now >= end) return;
    struct pollfd p = {ctl, POLLIN, 0};
    if (poll(&p, 1, (int)(end - now)) <= 0) continue;
    char c;
    while (read(ctl, &c, 1) == 1) {
      if (c == '\n' || c == '\r') {
        line[len] = '\0';
        if (len > 0) disk_command(line);
        len = 0;
      } else if (len < sizeof line - 1) {
        line[len++] = c;
      }
    }
  }
}

/* ---- live-capture mode: a writer dirtying memory at a set rate, a ticker ---- */

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void usleep_exact(uint64_t us) {
  struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

struct writer_args {
  unsigned char *region;
  size_t bytes;
  uint64_t bytes_per_s; /* 0: as fast as it can */
};
static volatile uint64_t written_bytes; /* by the writer, read by the ticker */

static void *writer_main(void *arg) {
  const struct writer_args *w = arg;
  const size_t chunk = 1u << 20; /* whole pages, paced per MiB */
  const uint64_t start = now_us();
  size_t off = 0;
  for (uint64_t done = 0, round = 1;; round++) {
    memset(w->region + off, (int)(round & 0xff), chunk);
    __asm__ volatile("" : : "r"(w->region) : "memory");
    off = off + chunk >= w->bytes ? 0 : off + chunk;
    done += chunk;
    written_bytes = done;
    if (w->bytes_per_s) {
      uint64_t due = start + done * 1000000u / w->bytes_per_s, now = now_us();
      if (due > now) usleep_exact(due - now);
    }
  }
  return NULL;
}

struct tick_page {
  char magic[8]; /* "VMSNAPTK" */
  volatile uint64_t ticks;
};

/* Guest-physical address of a mapped, locked page (PID 1 may read PFNs from pagemap). */
static uint64_t phys_addr(const void *p) {
  uint64_t entry = 0;
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  off_t at = (off_t)((uintptr_t)p / 4096u) * 8;
  ssize_t n = pread(fd, &entry, sizeof entry, at);
  close(fd);
  if (n != (ssize_t)sizeof entry || !(entry >> 63)) return 0;
  return (entry & ((1ULL << 55) - 1)) * 4096u + (uintptr_t)p % 4096u;
}

static void *ticker_main(void *arg) {
  struct tick_page *page = arg;
  uint64_t prev = now_us(), window = prev, max_gap = 0, n = 0, written_before = 0;
  for (;;) {
    usleep_exact(1000);
    uint64_t t = now_us();
    if (t - prev > max_gap) max_gap = t - prev;
    prev = t;
    n++;
    page->ticks++;
    if (t - window >= 1000000u) {
      uint64_t written = written_bytes;
      say("VMSNAP TICK n=%" PRIu64 " max_gap_us=%" PRIu64 " written_mib=%" PRIu64, n, max_gap, (written - written_before) >> 20);
      written_before = written;
      window = t;
      max_gap = 0;
      n = 0;
    }
  }
  return NULL;
}

/* Starts the writer and the ticker the command line asks for; returns 0 or -1 (reported). */
static int live_mode_start(const char *cmdline) {
  static struct writer_args w;
  pthread_t th;
  w.bytes = (size_t)cmdline_u64(cmdline, "vmsnap.dirty_mib", 0) << 20;
  w.bytes_per_s = cmdline_u64(cmdline, "vmsnap.dirty_mibps", 0) << 20;
  if (cmdline_u64(cmdline, "vmsnap.tick", 0)) {
    struct tick_page *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (page == MAP_FAILED || mlock(page, 4096) < 0) {
      say("VMSNAP ERROR ticker page: %s", strerror(errno));
      return -1;
    }
    /* Keep the locked page where it is: compaction may otherwise move it to another address. */
    int fd = open("/proc/sys/vm/compact_unevictable_allowed", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (write(fd, "0", 1) < 0) say("VMSNAP WARN compact_unevictable_allowed: %s", strerror(errno));
      close(fd);
    }
    memcpy(page->magic, "VMSNAPTK", 8);
    pthread_attr_t attr;
    struct sched_param sp = {.sched_priority = 10};
    pthread_attr_init(&attr);
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
    pthread_attr_setschedparam(&attr, &sp);
    if (pthread_create(&th, &attr, ticker_main, page) != 0) {
      say("VMSNAP ERROR ticker thread");
      return -1;
    }
    say("VMSNAP TICKER pa=0x%" PRIx64, phys_addr(page));
  }
  if (w.bytes > 0) {
    void *m = mmap(NULL, w.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      say("VMSNAP ERROR mmap dirty_mib: %s", strerror(errno));
      return -1;
    }
    w.region = m;
#ifdef MADV_POPULATE_WRITE
    madvise(m, w.bytes, MADV_POPULATE_WRITE);
#endif
    if (pthread_create(&th, NULL, writer_main, &w) != 0) {
      say("VMSNAP ERROR writer thread");
      return -1;
    }
  }
  return 0;
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
  if (cmdline_u64(cmdline, "vmsnap.disk", 0) && disk_setup() < 0) hang();

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
  if (live_mode_start(cmdline) < 0) hang();
  const uint64_t ready_ms = now_ms(CLOCK_BOOTTIME);

  /* Diagnostics only (boot and fill cost); tests should key on READY. */
  say("VMSNAP INFO init_ms=%" PRIu64 " fill_ms=%" PRIu64, init_ms, ready_ms - init_ms);
  say("VMSNAP READY fill_mib=%" PRIu64 " seed=%" PRIu64, fill_mib, seed);

  for (uint64_t pass = 1;; pass++) {
    if (ctl >= 0)
      disk_wait(200);
    else
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
