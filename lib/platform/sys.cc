// Platform layer: the few system services that need more than one call.
#include "platform/sys.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>

namespace mmtier::detail::sys {

#if !defined(__x86_64__)
long raw(long n, long a, long b, long c, long d, long e, long f) {
  long r = ::syscall(n, a, b, c, d, e, f);
  return r == -1 ? -errno : r;
}
#endif

void *mmap_libc(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  long r = mmap(addr, len, prot, flags, fd, off);
  if (failed(r)) {
    errno = static_cast<int>(-r);
    return MAP_FAILED;
  }
  return reinterpret_cast<void *>(r);
}

static uintptr_t parse_hex(const char *&p) {
  uintptr_t v = 0;
  for (;; ++p) {
    char c = *p;
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else break;
    v = v * 16 + static_cast<uintptr_t>(d);
  }
  return v;
}

int query_prot(const void *addr) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  long fd = openat(AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  char buf[8192];
  size_t have = 0;
  int result = -1;
  bool done = false;
  while (!done) {
    long n = read(static_cast<int>(fd), buf + have, sizeof buf - 1 - have);
    if (n == -EINTR) continue;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    buf[have] = '\0';
    char *line = buf;
    for (;;) {
      char *nl = line;
      while (*nl && *nl != '\n') ++nl;
      if (!*nl) break;  // incomplete line: read more
      const char *p = line;
      uintptr_t lo = parse_hex(p);
      ++p;
      uintptr_t hi = parse_hex(p);
      ++p;
      if (a >= lo && a < hi) {
        result = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
                 (p[2] == 'x' ? PROT_EXEC : 0);
        done = true;
        break;
      }
      if (lo > a) {
        done = true;
        break;
      }
      line = nl + 1;
    }
    size_t rest = have - static_cast<size_t>(line - buf);
    for (size_t i = 0; i < rest; ++i) buf[i] = line[i];
    have = rest;
  }
  close(static_cast<int>(fd));
  return result;
}

bool pagemap_read(uintptr_t addr, size_t pages, page_info *out) {
  long fd = openat(AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  uint64_t chunk[512];
  size_t done = 0;
  bool ok = true;
  while (done < pages) {
    size_t n = pages - done < 512 ? pages - done : 512;
    long r = pread(static_cast<int>(fd), chunk, n * 8, static_cast<off_t>(((addr >> 12) + done) * 8));
    if (r != static_cast<long>(n * 8)) {
      ok = false;
      break;
    }
    for (size_t i = 0; i < n; ++i) {
      out[done + i].present = (chunk[i] >> 63) & 1;
      out[done + i].file = (chunk[i] >> 61) & 1;
    }
    done += n;
  }
  close(static_cast<int>(fd));
  return ok;
}

}  // namespace mmtier::detail::sys
