// How mmtierd shares the node's DRAM (agent/qos.h): guarantees admitted
// oldest first within the cap, burstable by weight with water filling,
// best-effort only what nobody else wants, whole units.
#include "qos.h"

#include <gtest/gtest.h>

namespace mmtier::agent {
namespace {

constexpr uint64_t MiB = 1ull << 20;

claim make(uint32_t qos, uint64_t demand, uint32_t weight = 100, uint64_t guarantee = 0, uint64_t start = 0) {
  claim c;
  c.qos = qos;
  c.demand = demand;
  c.weight = weight;
  c.guarantee = guarantee;
  c.start_time = start;
  return c;
}

node_policy node(uint64_t dram) {
  node_policy p;
  p.node_dram = dram;
  return p;
}

TEST(Qos, GuaranteeFirstThenWeightsThenBestEffortGetsNothingWhenAllWantMore) {
  const auto g = allocate(node(1024 * MiB), {make(kGuaranteed, 4096 * MiB, 100, 256 * MiB), make(kBurstable, 4096 * MiB, 200),
                                              make(kBurstable, 4096 * MiB, 100), make(kBestEffort, 4096 * MiB)});
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].qos, kGuaranteed);
  EXPECT_EQ(g[0].budget, 256 * MiB);
  EXPECT_EQ(g[1].budget, 512 * MiB);
  EXPECT_EQ(g[2].budget, 256 * MiB);
  EXPECT_EQ(g[3].budget, 0u);
  for (const grant &x : g) EXPECT_TRUE(x.note.empty()) << x.note;
}

TEST(Qos, WhatABurstableProcessDoesNotWantGoesToTheOthersThenToBestEffort) {
  // 900 MiB to share: the small one wants 100, the other two share the
  // rest 2:1 up to what they want; best-effort gets what is left.
  const auto g = allocate(node(900 * MiB), {make(kBurstable, 100 * MiB, 100), make(kBurstable, 300 * MiB, 200),
                                             make(kBurstable, 1000 * MiB, 100), make(kBestEffort, 1000 * MiB)});
  EXPECT_EQ(g[0].budget, 100 * MiB);
  EXPECT_EQ(g[1].budget, 300 * MiB);
  EXPECT_EQ(g[2].budget, 500 * MiB);
  EXPECT_EQ(g[3].budget, 0u);
  const auto h = allocate(node(900 * MiB), {make(kBurstable, 100 * MiB), make(kBestEffort, 300 * MiB), make(kBestEffort, 1000 * MiB)});
  EXPECT_EQ(h[0].budget, 100 * MiB);
  EXPECT_EQ(h[1].budget, 300 * MiB);
  EXPECT_EQ(h[2].budget, 500 * MiB);
}

TEST(Qos, SharesFollowWeightsInWholeUnits) {
  const auto g = allocate(node(1000 * MiB), {make(kBurstable, 8192 * MiB, 300), make(kBurstable, 8192 * MiB, 100)});
  for (const grant &x : g) EXPECT_EQ(x.budget % (2 * MiB), 0u);
  EXPECT_LE(g[0].budget + g[1].budget, 1000 * MiB);
  EXPECT_NEAR(static_cast<double>(g[0].budget) / static_cast<double>(g[1].budget), 3.0, 0.1);
}

TEST(Qos, GuaranteesBeyondTheCapAreServedAsBurstableOldestKeepTheirs) {
  node_policy p = node(1000 * MiB);
  p.guaranteed_max_pct = 50;
  // The younger asks first in the list; the older keeps its guarantee.
  const auto g = allocate(p, {make(kGuaranteed, 1000 * MiB, 100, 400 * MiB, /*start=*/20),
                              make(kGuaranteed, 1000 * MiB, 100, 400 * MiB, /*start=*/10)});
  EXPECT_EQ(g[1].qos, kGuaranteed);
  EXPECT_EQ(g[1].budget, 400 * MiB);
  EXPECT_EQ(g[0].qos, kBurstable);
  EXPECT_NE(g[0].note.find("not granted"), std::string::npos) << g[0].note;
  EXPECT_EQ(g[0].budget, 600 * MiB);  // what the guarantee leaves, all of it wanted
}

TEST(Qos, GuaranteesOnlyForAllowedUsers) {
  node_policy p = node(1000 * MiB);
  p.guaranteed_uids = {0, 1000};
  claim a = make(kGuaranteed, 1000 * MiB, 100, 200 * MiB);
  a.uid = 1000;
  claim b = make(kGuaranteed, 1000 * MiB, 100, 200 * MiB);
  b.uid = 1001;
  const auto g = allocate(p, {a, b});
  EXPECT_EQ(g[0].qos, kGuaranteed);
  EXPECT_EQ(g[1].qos, kBurstable);
  EXPECT_NE(g[1].note.find("uid 1001"), std::string::npos) << g[1].note;
}

TEST(Qos, AGuaranteeIsKeptEvenWhenItsHolderWantsLessAndOthersWantMore) {
  const auto g = allocate(node(1000 * MiB), {make(kGuaranteed, 10 * MiB, 100, 300 * MiB), make(kBurstable, 5000 * MiB)});
  EXPECT_EQ(g[0].budget, 300 * MiB);
  EXPECT_EQ(g[1].budget, 700 * MiB);
}

TEST(Qos, NothingToShareAndNobody) {
  EXPECT_TRUE(allocate(node(1000 * MiB), {}).empty());
  const auto g = allocate(node(0), {make(kBurstable, 100 * MiB), make(kBestEffort, 100 * MiB)});
  EXPECT_EQ(g[0].budget, 0u);
  EXPECT_EQ(g[1].budget, 0u);
}

}  // namespace
}  // namespace mmtier::agent
