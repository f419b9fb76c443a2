// A 64-bit finaliser (every input bit reaches every output bit): for hashes
// and for seeding generators whose first outputs from a small seed are poor.
#pragma once

#include <cstdint>

namespace mmtier::detail {

inline uint64_t mix64(uint64_t v) {
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  v *= 0xc4ceb9fe1a85ec53ull;
  v ^= v >> 33;
  return v;
}

}  // namespace mmtier::detail
