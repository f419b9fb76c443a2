// mmap, munmap, mremap, madvise and mprotect: forwarders
// (lib/api/front_mmap.h).
#include "api/front_mmap.h"
#include "preload/preload.h"

#include <sys/mman.h>

using namespace mmtier::detail;

extern "C" {

MMTIER_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return front_mmap(addr, len, prot, flags, fd, off);
}
MMTIER_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));
MMTIER_EXPORT int munmap(void *addr, size_t len) { return front_munmap(addr, len); }
MMTIER_EXPORT int mprotect(void *addr, size_t len, int prot) { return front_mprotect(addr, len, prot); }
MMTIER_EXPORT int madvise(void *addr, size_t len, int advice) { return front_madvise(addr, len, advice); }

MMTIER_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...) {
  void *new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    __builtin_va_list ap;
    __builtin_va_start(ap, flags);
    new_addr = __builtin_va_arg(ap, void *);
    __builtin_va_end(ap);
  }
  return front_mremap(old, old_len, new_len, flags, new_addr);
}

}  // extern "C"
