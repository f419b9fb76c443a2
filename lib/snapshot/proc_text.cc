#include "snapshot/proc_text.h"

#include "platform/sys.h"
#include "support/crc32c.h"

#include <fcntl.h>

#include <cstdlib>
#include <cstring>

namespace mmtier::detail {

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

// A mapping the writer would not see: MADV_DONTFORK (smaps VmFlags "dc")
// keeps it out of every fork child, so a capsule would silently lack it.
// Its start, or 0 if there is none.
uintptr_t dontfork_mapping(uintptr_t *end) {
  long fd = sys::openat(AT_FDCWD, "/proc/thread-self/smaps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  static char buf[1 << 16];  // under the snapshot's lock
  uintptr_t lo = 0, hi = 0, found = 0;
  long have = 0;
  for (;;) {
    const long r = sys::read(static_cast<int>(fd), buf + have, sizeof buf - 1 - static_cast<size_t>(have));
    if (r <= 0) break;
    have += r;
    buf[have] = 0;
    char *line = buf;
    for (char *nl; !found && (nl = strchr(line, '\n')); line = nl + 1) {
      *nl = 0;
      if (!strncmp(line, "VmFlags:", 8)) {
        for (const char *f = line + 8; (f = strstr(f, " dc")); f += 3)
          if (f[3] == ' ' || f[3] == 0) found = lo;
      } else if (const char *dash = strchr(line, '-'); dash && strchr(line, ' ') > dash && line[0] != ' ') {
        char *e = nullptr;
        const unsigned long a = strtoul(line, &e, 16);
        if (e == dash) {
          lo = a;
          hi = strtoul(dash + 1, nullptr, 16);
        }
      }
    }
    if (found) break;
    have = static_cast<long>(buf + have - line);
    memmove(buf, line, static_cast<size_t>(have));
  }
  sys::close(static_cast<int>(fd));
  if (found) *end = hi;
  return found;
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
