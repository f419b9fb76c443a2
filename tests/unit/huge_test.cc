// Huge pages rebuilt (lib/heap/huge.cc): DRAM units split by a fork's
// copy-on-write, or filled page by page by a promotion, are one huge page
// again, never while a fork child shares their pages (that would copy
// them) and never by filling pages that were not written; the bytes stay
// what they were.
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/sample.h"
#include "heap_test_util.h"
#include "platform/pagemap.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

namespace mmtier::detail {
namespace {

using test::unit_index_of;
using test::pagemap_reader;
using test::use_up_startup_units;

unsigned char expect(size_t i, int round) { return static_cast<unsigned char>(i * 29 + 3 + round); }

// How many of len bytes at b differ from expect(i, round).
size_t bytes_off(const unsigned char *b, size_t len, int round) {
  size_t wrong = 0;
  for (size_t i = 0; i < len; ++i) wrong += b[i] != expect(i, round);
  return wrong;
}

// Whether the unit at p is one huge page (1), not (0), or the test cannot
// tell (-1).  PAGEMAP_SCAN (6.7) says whether one page-table entry maps it;
// before, as root, the page frames do: its 512 pages are one transparent
// huge page, in order from its head (a huge page split in the mapping but
// not in memory would pass too; none of these tests makes one).
int unit_huge(sys::pagemap_file &pm, const void *p) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  const int h = pm.huge(at, kUnitSize);
  if (h != -ENOTTY) return h < 0 ? -1 : h;
  static uint64_t e[kPagesPerUnit];
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = pread(fd, e, sizeof e, static_cast<off_t>(at / kPageSize * 8));
  close(fd);
  if (n != static_cast<ssize_t>(sizeof e)) return -1;
  constexpr uint64_t kPfn = (uint64_t{1} << 55) - 1;
  const uint64_t head = e[0] & kPfn;
  if (!(e[0] & sys::kPagemapPresent)) return 0;
  if (head == 0) return -1;  // frame numbers are shown to root only
  if (head % kPagesPerUnit) return 0;
  for (size_t i = 0; i < kPagesPerUnit; ++i)
    if (!(e[i] & sys::kPagemapPresent) || (e[i] & kPfn) != head + i) return 0;
  const int kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
  if (kf < 0) return -1;
  uint64_t flags = 0;
  const ssize_t m = pread(kf, &flags, sizeof flags, static_cast<off_t>(head * 8));
  close(kf);
  if (m != static_cast<ssize_t>(sizeof flags)) return -1;
  constexpr uint64_t kHead = uint64_t{1} << 15, kThp = uint64_t{1} << 22;  // KPF_COMPOUND_HEAD, KPF_THP
  return (flags & kHead) && (flags & kThp) ? 1 : 0;
}

// Whether each unit of [p, p + n units) is one huge page (1), not (0), or
// the test cannot tell (-1).
int all_huge(sys::pagemap_file &pm, const void *p, size_t n) {
  int all = 1;
  for (size_t k = 0; k < n; ++k) {
    const int h = unit_huge(pm, static_cast<const char *>(p) + k * kUnitSize);
    if (h < 0) return -1;
    if (h == 0) all = 0;
  }
  return all;
}
int none_huge(sys::pagemap_file &pm, const void *p, size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (unit_huge(pm, static_cast<const char *>(p) + k * kUnitSize) != 0) return 0;
  return 1;
}

size_t present_pages(sys::pagemap_file &pm, const void *p) {
  static sys::page_info info[kPagesPerUnit];
  if (!pm.info(reinterpret_cast<uintptr_t>(p), kPagesPerUnit, info)) return SIZE_MAX;
  size_t n = 0;
  for (const auto &i : info) n += i.present;
  return n;
}

// Runs heap_rehuge until a call finds nothing more to do (each call is
// bounded; other tests' units may be in the sweep too).
rehuge_outcome rehuge_all() {
  rehuge_outcome sum;
  int waits = 0;
  for (int i = 0; i < 64; ++i) {
    const rehuge_outcome r = heap_rehuge(SIZE_MAX, SIZE_MAX);
    sum.units += r.units;
    sum.failed += r.failed;
    sum.looked += r.looked;
    sum.busy += r.busy;
    sum.shared |= r.shared;
    sum.err = r.err;
    // No huge page free this instant (tests beside this one hold memory):
    // the call goes on where it stopped once the kernel has one again.
    if ((r.err == -ENOMEM || r.err == -EAGAIN || r.err == -EBUSY) && ++waits <= 50) {
      usleep(20000);
      continue;
    }
    if (r.shared || r.err || r.looked == 0) break;
  }
  return sum;
}

// Whether the kernel gives a huge page to a fresh aligned mapping now
// (none may be free while tests beside this one hold memory).
bool huge_page_free(sys::pagemap_file &pm) {
  void *m = mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return false;
  char *at = reinterpret_cast<char *>((reinterpret_cast<uintptr_t>(m) + kUnitSize - 1) & ~(kUnitSize - 1));
  madvise(at, kUnitSize, MADV_HUGEPAGE);
  at[0] = 1;
  const bool huge = pm.huge(reinterpret_cast<uintptr_t>(at), kUnitSize) == 1;
  munmap(m, 2 * kUnitSize);
  return huge;
}

// Splits the unit at b as a program does that writes while a fork child
// lives: every step-th byte rewritten (as expect(i, round)) while a child
// shares the pages, then the child gone.  False if the fork failed.
bool split_by_fork(unsigned char *b, size_t step, int round) {
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {
    pause();
    _exit(0);
  }
  for (size_t i = 0; i < kUnitSize; i += step) b[i] = expect(i, round);
  kill(child, SIGKILL);
  return waitpid(child, nullptr, 0) == child;
}

// A unit placed by policy (so the tracker may sample it), filled with
// expect(i, round), on PMem and then promoted back to DRAM; nullptr if a
// move failed.
unsigned char *promoted_unit(int round) {
  void *p = nullptr;
  if (heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p) != 0) return nullptr;
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i, round);
  const size_t idx = unit_index_of(b);
  if ((heap_tier_of(b) != kTierPmem && heap_migrate(idx, kTierPmem) < 0) || heap_tier_of(b) != kTierPmem ||
      heap_migrate(idx, kTierDram) < 0 || heap_tier_of(b) != kTierDram) {
    heap_munmap(p, kUnitSize);
    return nullptr;
  }
  return b;
}

class Rehuge : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(runtime_start(), kReady);
    use_up_startup_units();
    // Anything an earlier test left to do is done first.
    rehuge_all();
  }
};

// A unit split by copy-on-write while a fork child lives: whole again as
// soon as its pages are all the parent's own (written, or the child gone),
// never while the child shares some of them (collapsing would copy those).
TEST_F(Rehuge, UnitsSplitByAForkAreWholeAgainOnceNoChildSharesThem) {
  constexpr size_t kUnits = 4;
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram),
            0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnits * kUnitSize; ++i) b[i] = expect(i, 0);
  pagemap_reader pm;
  const int huge = all_huge(pm, b, kUnits);
  if (huge != 1) {
    heap_munmap(p, kUnits * kUnitSize);
    GTEST_SKIP() << (huge < 0 ? "huge pages cannot be told here (PAGEMAP_SCAN, 6.7, or root for page frames)"
                              : "no huge pages for the units (THP off, or none free)");
  }
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Holds the fork-time pages until told, then checks them.
    char x;
    if (read(go[0], &x, 1) != 1) _exit(2);
    for (size_t i = 0; i < kUnits * kUnitSize; i += 997)
      if (b[i] != expect(i, 0)) _exit(1);
    _exit(0);
  }
  close(go[0]);
  // Written while the child shares them: the kernel copies each page
  // alone and splits each huge page.  The first unit wholly (its pages are
  // all the parent's own copies now), the middle ones every other page
  // (their other half is still the child's too); the last one too, but
  // only after the rebuild first looked at it, still whole.
  constexpr size_t kLast = (kUnits - 1) * kUnitSize;
  auto written = [](size_t i) {
    return i % (kPageSize / 2) == 0 && (i < kUnitSize || (i / kPageSize) % 2 == 0);
  };
  for (size_t i = 0; i < kLast; ++i)
    if (written(i)) b[i] = expect(i, 1);
  EXPECT_EQ(none_huge(pm, b, kUnits - 1), 1) << "copy-on-write kept a huge page whole";
  rehuge_outcome r = rehuge_all();
  if (r.err == -ENOMEM) {
    ASSERT_EQ(write(go[1], "x", 1), 1);
    waitpid(child, nullptr, 0);
    GTEST_SKIP() << "no huge page free";
  }
  EXPECT_TRUE(r.shared) << "the units the child shares were not seen as shared";
  EXPECT_EQ(none_huge(pm, b + kUnitSize, kUnits - 2), 1)
      << "a unit the child still shares was collapsed (its pages copied)";
  EXPECT_EQ(unit_huge(pm, b), 1)
      << "a unit wholly the parent's own (copied on write) waited for the child";
  for (size_t i = kLast; i < kUnits * kUnitSize; ++i)
    if (written(i)) b[i] = expect(i, 1);
  EXPECT_EQ(none_huge(pm, b + kLast, 1), 1);
  ASSERT_EQ(write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child saw changed pages";
  close(go[1]);
  r = rehuge_all();
  if (r.err == -ENOMEM) GTEST_SKIP() << "no huge page free";
  EXPECT_FALSE(r.shared);
  EXPECT_GE(r.units, kUnits - 1);
  EXPECT_EQ(all_huge(pm, b, kUnits), 1) << "a unit is still on small pages once the child is gone";
  size_t wrong = 0;
  for (size_t i = 0; i < kUnits * kUnitSize; ++i) wrong += b[i] != expect(i, written(i) ? 1 : 0);
  EXPECT_EQ(wrong, 0u);
  // Nothing left to do: the next call looks at no unit.
  EXPECT_EQ(heap_rehuge(SIZE_MAX, SIZE_MAX).looked, 0u);
  heap_munmap(p, kUnits * kUnitSize);
}

// A unit split by a fork and then write-protected whole by a later one
// (a snapshot's writer child, say) that wrote nothing: once that child is
// gone its 512 pages are the process's alone but all mapped read-only,
// which the kernel refuses to collapse (no writable page); the rebuild
// maps one page writable first.
TEST_F(Rehuge, AUnitAllReadOnlyAfterALaterForkIsRebuiltToo) {
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram), 0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i, 0);
  pagemap_reader pm;
  const int huge = unit_huge(pm, b);
  if (huge != 1) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << (huge < 0 ? "huge pages cannot be told here (PAGEMAP_SCAN, 6.7, or root for page frames)"
                              : "no huge pages for the units (THP off, or none free)");
  }
  // Split: every page written while a child shares them.
  ASSERT_TRUE(split_by_fork(b, kPageSize / 2, 1));
  ASSERT_EQ(unit_huge(pm, b), 0);
  int status = 0;
  // Write-protected whole by a second fork whose child writes nothing.
  const pid_t second = fork();
  ASSERT_GE(second, 0);
  if (second == 0) _exit(0);
  ASSERT_EQ(waitpid(second, &status, 0), second);
  const rehuge_outcome r = rehuge_all();
  if (r.err == -ENOMEM) GTEST_SKIP() << "no huge page free";
  EXPECT_EQ(r.failed, 0u) << "the kernel refused the collapse";
  EXPECT_EQ(unit_huge(pm, b), 1) << "the unit stayed on small pages";
  size_t wrong = 0;
  for (size_t i = 0; i < kUnitSize; ++i) wrong += b[i] != expect(i, i % (kPageSize / 2) == 0 ? 1 : 0);
  EXPECT_EQ(wrong, 0u);
  heap_munmap(p, kUnitSize);
}

// A unit being sampled when the rebuild comes to it (some of its pages
// hidden or write-protected for a window) is left for then, not dropped
// from the round: it is whole once the sample is over.
TEST_F(Rehuge, AUnitSampledWhenLookedAtIsRebuiltAfterTheSample) {
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  // On DRAM by a promotion (a unit placed by policy, so the tracker may
  // sample it), then split: written all over while a fork child lived.
  unsigned char *b = promoted_unit(3);
  ASSERT_NE(b, nullptr) << "the unit could not go to PMem and back";
  void *p = b;
  const size_t idx = unit_index_of(b);
  pagemap_reader pm;
  if (unit_huge(pm, b) < 0) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << "huge pages cannot be told here (PAGEMAP_SCAN, 6.7, or root for page frames)";
  }
  ASSERT_TRUE(split_by_fork(b, kPageSize, 3));
  ASSERT_EQ(unit_huge(pm, b), 0);
  const uint32_t unit[1] = {static_cast<uint32_t>(idx)};
  const uint8_t pages[1] = {4};
  ASSERT_GT(heap_sample_begin(unit, pages, 1, 11), 0u);
  rehuge_outcome r = rehuge_all();
  EXPECT_GE(r.busy, 1u) << "the unit being sampled was not seen as such";
  EXPECT_EQ(unit_huge(pm, b), 0) << "a unit was collapsed while being sampled";
  sample_result res[4];
  heap_sample_end(res, 4);
  r = rehuge_all();
  if (r.err == -ENOMEM) GTEST_SKIP() << "no huge page free";
  EXPECT_EQ(unit_huge(pm, b), 1) << "the unit sampled when first looked at stayed on small pages";
  EXPECT_EQ(bytes_off(b, kUnitSize, 3), 0u);
  heap_munmap(p, kUnitSize);
}

TEST_F(Rehuge, AUnitNotWhollyWrittenIsNotFilled) {
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram), 0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i, 0);
  // Half its pages given back to the kernel behind the heap's back (it
  // still counts them placed): they read as zero and take no memory.
  for (size_t pg = 1; pg < kPagesPerUnit; pg += 2) ASSERT_EQ(madvise(b + pg * kPageSize, kPageSize, MADV_DONTNEED), 0);
  pagemap_reader pm;
  const size_t before = present_pages(pm, b);
  ASSERT_EQ(before, kPagesPerUnit / 2);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  rehuge_all();
  EXPECT_EQ(present_pages(pm, b), before) << "the collapse filled pages that were never written";
  EXPECT_EQ(unit_huge(pm, b) == 1, false);
  heap_munmap(p, kUnitSize);
}

TEST_F(Rehuge, AUnitPromotedFromPmemIsOneHugePageAgain) {
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  unsigned char *b = promoted_unit(2);
  ASSERT_NE(b, nullptr) << "the unit could not go to PMem and back";
  void *p = b;
  pagemap_reader pm;
  const int at_once = unit_huge(pm, b);
  if (at_once < 0) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << "huge pages cannot be told here (PAGEMAP_SCAN, 6.7, or root for page frames)";
  }
  // Where pages can be moved (6.8) the slot is read into a huge page that
  // is moved into the unit whole: nothing is left to rebuild.
  if (faults_can_move() && at_once != 1) {
    if (!huge_page_free(pm)) GTEST_SKIP() << "no huge page free";
    ADD_FAILURE() << "the promotion left the unit on small pages";
  }
  const rehuge_outcome r = rehuge_all();
  if (r.err == -ENOMEM) GTEST_SKIP() << "no huge page free";
  EXPECT_EQ(unit_huge(pm, b), 1) << "the promoted unit stayed on small pages";
  EXPECT_EQ(bytes_off(b, kUnitSize, 2), 0u);
  heap_munmap(p, kUnitSize);
}

// A promoted unit, one huge page again, sampled whole (moved out as one)
// and touched while out, by a read and by a write: put back as one huge
// page each time.  A fault on a unit moved out must not leave a page table
// at its place (the kernel's small-page path, taken in a mapping not
// advised for huge pages under THP's madvise setting): the put-back would
// split the huge page into it.
TEST_F(Rehuge, APromotedUnitSampledWholeAndTouchedStaysOneHugePage) {
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  if (!faults_can_move()) GTEST_SKIP() << "units sampled in place (before 6.8): nothing moves out";
  unsigned char *b = promoted_unit(4);
  ASSERT_NE(b, nullptr) << "the unit could not go to PMem and back";
  void *p = b;
  pagemap_reader pm;
  rehuge_all();
  if (unit_huge(pm, b) != 1) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << "no huge page for the unit (or they cannot be told here)";
  }
  const uint32_t unit[1] = {static_cast<uint32_t>(unit_index_of(b))};
  const uint8_t pages[1] = {4};
  volatile unsigned char *v = b;
  volatile unsigned char sink = 0;
  for (int w = 0; w < 4; ++w) {
    ASSERT_EQ(heap_sample_begin(unit, pages, 1, 50 + w), 1u) << "window " << w << ": not sampled whole";
    const size_t i = static_cast<size_t>(w) * 64 * kPageSize + 5;
    if (w % 2) v[i] = expect(i, 4);
    else sink = v[i];
    sample_result r[2];
    ASSERT_EQ(heap_sample_end(r, 2), 1u);
    EXPECT_EQ(unit_huge(pm, b), 1) << "window " << w << " (" << (w % 2 ? "a write" : "a read")
                                   << " while out) split the unit's huge page";
  }
  (void)sink;
  EXPECT_EQ(bytes_off(b, kUnitSize, 4), 0u);
  heap_munmap(p, kUnitSize);
}

// A unit split while it was out taints the side slot it went through with
// a page table (here the split comes from a raw madvise(MADV_NOHUGEPAGE)
// past mmtier: a fault on the unit then takes the kernel's small-page
// path, and the put-back splits the huge page into the table it left).
// The slot is mapped afresh, so the next unit sampled whole through it
// stays one huge page, and the split unit is marked and rebuilt.
TEST_F(Rehuge, ASideSlotASplitWentThroughIsRenewed) {
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  if (!faults_can_move()) GTEST_SKIP() << "units sampled in place (before 6.8): nothing moves out";
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram), 0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < 2 * kUnitSize; ++i) b[i] = expect(i, 5);
  pagemap_reader pm;
  if (all_huge(pm, b, 2) != 1) {
    heap_munmap(p, 2 * kUnitSize);
    GTEST_SKIP() << "no huge pages for the units (or they cannot be told here)";
  }
  unsigned char *split = b, *next = b + kUnitSize;
  uint32_t units[2];
  for (int k = 0; k < 2; ++k) {
    const size_t idx = unit_index_of(b + k * kUnitSize);
    units[k] = static_cast<uint32_t>(idx);
    g_heap.units[idx].forced1 = 0;  // as if placed by the policy: sampled
    g_heap.units[idx].by_policy = 1;
  }
  const uint8_t pages[1] = {4};
  volatile unsigned char sink = 0;
  ASSERT_EQ(sys::madvise(split, kUnitSize, MADV_NOHUGEPAGE), 0);
  ASSERT_EQ(heap_sample_begin(&units[0], pages, 1, 61), 1u);
  sink = static_cast<volatile unsigned char *>(split)[5];
  sample_result r[2];
  ASSERT_EQ(heap_sample_end(r, 2), 1u);
  ASSERT_EQ(unit_huge(pm, split), 0) << "the fault left no page table at the unit's place";
  ASSERT_EQ(sys::madvise(split, kUnitSize, MADV_HUGEPAGE), 0);
  ASSERT_EQ(heap_sample_begin(&units[1], pages, 1, 62), 1u);
  sink = static_cast<volatile unsigned char *>(next)[5];
  ASSERT_EQ(heap_sample_end(r, 2), 1u);
  (void)sink;
  EXPECT_EQ(unit_huge(pm, next), 1) << "the side slot split the next unit moved through it";
  const rehuge_outcome out = rehuge_all();
  if (out.err != -ENOMEM) EXPECT_EQ(unit_huge(pm, split), 1) << "the split unit was not rebuilt";
  EXPECT_EQ(bytes_off(b, 2 * kUnitSize, 5), 0u);
  heap_munmap(p, 2 * kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
