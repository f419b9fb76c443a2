// Migration of units between tiers (heap_migrate, lib/heap/faults.*): every
// byte survives both directions; and under stress, with threads writing
// checksummed records and moving data through read()/write() system calls on
// buffers inside units that are forced back and forth, no write is lost, no
// record is seen torn, and no system call fails.
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap_test_util.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

using namespace test;

// Sizes scale down under ThreadSanitizer (CI runs this test there too).
#if defined(__SANITIZE_THREAD__)
constexpr int kRounds = 6;
constexpr uint64_t kWriterOps = 20000;
#else
constexpr int kRounds = 40;
constexpr uint64_t kWriterOps = 400000;
#endif

class Migrate : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(runtime_start(), kReady);
    if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
    ASSERT_TRUE(faults_can_demote()) << "kernel lacks userfaultfd write-protect";
    use_up_startup_units();
  }
  // n whole units of policy-placed, read/write managed memory.
  char *map_units(size_t n) {
    void *p = nullptr;
    long r = heap_mmap(nullptr, n * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p);
    EXPECT_EQ(r, 0);
    return static_cast<char *>(p);
  }
};

uint64_t pattern(uint64_t word) { return word * 0x9E3779B97F4A7C15ull ^ 0x5bd1e995; }

// One unit of managed memory filled with pattern() (by byte offset), on
// DRAM; its index into *idx.  nullptr if it could not be had.
char *patterned_dram_unit(size_t *idx) {
  void *p = nullptr;
  if (heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p) != 0 || !p) return nullptr;
  char *base = static_cast<char *>(p);
  for (size_t i = 0; i < kUnitSize; i += 8) *reinterpret_cast<uint64_t *>(base + i) = pattern(i);
  *idx = unit_index_of(base);
  if (heap_tier_of(base) != kTierDram && heap_migrate(*idx, kTierDram) < 0) return nullptr;
  return base;
}

TEST_F(Migrate, EveryByteSurvivesBothDirections) {
  constexpr size_t kUnits = 4;
  char *base = map_units(kUnits);
  ASSERT_NE(base, nullptr);
  auto *w = reinterpret_cast<uint64_t *>(base);
  const size_t words = kUnits * kUnitSize / 8;
  // Leave some pages never touched: they must read back as zero.
  for (size_t i = 0; i < words; ++i)
    if ((i / 512) % 7 != 3) w[i] = pattern(i);
  for (int round = 0; round < 3; ++round) {
    for (size_t u = 0; u < kUnits; ++u) {
      const size_t idx = unit_index_of(base + u * kUnitSize);
      ASSERT_TRUE(heap_unit_movable(idx));
      const int from = heap_tier_of(base + u * kUnitSize);
      ASSERT_GE(from, 0);
      const int to = 1 - from;
      ASSERT_GE(heap_migrate(idx, to), 0) << "unit " << u << " to tier " << to;
      EXPECT_EQ(heap_tier_of(base + u * kUnitSize), to);
      EXPECT_EQ(heap_tier_of(base + u * kUnitSize + kUnitSize - 1), to);
    }
    size_t bad = 0;
    for (size_t i = 0; i < words; ++i) {
      const uint64_t want = (i / 512) % 7 != 3 ? pattern(i) : 0;
      bad += w[i] != want;
    }
    ASSERT_EQ(bad, 0u) << "round " << round;
  }
  heap_munmap(base, kUnits * kUnitSize);
}

// A live run the kernel holds in several mappings (advice on part of it
// splits it) is write-protected and demoted whole: before Linux 6.3 one
// write-protect call covers one mapping only (-ENOENT past its end).
TEST_F(Migrate, DemotesARunTheKernelHoldsInSeveralMappings) {
  size_t idx = 0;
  char *base = patterned_dram_unit(&idx);
  ASSERT_NE(base, nullptr);
  ASSERT_EQ(heap_madvise(base + kUnitSize / 2, 4096, MADV_RANDOM), 0);
  ASSERT_EQ(heap_madvise(base + kUnitSize / 4, 8192, MADV_SEQUENTIAL), 0);
  ASSERT_TRUE(heap_unit_movable(idx));
  EXPECT_EQ(heap_migrate(idx, kTierPmem), static_cast<long>(kUnitSize));
  EXPECT_EQ(heap_tier_of(base), kTierPmem);
  size_t bad = 0;
  for (size_t i = 0; i < kUnitSize; i += 8) bad += *reinterpret_cast<uint64_t *>(base + i) != pattern(i);
  EXPECT_EQ(bad, 0u);
  heap_munmap(base, kUnitSize);
}

// A page that goes away behind mmtier's back while a unit is demoted (a
// raw madvise, after the demotion read which pages hold data): the copy
// reads it as zero and the demotion completes.  Before Linux 6.4 that read
// is a missing-page fault inside the hold window (linux61.Migrate.*): the
// fault service answers the mover's own fault instead of holding it, which
// would wait for itself.
char *g_dropped = nullptr;
int g_drops = 0;
void drop_page(void *) {
  ++g_drops;
  syscall(SYS_madvise, g_dropped, 4096, MADV_DONTNEED);
}

TEST_F(Migrate, APageDroppedBehindMmtierDuringADemotionReadsAsZero) {
  size_t idx = 0;
  char *base = patterned_dram_unit(&idx);
  ASSERT_NE(base, nullptr);
  ASSERT_TRUE(heap_unit_movable(idx));
  constexpr size_t kDroppedPage = 5;
  g_dropped = base + kDroppedPage * 4096;
  g_drops = 0;
  g_demote_copy_hook = drop_page;
  const long moved = heap_migrate(idx, kTierPmem);
  g_demote_copy_hook = nullptr;
  EXPECT_EQ(moved, static_cast<long>(kUnitSize));
  EXPECT_EQ(heap_tier_of(base), kTierPmem);
  // A NUMA-node tier moves the pages in place (the kernel's migration):
  // nothing is copied, nothing dropped.
  EXPECT_EQ(g_drops, heap_slow_node() >= 0 ? 0 : 1);
  size_t bad = 0;
  for (size_t i = 0; i < kUnitSize; i += 8) {
    const uint64_t want = i / 4096 == kDroppedPage && g_drops ? 0 : pattern(i);
    bad += *reinterpret_cast<uint64_t *>(base + i) != want;
  }
  EXPECT_EQ(bad, 0u) << "the dropped page reads zero, every other keeps its data";
  heap_munmap(base, kUnitSize);
}

// A demoted unit takes the slot after its neighbour's when it is free, so
// that their mappings merge: moving every unit up and back down leaves a
// few mappings, not one per unit (vm.max_map_count).
TEST_F(Migrate, DemotedUnitsMergeWithTheirNeighboursMappings) {
  constexpr size_t kUnits = 16;
  char *base = map_units(kUnits);
  ASSERT_NE(base, nullptr);
  for (size_t i = 0; i < kUnits * kUnitSize; i += 4096) base[i] = static_cast<char>(i >> 12);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(base), hi = lo + kUnits * kUnitSize;
  auto move_all = [&](int to) {
    for (size_t u = 0; u < kUnits; ++u) {
      if (heap_tier_of(base + u * kUnitSize) != to) ASSERT_GE(heap_migrate(unit_index_of(base + u * kUnitSize), to), 0);
    }
  };
  move_all(kTierPmem);
  move_all(kTierDram);
  // Back down in the same order: released slots come out last in first
  // out, which alone would hand them out backwards, none after its
  // neighbour's.
  move_all(kTierPmem);
  const size_t after = mappings_in(lo, hi);
  size_t bad = 0;
  for (size_t i = 0; i < kUnits * kUnitSize; i += 4096) bad += base[i] != static_cast<char>(i >> 12);
  EXPECT_EQ(bad, 0u);
  EXPECT_LE(after, 3u) << "16 units on PMem after a round trip";
  heap_munmap(base, kUnits * kUnitSize);
}

TEST_F(Migrate, ResidentBytesFollowTheUnit) {
  char *base = map_units(1);
  memset(base, 1, kUnitSize);
  const size_t idx = unit_index_of(base);
  const int from = heap_tier_of(base);
  const size_t before_to = heap_resident_bytes(1 - from);
  ASSERT_EQ(heap_migrate(idx, 1 - from), static_cast<long>(kUnitSize));
  EXPECT_GE(heap_resident_bytes(1 - from), before_to + kUnitSize / 2);
  heap_munmap(base, kUnitSize);
}

TEST_F(Migrate, ConcurrentWritersAndSystemCallsLoseNothing) {
  constexpr size_t kUnits = 4;
  constexpr int kWriters = 3;
  char *base = map_units(kUnits);
  ASSERT_NE(base, nullptr);
  // Records of each writer are spread over every unit (interleaved pages);
  // the last 64 pages of the last unit are the system-call buffers.
  record_load load(base, kUnits * kPagesPerUnit, kWriters, kWriterOps, 200);
  // The mover: every unit, to the other tier and back, kRounds times.
  size_t moves = 0, failures = 0;
  for (int round = 0; round < kRounds; ++round) {
    for (size_t u = 0; u < kUnits; ++u) {
      const size_t idx = unit_index_of(base + u * kUnitSize);
      const int to = 1 - heap_tier_of(base + u * kUnitSize);
      // round * 100 + unit * 10 + the tier it goes to, as the losses say.
      load.phase.store(static_cast<uint64_t>(round) * 100 + u * 10 + static_cast<uint64_t>(to));
      if (heap_migrate(idx, to) >= 0) ++moves;
      else ++failures;
    }
  }
  load.phase.store(static_cast<uint64_t>(kRounds) * 100);
  load.stop();
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(moves, kRounds * kUnits);
  EXPECT_EQ(load.torn.load(), 0u);
  EXPECT_EQ(load.lost.load(), 0u) << load.losses();
  EXPECT_EQ(load.syscall_errors.load(), 0u);
  EXPECT_EQ(load.io_mismatch.load(), 0u);
  EXPECT_EQ(heap_check_mismatches(), 0u) << "a demotion wrote into PMem what the unit did not hold";
  fault_counters fc;
  faults_counters_get(&fc);
  RecordProperty("postcopy_faults", static_cast<int>(fc.postcopy_faults));
  RecordProperty("wp_faults", static_cast<int>(fc.wp_faults));
  heap_munmap(base, kUnits * kUnitSize);
}

// A promotion's post-copy answers copy from its view of the unit's slot,
// which it unmaps when it ends: it must wait for an answer still copying
// from there (a copy after the unmap reads whatever is mapped at that
// address by then).  The fault service is held inside such an answer (test
// hook) until the promotion returns, for at most a second: the promotion
// must not return first.  Half a unit, so that it is filled page by page
// in the post-copy window (a whole unit moved in as one huge page holds
// its faults instead).
std::atomic<uintptr_t> g_pc_unit{0};
std::atomic<bool> g_pc_answer_seen{false}, g_pc_promoted{false}, g_pc_overtaken{false}, g_pc_answer_done{false};
std::thread g_pc_toucher;
constexpr size_t kPcPage = 200;

void postcopy_answer_hook(int where, uintptr_t page) {
  if (where != 2 || page - g_pc_unit.load() >= kUnitSize || g_pc_answer_seen.exchange(true)) return;
  for (int i = 0; i < 1000 && !g_pc_promoted.load(); ++i) usleep(1000);
  g_pc_overtaken = g_pc_promoted.load();
  g_pc_answer_done = true;
}

// In the promotion, its window open: a read of a page the fill has not
// reached faults to the service, which is held in its answer.
void touch_in_window(void *unit) {
  const char *u = static_cast<const char *>(unit);
  g_pc_toucher = std::thread([u] {
    const uint64_t v = *reinterpret_cast<const volatile uint64_t *>(u + kPcPage * kPageSize);
    if (v != pattern(kPcPage * kPageSize)) ADD_FAILURE() << "the page read during the promotion holds " << v;
  });
  for (int i = 0; i < 5000 && !g_pc_answer_seen.load(); ++i) usleep(1000);
}

TEST_F(Migrate, APromotionWaitsForAnAnswerStillCopyingFromItsViewOfTheSlot) {
  if (heap_slow_node() >= 0) GTEST_SKIP() << "node tiers: the kernel moves the pages in place, no post-copy window";
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize / 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
  char *base = static_cast<char *>(p);
  for (size_t i = 0; i < kUnitSize / 2; i += 8) *reinterpret_cast<uint64_t *>(base + i) = pattern(i);
  const size_t idx = unit_index_of(base);
  ASSERT_TRUE(heap_unit_movable(idx));
  if (heap_tier_of(base) != kTierPmem) ASSERT_GE(heap_migrate(idx, kTierPmem), 0);
  g_pc_unit = reinterpret_cast<uintptr_t>(base);
  g_pc_answer_seen = g_pc_promoted = g_pc_overtaken = g_pc_answer_done = false;
  g_faults_test_hook = postcopy_answer_hook;
  g_promote_fill_hook = touch_in_window;
  const long moved = heap_migrate(idx, kTierDram);
  g_pc_promoted = true;
  g_promote_fill_hook = nullptr;
  if (g_pc_toucher.joinable()) g_pc_toucher.join();
  for (int i = 0; i < 5000 && g_pc_answer_seen.load() && !g_pc_answer_done.load(); ++i) usleep(1000);
  g_faults_test_hook = nullptr;
  EXPECT_EQ(moved, static_cast<long>(kUnitSize / 2));
  ASSERT_TRUE(g_pc_answer_seen.load()) << "the read during the promotion was not answered from the slot";
  EXPECT_FALSE(g_pc_overtaken.load()) << "the promotion ended while an answer was copying from its view";
  size_t bad = 0;
  for (size_t i = 0; i < kUnitSize / 2; i += 8) bad += *reinterpret_cast<uint64_t *>(base + i) != pattern(i);
  EXPECT_EQ(bad, 0u);
  heap_munmap(base, kUnitSize / 2);
}

// MMTIER_CHECK_MOVES=1 (these tests run only with it: tests/CMakeLists.txt):
// a demotion reads back what it wrote into PMem and compares it with the
// unit's pages.  A page dropped behind mmtier's back after the copy (a raw
// madvise) now reads as zero in the unit and not in the slot: said and
// counted, and the unit, once on PMem, holds what was copied.
class MoveCheck : public Migrate {};

char *g_drop_after_copy = nullptr;
void drop_after_copy(void *) { syscall(SYS_madvise, g_drop_after_copy, 4096, MADV_DONTNEED); }

TEST_F(MoveCheck, ADemotionSaysWhenWhatItWroteDiffersFromTheUnit) {
  size_t idx = 0;
  char *base = patterned_dram_unit(&idx);
  ASSERT_NE(base, nullptr);
  ASSERT_TRUE(heap_unit_movable(idx));
  const size_t before = heap_check_mismatches();
  g_drop_after_copy = base + 9 * kPageSize;
  g_demote_copied_hook = drop_after_copy;
  const long moved = heap_migrate(idx, kTierPmem);
  g_demote_copied_hook = nullptr;
  EXPECT_EQ(moved, static_cast<long>(kUnitSize));
  EXPECT_EQ(heap_check_mismatches(), before + 1) << "MMTIER_CHECK_MOVES is not 1, or the check missed the page";
  size_t bad = 0;
  for (size_t i = 0; i < kUnitSize; i += 8) bad += *reinterpret_cast<uint64_t *>(base + i) != pattern(i);
  EXPECT_EQ(bad, 0u);
  // An undisturbed demotion finds nothing.
  ASSERT_GE(heap_migrate(idx, kTierDram), 0);
  ASSERT_GE(heap_migrate(idx, kTierPmem), 0);
  EXPECT_EQ(heap_check_mismatches(), before + 1);
  heap_munmap(base, kUnitSize);
}

// Writes that are the first touch of a page (never written, or dropped)
// while its unit is demoted: before Linux 6.4 write-protect cannot cover a
// page that does not exist, so these are the writes a demotion would lose
// if only write-protect held them (run with MMTIER_HIDE_FEATURES too).
TEST_F(Migrate, FirstTouchesOfMissingPagesDuringMovesAreKept) {
  constexpr size_t kWriters = 2;  // writer t owns unit t
  char *base = map_units(kWriters);
  ASSERT_NE(base, nullptr);
  // What each page's checked word should hold: 0 after a drop.
  std::vector<uint64_t> last(kWriters * kPagesPerUnit, 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> first_touches{0}, lost{0};
  auto word = [base](size_t t, size_t pg) {
    return reinterpret_cast<uint64_t *>(base + t * kUnitSize + pg * 4096 + (pg % 500) * 8);
  };
  std::vector<std::thread> writers;
  for (size_t t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      char *unit = base + t * kUnitSize;
      for (uint64_t pass = 1; !stop.load(std::memory_order_relaxed); ++pass) {
        // Every page of the unit missing, then written one by one: each
        // write is a first touch, many of them while the unit moves.
        heap_madvise(unit, kUnitSize, MADV_DONTNEED);
        for (size_t pg = 0; pg < kPagesPerUnit; ++pg) last[t * kPagesPerUnit + pg] = 0;
        for (size_t pg = 0; pg < kPagesPerUnit && !stop.load(std::memory_order_relaxed); ++pg) {
          const uint64_t v = (pass << 20) | pg;
          __atomic_store_n(word(t, pg), v, __ATOMIC_RELAXED);
          last[t * kPagesPerUnit + pg] = v;
          first_touches.fetch_add(1, std::memory_order_relaxed);
        }
        // Checked before the next drop hides a loss.
        for (size_t pg = 0; pg < kPagesPerUnit; ++pg)
          if (__atomic_load_n(word(t, pg), __ATOMIC_RELAXED) != last[t * kPagesPerUnit + pg])
            lost.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // Moves go on until the writers made many first touches.
  size_t moves = 0, failures = 0;
  for (int round = 0; round < 50 * kRounds && (round < kRounds || first_touches.load() < 16 * kPagesPerUnit);
       ++round) {
    for (size_t u = 0; u < kWriters; ++u) {
      const int to = 1 - heap_tier_of(base + u * kUnitSize);
      if (heap_migrate(unit_index_of(base + u * kUnitSize), to) >= 0) ++moves;
      else ++failures;
    }
  }
  stop.store(true);
  for (auto &w : writers) w.join();
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(lost.load(), 0u) << "writes lost in " << moves << " moves and " << first_touches.load()
                            << " first touches";
  heap_munmap(base, kWriters * kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail

namespace mmtier::detail {
namespace {

// After fork, parent and child each move their own view of a unit: the
// child gets a fault service of its own (the parent's registrations and
// thread do not survive), and neither sees the other's writes.
TEST_F(Migrate, ParentAndChildBothMoveUnitsAfterFork) {
  char *base = map_units(2);
  ASSERT_NE(base, nullptr);
  auto *w = reinterpret_cast<uint64_t *>(base);
  const size_t words = 2 * kUnitSize / 8;
  for (size_t i = 0; i < words; ++i) w[i] = pattern(i);
  // Two DRAM units: anonymous memory, which fork shares copy-on-write and
  // which both processes can move afterwards.
  for (size_t u = 0; u < 2; ++u)
    if (heap_tier_of(base + u * kUnitSize) != kTierDram)
      ASSERT_GE(heap_migrate(unit_index_of(base + u * kUnitSize), kTierDram), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int bad = 0;
    for (size_t u = 0; u < 2; ++u) {
      const size_t idx = unit_index_of(base + u * kUnitSize);
      if (heap_migrate(idx, kTierPmem) < 0 || heap_tier_of(base + u * kUnitSize) != kTierPmem) bad |= 1;
    }
    for (size_t i = 0; i < words; ++i) bad |= (w[i] != pattern(i)) << 1;
    for (size_t i = 0; i < words; i += 512) w[i] = 7;  // the parent must not see these
    if (heap_migrate(unit_index_of(base), kTierDram) < 0) bad |= 4;
    for (size_t i = 0; i < words; i += 512) bad |= (w[i] != 7) << 3;
    _exit(bad);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  const size_t idx = unit_index_of(base + kUnitSize);
  ASSERT_GE(heap_migrate(idx, kTierPmem), 0);
  EXPECT_EQ(heap_tier_of(base + kUnitSize), kTierPmem);
  size_t bad = 0;
  for (size_t i = 0; i < words; ++i) bad += w[i] != pattern(i);
  EXPECT_EQ(bad, 0u) << "the parent's bytes changed";
  heap_munmap(base, 2 * kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
