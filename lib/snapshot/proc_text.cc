#include "snapshot/proc_text.h"

#include "platform/clock.h"
#include "platform/sys.h"
#include "snapshot/capsule_format.h"
#include "support/crc32c.h"

#include <fcntl.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail {

namespace cap = mmtier::capsule;

void read_small(const char *path, char *buf, size_t cap) {
  buf[0] = 0;
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  size_t have = 0;
  for (long n; have < cap - 1 && (n = sys::read(static_cast<int>(fd), buf + have, cap - 1 - have)) > 0;)
    have += static_cast<size_t>(n);
  sys::close(static_cast<int>(fd));
  buf[have] = 0;
  if (have && buf[have - 1] == '\n') buf[have - 1] = 0;
}

namespace {

std::atomic<uint32_t> g_fork_advice_epoch{0};
std::atomic<int32_t> g_fork_advice_busy{0};

// The region_madv bits of a VmFlags line's two-letter names; *dontfork
// set for "dc".
uint32_t madv_bits(const char *flags, bool *dontfork) {
  uint32_t bits = 0;
  for (const char *f = flags; *f;) {
    while (*f == ' ') ++f;
    if (!f[0] || !f[1]) break;
    const char a = f[0], b = f[1];
    if (a == 'h' && b == 'g') bits |= cap::kMadvHuge;
    else if (a == 'n' && b == 'h') bits |= cap::kMadvNoHuge;
    else if (a == 'd' && b == 'd') bits |= cap::kMadvDontDump;
    else if (a == 'w' && b == 'f') bits |= cap::kMadvWipeOnFork;
    else if (a == 'm' && b == 'g') bits |= cap::kMadvMergeable;
    else if (a == 'l' && b == 'o') bits |= cap::kMadvLocked;
    else if (a == 'd' && b == 'c') *dontfork = true;
    f += 2;
    while (*f && *f != ' ') ++f;
  }
  return bits;
}

}  // namespace

// Counted before and after each request (the kernel may have applied it
// when a stop parks its thread on the way back), and how many are under
// way.
void fork_advice_begin() {
  g_fork_advice_busy.fetch_add(1, std::memory_order_acq_rel);
  g_fork_advice_epoch.fetch_add(1, std::memory_order_acq_rel);
}
void fork_advice_end() {
  g_fork_advice_epoch.fetch_add(1, std::memory_order_acq_rel);
  g_fork_advice_busy.fetch_sub(1, std::memory_order_acq_rel);
}
uint32_t fork_advice_epoch() { return g_fork_advice_epoch.load(std::memory_order_acquire); }
bool fork_advice_settled(uint32_t epoch) {
  return g_fork_advice_busy.load(std::memory_order_acquire) == 0 && fork_advice_epoch() == epoch;
}

long read_vm_advice(vm_advice *out, char *why, size_t cap, char *window) {
  out->n = out->left_out = 0;
  out->dontfork_lo = out->dontfork_hi = 0;
  out->epoch = fork_advice_epoch();
  long fd = sys::openat(AT_FDCWD, "/proc/thread-self/smaps", O_RDONLY | O_CLOEXEC, 0);
  static char own[kSmapsWindow];  // under the snapshot's lock
  char *const buf = window ? window : own;
  uintptr_t lo = 0, hi = 0;
  long have = 0;
  bool ok = fd >= 0, wiped_left_out = false;
  while (ok) {
    const long r = sys::read(static_cast<int>(fd), buf + have, kSmapsWindow - 1 - static_cast<size_t>(have));
    if (r < 0) ok = false;
    if (r <= 0) break;
    have += r;
    buf[have] = 0;
    char *line = buf;
    for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
      *nl = 0;
      if (!strncmp(line, "VmFlags:", 8)) {
        bool dontfork = false;
        const uint32_t bits = madv_bits(line + 8, &dontfork);
        if (dontfork && !out->dontfork_lo) {
          out->dontfork_lo = lo;
          out->dontfork_hi = hi;
        }
        if (!bits) continue;
        if (out->n && out->e[out->n - 1].hi == lo && out->e[out->n - 1].madv == bits)
          out->e[out->n - 1].hi = hi;  // neighbours with the same advice: one entry
        else if (out->n < vm_advice::kMax)
          out->e[out->n++] = {lo, hi, bits};
        else if (bits & cap::kMadvWipeOnFork)
          wiped_left_out = true;  // its bytes would be lost: refused below
        else
          ++out->left_out;
      } else if (const char *dash = strchr(line, '-'); dash && strchr(line, ' ') > dash && line[0] != ' ') {
        char *e = nullptr;
        const unsigned long a = strtoul(line, &e, 16);
        if (e == dash) {
          lo = a;
          hi = strtoul(dash + 1, nullptr, 16);
        }
      }
    }
    have = static_cast<long>(buf + have - line);
    memmove(buf, line, static_cast<size_t>(have));
  }
  if (fd >= 0) sys::close(static_cast<int>(fd));
  if (!ok) {
    snprintf(why, cap, "cannot read /proc/self/smaps: the advice of the process's mappings is unknown");
    return -EIO;
  }
  if (wiped_left_out) {
    snprintf(why, cap, "more than %u mappings with advice, one of them MADV_WIPEONFORK (not supported)",
             vm_advice::kMax);
    return -E2BIG;
  }
  if (out->dontfork_lo) {
    snprintf(why, cap, "mapping %#lx-%#lx is MADV_DONTFORK: a snapshot cannot hold it (not supported)",
             static_cast<unsigned long>(out->dontfork_lo), static_cast<unsigned long>(out->dontfork_hi));
    return -EOPNOTSUPP;
  }
  return 0;
}

uint32_t vm_advice_of(const vm_advice &a, uintptr_t lo, uintptr_t hi) {
  uint32_t l = 0, h = a.n;  // the first entry ending above lo
  while (l < h) {
    const uint32_t m = (l + h) / 2;
    if (a.e[m].hi <= lo) l = m + 1;
    else h = m;
  }
  return l < a.n && a.e[l].lo <= lo && hi <= a.e[l].hi ? a.e[l].madv : 0;
}

void default_capsule_name(char *out, size_t cap) {
  char comm[16];
  read_small("/proc/self/comm", comm, sizeof comm);
  for (char *c = comm; *c; ++c)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
      *c = '_';
  const time_t now = static_cast<time_t>(sys::real_ns() / 1000000000);
  struct tm tm;
  gmtime_r(&now, &tm);
  snprintf(out, cap, "%s-%ld-%04d%02d%02d-%02d%02d%02d", comm[0] ? comm : "process", sys::getpid(), tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

namespace {
uint32_t g_launch_cmdline_crc = 0;

__attribute__((constructor(103))) void record_launch_cmdline() {
  const long fd = sys::openat(AT_FDCWD, "/proc/thread-self/cmdline", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  char buf[4096];
  uint32_t crc = 0;
  long n;
  while ((n = sys::read(static_cast<int>(fd), buf, sizeof buf)) > 0) crc = crc32c(crc, buf, static_cast<size_t>(n));
  sys::close(static_cast<int>(fd));
  if (n == 0) g_launch_cmdline_crc = crc;
}
}  // namespace

uint32_t launch_cmdline_crc() { return g_launch_cmdline_crc; }

}  // namespace mmtier::detail
