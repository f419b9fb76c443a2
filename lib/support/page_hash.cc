#include "support/page_hash.h"

#include "support/mix.h"

#include <cstring>

namespace mmtier::detail {
namespace {

constexpr uint64_t kM1 = 0x9e3779b97f4a7c15ull;  // 2^64 / golden ratio, odd
constexpr uint64_t kM2 = 0xc2b2ae3d27d4eb4full;
constexpr uint64_t kM3 = 0x165667b19e3779f9ull;
constexpr uint64_t kM4 = 0xd6e8feb86659fd93ull;

inline uint64_t rotl(uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }

inline uint64_t round(uint64_t acc, uint64_t w) { return rotl(acc + w * kM2, 31) * kM1; }

}  // namespace

page_digest page_hash(const void *data, size_t n) {
  const auto *p = static_cast<const unsigned char *>(data);
  uint64_t a = kM1 + kM2, b = kM2, c = 0, d = 0 - kM1;
  // A second set of lanes sees the words in another order and with other
  // multipliers, so the two halves do not fail together.
  uint64_t e = kM3, f = kM4, g = kM3 ^ kM4, h = 0x2545f4914f6cdd1dull;
  for (size_t i = 0; i < n; i += 32) {
    uint64_t w[4];
    memcpy(w, p + i, sizeof w);
    a = round(a, w[0]);
    b = round(b, w[1]);
    c = round(c, w[2]);
    d = round(d, w[3]);
    e = rotl(e ^ (w[1] * kM3), 27) * kM4 + w[2];
    f = rotl(f ^ (w[3] * kM3), 29) * kM4 + w[0];
    g = rotl(g ^ (w[0] * kM4), 23) * kM3 + w[3];
    h = rotl(h ^ (w[2] * kM4), 25) * kM3 + w[1];
  }
  const uint64_t len = n;
  const uint64_t lo = mix64(rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + len);
  const uint64_t hi = mix64((e ^ rotl(f, 11)) + (rotl(g, 19) ^ rotl(h, 37)) + len * kM1);
  return {lo, hi};
}

}  // namespace mmtier::detail
