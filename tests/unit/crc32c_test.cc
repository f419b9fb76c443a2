// CRC32C (lib/support/crc32c): the published check values, computing in
// pieces at every split, any alignment, and the CPU instruction (with its
// three interleaved streams on long buffers) against the tables and against
// a bit-at-a-time reference that shares no code with either.
#include "support/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace mmtier::detail {
namespace {

// One bit at a time, straight from the definition.
uint32_t reference(uint32_t crc, const void *data, size_t n) {
  const auto *p = static_cast<const unsigned char *>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

std::vector<unsigned char> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto &b : v) b = static_cast<unsigned char>(rng());
  return v;
}

// Lengths around the boundaries of the instruction's loops: 8-byte words,
// three streams of 256 bytes, three of 8192 bytes.
std::vector<size_t> long_lengths() {
  std::vector<size_t> v;
  for (size_t base : {size_t{768}, size_t{3 * 8192}, size_t{2 * 3 * 8192}, size_t{3 * 8192 + 768}}) {
    v.push_back(base - 1);
    for (size_t d : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{767}, size_t{769}})
      v.push_back(base + d);
  }
  v.push_back(100000);
  v.push_back(1 << 20);
  return v;
}

TEST(Crc32c, KnownVectors) {
  const unsigned char zeros[32] = {}, ones[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  unsigned char up[32], down[32];
  for (int i = 0; i < 32; ++i) up[i] = static_cast<unsigned char>(i), down[i] = static_cast<unsigned char>(31 - i);
  for (auto f : {&crc32c, &crc32c_portable, &reference}) {
    EXPECT_EQ(f(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(f(0, zeros, sizeof zeros), 0x8A9136AAu);
    EXPECT_EQ(f(0, ones, sizeof ones), 0x62A8AB43u);
    EXPECT_EQ(f(0, up, sizeof up), 0x46DD794Eu);    // RFC 3720 B.4
    EXPECT_EQ(f(0, down, sizeof down), 0x113FDB5Cu);
    EXPECT_EQ(f(0, nullptr, 0), 0u);
    EXPECT_EQ(f(0xdeadbeef, nullptr, 0), 0xdeadbeefu);
  }
}

TEST(Crc32c, ChainsAtEverySplit) {
  for (size_t n : {size_t{9}, size_t{300}, size_t{5000}}) {
    const auto v = random_bytes(n, static_cast<uint32_t>(n));
    const uint32_t whole = crc32c(0, v.data(), n);
    ASSERT_EQ(whole, reference(0, v.data(), n));
    for (size_t k = 0; k <= n; ++k) {
      EXPECT_EQ(crc32c(crc32c(0, v.data(), k), v.data() + k, n - k), whole) << "n " << n << " split " << k;
      EXPECT_EQ(crc32c_portable(crc32c_portable(0, v.data(), k), v.data() + k, n - k), whole)
          << "n " << n << " split " << k;
    }
  }
  // Splits that cut a long buffer's streams.
  const size_t n = 3 * 3 * 8192 + 1000;
  const auto v = random_bytes(n, 7);
  const uint32_t whole = reference(0, v.data(), n);
  std::mt19937 rng(11);
  for (int i = 0; i < 200; ++i) {
    size_t a = rng() % (n + 1), b = rng() % (n + 1);
    if (a > b) std::swap(a, b);
    uint32_t c = crc32c(0, v.data(), a);
    c = crc32c(c, v.data() + a, b - a);
    EXPECT_EQ(crc32c(c, v.data() + b, n - b), whole) << a << " " << b;
  }
}

TEST(Crc32c, AnyAlignment) {
  const size_t n = 3 * 8192 + 333;
  const auto v = random_bytes(n, 3);
  const uint32_t want = reference(0, v.data(), n);
  std::vector<unsigned char> buf(n + 16);
  for (size_t shift = 0; shift < 16; ++shift) {
    memcpy(buf.data() + shift, v.data(), n);
    EXPECT_EQ(crc32c(0, buf.data() + shift, n), want) << shift;
    EXPECT_EQ(crc32c_portable(0, buf.data() + shift, n), want) << shift;
    for (size_t len = 0; len < 70; ++len)
      EXPECT_EQ(crc32c(0, buf.data() + shift, len), reference(0, v.data(), len)) << shift << " " << len;
  }
}

TEST(Crc32c, HardwareMatchesTables) {
#if defined(__x86_64__)
  EXPECT_EQ(crc32c_hardware(), __builtin_cpu_supports("sse4.2") != 0);
#endif
  if (!crc32c_hardware()) GTEST_SKIP() << "no CRC32C instruction on this CPU: crc32c() is the table version";
  std::mt19937 rng(42);
  const auto v = random_bytes((1 << 20) + 16, 5);
  for (size_t len = 0; len <= 5000; ++len) {
    const size_t off = rng() % 16;
    const uint32_t seed = rng();
    ASSERT_EQ(crc32c(seed, v.data() + off, len), crc32c_portable(seed, v.data() + off, len))
        << "length " << len << " offset " << off;
  }
  for (size_t len : long_lengths()) {
    const size_t off = rng() % 16;
    const uint32_t seed = rng();
    ASSERT_EQ(crc32c(seed, v.data() + off, len), crc32c_portable(seed, v.data() + off, len))
        << "length " << len << " offset " << off;
  }
}

TEST(Crc32c, TablesMatchReference) {
  std::mt19937 rng(9);
  const auto v = random_bytes(40000, 8);
  for (size_t len = 0; len <= 600; ++len) {
    const size_t off = rng() % 8;
    ASSERT_EQ(crc32c_portable(0, v.data() + off, len), reference(0, v.data() + off, len)) << len;
  }
  for (size_t len : long_lengths()) {
    if (len > v.size() - 8) continue;
    ASSERT_EQ(crc32c(1, v.data() + 3, len), reference(1, v.data() + 3, len)) << len;
    ASSERT_EQ(crc32c_portable(1, v.data() + 3, len), reference(1, v.data() + 3, len)) << len;
  }
}

}  // namespace
}  // namespace mmtier::detail
