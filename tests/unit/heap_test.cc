// Heap layer (lib/heap/heap.cc): units placed on tiers as pages are
// committed, contents dropped and placements released, application mappings
// (packing, partial unmap, protection, remap) and the fork freeze.
#include "api/runtime.h"
#include "heap/heap.h"
#include "heap_test_util.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace mmtier::detail {
namespace {

class Heap : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_EQ(runtime_start(), kReady); }
};

heap_counters counters() {
  heap_counters c;
  heap_counters_get(&c);
  return c;
}

bool all_bytes(const void *p, size_t n, unsigned char v) {
  const unsigned char *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i)
    if (b[i] != v) return false;
  return true;
}

TEST_F(Heap, CommitPlacesUnitsOnBothTiersAndDataSticks) {
  const size_t units = 40;
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, units * kUnitSize, kUnitSize, -1));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(heap_tier_of(p), -1) << "reserved but not committed";
  heap_counters before = counters();
  ASSERT_EQ(heap_commit(p, units * kUnitSize), 0);
  heap_counters after = counters();
  const size_t d = after.units[kTierDram] - before.units[kTierDram];
  const size_t m = after.units[kTierPmem] - before.units[kTierPmem];
  EXPECT_EQ(d + m, units);
  size_t seen[kTierCount] = {};
  for (size_t u = 0; u < units; ++u) {
    char *q = p + u * kUnitSize;
    memset(q, static_cast<int>(u + 1), kUnitSize);
    int t = heap_tier_of(q + 4096);
    ASSERT_GE(t, 0);
    ++seen[t];
  }
  EXPECT_GT(seen[kTierDram], 0u);
  EXPECT_GT(seen[kTierPmem], seen[kTierDram]) << "default ratio 1:4 puts most units on PMem";
  for (size_t u = 0; u < units; ++u)
    ASSERT_TRUE(all_bytes(p + u * kUnitSize, kUnitSize, static_cast<unsigned char>(u + 1))) << u;
  heap_engine_release(p, units * kUnitSize);
  heap_counters released = counters();
  EXPECT_EQ(released.units[kTierDram], before.units[kTierDram]);
  EXPECT_EQ(released.units[kTierPmem], before.units[kTierPmem]);
}

TEST_F(Heap, DiscardReadsZeroOnEveryTier) {
  const size_t units = 4;
  for (int tier : {kTierDram, kTierPmem}) {
    char *p = static_cast<char *>(heap_engine_reserve(nullptr, units * kUnitSize, kUnitSize, tier));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(heap_commit(p, units * kUnitSize), 0);
    for (size_t u = 0; u < units; ++u) {
      char *q = p + u * kUnitSize;
      memset(q, 0x5a, kUnitSize);
      ASSERT_EQ(heap_tier_of(q), tier);
      ASSERT_EQ(heap_discard(q + 8192, 3 * 4096, false), 0);
      EXPECT_TRUE(all_bytes(q + 8192, 3 * 4096, 0)) << "tier " << tier;
      EXPECT_TRUE(all_bytes(q, 8192, 0x5a));
      EXPECT_TRUE(all_bytes(q + 8192 + 3 * 4096, kUnitSize - 8192 - 3 * 4096, 0x5a));
    }
    heap_engine_release(p, units * kUnitSize);
  }
}

// Pages of a unit mapped whole, given back in place and taken again (an
// allocator's free and malloc) keep the unit one mapping: a run mapped
// again carries the advice the rest has, so the kernel merges it back
// (pieces differing in their advice alone would stay apart, one mapping
// more at every turn, and every snapshot and restore would keep them).
TEST_F(Heap, PagesGivenBackAndTakenAgainKeepTheUnitOneMapping) {
  for (int tier : {kTierDram, kTierPmem}) {
    char *p = static_cast<char *>(heap_engine_reserve(nullptr, kUnitSize, kUnitSize, tier));
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(heap_commit(p, kUnitSize), 0);
    memset(p, 0x5a, kUnitSize);
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    const size_t whole = test::mappings_in(lo, lo + kUnitSize);
    for (size_t i = 0; i < 8; ++i) {
      char *q = p + (16 + 40 * i) * 4096;
      ASSERT_EQ(heap_discard(q, 3 * 4096, true), 0);
      ASSERT_EQ(heap_commit(q, 3 * 4096), 0);
      q[0] = 1;
    }
    EXPECT_EQ(test::mappings_in(lo, lo + kUnitSize), whole) << "tier " << tier;
    for (size_t i = 0; i < 8; ++i) {
      const char *q = p + (16 + 40 * i) * 4096;
      EXPECT_EQ(q[0], 1);
      EXPECT_TRUE(all_bytes(q + 1, 3 * 4096 - 1, 0)) << "pages taken again read zero";
      EXPECT_TRUE(all_bytes(q + 3 * 4096, 4096, 0x5a)) << "their neighbours keep their data";
    }
    heap_engine_release(p, kUnitSize);
  }
}

TEST_F(Heap, DecommitOfEveryPageReleasesTheUnit) {
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, kUnitSize, kUnitSize, kTierPmem));
  ASSERT_NE(p, nullptr);
  heap_counters before = counters();
  ASSERT_EQ(heap_commit(p, 64 * 1024), 0);
  EXPECT_EQ(heap_tier_of(p), kTierPmem);
  EXPECT_EQ(heap_tier_of(p + 64 * 1024), -1) << "pages not committed are not placed";
  EXPECT_EQ(counters().units[kTierPmem], before.units[kTierPmem] + 1);
  ASSERT_EQ(heap_discard(p, 64 * 1024, true), 0);
  EXPECT_EQ(heap_tier_of(p), -1);
  EXPECT_EQ(counters().units[kTierPmem], before.units[kTierPmem]);
  heap_engine_release(p, kUnitSize);
}

TEST_F(Heap, ResidentBytesFollowTouchedPages) {
  const size_t n = 32 * kUnitSize;
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, n, kUnitSize, kTierPmem));
  ASSERT_NE(p, nullptr);
  const size_t before = heap_resident_bytes(kTierPmem);
  ASSERT_EQ(heap_commit(p, n), 0);
  memset(p, 1, n);
  const size_t after = heap_resident_bytes(kTierPmem);
  EXPECT_GE(after, before + n - kUnitSize);
  heap_engine_release(p, n);
  EXPECT_LE(heap_resident_bytes(kTierPmem), after - n + kUnitSize);
}

TEST_F(Heap, SmallMappingsShareAUnitAndUnmapIndependently) {
  void *a = nullptr, *b = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &a), 0);
  ASSERT_EQ(heap_mmap(nullptr, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &b), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) >> kUnitShift, reinterpret_cast<uintptr_t>(b) >> kUnitShift);
  memset(a, 1, 64 * 1024);
  memset(b, 2, 64 * 1024);
  ASSERT_EQ(heap_munmap(a, 64 * 1024), 0);
  EXPECT_EQ(heap_tier_of(a), -1);
  EXPECT_TRUE(all_bytes(b, 64 * 1024, 2));
  // The freed pages are reused, zeroed.
  void *c = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &c), 0);
  EXPECT_TRUE(all_bytes(c, 64 * 1024, 0));
  heap_munmap(b, 64 * 1024);
  heap_munmap(c, 64 * 1024);
}

TEST_F(Heap, ReservedMappingIsPlacedWhenMadeAccessible) {
  void *p = nullptr;
  const size_t n = 8 * kUnitSize;
  ASSERT_EQ(heap_mmap(nullptr, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
  EXPECT_EQ(heap_tier_of(p), -1);
  heap_counters before = counters();
  char *mid = static_cast<char *>(p) + 3 * kUnitSize;
  ASSERT_EQ(heap_mprotect(mid, kUnitSize, PROT_READ | PROT_WRITE), 0);
  EXPECT_GE(heap_tier_of(mid), 0);
  EXPECT_EQ(heap_tier_of(p), -1);
  heap_counters after = counters();
  EXPECT_EQ(after.units[0] + after.units[1], before.units[0] + before.units[1] + 1);
  memset(mid, 7, kUnitSize);
  ASSERT_EQ(heap_mprotect(mid, kUnitSize, PROT_NONE), 0);
  ASSERT_EQ(heap_mprotect(mid, kUnitSize, PROT_READ), 0);
  EXPECT_TRUE(all_bytes(mid, kUnitSize, 7)) << "protection changes keep the data";
  EXPECT_EQ(heap_mprotect(static_cast<char *>(p) + n, 4096, PROT_READ), -ENOMEM)
      << "beyond the mapping (rest of the unit is not the application's)";
  heap_munmap(p, n);
}

TEST_F(Heap, RemapGrowsInPlaceOrMovesWithContents) {
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, 4 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
  for (size_t i = 0; i < 4 * kUnitSize; i += 4096) static_cast<char *>(p)[i] = static_cast<char>(i >> 12);
  void *q = nullptr;
  ASSERT_EQ(heap_mremap(p, 4 * kUnitSize, 16 * kUnitSize, MREMAP_MAYMOVE, nullptr, &q), 0);
  for (size_t i = 0; i < 4 * kUnitSize; i += 4096) ASSERT_EQ(static_cast<char *>(q)[i], static_cast<char>(i >> 12));
  EXPECT_TRUE(all_bytes(static_cast<char *>(q) + 4 * kUnitSize, 12 * kUnitSize, 0));
  void *r = nullptr;
  ASSERT_EQ(heap_mremap(q, 16 * kUnitSize, kUnitSize, 0, nullptr, &r), 0);
  EXPECT_EQ(r, q) << "shrinking stays in place";
  EXPECT_EQ(heap_tier_of(static_cast<char *>(q) + 2 * kUnitSize), -1);
  heap_munmap(r, kUnitSize);
}

TEST_F(Heap, ForkGivesBothSidesPrivateViewsOfFileBackedUnits) {
  const size_t units = 8;
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, units * kUnitSize, kUnitSize, kTierPmem));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(heap_commit(p, units * kUnitSize), 0);
  ASSERT_EQ(heap_tier_of(p), kTierPmem);
  memset(p, 'A', units * kUnitSize);
  int to_child[2], to_parent[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(to_parent), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  char token = 0;
  if (pid == 0) {
    // Child: write the first half, then let the parent write the second.
    memset(p, 'C', units * kUnitSize / 2);
    if (write(to_parent[1], "c", 1) != 1) _exit(10);
    if (read(to_child[0], &token, 1) != 1) _exit(11);
    if (!all_bytes(p, units * kUnitSize / 2, 'C')) _exit(12);
    if (!all_bytes(p + units * kUnitSize / 2, units * kUnitSize / 2, 'A')) _exit(13);
    _exit(0);
  }
  ASSERT_EQ(read(to_parent[0], &token, 1), 1);
  memset(p + units * kUnitSize / 2, 'P', units * kUnitSize / 2);
  ASSERT_EQ(write(to_child[1], "p", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "12: child saw its writes lost, 13: child saw the parent's writes";
  EXPECT_TRUE(all_bytes(p, units * kUnitSize / 2, 'A')) << "parent saw the child's writes";
  EXPECT_TRUE(all_bytes(p + units * kUnitSize / 2, units * kUnitSize / 2, 'P'));
  // Written pages are now private (anonymous) copies: DRAM.
  EXPECT_EQ(heap_tier_of(p + units * kUnitSize / 2), kTierDram);
  EXPECT_EQ(heap_tier_of(p), kTierPmem);
  heap_engine_release(p, units * kUnitSize);
  close(to_child[0]);
  close(to_child[1]);
  close(to_parent[0]);
  close(to_parent[1]);
}

}  // namespace
}  // namespace mmtier::detail
