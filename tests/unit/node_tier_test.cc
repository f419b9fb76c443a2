// The NUMA-node tiers (lib/tier/node_tier.cc): run with MMTIER_SLOW_NODE
// set (ctest's node.* tests; on one node, node 0 is both tiers and only
// the bookkeeping is checked; in the virtual machine of scripts/vm-test.sh
// the CPU-less node is the slow one and every page is checked where it
// lies).  A unit's pages are on its tier's node after placement and after
// each move, its bytes survive the moves, and a fork child's writes stay
// the child's (the slow tier is anonymous memory: nothing is frozen).
#include "api/runtime.h"
#include "heap/heap.h"
#include "heap_test_util.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace mmtier::detail {
namespace {

using namespace test;

// The node each page of [p, p + pages * 4 KiB) is on (move_pages query);
// a negative errno for a page that is not present.
std::vector<int> nodes_of(const char *p, size_t pages) {
  std::vector<void *> addrs(pages);
  std::vector<int> status(pages, -1);
  for (size_t i = 0; i < pages; ++i) addrs[i] = const_cast<char *>(p + i * 4096);
  if (syscall(SYS_move_pages, 0, pages, addrs.data(), nullptr, status.data(), 0) != 0) return {};
  return status;
}

// The first node with CPUs (the fast tier's when there is one other than
// the slow node).
int fast_node(int slow) {
  FILE *f = fopen("/sys/devices/system/node/has_cpu", "r");
  int first = -1;
  if (f) {
    if (fscanf(f, "%d", &first) != 1) first = -1;
    fclose(f);
  }
  return first == slow ? slow : first;
}

class NodeTier : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(runtime_start(), kReady);
    slow = heap_slow_node();
    ASSERT_GE(slow, 0) << "run with MMTIER_SLOW_NODE set to a node with memory";
    fast = fast_node(slow);
    use_up_startup_units();
  }
  char *map_units(size_t n) {
    void *p = nullptr;
    EXPECT_EQ(heap_mmap(nullptr, n * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
    return static_cast<char *>(p);
  }
  // Pages of the unit at u not on node want (not present ones included).
  size_t off_node(const char *u, int want) {
    const std::vector<int> st = nodes_of(u, kPagesPerUnit);
    if (st.empty()) return kPagesPerUnit;
    size_t off = 0;
    for (int s : st) off += s != want;
    return off;
  }
  int slow = -1, fast = -1;
};

TEST_F(NodeTier, PagesLieOnTheirTiersNodeAndMoveWithTheUnit) {
  constexpr size_t kUnits = 6;
  char *base = map_units(kUnits);
  ASSERT_NE(base, nullptr);
  for (size_t i = 0; i < kUnits * kUnitSize; i += 8) *reinterpret_cast<uint64_t *>(base + i) = i * 2654435761u;
  // Placement: each unit's pages on its tier's node.
  for (size_t u = 0; u < kUnits; ++u) {
    char *at = base + u * kUnitSize;
    const int t = heap_tier_of(at);
    ASSERT_GE(t, 0);
    EXPECT_EQ(off_node(at, t == kTierPmem ? slow : fast), 0u) << "unit " << u << " on tier " << t;
  }
  // Each unit to the other tier and back: the kernel moves the pages.
  for (int round = 0; round < 2; ++round) {
    for (size_t u = 0; u < kUnits; ++u) {
      char *at = base + u * kUnitSize;
      const int to = 1 - heap_tier_of(at);
      ASSERT_EQ(heap_migrate(unit_index_of(at), to), static_cast<long>(kUnitSize)) << "unit " << u;
      EXPECT_EQ(heap_tier_of(at), to);
      EXPECT_EQ(off_node(at, to == kTierPmem ? slow : fast), 0u) << "unit " << u << " moved to tier " << to;
    }
  }
  size_t bad = 0;
  for (size_t i = 0; i < kUnits * kUnitSize; i += 8) bad += *reinterpret_cast<uint64_t *>(base + i) != i * 2654435761u;
  EXPECT_EQ(bad, 0u);
  heap_munmap(base, kUnits * kUnitSize);
}

TEST_F(NodeTier, ForkFreezesNothingAndEachSideKeepsItsWrites) {
  char *base = map_units(2);
  ASSERT_NE(base, nullptr);
  memset(base, 1, 2 * kUnitSize);
  if (heap_tier_of(base) != kTierPmem) ASSERT_GE(heap_migrate(unit_index_of(base), kTierPmem), 0);
  heap_counters before;
  heap_counters_get(&before);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    memset(base, 2, 2 * kUnitSize);
    // The child moves its own copy too.
    const long r = heap_migrate(unit_index_of(base), kTierDram);
    _exit(r >= 0 && base[0] == 2 && base[2 * kUnitSize - 1] == 2 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  heap_counters after;
  heap_counters_get(&after);
  EXPECT_EQ(after.frozen_own, before.frozen_own) << "anonymous memory needs no freezing";
  size_t seen = 0;
  for (size_t i = 0; i < 2 * kUnitSize; ++i) seen += base[i] != 1;
  EXPECT_EQ(seen, 0u) << "the child's writes showed in the parent";
  EXPECT_EQ(heap_tier_of(base), kTierPmem);
  EXPECT_EQ(off_node(base, slow), 0u);
  heap_munmap(base, 2 * kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
