// Per-unit counts (lib/track/pmu_counts): samples added up per unit, their
// mapping to policy observations, and the policy promoting the unit the
// samples say is hot.
#include "track/pmu_counts.h"

#include "pmu_test_util.h"
#include "policy/policy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace mmtier::detail {
namespace {

using pmu_test::kBase;

constexpr uint64_t kSec = 1'000'000'000;

TEST(PmuAggregate, CountsMapToPolicyObservations) {
  std::vector<uint64_t> storage((pmu_unit_counts::storage_bytes(8) + 7) / 8);
  pmu_unit_counts c;
  ASSERT_TRUE(c.init(kBase, 8, storage.data()));
  for (int i = 0; i < 32; i++)
    c.add(kBase + 2 * kUnitSize + static_cast<uint64_t>(i) * 4096, false);
  for (int i = 0; i < 16; i++) c.add(kBase + 2 * kUnitSize + 8, true);
  for (int i = 0; i < 200; i++) c.add(kBase + 5 * kUnitSize, false);
  c.add(kBase - 1, false);
  c.add(kBase + 8 * kUnitSize, true);
  EXPECT_EQ(c.outside(), 2u);
  EXPECT_EQ(c.count(2).reads, 32u);
  EXPECT_EQ(c.count(2).writes, 16u);
  ASSERT_EQ(c.touched(), 2u);
  EXPECT_EQ(c.touched_unit(0), 2u);
  EXPECT_EQ(c.touched_unit(1), 5u);

  pmu_scale sc;  // 64 samples/s per unit = every page touched; scale 512
  ASSERT_EQ(sc.full_scale_per_sec, 64u);
  pmu_unit_observation o = c.observe(2, kSec, sc);
  EXPECT_EQ(o.sampled, 512);
  EXPECT_EQ(o.touched, 384);       // 48 samples/s of 64
  EXPECT_EQ(o.written, 128);       // 16 of 64
  o = c.observe(2, kSec / 2, sc);  // the same counts in half the time
  EXPECT_EQ(o.touched, 512) << "capped";
  EXPECT_EQ(o.written, 256);
  o = c.observe(5, kSec, sc);
  EXPECT_EQ(o.touched, 512);
  EXPECT_EQ(o.written, 0);
  o = c.observe(3, kSec, sc);  // no samples: idle, not unknown
  EXPECT_EQ(o.sampled, 512);
  EXPECT_EQ(o.touched, 0);
  EXPECT_EQ(c.observe(2, 0, sc).sampled, 0) << "no interval, no information";
  pmu_scale coarse{100, 64};
  o = c.observe(2, 2 * kSec, coarse);  // 24/s of 100, scale 64: 15.36 -> 15
  EXPECT_EQ(o.sampled, 64);
  EXPECT_EQ(o.touched, 15);
  EXPECT_EQ(o.written, 5);  // 8/s of 100: 5.12 -> 5

  pmu_unit_observation out[4];
  ASSERT_EQ(c.emit(kSec, out, 4, sc), 2u);
  EXPECT_EQ(out[0].unit, 2u);
  EXPECT_EQ(out[1].unit, 5u);
  EXPECT_EQ(c.emit(kSec, out, 1, sc), 1u);

  c.clear();
  EXPECT_EQ(c.touched(), 0u);
  EXPECT_EQ(c.count(2).reads, 0u);
  EXPECT_EQ(c.count(5).reads, 0u);
  EXPECT_EQ(c.outside(), 0u);
  c.add(kBase + 5 * kUnitSize, true);
  ASSERT_EQ(c.touched(), 1u);
  EXPECT_EQ(c.touched_unit(0), 5u);
}

TEST(PmuAggregate, ObservationsDriveThePolicyToPromoteTheSampledHotUnit) {
  constexpr uint32_t kN = 8;
  std::vector<uint64_t> storage((pmu_unit_counts::storage_bytes(kN) + 7) / 8);
  pmu_unit_counts c;
  ASSERT_TRUE(c.init(kBase, kN, storage.data()));
  for (uint32_t u = 0; u < kN; u++)
    for (int i = 0; i < (u == 6 ? 300 : 2); i++)
      c.add(kBase + (uint64_t{u} << kUnitShift) + 64, i % 3 == 0);

  auto pol = std::make_unique<migration_policy>();
  std::vector<uint64_t> pst((migration_policy::storage_bytes(kN) + 7) / 8);
  policy_params pp;
  pp.migrate_bytes_per_sec = 0;
  ASSERT_TRUE(pol->init(pp, kN, 0, pst.data()));
  uint32_t units[kN];
  uint8_t tiers[kN];
  for (uint32_t u = 0; u < kN; u++) {
    units[u] = u;
    tiers[u] = kTierPmem;
  }
  access_observation obs[kN];
  size_t touched = 0;
  ASSERT_EQ(c.observe_listed({units, tiers, kN}, kSec, obs, kN, &touched), kN);
  EXPECT_EQ(touched, kN) << "every unit had samples";
  EXPECT_EQ(obs[6].unit, 6u);
  EXPECT_EQ(obs[6].tier, kTierPmem);
  EXPECT_GT(obs[6].touched, obs[5].touched);
  EXPECT_EQ(c.touched(), 0u) << "the counts start again";
  pol->observe(kSec, obs, kN);
  policy_migration out[kN];
  const size_t n = pol->decide(kSec, 1, 0, out, kN);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(out[0].unit, 6u);
  EXPECT_EQ(out[0].to_tier, kTierDram);
}

}  // namespace
}  // namespace mmtier::detail
