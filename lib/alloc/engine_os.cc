// The engine's system calls.  The engine archive is built so that its calls
// to mmap, munmap, madvise, mprotect and pthread_atfork come here
// (cmake/rename_jemalloc.sh).  Its fork handlers join mmtier's quiesce
// sequence at their rank (support/quiesce.h), between the small-object
// heaps and the heap lock, which its extent hooks take inside its locks.
// Until the heap's extent hooks are installed the engine allocates its first
// blocks (the starting thread's cache) with its default hooks; those mappings
// are placed inside the heap as DRAM, so every block the engine ever hands
// out lies in the heap, in the preload and in the linked library alike.
// Afterwards the engine maps only its own metadata, which passes through.
#include "alloc/engine.h"
#include "heap/heap.h"
#include "platform/sys.h"
#include "support/quiesce.h"

#include <sys/mman.h>

#include <cerrno>

using namespace mmtier::detail;

namespace {

bool inside(const void *addr, size_t len) {
  return heap_contains(addr) && (len == 0 || heap_contains(static_cast<const char *>(addr) + len - 1));
}

long as_result(long r) {
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

}  // namespace

extern "C" {

__attribute__((visibility("hidden"))) void *mmtier_engine_mmap(void *addr, size_t len, int prot,
                                                                int flags, int fd, off_t off) {
  const bool anon_private = (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE;
  if (anon_private && g_heap.size && len) {
    void *out = nullptr;
    long r = 1;
    if (flags & MAP_FIXED) {
      if (inside(addr, len)) r = heap_mmap(addr, len, prot, flags, &out);
    } else if (!engine_hooks_installed()) {
      r = heap_mmap(nullptr, len, prot, flags, &out, kTierDram);
    }
    if (r == 0) return out;
    if (r < 0 && r != -ENOMEM) {
      errno = static_cast<int>(-r);
      return MAP_FAILED;
    }
  }
  return sys::mmap_libc(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("hidden"))) int mmtier_engine_munmap(void *addr, size_t len) {
  return static_cast<int>(as_result(inside(addr, len) ? heap_munmap(addr, len) : sys::munmap(addr, len)));
}

__attribute__((visibility("hidden"))) int mmtier_engine_madvise(void *addr, size_t len, int advice) {
  return static_cast<int>(
      as_result(inside(addr, len) ? heap_madvise(addr, len, advice) : sys::madvise(addr, len, advice)));
}

__attribute__((visibility("hidden"))) int mmtier_engine_mprotect(void *addr, size_t len, int prot) {
  return static_cast<int>(
      as_result(inside(addr, len) ? heap_mprotect(addr, len, prot) : sys::mprotect(addr, len, prot)));
}

__attribute__((visibility("hidden"))) int mmtier_engine_pthread_atfork(void (*prepare)(), void (*parent)(),
                                                                         void (*child)()) {
  // A restored process has every thread the engine knew: the parent's
  // handler (unlock) is right; the child's would drop the other threads.
  return quiesce_register(kRankEngine, {prepare, parent, child, nullptr, parent}) ? 0 : ENOMEM;
}

}  // extern "C"
