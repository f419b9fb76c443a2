// Placement policy (lib/heap/placement.cc): the ratio is kept exactly at unit
// granularity, budgets are honoured, and exhaustion falls back as documented.
#include "heap/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace mmtier::detail {
namespace {

config make_config(uint32_t d, uint32_t p, policy_kind pol = policy_kind::ratio) {
  config c;
  c.ratio_dram = d;
  c.ratio_pmem = p;
  c.policy = pol;
  return c;
}

placement_input fresh(size_t dram_limit = SIZE_MAX, size_t pmem_limit = SIZE_MAX) {
  placement_input in{};
  in.limit_units[kTierDram] = dram_limit;
  in.limit_units[kTierPmem] = pmem_limit;
  in.usable[kTierDram] = in.usable[kTierPmem] = true;
  return in;
}

// Places n units one by one and returns how many went to DRAM.
size_t place(placement_input &in, const config &c, size_t n, size_t *fallbacks = nullptr) {
  size_t dram = 0;
  for (size_t i = 0; i < n; ++i) {
    placement_result r = choose_tier(in, c, -1);
    ++in.units[r.tier];
    ++in.policy_units[r.tier];
    if (r.tier == kTierDram) ++dram;
    if (fallbacks && r.fallback) ++*fallbacks;
  }
  return dram;
}

TEST(Placement, RatioIsExactAtEveryPrefix) {
  for (auto [d, p] : {std::pair{1u, 4u}, {1u, 9u}, {1u, 1u}, {3u, 5u}, {2u, 1u}}) {
    config c = make_config(d, p);
    placement_input in = fresh();
    for (size_t n = 1; n <= 1000; ++n) {
      placement_result r = choose_tier(in, c, -1);
      ++in.units[r.tier];
      ++in.policy_units[r.tier];
      EXPECT_FALSE(r.fallback);
      // DRAM never exceeds its share, and lags it by less than one unit.
      const double share = double(d) / double(d + p);
      EXPECT_LE(double(in.units[kTierDram]), share * double(n) + 1e-9) << d << ":" << p << " n=" << n;
      EXPECT_GT(double(in.units[kTierDram]) + 1.0, share * double(n)) << d << ":" << p << " n=" << n;
    }
  }
}

// Units placed one after another in address order, each seeing its
// neighbour's tier: long runs of one tier, share within 1/64 of the units.
TEST(Placement, NeighboursFormRunsAndKeepTheShare) {
  for (auto [d, p] : {std::pair{1u, 4u}, {1u, 9u}, {1u, 1u}}) {
    config c = make_config(d, p);
    placement_input in = fresh();
    size_t runs = 0;
    int prev = -1;
    const size_t n = 4096;
    for (size_t i = 1; i <= n; ++i) {
      in.neighbour = prev;
      placement_result r = choose_tier(in, c, -1);
      ++in.units[r.tier];
      ++in.policy_units[r.tier];
      if (r.tier != prev) ++runs;
      prev = r.tier;
      const double exact = double(i) * d / (d + p);
      const double tol = std::max(4.0, double(i) / 64) + 1;
      ASSERT_LE(std::abs(double(in.units[kTierDram]) - exact), tol) << d << ":" << p << " i=" << i;
    }
    EXPECT_LT(runs, n / 16) << d << ":" << p << ": runs of one tier stay short";
  }
}

// The bandwidth policy: the ratio unit by unit, whatever the neighbour:
// at 1:1 the tiers alternate, at 1:3 every fourth unit is DRAM.
TEST(Placement, BandwidthInterleavesUnitByUnit) {
  for (auto [d, p] : {std::pair{1u, 1u}, {1u, 3u}}) {
    config c = make_config(d, p);
    c.policy = policy_kind::bandwidth;
    placement_input in = fresh();
    int prev = -1;
    size_t since_dram = 0, longest_pmem_run = 0;
    for (size_t i = 1; i <= 1024; ++i) {
      in.neighbour = prev;
      placement_result r = choose_tier(in, c, -1);
      ++in.units[r.tier];
      ++in.policy_units[r.tier];
      prev = r.tier;
      since_dram = r.tier == kTierDram ? 0 : since_dram + 1;
      longest_pmem_run = std::max(longest_pmem_run, since_dram);
      ASSERT_LE(std::abs(double(in.units[kTierDram]) - double(i) * d / (d + p)), 1.0) << d << ":" << p << " i=" << i;
    }
    EXPECT_EQ(longest_pmem_run, size_t{p}) << d << ":" << p;
  }
}

TEST(Placement, ZeroSidesOfTheRatio) {
  placement_input in = fresh();
  EXPECT_EQ(place(in, make_config(0, 1), 100), 0u);
  in = fresh();
  EXPECT_EQ(place(in, make_config(1, 0), 100), 100u);
}

TEST(Placement, DramLimitWinsOverRatio) {
  placement_input in = fresh(/*dram_limit=*/10);
  size_t fb = 0;
  size_t dram = place(in, make_config(1, 1), 1000, &fb);
  EXPECT_EQ(dram, 10u);
  EXPECT_EQ(in.units[kTierPmem], 990u);
  EXPECT_EQ(fb, 0u) << "memory beyond the DRAM budget going to PMem is not a fallback";
}

TEST(Placement, DramFirstFillsDramThenSpills) {
  placement_input in = fresh(/*dram_limit=*/64);
  size_t dram = place(in, make_config(1, 4, policy_kind::dram_first), 200);
  EXPECT_EQ(dram, 64u);
  EXPECT_EQ(in.units[kTierPmem], 136u);
}

TEST(Placement, PmemFullFallsBackToDram) {
  placement_input in = fresh(SIZE_MAX, /*pmem_limit=*/20);
  size_t fb = 0;
  place(in, make_config(1, 9), 100, &fb);
  EXPECT_EQ(in.units[kTierPmem], 20u);
  EXPECT_EQ(in.units[kTierDram], 80u);
  EXPECT_GT(fb, 0u);
}

TEST(Placement, UnusablePmemGoesToDram) {
  placement_input in = fresh();
  in.usable[kTierPmem] = false;
  size_t fb = 0;
  EXPECT_EQ(place(in, make_config(1, 4), 50, &fb), 50u);
  // DRAM then holds more than its share, so the ratio wants PMem every time.
  EXPECT_EQ(fb, 50u);
}

TEST(Placement, BothExhaustedStillPlacesOnDram) {
  placement_input in = fresh(/*dram_limit=*/1, /*pmem_limit=*/1);
  size_t fb = 0;
  place(in, make_config(1, 1), 10, &fb);
  EXPECT_EQ(in.units[kTierDram] + in.units[kTierPmem], 10u);
  EXPECT_EQ(in.units[kTierPmem], 1u);
  EXPECT_EQ(fb, 8u);
}

TEST(Placement, ForcedUnitsDoNotSkewTheRatio) {
  placement_input in = fresh();
  in.units[kTierDram] = 50;  // e.g. engine metadata and explicit DRAM allocations
  EXPECT_EQ(place(in, make_config(1, 4), 100), 20u);
}

TEST(Placement, ForcedTierIsHonouredWhileItHasRoom) {
  placement_input in = fresh(SIZE_MAX, 2);
  config c = make_config(1, 4);
  EXPECT_EQ(choose_tier(in, c, kTierDram).tier, kTierDram);
  EXPECT_EQ(choose_tier(in, c, kTierPmem).tier, kTierPmem);
  in.units[kTierPmem] = 2;
  placement_result r = choose_tier(in, c, kTierPmem);
  EXPECT_EQ(r.tier, kTierDram);
  EXPECT_TRUE(r.fallback);
}

}  // namespace
}  // namespace mmtier::detail
