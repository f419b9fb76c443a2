// CRC32C (see crc32c.h).  Both versions work on the raw register: the
// inversion at the start and at the end is done once, in crc32c().
#include "support/crc32c.h"

#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#endif

namespace mmtier::detail {
namespace {

constexpr uint32_t kPoly = 0x82f63b78u;  // Castagnoli, reflected

// Slicing by 8: t[k][b] is the register after byte b followed by k zero
// bytes, so eight bytes take eight independent lookups instead of a chain.
struct slice_tables {
  uint32_t t[8][256];
};

constexpr slice_tables make_slice_tables() {
  slice_tables s{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    s.t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t i = 0; i < 256; ++i) s.t[k][i] = (s.t[k - 1][i] >> 8) ^ s.t[0][s.t[k - 1][i] & 0xff];
  return s;
}

constexpr slice_tables kSlice = make_slice_tables();

inline uint64_t load64(const unsigned char *p) {
  uint64_t w;
  memcpy(&w, p, sizeof w);
  return w;
}

uint32_t table_update(uint32_t crc, const unsigned char *p, size_t n) {
  const auto &t = kSlice.t;
  if constexpr (std::endian::native == std::endian::little) {
    for (; n >= 8; p += 8, n -= 8) {
      uint64_t w = load64(p) ^ crc;
      crc = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
            t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
    }
  }
  for (; n; ++p, --n) crc = (crc >> 8) ^ t[0][(crc ^ *p) & 0xff];
  return crc;
}

#if defined(__x86_64__)

// The instruction has a latency of three cycles and a throughput of one, so
// one stream of input uses a third of it.  Long buffers are cut into three
// streams computed together; the first one's register is then carried over
// the others' lengths (multiplied by x^(8 len) mod P, which is what feeding
// len zero bytes does) and combined with theirs, which started from zero.

// x^(8 nbytes) mod P applied to a register, as four byte lookups: the
// product is linear in the register.
struct shift_table {
  uint32_t t[4][256];
};

// a(x) b(x) mod P, reflected (bit 31 is x^0).
constexpr uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (uint32_t m = 1u << 31; m; m >>= 1) {
    if (a & m) p ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

constexpr shift_table make_shift_table(uint64_t nbytes) {
  uint32_t x2k = 1u << 30;  // x^1, squared up to x^8 = x^(8 * 2^0)
  for (int i = 0; i < 3; ++i) x2k = multmodp(x2k, x2k);
  uint32_t k = 1u << 31;  // x^0
  for (uint64_t n = nbytes; n; n >>= 1, x2k = multmodp(x2k, x2k))
    if (n & 1) k = multmodp(x2k, k);
  shift_table s{};
  for (uint32_t j = 0; j < 4; ++j)
    for (uint32_t i = 0; i < 256; ++i) s.t[j][i] = multmodp(k, i << (8 * j));
  return s;
}

constexpr size_t kLong = 8192;  // bytes per stream
constexpr size_t kShort = 256;
constexpr shift_table kShiftLong = make_shift_table(kLong);
constexpr shift_table kShiftShort = make_shift_table(kShort);

inline uint32_t shift(const shift_table &s, uint64_t crc) {
  return s.t[0][crc & 0xff] ^ s.t[1][(crc >> 8) & 0xff] ^ s.t[2][(crc >> 16) & 0xff] ^ s.t[3][(crc >> 24) & 0xff];
}

// Three streams of len bytes each, while there is room for them.
__attribute__((target("sse4.2"))) inline uint64_t hw_streams(uint64_t c0, const unsigned char *&p, size_t &n,
                                                             size_t len, const shift_table &s) {
  while (n >= 3 * len) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = p + len;
    do {
      c0 = _mm_crc32_u64(c0, load64(p));
      c1 = _mm_crc32_u64(c1, load64(p + len));
      c2 = _mm_crc32_u64(c2, load64(p + 2 * len));
      p += 8;
    } while (p < end);
    c0 = shift(s, c0) ^ c1;
    c0 = shift(s, c0) ^ c2;
    p += 2 * len;
    n -= 3 * len;
  }
  return c0;
}

__attribute__((target("sse4.2"))) uint32_t hw_update(uint32_t crc, const unsigned char *p, size_t n) {
  for (; n && (reinterpret_cast<uintptr_t>(p) & 7); ++p, --n) crc = _mm_crc32_u8(crc, *p);
  uint64_t c = crc;
  c = hw_streams(c, p, n, kLong, kShiftLong);
  c = hw_streams(c, p, n, kShort, kShiftShort);
  for (; n >= 8; p += 8, n -= 8) c = _mm_crc32_u64(c, load64(p));
  crc = static_cast<uint32_t>(c);
  for (; n; ++p, --n) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

// -1 until the first call looks at the CPU.  __builtin_cpu_supports reads
// what __builtin_cpu_init fills in, normally from a constructor that may
// not have run yet when the preloaded malloc first needs a CRC.  Two
// threads deciding at once decide the same.
int g_hardware = -1;

bool use_hardware() {
  int v = __atomic_load_n(&g_hardware, __ATOMIC_RELAXED);
  if (v < 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    __atomic_store_n(&g_hardware, v, __ATOMIC_RELAXED);
  }
  return v != 0;
}

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)

uint32_t hw_update(uint32_t crc, const unsigned char *p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) crc = __crc32cd(crc, load64(p));
  for (; n; ++p, --n) crc = __crc32cb(crc, *p);
  return crc;
}

constexpr bool use_hardware() { return true; }

#else

uint32_t hw_update(uint32_t crc, const unsigned char *p, size_t n) { return table_update(crc, p, n); }

constexpr bool use_hardware() { return false; }

#endif

}  // namespace

uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
  const auto *p = static_cast<const unsigned char *>(data);
  return ~(use_hardware() ? hw_update(~crc, p, n) : table_update(~crc, p, n));
}

uint32_t crc32c_portable(uint32_t crc, const void *data, size_t n) {
  return ~table_update(~crc, static_cast<const unsigned char *>(data), n);
}

bool crc32c_hardware() { return use_hardware(); }

}  // namespace mmtier::detail
