// The NUMA-node tiers (lib/tier/node_tier.cc): run with MMTIER_SLOW_NODE
// set (ctest's node.* tests; on one node, node 0 is both tiers and only
// the bookkeeping is checked; in the virtual machine of scripts/vm-test.sh
// the CPU-less node is the slow one and every page is checked where it
// lies).  A unit's pages are on its tier's node after placement and after
// each move, its bytes survive the moves, and a fork child's writes stay
// the child's (the slow tier is anonymous memory: nothing is frozen).
#include "api/runtime.h"
#include "heap/heap.h"
#include "tier/tier.h"
#include "heap_test_util.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
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
  // One unit filled with `fill`, to be moved to the other tier (g_beside,
  // below, set for it); nullptr when it could not be had.
  char *unit_to_move(unsigned char fill);
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

// Whether this process has CAP_SYS_NICE in its effective set.
bool have_sys_nice() {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return false;
  char line[256];
  unsigned long long eff = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "CapEff: %llx", &eff) == 1) break;
  fclose(f);
  return (eff >> 23) & 1;  // CAP_SYS_NICE
}

// Pages a fork child still shares (neither side wrote them since) move
// with the unit when the process may move other processes' pages
// (CAP_SYS_NICE: MPOL_MF_MOVE_ALL); without it they stay where they were.
TEST_F(NodeTier, PagesSharedWithAForkChildMoveWhenTheProcessMayMoveThem) {
  // Run where the two tiers are two nodes (the virtual machine's numa
  // suite); ctest's node.* on one node leaves it out.
  ASSERT_NE(slow, fast) << "needs a slow node apart from the fast one";
  char *base = map_units(1);
  ASSERT_NE(base, nullptr);
  memset(base, 3, kUnitSize);
  if (heap_tier_of(base) != kTierDram) ASSERT_GE(heap_migrate(unit_index_of(base), kTierDram), 0);
  ASSERT_EQ(off_node(base, fast), 0u);
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Holds the pages shared, reading nothing, until the parent has moved.
    char c;
    close(go[1]);
    _exit(read(go[0], &c, 1) == 0 ? 0 : 1);
  }
  close(go[0]);
  const long r = heap_migrate(unit_index_of(base), kTierPmem);
  const size_t stayed = off_node(base, slow);
  close(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_GE(r, 0);
  EXPECT_EQ(heap_tier_of(base), kTierPmem);
  if (have_sys_nice())
    EXPECT_EQ(stayed, 0u) << "MPOL_MF_MOVE_ALL moves the pages the child shares";
  else
    EXPECT_EQ(stayed, kPagesPerUnit) << "without CAP_SYS_NICE shared pages stay (MPOL_MF_MOVE)";
  for (size_t i = 0; i < kUnitSize; i += 4096) ASSERT_EQ(base[i], 3);
  heap_munmap(base, kUnitSize);
}

// A unit counted on DRAM whose pages are on the slow node (the kernel took
// them there when the fast node was full at their first touch; here they
// are moved behind the library's back) is counted on PMem by the mover's
// audit, and its stragglers follow; a unit where it belongs is left alone.
TEST_F(NodeTier, AUnitWhosePagesLieOnTheSlowNodeIsCountedThere) {
  // Run where the two tiers are two nodes (see above).
  ASSERT_NE(slow, fast) << "needs a slow node apart from the fast one";
  char *base = map_units(2);
  ASSERT_NE(base, nullptr);
  memset(base, 5, 2 * kUnitSize);
  for (int k = 0; k < 2; ++k)
    if (heap_tier_of(base + k * kUnitSize) != kTierDram)
      ASSERT_GE(heap_migrate(unit_index_of(base + k * kUnitSize), kTierDram), 0);
  // All but the last 16 pages of the first unit to the slow node.
  unsigned long mask[16] = {};
  mask[slow / 64] |= 1ul << (slow % 64);
  constexpr long kMpolBind = 2, kMfMove = 1 << 1;
  ASSERT_EQ(syscall(SYS_mbind, base, kUnitSize - 16 * 4096, kMpolBind, mask, 1024 + 1, kMfMove), 0);
  ASSERT_GT(off_node(base, fast), kPagesPerUnit / 2);
  size_t recounted = 0;
  for (size_t i = 0; i < (size_t{1} << 20) / 64 && heap_tier_of(base) == kTierDram; ++i)
    recounted += heap_recount_node_units(64);
  EXPECT_GE(recounted, 1u);
  EXPECT_EQ(heap_tier_of(base), kTierPmem);
  EXPECT_EQ(off_node(base, slow), 0u) << "the pages left on the fast node follow";
  EXPECT_EQ(heap_tier_of(base + kUnitSize), kTierDram) << "a unit where it belongs stays counted there";
  EXPECT_EQ(off_node(base + kUnitSize, fast), 0u);
  for (size_t i = 0; i < 2 * kUnitSize; i += 4096) ASSERT_EQ(base[i], 5);
  heap_munmap(base, 2 * kUnitSize);
}

// A fast node without room (its available memory at what its zones keep,
// given by the test) gets no new unit: the policy's DRAM units go to PMem
// rather than to the kernel's fallback, and the node says how far short it
// is.  With room again, the policy places on DRAM as before.
TEST_F(NodeTier, UnitsPlacedWhileTheFastNodeHasNoRoomGoToPmem) {
  // Enough units that the ratio (1:4 by default, runs of a tier within 4
  // units of it) places several on DRAM.
  constexpr size_t kUnits = 40;
  auto dram_units = [](char *base) {
    size_t n = 0;
    for (size_t u = 0; u < kUnits; ++u) n += heap_tier_of(base + u * kUnitSize) == kTierDram;
    return n;
  };
  node_tier_test_available(0);
  char *full = map_units(kUnits);
  ASSERT_NE(full, nullptr);
  memset(full, 7, kUnits * kUnitSize);
  const size_t dram_when_full = dram_units(full);
  const size_t short_units = heap_tier_short_units(kTierDram);
  node_tier_test_available(-1);
  char *roomy = map_units(kUnits);
  ASSERT_NE(roomy, nullptr);
  memset(roomy, 8, kUnits * kUnitSize);
  EXPECT_EQ(dram_when_full, 0u);
  EXPECT_GT(short_units, 0u) << "a node at 0 bytes is short of what its zones keep";
  EXPECT_GT(dram_units(roomy), 0u) << "the ratio's DRAM units (MMTIER_DRAM_RATIO) placed on DRAM with room";
  EXPECT_EQ(heap_tier_short_units(kTierDram), 0u) << "a node with room is not short";
  for (size_t i = 0; i < kUnits * kUnitSize; i += 4096) ASSERT_EQ(full[i], 7);
  heap_munmap(full, kUnits * kUnitSize);
  heap_munmap(roomy, kUnits * kUnitSize);
}

// The kernel's part of a move between node tiers runs without the heap
// lock (lib/heap/node_moves.cc): what the program does meanwhile neither
// waits for it nor confuses it.  heap_node_move_hook runs in the middle of
// the move, on the moving thread.
struct beside_move {
  char *unit = nullptr;  // the unit whose pages move
  int to = -1;
  size_t calls = 0;
  bool counted_there = false;  // the unit was counted on its new tier during the move
  bool finished = false;       // the heap calls of another thread finished during the move
  long again = 0;              // a second move of the unit asked during the move
};
beside_move g_beside;

// Whether the hook was called for the test's unit (the background mover
// may move others meanwhile).
bool the_moving_unit(size_t idx) { return idx == unit_index_of(g_beside.unit); }

// Runs fn on another thread and says whether it finished within 30 s: it
// cannot while the moving thread holds the heap lock (then it finishes
// once the move is over, detached).
bool finishes_beside(void *(*fn)(void *)) {
  pthread_t th;
  if (pthread_create(&th, nullptr, fn, nullptr) != 0) return false;
  timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 30;
  if (pthread_timedjoin_np(th, nullptr, &until) == 0) return true;
  pthread_detach(th);
  return false;
}

char *NodeTier::unit_to_move(unsigned char fill) {
  char *base = map_units(1);
  if (!base) return nullptr;
  memset(base, fill, kUnitSize);
  g_beside = beside_move{base, 1 - heap_tier_of(base)};
  return base;
}

void *map_write_unmap(void *) {
  void *p = nullptr;
  if (heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p) != 0) return nullptr;
  memset(p, 7, kUnitSize);
  heap_munmap(p, kUnitSize);
  return nullptr;
}

void *unmap_the_moving_unit(void *) {
  heap_munmap(g_beside.unit, kUnitSize);
  return nullptr;
}

TEST_F(NodeTier, TheProgramsHeapCallsGoOnWhileAUnitsPagesMove) {
  char *base = unit_to_move(9);
  ASSERT_NE(base, nullptr);
  heap_node_move_hook([](size_t idx) {
    if (!the_moving_unit(idx)) return;
    ++g_beside.calls;
    g_beside.counted_there = heap_tier_of(g_beside.unit) == g_beside.to;
    g_beside.finished = finishes_beside(map_write_unmap);
    g_beside.again = heap_migrate(idx, 1 - g_beside.to);
  });
  const long r = heap_migrate(unit_index_of(base), g_beside.to);
  heap_node_move_hook(nullptr);
  EXPECT_EQ(r, static_cast<long>(kUnitSize));
  EXPECT_EQ(g_beside.calls, 1u);
  EXPECT_TRUE(g_beside.counted_there) << "counted on its new tier from the move's start";
  EXPECT_TRUE(g_beside.finished) << "another thread's mmap, write and munmap waited for the move";
  EXPECT_EQ(g_beside.again, -EBUSY) << "a second move of a unit whose pages move";
  EXPECT_EQ(heap_tier_of(base), g_beside.to);
  EXPECT_EQ(off_node(base, g_beside.to == kTierPmem ? slow : fast), 0u);
  for (size_t i = 0; i < kUnitSize; i += 512) ASSERT_EQ(base[i], 9);
  heap_munmap(base, kUnitSize);
}

TEST_F(NodeTier, AUnitReleasedWhileItsPagesMoveIsCountedNowhere) {
  heap_counters before;
  heap_counters_get(&before);
  char *base = unit_to_move(4);
  ASSERT_NE(base, nullptr);
  heap_node_move_hook([](size_t idx) {
    if (the_moving_unit(idx)) g_beside.finished = finishes_beside(unmap_the_moving_unit);
  });
  const long r = heap_migrate(unit_index_of(base), g_beside.to);
  heap_node_move_hook(nullptr);
  EXPECT_TRUE(g_beside.finished);
  EXPECT_EQ(r, -EBUSY) << "the move of a unit released meanwhile is void";
  EXPECT_LT(heap_tier_of(base), 0) << "the released unit stays released";
  heap_counters after;
  heap_counters_get(&after);
  EXPECT_EQ(after.units[kTierDram], before.units[kTierDram]);
  EXPECT_EQ(after.units[kTierPmem], before.units[kTierPmem]);
  // Its addresses serve again, counted once.
  char *again = map_units(1);
  ASSERT_NE(again, nullptr);
  memset(again, 6, kUnitSize);
  heap_counters_get(&after);
  EXPECT_EQ(after.units[kTierDram] + after.units[kTierPmem], before.units[kTierDram] + before.units[kTierPmem] + 1);
  heap_munmap(again, kUnitSize);
}

// A fork while a unit's pages move: the child has no move under way, and
// its copy of the unit moves as any other.
TEST_F(NodeTier, AForkDuringAUnitsMoveLeavesTheChildsUnitMovable) {
  char *base = unit_to_move(8);
  ASSERT_NE(base, nullptr);
  heap_node_move_hook([](size_t idx) {
    if (!the_moving_unit(idx)) return;
    const pid_t pid = fork();
    if (pid == 0) {
      const bool movable = heap_unit_movable(idx);
      const long back = heap_migrate(idx, 1 - g_beside.to);
      _exit(movable && back == static_cast<long>(kUnitSize) && g_beside.unit[kUnitSize - 1] == 8 ? 0 : 1);
    }
    int status = -1;
    g_beside.finished = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  });
  const long r = heap_migrate(unit_index_of(base), g_beside.to);
  heap_node_move_hook(nullptr);
  EXPECT_EQ(r, static_cast<long>(kUnitSize));
  EXPECT_TRUE(g_beside.finished) << "the child's unit was not movable, or its move failed";
  EXPECT_EQ(heap_tier_of(base), g_beside.to);
  for (size_t i = 0; i < kUnitSize; i += 512) ASSERT_EQ(base[i], 8);
  heap_munmap(base, kUnitSize);
}

// Pages first touched while the unit's other pages move are made on its new
// tier's node: the range takes the new policy before the kernel moves.
TEST_F(NodeTier, PagesFirstTouchedWhileAUnitsPagesMoveAreMadeOnItsNewTier) {
  char *base = map_units(1);
  ASSERT_NE(base, nullptr);
  memset(base, 2, kUnitSize / 2);
  g_beside = beside_move{base, 1 - heap_tier_of(base)};
  heap_node_move_hook([](size_t idx) {
    if (!the_moving_unit(idx)) return;
    memset(g_beside.unit + kUnitSize / 2, 3, kUnitSize / 2);
    ++g_beside.calls;
  });
  const long r = heap_migrate(unit_index_of(base), g_beside.to);
  heap_node_move_hook(nullptr);
  EXPECT_EQ(r, static_cast<long>(kUnitSize));
  EXPECT_EQ(g_beside.calls, 1u);
  EXPECT_EQ(heap_tier_of(base), g_beside.to);
  EXPECT_EQ(off_node(base, g_beside.to == kTierPmem ? slow : fast), 0u);
  for (size_t i = 0; i < kUnitSize; i += 512) ASSERT_EQ(base[i], i < kUnitSize / 2 ? 2 : 3) << i;
  heap_munmap(base, kUnitSize);
}

// The figures a move into a node looks at first: the node's free memory
// (its sysfs meminfo) and what its zones keep (/proc/zoneinfo),
// read from texts of the kernel's form.
TEST(NodeRoom, MemFreeIsReadFromANodesMeminfo) {
  const char *text =
      "Node 1 MemTotal:        3045860 kB\n"
      "Node 1 MemFree:         2837364 kB\n"
      "Node 1 MemUsed:          208496 kB\n";
  EXPECT_EQ(node_meminfo_available(text), 2837364LL * 1024);
  EXPECT_EQ(node_meminfo_available("Node 0 MemTotal: 5 kB\n"), -1);
  EXPECT_EQ(node_meminfo_available("Node 0 MemFree: x kB\n"), -1);
}

// A node full of page cache has room: the clean, unmapped part of its
// inactive file pages, which the kernel reclaims for a page asked of it.
TEST(NodeRoom, CleanInactivePageCacheCountsAsRoom) {
  const char *text =
      "Node 0 MemFree:           40000 kB\n"
      "Node 0 Active(file):    9000000 kB\n"
      "Node 0 Inactive(file):  5000000 kB\n"
      "Node 0 Dirty:             30000 kB\n"
      "Node 0 Writeback:         10000 kB\n"
      "Node 0 Mapped:           200000 kB\n";
  EXPECT_EQ(node_meminfo_available(text), (40000LL + 5000000 - 30000 - 10000 - 200000) * 1024);
  // Dirtier than its inactive list: nothing beyond MemFree.
  EXPECT_EQ(node_meminfo_available("Node 0 MemFree: 100 kB\nNode 0 Inactive(file): 50 kB\nNode 0 Dirty: 80 kB\n"),
            100LL * 1024);
}

TEST(NodeRoom, WatermarksAndProtectionAreSummedOverTheWantedNodesZones) {
  const char *lines[] = {
      "Node 0, zone      DMA",
      "  per-node stats",
      "      nr_inactive_anon 10",
      "  pages free     3840",
      "        boost    0",
      "        min      33",
      "        low      41",
      "        high     49",
      "        spanned  4095",
      "        protection: (0, 2889, 2889, 2889, 2889)",
      "  pagesets",
      "    cpu: 0",
      "              count: 0",
      "              high:  0",
      "Node 0, zone    DMA32",
      "  pages free     700000",
      "        min      5000",
      "        low      6250",
      "        high     7500",
      "        protection: (0, 0, 0, 0, 0)",
      "    cpu: 0",
      "              high:  378",
      "Node 1, zone   Normal",
      "  pages free     760000",
      "        min      4000",
      "        low      5000",
      "        high     6000",
  };
  static bool want[kMaxNodes];
  want[0] = true;
  int node = -1;
  uint64_t high = 0;
  for (const char *l : lines) zoneinfo_line(l, strlen(l), &node, &high, want);
  // Node 0's two zones (the DMA zone's watermark and its protection for
  // allocations that could use DMA32); node 1 not wanted; no per-CPU "high:".
  EXPECT_EQ(high, 49u + 2889u + 7500u);
  want[0] = false;
  want[1] = true;
  node = -1;
  high = 0;
  for (const char *l : lines) zoneinfo_line(l, strlen(l), &node, &high, want);
  EXPECT_EQ(high, 6000u);
}

}  // namespace
}  // namespace mmtier::detail
