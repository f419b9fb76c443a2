// The front-end of the interposed anonymous-memory calls (see front_mmap.h).
#include "api/front_mmap.h"

#include "api/runtime.h"
#include "config/config.h"
#include "heap/heap.h"
#include "platform/sys.h"
#include "snapshot/proc_text.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>

namespace mmtier::detail {
namespace {

inline long set_errno(long r) {
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

inline uintptr_t heap_lo() { return g_heap.base; }
inline uintptr_t heap_hi() { return g_heap.base + g_heap.size; }

// Splits [addr, addr + len) into the part below, inside and above the
// reservation and calls outside(a, l) / inside(a, l) on the non-empty parts.
// The heap answers for its range as soon as the range exists, also while the
// runtime is still starting (the engine probes madvise then).
template <class Out, class In>
long split_call(uintptr_t addr, size_t len, Out &&outside, In &&inside) {
  auto ptr = [](uintptr_t x) { return reinterpret_cast<void *>(x); };
  const uintptr_t end = addr + len;
  if (end <= heap_lo() || addr >= heap_hi()) return outside(ptr(addr), len);
  long err = 0;
  auto keep = [&err](long r) {
    if (r < 0 && !err) err = r;
  };
  if (addr < heap_lo()) keep(outside(ptr(addr), heap_lo() - addr));
  const uintptr_t lo = addr > heap_lo() ? addr : heap_lo();
  const uintptr_t hi = end < heap_hi() ? end : heap_hi();
  keep(inside(ptr(lo), hi - lo));
  if (end > heap_hi()) keep(outside(ptr(heap_hi()), end - heap_hi()));
  return err;
}

// munmap/mprotect/madvise: checks the range as the kernel does, splits it
// around the reservation, and returns the libc-style result.
template <class Out, class In>
int range_call(void *addr, size_t len, bool empty_is_error, Out &&outside, In &&inside) {
  if ((reinterpret_cast<uintptr_t>(addr) & 4095) || (len == 0 && empty_is_error)) {
    errno = EINVAL;
    return -1;
  }
  if (len == 0) return 0;
  return static_cast<int>(set_errno(split_call(reinterpret_cast<uintptr_t>(addr), len, outside, inside)));
}

constexpr int kMapDroppable = 0x08;  // MAP_DROPPABLE, a mapping type of its own

bool managed_request(void *addr, size_t len, int prot, int flags, int fd) {
  if (!runtime_ready()) return false;
  if (!(flags & MAP_ANONYMOUS) || (flags & MAP_TYPE) != MAP_PRIVATE) return false;
  if (flags & (MAP_STACK | MAP_HUGETLB | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE | MAP_LOCKED)) return false;
  if (prot & PROT_EXEC) return false;
  (void)fd;
  if (flags & MAP_FIXED) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    return a >= heap_lo() && a + len <= heap_hi() && a + len > a;
  }
  return len >= config_get().mmap_threshold;
}

}  // namespace

void *front_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  const bool managed = managed_request(addr, len, prot, flags, fd);
  if (len != 0 && managed) {
    if ((flags & MAP_FIXED) && (reinterpret_cast<uintptr_t>(addr) & 4095)) {
      errno = EINVAL;
      return MAP_FAILED;
    }
    void *out = nullptr;
    if (prot != PROT_NONE) heap_before_large(len);
    long r = heap_mmap(addr, len, prot, flags, &out);
    heap_maybe_start();  // as in malloc
    if (r == 0) return out;
    if (!(flags & MAP_FIXED) && r == -ENOMEM) {
      // Out of reserved addresses: plain anonymous memory still works.
    } else {
      errno = static_cast<int>(-r);
      return MAP_FAILED;
    }
  }
  // Memory the kernel wipes in a fork child (MAP_DROPPABLE, Linux 6.11):
  // a snapshot copies it in its pause (snapshot/proc_text.h).
  const bool wiped = (flags & MAP_TYPE) == kMapDroppable;
  if (wiped) fork_advice_begin();
  void *result = sys::mmap_libc(addr, len, prot, flags, fd, off);
  if (wiped) fork_advice_end();
  if (result != MAP_FAILED && (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && g_heap.size) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(result);
    if (a < heap_hi() && a + len > heap_lo()) {
      const uintptr_t lo = a > heap_lo() ? a : heap_lo();
      const uintptr_t hi = a + len < heap_hi() ? a + len : heap_hi();
      heap_forget(reinterpret_cast<void *>(lo), hi - lo);
    }
  }
  return result;
}

int front_munmap(void *addr, size_t len) {
  return range_call(
      addr, len, true, [](void *a, size_t l) { return sys::munmap(a, l); },
      [](void *a, size_t l) { return heap_munmap(a, l); });
}

int front_mprotect(void *addr, size_t len, int prot) {
  return range_call(
      addr, len, false, [prot](void *a, size_t l) { return sys::mprotect(a, l, prot); },
      [prot](void *a, size_t l) {
        if (prot != PROT_NONE && heap_contains(a)) heap_before_large(l);  // may place reserved pages
        return heap_mprotect(a, l, prot);
      });
}

int front_madvise(void *addr, size_t len, int advice) {
  const bool wiped = advice == MADV_WIPEONFORK || advice == MADV_KEEPONFORK;
  if (wiped) fork_advice_begin();
  const int r = range_call(
      addr, len, false, [advice](void *a, size_t l) { return sys::madvise(a, l, advice); },
      [advice](void *a, size_t l) { return heap_madvise(a, l, advice); });
  if (wiped) fork_advice_end();
  return r;
}

void *front_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr) {
  if (heap_contains(old)) {
    void *out = nullptr;
    long r = heap_mremap(old, old_len, new_len, flags, new_addr, &out);
    if (r < 0) {
      errno = static_cast<int>(-r);
      return MAP_FAILED;
    }
    return out;
  }
  long r = sys::mremap(old, old_len, new_len, flags, new_addr);
  if (sys::failed(r)) {
    errno = static_cast<int>(-r);
    return MAP_FAILED;
  }
  if ((flags & MREMAP_FIXED) && g_heap.size) {
    const uintptr_t a = static_cast<uintptr_t>(r);
    if (a < heap_hi() && a + new_len > heap_lo()) heap_forget(reinterpret_cast<void *>(r), new_len);
  }
  return reinterpret_cast<void *>(r);
}

}  // namespace mmtier::detail
