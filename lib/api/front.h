// The allocation front-end: the one place where a request meets the
// allocators, for the interposed malloc family and C++ operators
// (preload/) and for the public API (api.cc) alike.  Its rules:
//
//   - Blocks of up to kSmallMax bytes (16-byte aligned) come from the
//     small-object allocator's inline fast path; everything else from the
//     engine, which returns NULL only when no tier can hold the memory.
//   - A block with a forced tier (mmtier_malloc_on) stays on its tier: it
//     is freed into that tier's cache of the freeing thread and reallocated
//     within the tier's arena, whoever frees or reallocates it (free() or
//     mmtier_free(), realloc() or mmtier_realloc()).
//   - Pointers outside the heap (allocated before the library was loaded,
//     by a statically linked allocator, or from the bootstrap area while the
//     runtime starts) never reach the engine: free leaves them alone,
//     realloc copies what is readable, usable size is 0 (bootstrap blocks:
//     their size).
//   - When no tier has room for what the policy chose, DRAM takes it:
//     no path returns NULL while memory exists.
//   - After an allocator's slow path has returned (never inside one), the
//     background mover is started if the heap became big enough
//     (heap_maybe_start).
// Errors set errno (ENOMEM, EINVAL) and return NULL, as libc does.
#pragma once

#include "alloc/engine.h"
#include "alloc/small.h"
#include "api/runtime.h"
#include "heap/heap.h"

#include <cstddef>

namespace mmtier::detail {

// Slow paths (front.cc).
__attribute__((noinline)) void *front_small_miss(size_t size);
void *front_malloc_slow(size_t size, size_t align);
void front_free_slow(void *p);
void *front_realloc(void *p, size_t size);
void *front_calloc_slow(size_t total);
size_t front_usable_size(const void *p);
// The aligned family with glibc's argument rules.
int front_posix_memalign(void **out, size_t align, size_t size);
void *front_aligned_alloc(size_t align, size_t size);
void *front_memalign(size_t align, size_t size);  // rounds align up to a power of two
void *front_valloc(size_t size);
void *front_pvalloc(size_t size);
void *front_reallocarray(void *p, size_t n, size_t size);
// align: a power of two.
inline void *front_aligned(size_t align, size_t size) { return front_malloc_slow(size, align); }
// Explicit placement on tier (align: a power of two); EINVAL for a bad tier
// or alignment.
void *front_malloc_on(int tier, size_t align, size_t size);
// A block of the engine's (in the heap, not small) with a forced tier.
void front_free_forced(void *p, int tier);

inline void *front_malloc(size_t size) {
  if (__builtin_expect(size <= kSmallMax, 1)) {
    if (void *p = small_alloc_fast(size)) return p;
    return front_small_miss(size);
  }
  if (__builtin_expect(runtime_ready(), 1)) {
    heap_before_large(size);
    void *p = mmtier_je_malloc(size);
    // The block may have grown the heap past the point where the mover
    // starts: start it now that no allocator is running.
    heap_maybe_start();
    if (__builtin_expect(p != nullptr, 1)) return p;
  }
  return front_malloc_slow(size, 16);
}

inline void front_free(void *p) {
  if (__builtin_expect(heap_small_contains(p), 1)) {
    small_free(p);
    return;
  }
  if (__builtin_expect(heap_contains(p), 1)) {
    const int forced = heap_forced_tier(p);
    if (__builtin_expect(forced < 0, 1)) mmtier_je_free(p);
    else front_free_forced(p, forced);
    return;
  }
  front_free_slow(p);
}

inline void *front_calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) total = SIZE_MAX;
  if (__builtin_expect(total <= kSmallMax, 1)) {
    if (void *p = small_alloc_fast(total)) return __builtin_memset(p, 0, total);
  }
  return front_calloc_slow(total);
}

// C++ operator new: the new-handler loop and bad_alloc (front_new.cc).
void *front_new_slow(size_t size, size_t align, bool nothrow);
inline void *front_new(size_t size, size_t align, bool nothrow) {
  if (__builtin_expect(align <= 16, 1)) {
    if (void *p = front_malloc(size)) return p;
  }
  return front_new_slow(size, align, nothrow);
}

// operator delete with a size (and alignment).
inline void front_sized_free(void *p, size_t size, size_t align) {
  if (__builtin_expect(heap_small_contains(p), 1)) {
    small_free(p);
    return;
  }
  if (__builtin_expect(heap_contains(p), 1)) {
    const int forced = heap_forced_tier(p);
    if (__builtin_expect(forced < 0, 1)) mmtier_je_sdallocx(p, size, align > 16 ? je_align_flag(align) : 0);
    else front_free_forced(p, forced);
    return;
  }
  front_free_slow(p);
}

}  // namespace mmtier::detail
