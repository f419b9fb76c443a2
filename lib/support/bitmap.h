// Bit arrays of 64-bit words: the page bitmaps of a unit and the address
// bitmap of the heap.  Header-only, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline bool bit_get(const uint64_t *w, size_t i) { return (w[i >> 6] >> (i & 63)) & 1; }
inline void bit_set(uint64_t *w, size_t i) { w[i >> 6] |= uint64_t{1} << (i & 63); }
inline void bit_clear(uint64_t *w, size_t i) { w[i >> 6] &= ~(uint64_t{1} << (i & 63)); }

// Calls fn(first, count) for each maximal run in [lo, hi) of bits equal to
// want.
template <class Fn>
void for_runs(const uint64_t *bits, size_t lo, size_t hi, bool want, Fn &&fn) {
  size_t i = lo;
  while (i < hi) {
    while (i < hi && bit_get(bits, i) != want) ++i;
    const size_t start = i;
    while (i < hi && bit_get(bits, i) == want) ++i;
    if (i > start) fn(start, i - start);
  }
}

}  // namespace mmtier::detail
