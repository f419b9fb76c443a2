// Platform layer: raw system calls on other architectures, and mmap with
// libc's conventions.
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

}  // namespace mmtier::detail::sys
