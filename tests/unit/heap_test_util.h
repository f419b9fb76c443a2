// Helpers shared by the heap layer's tests (migration, sampling,
// re-sharing after fork).
#pragma once

#include "heap/heap.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>

namespace mmtier::detail::test {

// A process's first units placed by policy are start-up memory, which
// never moves: the units a test moves come after them.
inline void use_up_startup_units() {
  static void *startup = nullptr;
  if (!startup)
    ASSERT_EQ(heap_mmap(nullptr, kStartupUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        &startup),
              0);
}

inline size_t unit_index_of(const void *p) { return (reinterpret_cast<uintptr_t>(p) - g_heap.base) >> kUnitShift; }

// A record of 8 words written as one: v * 8 + i in word i.  A record
// whose words disagree was torn; one older than its writer's own count
// lost a write.
struct alignas(64) record {
  uint64_t w[8];
};

inline void put(record &r, uint64_t v) {  // v >= 1
  for (int i = 0; i < 8; ++i) __atomic_store_n(&r.w[i], v * 8 + static_cast<uint64_t>(i), __ATOMIC_RELAXED);
}

inline bool check(const record &r, uint64_t *v) {
  const uint64_t first = __atomic_load_n(&r.w[0], __ATOMIC_RELAXED);
  *v = first / 8;
  if (first == 0) {  // never written: all zero
    for (int i = 1; i < 8; ++i)
      if (__atomic_load_n(&r.w[i], __ATOMIC_RELAXED) != 0) return false;
    return true;
  }
  for (int i = 1; i < 8; ++i)
    if (__atomic_load_n(&r.w[i], __ATOMIC_RELAXED) != first + static_cast<uint64_t>(i)) return false;
  return first % 8 == 0;
}

}  // namespace mmtier::detail::test
