// Huge pages rebuilt (lib/heap/huge.cc): DRAM units split by a fork's
// copy-on-write, or filled page by page by a promotion, are one huge page
// again, never while a fork child shares their pages (that would copy
// them) and never by filling pages that were not written; the bytes stay
// what they were.
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap_test_util.h"
#include "platform/pagemap.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mmtier::detail {
namespace {

using test::unit_index_of;
using test::use_up_startup_units;

unsigned char expect(size_t i, int round) { return static_cast<unsigned char>(i * 29 + 3 + round); }

// Whether each unit of [p, p + n units) is one huge page (1), not (0), or
// the kernel cannot tell (-1).
int all_huge(sys::pagemap_file &pm, const void *p, size_t n) {
  int all = 1;
  for (size_t k = 0; k < n; ++k) {
    const int h = pm.huge(reinterpret_cast<uintptr_t>(p) + k * kUnitSize, kUnitSize);
    if (h < 0) return -1;
    if (h == 0) all = 0;
  }
  return all;
}
int none_huge(sys::pagemap_file &pm, const void *p, size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (pm.huge(reinterpret_cast<uintptr_t>(p) + k * kUnitSize, kUnitSize) != 0) return 0;
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
  for (int i = 0; i < 64; ++i) {
    const rehuge_outcome r = heap_rehuge(SIZE_MAX, SIZE_MAX);
    sum.units += r.units;
    sum.failed += r.failed;
    sum.looked += r.looked;
    sum.shared |= r.shared;
    if (r.err) sum.err = r.err;
    if (r.shared || r.err || r.looked == 0) break;
  }
  return sum;
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
  sys::pagemap_file pm;
  const int huge = all_huge(pm, b, kUnits);
  if (huge != 1) {
    heap_munmap(p, kUnits * kUnitSize);
    GTEST_SKIP() << (huge < 0 ? "the kernel cannot tell huge pages (PAGEMAP_SCAN, 6.7)"
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
  EXPECT_TRUE(r.shared) << "the units the child shares were not seen as shared";
  EXPECT_EQ(none_huge(pm, b + kUnitSize, kUnits - 2), 1)
      << "a unit the child still shares was collapsed (its pages copied)";
  EXPECT_EQ(pm.huge(reinterpret_cast<uintptr_t>(b), kUnitSize), 1)
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

TEST_F(Rehuge, AUnitNotWhollyWrittenIsNotFilled) {
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierDram), 0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i, 0);
  // Half its pages given back to the kernel behind the heap's back (it
  // still counts them placed): they read as zero and take no memory.
  for (size_t pg = 1; pg < kPagesPerUnit; pg += 2) ASSERT_EQ(madvise(b + pg * kPageSize, kPageSize, MADV_DONTNEED), 0);
  sys::pagemap_file pm;
  const size_t before = present_pages(pm, b);
  ASSERT_EQ(before, kPagesPerUnit / 2);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  rehuge_all();
  EXPECT_EQ(present_pages(pm, b), before) << "the collapse filled pages that were never written";
  EXPECT_EQ(pm.huge(reinterpret_cast<uintptr_t>(b), kUnitSize) == 1, false);
  heap_munmap(p, kUnitSize);
}

TEST_F(Rehuge, AUnitPromotedFromPmemIsOneHugePageAgain) {
  if (!faults_start()) GTEST_SKIP() << "no userfaultfd here";
  void *p = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p), 0);
  auto *b = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < kUnitSize; ++i) b[i] = expect(i, 2);
  const size_t idx = unit_index_of(b);
  if (heap_tier_of(b) != kTierPmem) ASSERT_GE(heap_migrate(idx, kTierPmem), 0);
  ASSERT_EQ(heap_tier_of(b), kTierPmem);
  ASSERT_GE(heap_migrate(idx, kTierDram), 0);
  ASSERT_EQ(heap_tier_of(b), kTierDram);
  sys::pagemap_file pm;
  if (pm.huge(reinterpret_cast<uintptr_t>(b), kUnitSize) < 0) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << "the kernel cannot tell huge pages (PAGEMAP_SCAN, 6.7)";
  }
  const rehuge_outcome r = rehuge_all();
  if (r.err == -ENOMEM) GTEST_SKIP() << "no huge page free";
  EXPECT_EQ(pm.huge(reinterpret_cast<uintptr_t>(b), kUnitSize), 1) << "the promoted unit stayed on small pages";
  size_t wrong = 0;
  for (size_t i = 0; i < kUnitSize; ++i) wrong += b[i] != expect(i, 2);
  EXPECT_EQ(wrong, 0u);
  heap_munmap(p, kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
