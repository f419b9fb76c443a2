// The mover's mapping-count guard (lib/mover/map_guard): driven with a
// fake mapping count, limit and clock; and once against the real
// /proc/self/maps.
#include "mover/map_guard.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdio>

namespace mmtier::detail {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

struct fake_process {
  long mappings = 100;
  long limit = 65530;
  int counted = 0;  // times the guard read the mappings
};

long fake_count(void *ctx) {
  auto *p = static_cast<fake_process *>(ctx);
  ++p->counted;
  return p->mappings;
}
long fake_limit(void *ctx) { return static_cast<fake_process *>(ctx)->limit; }

TEST(MapGuard, FarBelowTheLimitCountsOnceAndAllowsEverything) {
  fake_process p;
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  uint64_t t = kSec;
  for (int i = 0; i < 1000; ++i, t += kSec / 10) {
    ASSERT_TRUE(g.allow(8, t));
    g.moved(8);
  }
  // 8000 migrations can add 16000 mappings: the bound stays under
  // 65530 - 8191 until about 28,600 of them, so no second count.
  EXPECT_EQ(p.counted, 1);
  EXPECT_EQ(g.reserve(), 65530 / 8);
  EXPECT_FALSE(g.paused());
  EXPECT_EQ(g.refusals(), 0u);
}

TEST(MapGuard, CountsAgainWhenTheBoundNearsTheLimitAndStaysOpenIfThereIsRoom) {
  fake_process p;
  p.limit = 10000;  // reserve 1250, paused above 8750
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  uint64_t t = kSec;
  ASSERT_TRUE(g.allow(1, t));
  g.moved(1);
  // Migrations merged back, say: the real count stays at 100 while the
  // bound grows by 2 per migration.
  int counted_before = p.counted;
  for (int i = 0; i < 5000; ++i) {
    t += kSec;  // a second apart: a count is allowed whenever needed
    ASSERT_TRUE(g.allow(1, t)) << "at migration " << i;
    g.moved(1);
  }
  EXPECT_GT(p.counted, counted_before) << "the bound reached 8750 and was checked";
  EXPECT_LT(p.counted, 10) << "and checked only then";
  EXPECT_FALSE(g.paused());
}

TEST(MapGuard, PausesNearTheLimitAndResumesWithHysteresis) {
  fake_process p;
  p.limit = 10000;  // high 8750, low 8125
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  uint64_t t = kSec;
  p.mappings = 8749;
  EXPECT_FALSE(g.allow(1, t)) << "8749 + 2 > 8750";
  EXPECT_TRUE(g.paused());
  EXPECT_EQ(g.refusals(), 1u);
  // Still paused between 8125 and 8750.
  p.mappings = 8500;
  t += 2 * kSec;
  EXPECT_FALSE(g.allow(1, t));
  EXPECT_TRUE(g.paused());
  // Below the low mark: open again.
  p.mappings = 8000;
  t += 2 * kSec;
  EXPECT_TRUE(g.allow(1, t));
  EXPECT_FALSE(g.paused());
  EXPECT_EQ(g.refusals(), 2u);
}

TEST(MapGuard, WhilePausedCountsAtMostOncePerSecond) {
  fake_process p;
  p.limit = 10000;
  p.mappings = 9500;
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  uint64_t t = kSec;
  EXPECT_FALSE(g.allow(4, t));
  const int counted = p.counted;
  // Ten scans in the next 0.9 s: refused without reading the maps again,
  // even though there is room now.
  p.mappings = 100;
  for (int i = 1; i <= 9; ++i) EXPECT_FALSE(g.allow(4, t + i * kSec / 10));
  EXPECT_EQ(p.counted, counted);
  EXPECT_TRUE(g.allow(4, t + map_guard::kRecountNs));
  EXPECT_EQ(p.counted, counted + 1);
}

TEST(MapGuard, TheLimitIsReadAgainWhenCounting) {
  fake_process p;
  p.limit = 10000;
  p.mappings = 9000;
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  EXPECT_FALSE(g.allow(1, kSec));
  p.limit = 262144;  // sysctl -w vm.max_map_count=262144
  EXPECT_TRUE(g.allow(1, 3 * kSec));
  EXPECT_EQ(g.limit(), 262144);
}

TEST(MapGuard, SmallLimitsKeepHalfForTheApplicationAtMost) {
  fake_process p;
  p.limit = 1000;
  map_guard g;
  g.init(fake_count, fake_limit, &p);
  ASSERT_TRUE(g.allow(1, kSec));
  EXPECT_EQ(g.reserve(), 500) << "1024 would leave nothing to move with";
}

long failing(void *) { return -ENOENT; }

TEST(MapGuard, WithoutFiguresItDoesNotStandInTheWay) {
  map_guard g;
  g.init(failing, failing, nullptr);
  EXPECT_TRUE(g.allow(64, kSec));
  EXPECT_FALSE(g.paused());
  EXPECT_EQ(g.counts(), 0u);
}

TEST(MapGuard, CountsTheRealMappingsOfThisProcess) {
  map_guard g;
  g.init_default();
  ASSERT_TRUE(g.allow(1, kSec));
  const long before = g.last_count();
  ASSERT_GT(before, 5);
  ASSERT_GT(g.limit(), before);
  // 200 more mappings: pages with alternating protections in one range.
  const size_t n = 400;
  char *r = static_cast<char *>(mmap(nullptr, n * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(r, MAP_FAILED);
  for (size_t i = 0; i < n; i += 2) ASSERT_EQ(mprotect(r + i * 4096, 4096, PROT_READ), 0);
  // Force a count: pretend enough migrations to reach the threshold.
  g.moved(static_cast<size_t>(g.limit()));
  g.allow(1, 3 * kSec);
  const long after = g.last_count();
  munmap(r, n * 4096);
  EXPECT_GE(after - before, static_cast<long>(n) - 2);
  EXPECT_LE(after - before, static_cast<long>(n) + 20);
}

}  // namespace
}  // namespace mmtier::detail
