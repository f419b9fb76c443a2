// mmtier C++ allocator: a std-compatible allocator that places its memory on
// one tier, e.g. std::vector<int, mmtier::tier_allocator<int, MMTIER_TIER_PMEM>>.
#pragma once

#include <mmtier/mmtier.h>

#include <cstddef>
#include <new>

namespace mmtier {

template <class T, int Tier>
struct tier_allocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = tier_allocator<U, Tier>;
  };

  tier_allocator() noexcept = default;
  template <class U>
  tier_allocator(const tier_allocator<U, Tier> &) noexcept {}

  T *allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    void *p = alignof(T) > alignof(std::max_align_t)
                  ? mmtier_aligned_alloc_on(Tier, alignof(T), n * sizeof(T))
                  : mmtier_malloc_on(Tier, n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T *>(p);
  }
  void deallocate(T *p, std::size_t) noexcept { mmtier_free(p); }

  template <class U>
  bool operator==(const tier_allocator<U, Tier> &) const noexcept { return true; }
};

template <class T>
using dram_allocator = tier_allocator<T, MMTIER_TIER_DRAM>;
template <class T>
using pmem_allocator = tier_allocator<T, MMTIER_TIER_PMEM>;

}  // namespace mmtier
