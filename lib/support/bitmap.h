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

// Calls fn(index) for every set bit of the n-bit array, ascending, skipping
// empty words at once.
template <class Fn>
void for_set_bits(const uint64_t *bits, size_t n, Fn &&fn) {
  for (size_t w = 0; w < (n + 63) / 64; ++w) {
    uint64_t v = bits[w];
    while (v) {
      const size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(v));
      v &= v - 1;
      if (i < n) fn(i);
    }
  }
}

}  // namespace mmtier::detail
