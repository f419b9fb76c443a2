// The page hash incremental snapshots compare pages by.
#include "support/page_hash.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace mmtier::detail {
namespace {

constexpr size_t kPage = 4096;

std::vector<unsigned char> random_page(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> p(kPage);
  for (auto &b : p) b = static_cast<unsigned char>(rng());
  return p;
}

TEST(PageHash, EqualPagesEqualHashes) {
  const auto a = random_page(1);
  auto b = a;
  EXPECT_EQ(page_hash(a.data(), kPage), page_hash(b.data(), kPage));
  const std::vector<unsigned char> zero(kPage, 0);
  EXPECT_EQ(page_hash(zero.data(), kPage), page_hash(std::vector<unsigned char>(kPage, 0).data(), kPage));
}

TEST(PageHash, EveryBitFlipChangesBothHalves) {
  // A write of one bit anywhere in a page: neither half may stay the same,
  // or that half would be no check at all for such writes.
  for (const auto &page : {random_page(2), std::vector<unsigned char>(kPage, 0)}) {
    const page_digest d = page_hash(page.data(), kPage);
    auto p = page;
    for (size_t bit = 0; bit < kPage * 8; ++bit) {
      p[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
      const page_digest e = page_hash(p.data(), kPage);
      ASSERT_NE(e.lo, d.lo) << bit;
      ASSERT_NE(e.hi, d.hi) << bit;
      p[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    }
  }
}

TEST(PageHash, WordsSwappedOrMovedAreTold) {
  // Contents moved within a page (a memmove by the program) must not look
  // unchanged: each lane sees its words in order.
  auto p = random_page(3);
  const page_digest d = page_hash(p.data(), kPage);
  for (size_t a = 0; a < kPage; a += 8 * 37) {
    auto q = p;
    std::swap_ranges(q.begin() + static_cast<long>(a), q.begin() + static_cast<long>(a) + 8,
                     q.begin() + static_cast<long>((a + 32) % kPage));
    if (q == p) continue;
    EXPECT_NE(page_hash(q.data(), kPage), d) << a;
  }
  std::vector<unsigned char> r(p.begin() + 8, p.end());
  r.insert(r.end(), p.begin(), p.begin() + 8);
  EXPECT_NE(page_hash(r.data(), kPage), d);
}

TEST(PageHash, NoCollisionsAmongManySparsePages) {
  // Pages that differ in few bytes, as a program's pages from one snapshot
  // to the next do: 64-bit halves, each without a collision among them.
  std::set<uint64_t> lo, hi;
  std::vector<unsigned char> p(kPage, 0);
  size_t n = 0;
  for (size_t at = 0; at < kPage; at += 4)
    for (unsigned v = 1; v < 40; ++v, ++n) {
      p[at] = static_cast<unsigned char>(v);
      const page_digest d = page_hash(p.data(), kPage);
      lo.insert(d.lo);
      hi.insert(d.hi);
      p[at] = 0;
    }
  EXPECT_EQ(lo.size(), n);
  EXPECT_EQ(hi.size(), n);
}

}  // namespace
}  // namespace mmtier::detail
