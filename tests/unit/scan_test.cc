// The mover's scan steps (lib/mover/scan): listing, deciding and applying,
// each alone, with a fake migration, a fake mapping count and a fake clock.
#include "mover/scan.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace mmtier::detail {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
constexpr size_t kUnits = 64;

struct fake_heap {
  std::vector<int> tier = std::vector<int>(kUnits, kTierPmem);
  std::vector<size_t> fail;  // units whose migration fails
  int calls = 0;
  int dram_room = kUnits;  // promotions the DRAM limit still takes
};
fake_heap *g_fake = nullptr;

long fake_migrate(size_t unit, int to) {
  ++g_fake->calls;
  for (size_t f : g_fake->fail)
    if (f == unit) return -EBUSY;
  if (to == kTierDram && g_fake->dram_room-- <= 0) return -ENOSPC;
  g_fake->tier[unit] = to;
  return static_cast<long>(kUnitSize);
}

long many_mappings(void *ctx) { return *static_cast<long *>(ctx); }
long small_limit(void *) { return 10000; }

struct ScanTest : ::testing::Test {
  void SetUp() override {
    g_fake = &heap;
    policy_params p;
    p.migrate_bytes_per_sec = 0;
    storage.resize((migration_policy::storage_bytes(kUnits) + 7) / 8);
    ASSERT_TRUE(policy->init(p, kUnits, 0, storage.data()));
    guard.init(many_mappings, small_limit, &mappings);
  }
  // Observes units hot (every page touched) or cold on their fake tiers.
  size_t observe_and_decide(uint64_t now, std::initializer_list<uint32_t> hot, dram_budget b) {
    std::vector<access_observation> obs;
    for (uint32_t u = 0; u < kUnits; ++u) {
      const bool h = std::find(hot.begin(), hot.end(), u) != hot.end();
      obs.push_back({u, static_cast<uint8_t>(heap.tier[u]), true, 8, static_cast<uint16_t>(h ? 8 : 0), 0});
    }
    return decide(*policy, now, obs.data(), obs.size(), b, migs);
  }
  fake_heap heap;
  std::unique_ptr<migration_policy> policy = std::make_unique<migration_policy>();
  std::vector<uint64_t> storage;
  map_guard guard;
  long mappings = 100;
  policy_migration migs[kPolicyMaxBatch];
};

TEST_F(ScanTest, DecideThenApplyPromotesTheHotUnitsWithinTheBudget) {
  uint64_t now = kSec;
  size_t n = 0;
  for (int scan = 0; scan < 20 && n == 0; ++scan, now += kSec / 10) n = observe_and_decide(now, {5, 9, 11}, {2, 0});
  ASSERT_EQ(n, 2u) << "budget 2, DRAM empty: the two hottest of three";
  const apply_outcome o = apply(*policy, guard, migs, n, now, {2, 0}, fake_migrate);
  EXPECT_EQ(o.promoted, 2u);
  EXPECT_EQ(o.bytes, 2 * kUnitSize);
  EXPECT_FALSE(o.held);
  EXPECT_EQ(policy->counters().migrations_done, 2u);
}

TEST_F(ScanTest, ApplySkipsAPromotionThatWouldPassTheBudget) {
  // An exchange whose demotion fails: the promotion after it is skipped,
  // not attempted, and refunded to the policy as skipped.
  heap.tier[3] = kTierDram;
  heap.fail = {3};
  const policy_migration exchange[] = {{3, kTierPmem}, {7, kTierDram}};
  const apply_outcome o = apply(*policy, guard, exchange, 2, kSec, {1, 1}, fake_migrate);
  EXPECT_EQ(o.failed, 1u);
  EXPECT_EQ(o.promoted, 0u);
  EXPECT_EQ(heap.calls, 1) << "only the demotion was tried";
  EXPECT_EQ(heap.tier[7], kTierPmem);
}

TEST_F(ScanTest, APromotionRefusedAtTheDramLimitIsSkippedNotFailed) {
  // The program's allocations filled DRAM after the budget was read (or a
  // fast node has no room): the heap refuses the second promotion (ENOSPC);
  // it and the rest of the batch are skipped, nothing counts as failed, and
  // the exchange's demotion after it waits too (it would shrink DRAM for a
  // promotion that finds no room).
  heap.tier[20] = kTierDram;
  heap.dram_room = 1;
  const policy_migration batch[] = {{5, kTierDram}, {6, kTierDram}, {20, kTierPmem}, {7, kTierDram}};
  const apply_outcome o = apply(*policy, guard, batch, 4, kSec, {4, 1}, fake_migrate);
  EXPECT_EQ(o.promoted, 1u);
  EXPECT_EQ(o.demoted, 0u);
  EXPECT_EQ(o.deferred, 2u);
  EXPECT_EQ(o.failed, 0u);
  EXPECT_EQ(o.failures.total(), 0u);
  EXPECT_EQ(heap.calls, 2) << "nothing after the refused promotion was tried";
  EXPECT_EQ(heap.tier[6], kTierPmem);
  EXPECT_EQ(heap.tier[20], kTierDram);
}

// Moves that take long (a node short of memory: the kernel reclaims and
// compacts for every page moved in) end the batch once its time is up: the
// rest are skipped (reported so: refunded) for the next scan to decide.
uint64_t g_fake_clock = 0;
uint64_t fake_clock() { return g_fake_clock; }
long slow_migrate(size_t unit, int to) {
  g_fake_clock += 150'000'000;  // 150 ms each
  return fake_migrate(unit, to);
}

TEST_F(ScanTest, ApplyLeavesTheRestOfASlowBatchForTheNextScan) {
  const policy_migration batch[] = {{5, kTierDram}, {6, kTierDram}, {7, kTierDram}, {8, kTierDram}};
  g_fake_clock = kSec;
  const apply_outcome o = apply(*policy, guard, batch, 4, kSec, {4, 0}, slow_migrate, 200'000'000, fake_clock);
  EXPECT_EQ(o.promoted, 2u) << "the second move began 150 ms in, the third 300 ms in";
  EXPECT_EQ(o.deferred, 2u);
  EXPECT_EQ(o.failed, 0u);
  EXPECT_EQ(heap.calls, 2);
  EXPECT_EQ(heap.tier[7], kTierPmem);
  // However long the first move takes, it is made.
  const policy_migration one[] = {{9, kTierDram}};
  const apply_outcome first = apply(*policy, guard, one, 1, kSec, {4, 2}, slow_migrate, 1, fake_clock);
  EXPECT_EQ(first.promoted, 1u);
  // Without a clock nothing is deferred.
  const policy_migration rest[] = {{7, kTierDram}, {8, kTierDram}};
  const apply_outcome unbounded = apply(*policy, guard, rest, 2, kSec, {6, 3}, slow_migrate);
  EXPECT_EQ(unbounded.promoted, 2u);
  EXPECT_EQ(unbounded.deferred, 0u);
}

TEST_F(ScanTest, ApplyHoldsEverythingBackNearTheMappingLimit) {
  uint64_t now = kSec;
  size_t n = 0;
  for (int scan = 0; scan < 20 && n == 0; ++scan, now += kSec / 10) n = observe_and_decide(now, {1, 2}, {10, 0});
  ASSERT_EQ(n, 2u);
  mappings = 9500;  // limit 10000, reserve 1250: past the threshold
  const apply_outcome o = apply(*policy, guard, migs, n, now, {10, 0}, fake_migrate);
  EXPECT_TRUE(o.held);
  EXPECT_EQ(o.moved(), 0u);
  EXPECT_EQ(heap.calls, 0);
  EXPECT_EQ(policy->counters().migrations_skipped, 2u) << "reported back as skipped";
  mappings = 100;  // units freed: room again (a count is due a second later)
  now += 2 * kSec;
  n = observe_and_decide(now, {1, 2}, {10, 0});
  ASSERT_EQ(n, 2u) << "skipped units are decided again";
  const apply_outcome later = apply(*policy, guard, migs, n, now, {10, 0}, fake_migrate);
  EXPECT_FALSE(later.held);
  EXPECT_EQ(later.promoted, 2u);
}

TEST_F(ScanTest, ApplyCountsFailuresByReason) {
  heap.tier[3] = heap.tier[4] = heap.tier[5] = kTierDram;
  heap.fail = {3, 4};
  const policy_migration batch[] = {{3, kTierPmem}, {4, kTierPmem}, {5, kTierPmem}};
  const apply_outcome o = apply(*policy, guard, batch, 3, kSec, {0, 3}, fake_migrate);
  EXPECT_EQ(o.failed, 2u);
  EXPECT_EQ(o.demoted, 1u);
  EXPECT_EQ(o.failures.err[0], EBUSY);
  EXPECT_EQ(o.failures.count[0], 2u);
  EXPECT_EQ(o.failures.total(), 2u);
}

TEST(FailureTally, KeepsTheFirstReasonsAndCountsTheRestTogether) {
  failure_tally t;
  EXPECT_TRUE(t.add(ENOSPC)) << "first of its kind";
  EXPECT_FALSE(t.add(ENOSPC));
  for (int e : {EIO, EBUSY, ENOMEM}) EXPECT_TRUE(t.add(e));
  EXPECT_TRUE(t.add(EPERM)) << "a fifth reason is new too, counted with the rest";
  EXPECT_FALSE(t.add(EPERM));
  EXPECT_EQ(t.err[0], ENOSPC);
  EXPECT_EQ(t.count[0], 2u);
  EXPECT_EQ(t.err[3], ENOMEM);
  EXPECT_EQ(t.other, 2u);
  EXPECT_EQ(t.total(), 7u);
  failure_tally u;
  u.add(ENOSPC);
  u.merge(t);
  EXPECT_EQ(u.count[0], 3u);
  EXPECT_EQ(u.total(), 8u);
  char buf[24];
  EXPECT_STREQ(errno_name(ENOSPC, buf), "ENOSPC");
  EXPECT_STREQ(errno_name(-EOPNOTSUPP, buf), "EOPNOTSUPP");
  EXPECT_STREQ(errno_name(4095, buf), "errno 4095");
}

size_t g_listed_calls = 0;
size_t fake_lister(uint32_t *units, uint8_t *tiers, size_t cap) {
  ++g_listed_calls;
  const size_t n = std::min<size_t>(cap, 3);
  for (size_t i = 0; i < n; ++i) {
    units[i] = static_cast<uint32_t>(10 + i);
    tiers[i] = kTierPmem;
  }
  return n;
}

TEST(ScanList, ListsWhenStaleAndEveryFewScans) {
  std::vector<uint32_t> units(kMaxListed);
  std::vector<uint8_t> tiers(kMaxListed);
  unit_listing l;
  l.units = units.data();
  l.tiers = tiers.data();
  g_listed_calls = 0;
  for (uint64_t scan = 1; scan <= 2 * kRelistScans; ++scan) list_units(l, scan, fake_lister);
  EXPECT_EQ(g_listed_calls, 3u) << "stale at first, then every kRelistScans scans";
  EXPECT_EQ(l.n, 3u);
  l.stale = true;  // a scan moved a unit
  list_units(l, 2 * kRelistScans + 1, fake_lister);
  EXPECT_EQ(g_listed_calls, 4u);
}

}  // namespace
}  // namespace mmtier::detail
