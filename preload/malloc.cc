// Interposed malloc family: one-line forwarders to the engine, plus the
// glibc semantics the engine does not give by itself.  Pointers outside the
// managed heap (allocated before the library was loaded, or by a statically
// linked allocator) are recognised and never handed to the engine.
#include "alloc/engine.h"
#include "alloc/small.h"
#include "api/runtime.h"
#include "heap/heap.h"
#include "platform/sys.h"
#include "preload/preload.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

using namespace mmtier::detail;

namespace mmtier::detail {

void *slow_malloc(size_t size, size_t align) {
  int s = runtime_start();
  if (s == kStarting) {
    void *p = boot_alloc(size ? size : 1, align);
    if (!p) errno = ENOMEM;
    return p;
  }
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return nullptr;
  }
  if (align <= 16 && size <= kSmallMax) {
    if (void *p = small_alloc(size)) {
      heap_maybe_start();
      return p;
    }
  }
  if (align == 16 && size < 16) size = 16;  // the engine's 8-byte class is only 8-aligned
  void *p = align <= 16 ? mmtier_je_malloc(size) : mmtier_je_aligned_alloc(align, size);
  if (p) return p;
  if (s == kReady) {
    // The placement the policy chose had no room: DRAM always can.
    int flags = je_arena_flag(engine_tier_arena(kTierDram)) | kJeTcacheNone;
    if (align > 16) flags |= je_align_flag(align);
    p = mmtier_je_mallocx(size ? size : 1, flags);
  }
  if (!p) errno = ENOMEM;
  return p;
}

// Bytes readable from p, up to limit, without faulting (for foreign blocks
// whose size is unknown).
static size_t readable_bytes(const void *p, size_t limit) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uintptr_t page = a & ~uintptr_t{4095};
  size_t ok = 0;
  while (ok < limit) {
    unsigned char v;
    if (sys::raw(SYS_mincore, static_cast<long>(page), 4096, reinterpret_cast<long>(&v)) != 0) break;
    size_t in_page = 4096 - ((a + ok) & 4095);
    ok += in_page;
    page += 4096;
  }
  return ok < limit ? ok : limit;
}

// A small request the first page of its queue could not serve.
void *small_miss(size_t size) {
  if (void *p = small_alloc_slow(size)) {
    heap_maybe_start();
    return p;
  }
  if (__builtin_expect(runtime_ready(), 1)) return mmtier_je_malloc(size);
  return slow_malloc(size, 16);
}

void slow_free(void *p) {
  if (!p || boot_owns(p)) return;
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged) {
    mmtier_je_free(p);
    return;
  }
  // Foreign pointer: not ours to free.
}

void *slow_realloc(void *p, size_t size) {
  if (!p) return slow_malloc(size, 16);
  if (size == 0) {
    free(p);
    return nullptr;
  }
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return nullptr;
  }
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged && !boot_owns(p))
    return mmtier_je_realloc(p, size);
  size_t old = boot_owns(p) ? boot_usable_size(p) : readable_bytes(p, size);
  void *q = malloc(size);
  if (!q) return nullptr;
  memcpy(q, p, old < size ? old : size);
  slow_free(p);
  return q;
}

}  // namespace mmtier::detail

extern "C" {

// Small blocks: the small-object allocator's inline fast path.  Larger
// ones: the engine, which returns NULL only when no tier can hold the memory
// (the heap places pages on DRAM when the chosen tier has no room), so that
// path is a plain tail call.
MMTIER_EXPORT void *malloc(size_t size) {
  if (__builtin_expect(size <= kSmallMax, 1)) {
    if (void *p = small_alloc_fast(size)) return p;
    return small_miss(size);
  }
  if (__builtin_expect(runtime_ready(), 1)) {
    void *p = mmtier_je_malloc(size);
    // The block may have grown the heap past the point where the
    // background mover starts: start it now that no allocator is running.
    heap_maybe_start();
    return p;
  }
  return slow_malloc(size, 16);
}

MMTIER_EXPORT void free(void *p) {
  if (__builtin_expect(heap_small_contains(p), 1)) {
    small_free(p);
    return;
  }
  if (__builtin_expect(heap_contains(p), 1)) {
    mmtier_je_free(p);
    return;
  }
  slow_free(p);
}

MMTIER_EXPORT void *calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total) || total > PTRDIFF_MAX) {
    errno = ENOMEM;
    return nullptr;
  }
  if (__builtin_expect(total <= kSmallMax, 1)) {
    if (void *p = small_alloc_fast(total)) return memset(p, 0, total);
    if (void *p = small_alloc_slow(total)) {
      heap_maybe_start();
      return memset(p, 0, total);
    }
  }
  if (__builtin_expect(runtime_ready(), 1)) {
    void *p = mmtier_je_calloc(1, total);
    heap_maybe_start();
    return p;
  }
  void *p = slow_malloc(total, 16);
  if (p) memset(p, 0, total);
  return p;
}

static void *realloc_impl(void *p, size_t size) {
  if (heap_small_contains(p) && size != 0 && size <= PTRDIFF_MAX) {
    void *q = small_realloc(p, size);
    if (!q) errno = ENOMEM;
    return q;
  }
  if (__builtin_expect(heap_contains(p) && size != 0 && size <= PTRDIFF_MAX, 1)) {
    void *q = mmtier_je_realloc(p, size);
    if (__builtin_expect(q != nullptr, 1)) return q;
    // No room on the tier the policy chose: move the block to DRAM.
    q = slow_malloc(size, 16);
    if (!q) return nullptr;
    size_t old = mmtier_je_malloc_usable_size(p);
    memcpy(q, p, old < size ? old : size);
    mmtier_je_free(p);
    return q;
  }
  if (p && size == 0 && heap_contains(p)) {
    free(p);
    return nullptr;
  }
  return slow_realloc(p, size);
}

MMTIER_EXPORT void *realloc(void *p, size_t size) {
  void *q = realloc_impl(p, size);
  heap_maybe_start();  // as in malloc
  return q;
}

MMTIER_EXPORT void *reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

MMTIER_EXPORT int posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
  int saved = errno;
  void *p = slow_malloc(size, align);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

MMTIER_EXPORT void *aligned_alloc(size_t align, size_t size) {
  if (align == 0 || (align & (align - 1))) {
    errno = EINVAL;
    return nullptr;
  }
  return slow_malloc(size, align);
}

MMTIER_EXPORT void *memalign(size_t align, size_t size) {
  if (align > (size_t{1} << 62)) {
    errno = EINVAL;
    return nullptr;
  }
  // glibc rounds a non-power-of-two alignment up.
  size_t a = 1;
  while (a < align) a <<= 1;
  return slow_malloc(size, a);
}

MMTIER_EXPORT void *valloc(size_t size) { return slow_malloc(size, static_cast<size_t>(getpagesize())); }

MMTIER_EXPORT void *pvalloc(size_t size) {
  const size_t page = static_cast<size_t>(getpagesize());
  size_t rounded;
  if (__builtin_add_overflow(size, page - 1, &rounded)) {
    errno = ENOMEM;
    return nullptr;
  }
  rounded &= ~(page - 1);
  return slow_malloc(rounded ? rounded : page, page);
}

MMTIER_EXPORT size_t malloc_usable_size(void *p) {
  if (heap_small_contains(p)) return small_usable_size(p);
  if (__builtin_expect(heap_contains(p), 1)) return mmtier_je_malloc_usable_size(p);
  if (!p) return 0;
  if (boot_owns(p)) return boot_usable_size(p);
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged) return mmtier_je_malloc_usable_size(p);
  return 0;
}

MMTIER_EXPORT void *__libc_malloc(size_t size) { return malloc(size); }
MMTIER_EXPORT void __libc_free(void *p) { free(p); }
MMTIER_EXPORT void *__libc_calloc(size_t n, size_t size) { return calloc(n, size); }
MMTIER_EXPORT void *__libc_realloc(void *p, size_t size) { return realloc(p, size); }
MMTIER_EXPORT void *__libc_memalign(size_t align, size_t size) { return memalign(align, size); }
MMTIER_EXPORT void *__libc_valloc(size_t size) { return valloc(size); }
MMTIER_EXPORT void *__libc_pvalloc(size_t size) { return pvalloc(size); }

}  // extern "C"
