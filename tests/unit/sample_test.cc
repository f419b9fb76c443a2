// Access sampling (lib/heap/sample.*): a window sees reads (of DRAM pages
// with UFFDIO_MOVE only), writes and kernel accesses inside system calls
// on both tiers, never changes a byte,
// and a heap operation, or fork, during a window never brings back stale
// data or shows a hidden page as zeros.
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/heap_internal.h"
#include "heap_test_util.h"
#include "heap/sample.h"
#include "platform/pagemap.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

using test::thread_blocked;
using test::pagemap_reader;
using test::use_up_startup_units;

uint32_t unit_of(const void *p) {
  return static_cast<uint32_t>((reinterpret_cast<uintptr_t>(p) - g_heap.base) >> kUnitShift);
}

class Sample : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(runtime_start(), kReady);
    if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
    ASSERT_TRUE(faults_can_sample()) << "kernel lacks userfaultfd write-protect";
    use_up_startup_units();
    // A unit sampled whole (its DRAM unit, mapped by one huge page, or any
    // unit before 6.8) counts only an access the fault service saw soon
    // enough (SampleWhole below); here any access in the window counts, so
    // that a result does not depend on when the service got to run.
    heap_sample_whole_any_touch(true);
    void *p = nullptr;
    ASSERT_EQ(heap_mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
    base = static_cast<unsigned char *>(p);
    for (size_t i = 0; i < 2 * kUnitSize; ++i) base[i] = static_cast<unsigned char>(i * 31 + 7);
    dram = base;
    pmem = base + kUnitSize;
    for (auto [at, tier] : {std::pair{dram, kTierDram}, std::pair{pmem, kTierPmem}}) {
      if (heap_tier_of(at) != tier) ASSERT_GE(heap_migrate(unit_of(at), tier), 0);
      ASSERT_EQ(heap_tier_of(at), tier);
    }
    units[0] = unit_of(dram);
    units[1] = unit_of(pmem);
    if (units[0] > units[1]) std::swap(units[0], units[1]);
  }
  void TearDown() override {
    heap_sample_whole_any_touch(false);
    if (base) heap_munmap(base, 2 * kUnitSize);
  }
  size_t intact() const {
    size_t ok = 0;
    for (size_t i = 0; i < 2 * kUnitSize; ++i) ok += base[i] == static_cast<unsigned char>(i * 31 + 7);
    return ok;
  }
  // Ends the window; result of the unit holding p.
  static sample_result result_for(const sample_result *r, size_t n, const void *p) {
    for (size_t i = 0; i < n; ++i)
      if (r[i].unit == unit_of(p)) return r[i];
    ADD_FAILURE() << "no sample for " << p;
    return {};
  }
  unsigned char *base = nullptr, *dram = nullptr, *pmem = nullptr;
  uint32_t units[2];
};

volatile unsigned char g_sink;
constexpr uint8_t kOne[2] = {1, 1};

TEST_F(Sample, ReadsOfOneTierShowOnlyThere) {
  ASSERT_EQ(heap_sample_begin(units, kOne, 2, 42), 2u);
  for (size_t pg = 0; pg < kPagesPerUnit; ++pg) g_sink = dram[pg * kPageSize + 5];
  sample_result r[4];
  size_t n = heap_sample_end(r, 4);
  ASSERT_EQ(n, 2u);
  // Before 6.8 (no UFFDIO_MOVE) a DRAM page is sampled by write-protect in
  // place: a read is not seen.
  EXPECT_EQ(result_for(r, n, dram).touched, faults_can_move());
  EXPECT_FALSE(result_for(r, n, dram).written);
  EXPECT_FALSE(result_for(r, n, pmem).touched);

  ASSERT_EQ(heap_sample_begin(units, kOne, 2, 43), 2u);
  for (size_t pg = 0; pg < kPagesPerUnit; ++pg) g_sink = pmem[pg * kPageSize + 5];
  n = heap_sample_end(r, 4);
  EXPECT_FALSE(result_for(r, n, dram).touched);
  // A PMem page of a file is unmapped and seen on any access; one of a
  // NUMA node is anonymous memory, sampled as DRAM's is.
  EXPECT_EQ(result_for(r, n, pmem).touched, faults_can_move() || heap_slow_node() < 0);
  EXPECT_EQ(intact(), 2 * kUnitSize);
}

TEST_F(Sample, WritesAreSeenAndKept) {
  ASSERT_EQ(heap_sample_begin(units, kOne, 2, 7), 2u);
  // Stores without a load first (a sample records the first access), of
  // the value already there; volatile, or the compiler drops them.
  volatile unsigned char *d = dram, *p = pmem;
  for (size_t pg = 0; pg < kPagesPerUnit; ++pg) {
    const size_t i = pg * kPageSize + 9;
    d[i] = static_cast<unsigned char>(i * 31 + 7);
    p[i] = static_cast<unsigned char>((i + kUnitSize) * 31 + 7);
  }
  sample_result r[4];
  size_t n = heap_sample_end(r, 4);
  EXPECT_TRUE(result_for(r, n, dram).touched);
  EXPECT_TRUE(result_for(r, n, dram).written);
  EXPECT_TRUE(result_for(r, n, pmem).touched);
  EXPECT_EQ(intact(), 2 * kUnitSize);
}

TEST_F(Sample, KernelAccessesInsideSystemCallsAreSeenAndSucceed) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  for (unsigned char *at : {dram, pmem}) {
    ASSERT_EQ(heap_sample_begin(units, kOne, 2, 99), 2u);
    size_t failures = 0;
    std::vector<unsigned char> back(kPageSize);
    for (size_t pg = 0; pg < kPagesPerUnit; ++pg) {
      // The kernel reads the page (write to the pipe), then writes it back
      // into the same page (read from the pipe).
      unsigned char *page = at + pg * kPageSize;
      if (write(fds[1], page, kPageSize) != static_cast<ssize_t>(kPageSize)) ++failures;
      if (read(fds[0], page, kPageSize) != static_cast<ssize_t>(kPageSize)) ++failures;
    }
    sample_result r[4];
    size_t n = heap_sample_end(r, 4);
    EXPECT_EQ(failures, 0u);
    EXPECT_TRUE(result_for(r, n, at).touched) << (at == dram ? "dram" : "pmem");
  }
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(intact(), 2 * kUnitSize);
}

// A PMem sample of a span hides that many neighbouring pages, span-aligned,
// and shows an access to any one of them, none outside; a span asked for
// is rounded down to one the sampler takes.  On DAX a unit mapped by one
// huge page goes out whole whatever is asked (the kernel drops the whole
// mapping), and any access to it shows.
TEST_F(Sample, APmemSpanShowsAnAccessToAnyOfItsPages) {
  if (heap_slow_node() >= 0) GTEST_SKIP() << "the PMem tier is a NUMA node: its units are sampled as DRAM's";
  pagemap_reader pm;
  const uint32_t unit = unit_of(pmem);
  // The unit's pages hidden by a window opened with samples and span.
  const auto hidden = [&](uint8_t samples, uint32_t span, uint64_t seed, std::vector<size_t> *pages) {
    for (size_t pg = 0; pg < kPagesPerUnit; ++pg) g_sink = pmem[pg * kPageSize];
    if (heap_sample_begin(&unit, &samples, 1, seed, span) != samples) return false;
    std::vector<sys::page_info> info(kPagesPerUnit);
    if (!pm.info(reinterpret_cast<uintptr_t>(pmem), kPagesPerUnit, info.data())) return false;
    pages->clear();
    for (size_t pg = 0; pg < kPagesPerUnit; ++pg)
      if (!info[pg].present) pages->push_back(pg);
    return true;
  };
  // n pages hidden, or the whole unit of a huge DAX mapping.
  const auto whole = [&](const std::vector<size_t> &out, size_t n) {
    if (out.size() == kPagesPerUnit && n < kPagesPerUnit && pmem_tier().dax) return true;
    EXPECT_EQ(out.size(), n);
    return false;
  };
  std::vector<size_t> out;
  sample_result r[4];
  for (uint64_t w = 0; w < 6; ++w) {
    ASSERT_TRUE(hidden(1, kPmemSpanMax, 500 + w, &out));
    const bool all = whole(out, kPmemSpanMax);
    ASSERT_FALSE(out.empty());
    const size_t first = out.front();
    if (!all) {
      EXPECT_EQ(first % kPmemSpanMax, 0u) << "span-aligned";
      EXPECT_EQ(out.back(), first + kPmemSpanMax - 1) << "one run";
    }
    // Its last page, or the page after it (in the next unit's quarter).
    const bool inside = w % 2 == 0;
    g_sink = pmem[((inside ? first + kPmemSpanMax - 1 : (first + kPmemSpanMax) % kPagesPerUnit)) * kPageSize + 1];
    ASSERT_EQ(heap_sample_end(r, 4), 1u);
    EXPECT_EQ(r[0].sampled, 1u);
    EXPECT_EQ(r[0].touched, inside || all ? 1u : 0u) << "window " << w;
  }
  // Two samples: two distinct spans.
  ASSERT_TRUE(hidden(2, kPmemSpanMin, 600, &out));
  whole(out, 2 * kPmemSpanMin);
  ASSERT_EQ(heap_sample_end(r, 4), 1u);
  EXPECT_EQ(r[0].sampled, 2u);
  // Rounded down: 100 pages to 64, 10 to one page.
  ASSERT_TRUE(hidden(1, 100, 601, &out));
  whole(out, 64);
  ASSERT_EQ(heap_sample_end(r, 4), 1u);
  ASSERT_TRUE(hidden(1, 10, 602, &out));
  whole(out, 1);
  ASSERT_EQ(heap_sample_end(r, 4), 1u);
  EXPECT_EQ(intact(), 2 * kUnitSize);
}

// Only the heap's own pages go out: a span must be live throughout, and a
// unit whose chosen span is not is sampled a page at a time.
TEST_F(Sample, APmemSpanIsTakenOnlyWhereEveryPageIsLive) {
  if (heap_slow_node() >= 0) GTEST_SKIP() << "the PMem tier is a NUMA node: its units are sampled as DRAM's";
  if (pmem_tier().dax) GTEST_SKIP() << "a DAX unit mapped by one huge page goes out whole";
  // The PMem unit's pages from 192 on given back: of its spans of 128
  // pages the first is live throughout, the second in half, the others
  // not at all.
  constexpr size_t kHalf = 192;
  ASSERT_EQ(heap_munmap(pmem + kHalf * kPageSize, (kPagesPerUnit - kHalf) * kPageSize), 0);
  pagemap_reader pm;
  const uint32_t unit = unit_of(pmem);
  const uint8_t one = 1;
  size_t spans = 0, pages = 0;
  sample_result r[4];
  for (uint64_t seed = 0; seed < 24; ++seed) {
    for (size_t pg = 0; pg < kHalf; ++pg) g_sink = pmem[pg * kPageSize];
    // A page at a time, the page's 64 KiB block is chosen at random too and
    // may hold no live page: then nothing is hidden, as before spans.
    const size_t started = heap_sample_begin(&unit, &one, 1, 700 + seed, kPmemSpanMax);
    ASSERT_LE(started, 1u);
    std::vector<sys::page_info> info(kHalf);
    ASSERT_TRUE(pm.info(reinterpret_cast<uintptr_t>(pmem), kHalf, info.data()));
    std::vector<size_t> out;
    for (size_t pg = 0; pg < kHalf; ++pg)
      if (!info[pg].present) out.push_back(pg);
    ASSERT_EQ(heap_sample_end(r, 4), started);
    if (!started) {
      EXPECT_TRUE(out.empty());
    } else if (out.size() == kPmemSpanMax) {
      EXPECT_EQ(out.front(), 0u) << "only the first span is live throughout";
      ++spans;
    } else {
      EXPECT_EQ(out.size(), 1u) << "seed " << seed;
      ++pages;
    }
  }
  // Each of the four spans is chosen first about as often: both kinds seen.
  EXPECT_GT(spans, 0u);
  EXPECT_GT(pages, 0u);
  base = nullptr;  // partly given back: the test's own unmap below
  ASSERT_EQ(heap_munmap(pmem - kUnitSize, kUnitSize + kHalf * kPageSize), 0);
}

TEST_F(Sample, DiscardDuringAWindowReadsZeros) {
  ASSERT_EQ(heap_sample_begin(units, kOne, 2, 5), 2u);
  ASSERT_EQ(heap_madvise(dram, kUnitSize, MADV_DONTNEED), 0);
  sample_result r[4];
  heap_sample_end(r, 4);
  size_t nonzero = 0;
  for (size_t i = 0; i < kUnitSize; ++i) nonzero += dram[i] != 0;
  EXPECT_EQ(nonzero, 0u) << "a hidden page came back after the discard";
}

TEST_F(Sample, ForkDuringAWindowKeepsEveryByteInBoth) {
  ASSERT_EQ(heap_sample_begin(units, kOne, 2, 11), 2u);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(intact() == 2 * kUnitSize ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child saw changed bytes";
  sample_result r[4];
  heap_sample_end(r, 4);
  EXPECT_EQ(intact(), 2 * kUnitSize);
}

// Whether the mapping holding p carries MADV_HUGEPAGE ("hg" in its
// VmFlags in /proc/self/smaps).
bool advised_huge(const void *p) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return false;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  char line[512];
  bool inside = false, advised = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = a >= lo && a < hi;
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      advised = strstr(line, " hg") != nullptr;
      break;
    }
  }
  fclose(f);
  return advised;
}

// A DRAM unit mapped by one huge page is sampled whole, as one page-table
// entry: it stays one huge page through every window (a page of it hidden
// alone would split it for good, and a snapshot's fork would then copy 512
// entries for it), its bytes never change, a write at once is seen, no
// access is not, and one that comes late in the window (after 1/512th of
// it and the allowance for the fault's way to the service) counts as a
// page left untouched.  Writes, not reads: before 6.8 (linux61.) the unit
// is write-protected, not moved out.
unsigned char expect(size_t i) { return static_cast<unsigned char>(i * 13 + 1); }

// A DRAM unit mapped by one huge page, placed as if by the policy, its
// bytes expect(i); nullptr with *why when there is none (it is unmapped).
unsigned char *huge_dram_unit(const char **why) {
  // A unit forced onto DRAM (mapped whole, so advised for a huge page),
  // then let go as if the policy had placed it (a forced unit is never
  // sampled).
  void *p = nullptr;
  if (heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram) != 0) {
    *why = "no unit";
    return nullptr;
  }
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i);
  g_heap.units[unit_of(b)].forced1 = 0;
  g_heap.units[unit_of(b)].by_policy = 1;
  EXPECT_TRUE(advised_huge(b)) << "a DRAM unit mapped whole is advised for a huge page (MMTIER_HUGE_PAGES=units)";
  pagemap_reader pm;
  const int huge = pm.huge(reinterpret_cast<uintptr_t>(b), kUnitSize);
  if (huge == 1) return b;
  heap_munmap(p, kUnitSize);
  *why = huge < 0 ? "the kernel cannot tell huge pages (PAGEMAP_SCAN, 6.7)"
                  : "no huge page for the unit (THP off, or none free)";
  return nullptr;
}

size_t bytes_wrong(const unsigned char *b) {
  size_t wrong = 0;
  for (size_t i = 0; i < kUnitSize; ++i) wrong += b[i] != expect(i);
  return wrong;
}

TEST(SampleWhole, AHugeUnitStaysWholeAndOnlyEarlyAccessesCount) {
  ASSERT_EQ(runtime_start(), kReady);
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  use_up_startup_units();
  const char *why = nullptr;
  unsigned char *b = huge_dram_unit(&why);
  if (!b) GTEST_SKIP() << why;
  void *p = b;
  pagemap_reader pm;
  const uintptr_t at = reinterpret_cast<uintptr_t>(b);
  const uint32_t unit = unit_of(b);
  const uint8_t four = 4;  // sampled by pages, it would be 4 hidden
  volatile unsigned char *v = b;
  size_t seen = 0;
  for (int w = 0; w < 8; ++w) {
    ASSERT_EQ(heap_sample_begin(&unit, &four, 1, 100 + w), 1u) << "one sample for the whole unit";
    const size_t i = static_cast<size_t>(w) * kPageSize + 77;
    if (w % 2) v[i] = expect(i);
    sample_result r[2];
    ASSERT_EQ(heap_sample_end(r, 2), 1u);
    EXPECT_EQ(r[0].sampled, 1);
    if (w % 2 == 0) {
      EXPECT_EQ(r[0].touched, 0) << "window " << w << ": nothing touched the unit";
      EXPECT_EQ(r[0].idle, 1) << "window " << w << ": a unit nothing touched is not idle";
    } else {
      seen += r[0].touched;
      EXPECT_EQ(r[0].written, r[0].touched);
      EXPECT_EQ(r[0].idle, 0) << "window " << w << ": a unit written is idle";
    }
    EXPECT_EQ(pm.huge(at, kUnitSize), 1) << "window " << w << " split the huge page";
  }
  // Normally all four; on a loaded machine the fault service may now and
  // then take longer than the allowance to run.
  EXPECT_GE(seen, 2u) << "writes at once into the unit were not seen";
  // A write half way through the window: far past 1/512th of it and, at
  // 20 ms or twice the allowance measured as it opened (a loaded machine
  // stretches it), past the allowance too.
  ASSERT_EQ(heap_sample_begin(&unit, &four, 1, 9), 1u);
  const uint64_t late_us = std::max<uint64_t>(20000, 2 * heap_sample_whole_allowance() / 1000 + 1000);
  usleep(static_cast<useconds_t>(late_us));
  v[3 * kPageSize] = expect(3 * kPageSize);
  usleep(static_cast<useconds_t>(late_us));
  sample_result r[2];
  ASSERT_EQ(heap_sample_end(r, 2), 1u);
  EXPECT_EQ(r[0].touched, 0) << "a write " << late_us << " us into the window counted as a page touched";
  EXPECT_EQ(r[0].idle, 0) << "a unit written late in the window counted as idle";
  EXPECT_EQ(pm.huge(at, kUnitSize), 1);
  EXPECT_EQ(bytes_wrong(b), 0u);
  heap_munmap(p, kUnitSize);
}

// The fault service against a unit going out again.  Two threads touch a
// unit sampled whole; their faults are read together, the first brings the
// unit back, and the second, answered after it, is no sample's any more:
// the service fills such a page with zeros if it is missing (and finds it
// there: -EEXIST).  Held at that fill (test hook), it must not let the
// sampler end the window and move the unit out again until the fill is
// done: zeros filled into the hole would take a page's place, its data
// left at the side.  The hook waits for the sampler at most 300 ms, which
// it reaches at once unless it waits for the fill.
std::atomic<bool> g_hold_read{false};  // the service waits before its next read
std::atomic<bool> g_hold_answer{false};  // it waits 200 ms once before it moves back a sample of g_race_unit
std::atomic<bool> g_answer_held{false};  // and it did
std::atomic<bool> g_fill_seen{false};  // it reached a fill inside the unit
std::atomic<bool> g_out_again{false};  // the sampler moved the unit out again
uintptr_t g_race_unit = 0;

void race_hook(int where, uintptr_t page) {
  if (where == 0) {
    for (int i = 0; i < 10000 && g_hold_read.load(); ++i) usleep(1000);
    return;
  }
  if (where == 3) {
    if (page - g_race_unit < kUnitSize && g_hold_answer.exchange(false)) {
      usleep(200000);
      g_answer_held = true;
    }
    return;
  }
  if (page - g_race_unit >= kUnitSize || g_fill_seen.exchange(true)) return;
  for (int i = 0; i < 300 && !g_out_again.load(); ++i) usleep(1000);
}

// A DRAM unit on one huge page for the tests of the fault service's
// timing, with race_hook installed; nullptr with *why when there is none.
unsigned char *race_unit(const char **why) {
  if (!faults_start()) {
    *why = "no userfaultfd here";
    return nullptr;
  }
  use_up_startup_units();
  unsigned char *b = huge_dram_unit(why);
  if (!b) return nullptr;
  g_race_unit = reinterpret_cast<uintptr_t>(b);
  g_faults_test_hook = race_hook;
  return b;
}

TEST(SampleRace, AnAnswerGivenLateNeverFillsAHoleOfAUnitOutAgain) {
  ASSERT_EQ(runtime_start(), kReady);
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  if (!faults_can_move()) GTEST_SKIP() << "pages sampled in place (before 6.8): none goes out";
  const char *why = nullptr;
  unsigned char *b = race_unit(&why);
  if (!b) GTEST_SKIP() << why;
  const uint32_t unit = unit_of(b);
  const uint8_t one = 1;
  // Both faults must be waiting before the service reads: tried until
  // they are (the service may read the first alone, before it is held).
  bool together = false;
  for (int attempt = 0; attempt < 20 && !together; ++attempt) {
    g_fill_seen = false;
    g_out_again = false;
    ASSERT_EQ(heap_sample_begin(&unit, &one, 1, 300 + attempt), 1u);
    g_hold_read = true;
    std::atomic<long> tids[2] = {0, 0};
    std::atomic<int> finished{0};
    std::vector<std::thread> touch;
    for (int k = 0; k < 2; ++k)
      touch.emplace_back([&, k] {
        tids[k] = static_cast<long>(gettid());
        const size_t i = static_cast<size_t>(k + 1) * 100 * kPageSize + 7;
        if (reinterpret_cast<volatile unsigned char *>(b)[i] != expect(i)) ADD_FAILURE() << "byte " << i;
        finished.fetch_add(1);
      });
    while (finished.load() < 2 && !(tids[0] && tids[1] && thread_blocked(tids[0]) && thread_blocked(tids[1])))
      sched_yield();
    together = finished.load() == 0;
    g_hold_read = false;
    if (together) {
      // The second answer's fill: the window ends, the unit goes out again.
      for (int i = 0; i < 5000 && !g_fill_seen.load(); ++i) usleep(1000);
      EXPECT_TRUE(g_fill_seen.load()) << "the second fault was not answered as a fill";
      sample_result r[2];
      heap_sample_end(r, 2);
      ASSERT_EQ(heap_sample_begin(&unit, &one, 1, 400 + attempt), 1u);
      g_out_again = true;
    }
    for (std::thread &t : touch) t.join();
    sample_result r[2];
    heap_sample_end(r, 2);
  }
  g_faults_test_hook = nullptr;
  EXPECT_TRUE(together) << "the two faults were never read together";
  EXPECT_EQ(bytes_wrong(b), 0u) << "a fill took the place of a page that was out";
  heap_munmap(b, kUnitSize);
}

// A unit sampled whole whose fault is still waiting for the fault service
// when the window ends (here: held before the service reads it) looks
// untouched, but it is not idle: the thread touching it was waiting, not
// leaving it alone (the policy counts an idle look as evidence of a cold
// unit).
TEST(SampleWhole, AUnitWhoseFaultIsStillWaitingIsNotIdle) {
  ASSERT_EQ(runtime_start(), kReady);
  const char *why = nullptr;
  unsigned char *b = race_unit(&why);
  if (!b) GTEST_SKIP() << why;
  const uint32_t unit = unit_of(b);
  const uint8_t four = 4;
  ASSERT_EQ(heap_sample_begin(&unit, &four, 1, 500), 1u);
  g_hold_read = true;
  std::atomic<long> tid{0};
  std::atomic<bool> done{false};
  const size_t i = 9 * kPageSize + 3;
  std::thread writer([&] {
    tid = static_cast<long>(gettid());
    reinterpret_cast<volatile unsigned char *>(b)[i] = expect(i);  // a write: seen before 6.8 too
    done = true;
  });
  while (!done.load() && !(tid.load() && thread_blocked(tid.load()))) sched_yield();
  const bool waited = !done.load();
  sample_result r[2];
  const size_t n = heap_sample_end(r, 2);
  g_hold_read = false;
  writer.join();
  g_faults_test_hook = nullptr;
  ASSERT_TRUE(waited) << "the write was answered although the service was held";
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(r[0].idle, 0) << "a unit whose fault was still waiting at the window's end counted as idle";
  EXPECT_EQ(bytes_wrong(b), 0u);
  heap_munmap(b, kUnitSize);
}

// Two DRAM units on one huge page each (race_hook installed, the first
// g_race_unit), sampled whole in one window judged with a 50 ms limit
// (heap_sample_whole_limit): this thread waits `before` after the window
// opens, then writes into the first unit and right after into the second.
// The results of the first and the second; false with *why when there are
// no such units.
struct row_of_two {
  size_t started = 0, results = 0;
  sample_result first{}, second{};
  size_t wrong = 0;  // bytes not as written, in both units
};

bool sample_a_row(useconds_t before, row_of_two *row, const char **why) {
  unsigned char *a = race_unit(why);
  if (!a) return false;
  unsigned char *b = huge_dram_unit(why);
  if (!b) {
    g_faults_test_hook = nullptr;
    heap_munmap(a, kUnitSize);
    return false;
  }
  uint32_t units[2] = {unit_of(a), unit_of(b)};
  if (units[0] > units[1]) std::swap(units[0], units[1]);
  const uint8_t four[2] = {4, 4};
  heap_sample_whole_limit(50'000'000);
  const size_t i = 5 * kPageSize + 11, j = 17 * kPageSize + 5;
  row->started = heap_sample_begin(units, four, 2, 600);
  if (before) usleep(before);
  reinterpret_cast<volatile unsigned char *>(a)[i] = expect(i);
  reinterpret_cast<volatile unsigned char *>(b)[j] = expect(j);
  sample_result r[3];
  row->results = heap_sample_end(r, 3);
  heap_sample_whole_limit(0);
  g_faults_test_hook = nullptr;
  for (size_t k = 0; k < row->results && k < 2; ++k)
    (r[k].unit == unit_of(a) ? row->first : row->second) = r[k];
  row->wrong = bytes_wrong(a) + bytes_wrong(b);
  heap_munmap(a, kUnitSize);
  heap_munmap(b, kUnitSize);
  return true;
}

// A thread that meets two units sampled whole in a row reaches the second
// only once the first is back: its first touch of the second is late by
// its wait for the first (here the service takes 200 ms to move it back),
// which is not the second unit's coldness.  Counted as the thread's running
// time, the second is touched at once.  Counted from its going out, it
// read as untouched, and hot units met late in a row of samples were
// demoted.  The thread is this one, writing as soon as the window is open;
// with a 50 ms limit being kept off the CPU for a few milliseconds on a
// loaded machine still counts, while the 200 ms wait would not.
TEST(SampleWhole, AUnitMetRightAfterAnotherCameBackCountsAsTouched) {
  ASSERT_EQ(runtime_start(), kReady);
  g_answer_held = false;
  g_hold_answer = true;
  row_of_two row;
  const char *why = nullptr;
  const bool ran = sample_a_row(0, &row, &why);
  g_hold_answer = false;
  if (!ran) GTEST_SKIP() << why;
  ASSERT_EQ(row.started, 2u);
  ASSERT_TRUE(g_answer_held.load()) << "the service did not hold the first write";
  ASSERT_EQ(row.results, 2u);
  EXPECT_EQ(row.second.touched, 1) << "a unit written right after the thread's release counted as untouched";
  EXPECT_EQ(row.wrong, 0u);
}

// The other side: a thread that ran 100 ms into the window, then met a
// unit sampled whole (answered at once) and right after it a second one.
// The second's touch is late by the thread's own running time, and reads
// as untouched.  Counted from the thread's last release it read as
// touched: where the service answers in microseconds (DRAM write-protected
// in place) a busy thread is let go so often that every chance touch of a
// cold unit came soon after a release, and cold units read warm.
TEST(SampleWhole, ALateTouchRightAfterAReleaseIsStillLate) {
  ASSERT_EQ(runtime_start(), kReady);
  row_of_two row;
  const char *why = nullptr;
  if (!sample_a_row(100000, &row, &why)) GTEST_SKIP() << why;
  ASSERT_EQ(row.started, 2u);
  ASSERT_EQ(row.results, 2u);
  EXPECT_EQ(row.first.touched, 0) << "a unit written 100 ms into the window counted as touched";
  EXPECT_EQ(row.second.touched, 0) << "a unit written 100 ms into the window, right after a release, counted as touched";
  EXPECT_EQ(row.second.idle, 0) << "a unit written counted as idle";
  EXPECT_EQ(row.wrong, 0u);
}

}  // namespace
}  // namespace mmtier::detail
