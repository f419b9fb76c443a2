// The allocation front-end's slow paths (see front.h).
#include "api/front.h"

#include "platform/sys.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace mmtier::detail {
namespace {

void *fail(int err) {
  errno = err;
  return nullptr;
}

// Bytes readable from p, up to limit, without faulting (for foreign blocks
// whose size is unknown).
size_t readable_bytes(const void *p, size_t limit) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uintptr_t page = a & ~uintptr_t{4095};
  size_t ok = 0;
  while (ok < limit) {
    unsigned char v;
    if (sys::raw(SYS_mincore, static_cast<long>(page), 4096, reinterpret_cast<long>(&v)) != 0) break;
    ok += 4096 - ((a + ok) & 4095);
    page += 4096;
  }
  return ok < limit ? ok : limit;
}

// realloc of a pointer outside the heap: a bootstrap block, a foreign one,
// or (runtime unmanaged) the engine's on plain memory.
void *realloc_foreign(void *p, size_t size) {
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged && !boot_owns(p)) return mmtier_je_realloc(p, size);
  const size_t old = boot_owns(p) ? boot_usable_size(p) : readable_bytes(p, size);
  void *q = front_malloc(size);
  if (!q) return nullptr;
  memcpy(q, p, old < size ? old : size);
  front_free_slow(p);
  return q;
}

// realloc of an engine block: within its tier's arena when it has a forced
// tier; on DRAM when the tier the policy chose has no room.
void *realloc_engine(void *p, size_t size) {
  const int forced = heap_forced_tier(p);
  void *q = forced < 0 ? mmtier_je_realloc(p, size) : mmtier_je_rallocx(p, size, engine_tier_flags(forced));
  if (__builtin_expect(q != nullptr, 1) || forced >= 0) return q ? q : fail(ENOMEM);
  q = front_malloc_slow(size, 16);
  if (!q) return nullptr;
  const size_t old = mmtier_je_malloc_usable_size(p);
  memcpy(q, p, old < size ? old : size);
  mmtier_je_free(p);
  return q;
}

}  // namespace

void *front_small_miss(size_t size) {
  if (void *p = small_alloc_slow(size)) {
    heap_maybe_start();
    return p;
  }
  if (__builtin_expect(runtime_ready(), 1)) {
    if (void *p = mmtier_je_malloc(size)) return p;
  }
  return front_malloc_slow(size, 16);
}

void *front_malloc_slow(size_t size, size_t align) {
  const int s = runtime_start();
  if (s == kStarting) {
    void *p = boot_alloc(size ? size : 1, align);
    return p ? p : fail(ENOMEM);
  }
  if (size > PTRDIFF_MAX) return fail(ENOMEM);
  if (align <= 16 && size <= kSmallMax) {
    if (void *p = small_alloc(size)) {
      heap_maybe_start();
      return p;
    }
  }
  if (align == 16 && size < 16) size = 16;  // the engine's 8-byte class is only 8-aligned
  if (s == kReady) heap_before_large(size);
  void *p = align <= 16 ? mmtier_je_malloc(size) : mmtier_je_aligned_alloc(align, size);
  if (!p && s == kReady) {
    // The placement the policy chose had no room: DRAM always can.
    int flags = je_arena_flag(engine_tier_arena(kTierDram)) | kJeTcacheNone;
    if (align > 16) flags |= je_align_flag(align);
    p = mmtier_je_mallocx(size ? size : 1, flags);
  }
  if (s == kReady) heap_maybe_start();
  return p ? p : fail(ENOMEM);
}

void front_free_slow(void *p) {
  if (!p || boot_owns(p)) return;
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged) {
    mmtier_je_free(p);
    return;
  }
  // Foreign pointer: not ours to free.
}

void front_free_forced(void *p, int tier) {
  // Back to this thread's cache for that tier, where mmtier_malloc_on
  // finds it again.
  mmtier_je_dallocx(p, engine_tier_flags(tier) & ~kJeArenaMask);
}

void *front_calloc_slow(size_t total) {
  if (total > PTRDIFF_MAX) return fail(ENOMEM);
  if (total <= kSmallMax) {
    if (void *p = small_alloc_slow(total)) {
      heap_maybe_start();
      return memset(p, 0, total);
    }
  }
  if (__builtin_expect(runtime_ready(), 1)) {
    heap_before_large(total);
    void *p = mmtier_je_calloc(1, total);
    heap_maybe_start();
    if (p) return p;
  }
  void *p = front_malloc_slow(total, 16);
  return p ? memset(p, 0, total) : nullptr;
}

void *front_realloc(void *p, size_t size) {
  if (!p) return front_malloc(size);
  if (size == 0) {
    front_free(p);
    return nullptr;
  }
  if (size > PTRDIFF_MAX) return fail(ENOMEM);
  void *q;
  if (heap_small_contains(p)) {
    q = small_realloc(p, size);
    if (!q) errno = ENOMEM;
  } else if (heap_contains(p)) {
    heap_before_large(size);
    q = realloc_engine(p, size);
  } else {
    q = realloc_foreign(p, size);
  }
  heap_maybe_start();  // as in malloc
  return q;
}

size_t front_usable_size(const void *p) {
  if (heap_small_contains(p)) return small_usable_size(p);
  if (__builtin_expect(heap_contains(p), 1)) return mmtier_je_malloc_usable_size(const_cast<void *>(p));
  if (!p) return 0;
  if (boot_owns(p)) return boot_usable_size(p);
  if (g_runtime_state.load(std::memory_order_relaxed) == kUnmanaged)
    return mmtier_je_malloc_usable_size(const_cast<void *>(p));
  return 0;
}

void *front_malloc_on(int tier, size_t align, size_t size) {
  if (tier < 0 || tier >= kTierCount || align == 0 || (align & (align - 1))) return fail(EINVAL);
  if (!runtime_ready() && runtime_start() != kReady) return fail(ENOMEM);
  if (size > PTRDIFF_MAX) return fail(ENOMEM);
  int flags = engine_tier_flags(tier);
  if (align > 16) flags |= je_align_flag(align);
  heap_before_large(size);
  void *p = mmtier_je_mallocx(size ? size : 1, flags);
  heap_maybe_start();
  return p ? p : fail(ENOMEM);
}

int front_posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
  const int saved = errno;
  void *p = front_malloc_slow(size, align);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

void *front_aligned_alloc(size_t align, size_t size) {
  if (align == 0 || (align & (align - 1))) return fail(EINVAL);
  return front_malloc_slow(size, align);
}

void *front_memalign(size_t align, size_t size) {
  if (align > (size_t{1} << 62)) return fail(EINVAL);
  // glibc rounds a non-power-of-two alignment up.
  size_t a = 1;
  while (a < align) a <<= 1;
  return front_malloc_slow(size, a);
}

void *front_valloc(size_t size) { return front_malloc_slow(size, static_cast<size_t>(getpagesize())); }

void *front_pvalloc(size_t size) {
  const size_t page = static_cast<size_t>(getpagesize());
  size_t rounded;
  if (__builtin_add_overflow(size, page - 1, &rounded)) return fail(ENOMEM);
  rounded &= ~(page - 1);
  return front_malloc_slow(rounded ? rounded : page, page);
}

void *front_reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) return fail(ENOMEM);
  return front_realloc(p, total);
}

}  // namespace mmtier::detail
