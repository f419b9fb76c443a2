// Anonymous mmap under LD_PRELOAD=libmmtier.so: private anonymous mappings of
// at least the threshold (64 KiB) are managed and must behave exactly like
// anonymous memory on both tiers (zero fill, MADV_DONTNEED, partial munmap,
// mremap in every form, MAP_FIXED replacement, mprotect guard pages and
// read-only pages, syscalls on the buffers, PROT_EXEC); small, file-backed,
// shared, stack and executable mappings are not managed and work normally.
#include "preload_api.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

namespace {

using namespace preload_test;

class MmapSemantics : public Preloaded {};

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

unsigned char *map_anon(size_t len, int prot = PROT_READ | PROT_WRITE, int extra = 0) {
  void *p = mmap(nullptr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<unsigned char *>(p);
}

// Number of pages in [p, p + len) whose tier is not want.
size_t pages_not_on(const void *p, size_t len, int want) {
  size_t bad = 0;
  for (size_t off = 0; off < len; off += kPage)
    if (tier_of(static_cast<const char *>(p) + off) != want) ++bad;
  return bad;
}

// Finds, among 4 MiB managed mappings, a 1 MiB window entirely on each tier.
// The default ratio 1:4 places both tiers within a few units.
struct tier_windows {
  static constexpr size_t kMap = 4 * kMiB, kWindow = kMiB;
  std::vector<unsigned char *> maps;
  unsigned char *window[2] = {nullptr, nullptr};

  void find() {
    for (int i = 0; i < 64 && !(window[0] && window[1]); ++i) {
      unsigned char *m = map_anon(kMap);
      ASSERT_NE(m, nullptr) << "mmap 4 MiB: " << strerror(errno);
      maps.push_back(m);
      for (size_t off = 0; off < kMap; off += kPage) m[off] = 1;
      for (size_t off = 0; off + kWindow <= kMap; off += kWindow) {
        int t = tier_of(m + off);
        if ((t == 0 || t == 1) && !window[t] && pages_not_on(m + off, kWindow, t) == 0)
          window[t] = m + off;
      }
    }
    ASSERT_NE(window[1], nullptr) << "no 1 MiB window of a managed mapping on PMem (tier 1) in "
                                  << maps.size() << " mappings of 4 MiB";
    ASSERT_NE(window[0], nullptr) << "no 1 MiB window of a managed mapping on DRAM (tier 0) in "
                                  << maps.size() << " mappings of 4 MiB";
  }
  ~tier_windows() {
    for (unsigned char *m : maps) munmap(m, kMap);
  }
};

const char *tier_name(int t) { return t == 0 ? "DRAM" : "PMem"; }

// Runs body(t, p, len) on a 1 MiB window of managed memory entirely on DRAM
// (t = 0), then on one entirely on PMem (t = 1).  A fatal failure ends it;
// the caller sees it with HasFatalFailure().
template <class Body>
void on_each_tier_window(Body body) {
  tier_windows w;
  ASSERT_NO_FATAL_FAILURE(w.find());
  for (int t = 0; t < 2 && !::testing::Test::HasFatalFailure(); ++t)
    body(t, w.window[t], tier_windows::kWindow);
}

TEST_F(MmapSemantics, LargeAnonymousPrivateMappingsAreManagedAndZeroFilled) {
  for (size_t len : {size_t{64} * kKiB, 64 * kKiB + 1, 100 * kKiB, kMiB, 3 * kMiB + 12345, 4 * kMiB,
                     16 * kMiB}) {
    unsigned char *p = map_anon(len);
    ASSERT_NE(p, nullptr) << "mmap(" << len << "): " << strerror(errno);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kPage, 0u);
    size_t nz = zero_mismatch(p, len);
    EXPECT_EQ(nz, len) << "fresh " << len << "-byte mapping: byte " << nz << " not zero";
    fill_pattern(p, len, len);
    EXPECT_EQ(pattern_mismatch(p, len, len), len);
    int t = tier_of(p);
    EXPECT_TRUE(t == 0 || t == 1) << "mmap(" << len << ") is not managed: tier " << t;
    int last = tier_of(p + len - 1);
    EXPECT_TRUE(last == 0 || last == 1) << "last byte of mmap(" << len << "): tier " << last;
    ASSERT_EQ(munmap(p, len), 0) << strerror(errno);
  }
  // Mapped PROT_NONE first, then made accessible.
  unsigned char *p = map_anon(kMiB, PROT_NONE);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(mprotect(p, kMiB, PROT_READ | PROT_WRITE), 0) << strerror(errno);
  EXPECT_EQ(zero_mismatch(p, kMiB), kMiB);
  memset(p, 3, kMiB);
  int t = tier_of(p);
  EXPECT_TRUE(t == 0 || t == 1) << "PROT_NONE mapping made accessible: tier " << t;
  munmap(p, kMiB);
  // MAP_POPULATE and MAP_NORESERVE are plain anonymous memory too.
  for (int extra : {MAP_POPULATE, MAP_NORESERVE}) {
    p = map_anon(2 * kMiB, PROT_READ | PROT_WRITE, extra);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(zero_mismatch(p, 2 * kMiB), 2 * kMiB);
    fill_pattern(p, 2 * kMiB, 5);
    EXPECT_EQ(pattern_mismatch(p, 2 * kMiB, 5), 2 * kMiB);
    munmap(p, 2 * kMiB);
  }
}

TEST_F(MmapSemantics, DontneedReadsBackZerosOnBothTiers) {
  on_each_tier_window([](int t, unsigned char *p, size_t len) {
    fill_pattern(p, len, 100 + t);
    // A few pages in the middle.
    ASSERT_EQ(madvise(p + 16 * kPage, 8 * kPage, MADV_DONTNEED), 0) << strerror(errno);
    EXPECT_EQ(zero_mismatch(p + 16 * kPage, 8 * kPage), 8 * kPage)
        << tier_name(t) << ": MADV_DONTNEED pages do not read back as zeros";
    EXPECT_EQ(pattern_mismatch(p, 16 * kPage, 100 + t), 16 * kPage) << tier_name(t) << ": before range";
    const size_t after = 24 * kPage;
    size_t bad = 0;
    for (size_t i = after; i < len; ++i)
      if (p[i] != pattern_byte(100 + t, i)) ++bad;
    EXPECT_EQ(bad, 0u) << tier_name(t) << ": bytes after the MADV_DONTNEED range changed";
    // Writable again, then the whole window.
    memset(p + 16 * kPage, 0x77, 8 * kPage);
    EXPECT_EQ(byte_mismatch(p + 16 * kPage, 8 * kPage, 0x77), 8 * kPage);
    ASSERT_EQ(madvise(p, len, MADV_DONTNEED), 0);
    size_t nz = zero_mismatch(p, len);
    EXPECT_EQ(nz, len) << tier_name(t) << ": byte " << nz << " not zero after MADV_DONTNEED of 1 MiB";
    fill_pattern(p, len, 200 + t);
    EXPECT_EQ(pattern_mismatch(p, len, 200 + t), len) << tier_name(t) << ": rewrite after MADV_DONTNEED";
    int now = tier_of(p);
    EXPECT_TRUE(now == 0 || now == 1) << "after MADV_DONTNEED: tier " << now;
  });
}

TEST_F(MmapSemantics, PartialMunmapKeepsTheRestAndUnmapsThePart) {
  for (size_t len : {size_t{1} * kMiB, 6 * kMiB}) {
    unsigned char *p = map_anon(len);
    ASSERT_NE(p, nullptr);
    fill_pattern(p, len, 31);
    const size_t pages = len / kPage;
    const size_t mid = pages / 2;
    // Middle (crossing a 2 MiB boundary for the larger mapping), both ends.
    ASSERT_EQ(munmap(p + (mid - 3) * kPage, 6 * kPage), 0) << strerror(errno);
    ASSERT_EQ(munmap(p, 2 * kPage), 0);
    ASSERT_EQ(munmap(p + len - 2 * kPage, 2 * kPage), 0);
    auto gone = [&](size_t page) {
      return page < 2 || page >= pages - 2 || (page >= mid - 3 && page < mid + 3);
    };
    size_t damaged = 0;
    for (size_t pg = 0; pg < pages; ++pg) {
      if (gone(pg)) continue;
      for (size_t i = pg * kPage; i < (pg + 1) * kPage; ++i)
        if (p[i] != pattern_byte(31, i)) {
          ++damaged;
          break;
        }
    }
    EXPECT_EQ(damaged, 0u) << damaged << " pages that stayed mapped lost their contents (" << len
                           << "-byte mapping)";
    for (size_t pg : {size_t{0}, size_t{1}, mid - 3, mid, mid + 2, pages - 2, pages - 1}) {
      int st = child_reads(p + pg * kPage + 5);
      EXPECT_TRUE(killed_by(st, SIGSEGV))
          << "reading unmapped page " << pg << " of " << pages << ": child " << describe_status(st);
      EXPECT_EQ(tier_of(p + pg * kPage), -1) << "unmapped page " << pg << " still reported on a tier";
    }
    for (size_t pg : {size_t{2}, mid - 4, mid + 3, pages - 3}) {
      int st = child_reads(p + pg * kPage);
      EXPECT_TRUE(exited_with(st, 0)) << "page " << pg << ": " << describe_status(st);
    }
    // What is left can still be unmapped piecewise and the range reused.
    ASSERT_EQ(munmap(p + 2 * kPage, (mid - 5) * kPage), 0);
    ASSERT_EQ(munmap(p + (mid + 3) * kPage, len - (mid + 5) * kPage), 0);
  }
}

TEST_F(MmapSemantics, MremapShrinkKeepsThePrefix) {
  const size_t len = 8 * kMiB, keep = 3 * kMiB + kPage;
  unsigned char *p = map_anon(len);
  ASSERT_NE(p, nullptr);
  fill_pattern(p, len, 41);
  void *q = mremap(p, len, keep, 0);
  ASSERT_EQ(q, static_cast<void *>(p)) << "mremap shrink: " << strerror(errno);
  EXPECT_EQ(pattern_mismatch(p, keep, 41), keep);
  int st = child_reads(p + keep + 10);
  EXPECT_TRUE(killed_by(st, SIGSEGV)) << "page past the shrunk end: child " << describe_status(st);
  st = child_reads(p + len - 1);
  EXPECT_TRUE(killed_by(st, SIGSEGV)) << "last page of the old size: child " << describe_status(st);
  EXPECT_EQ(tier_of(p + keep), -1);
  munmap(p, keep);
}

TEST_F(MmapSemantics, MremapGrowsInPlace) {
  const size_t half = 4 * kMiB;
  unsigned char *p = map_anon(2 * half);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(munmap(p + half, half), 0);  // the addresses after p + half are now free
  fill_pattern(p, half, 43);
  void *q = mremap(p, half, 2 * half, 0);
  ASSERT_EQ(q, static_cast<void *>(p)) << "mremap grow in place: " << strerror(errno);
  EXPECT_EQ(pattern_mismatch(p, half, 43), half);
  EXPECT_EQ(zero_mismatch(p + half, half), half) << "grown part is not zero";
  memset(p + half, 0x3e, half);
  EXPECT_EQ(pattern_mismatch(p, half, 43), half);
  int t = tier_of(p + half);
  EXPECT_TRUE(t == 0 || t == 1) << "grown part: tier " << t;
  munmap(p, 2 * half);
}

TEST_F(MmapSemantics, MremapMayMovePreservesContents) {
  struct { size_t from, to; } cases[] = {{8 * kMiB, 32 * kMiB}, {64 * kKiB, kMiB}, {kMiB, 5 * kMiB + kPage}};
  for (const auto &c : cases) {
    unsigned char *p = map_anon(c.from);
    ASSERT_NE(p, nullptr);
    fill_pattern(p, c.from, c.from);
    // Something right after it, so that growing in place is unlikely.
    unsigned char *blocker = map_anon(kMiB);
    ASSERT_NE(blocker, nullptr);
    void *r = mremap(p, c.from, c.to, MREMAP_MAYMOVE);
    ASSERT_NE(r, MAP_FAILED) << c.from << " -> " << c.to << ": " << strerror(errno);
    auto *q = static_cast<unsigned char *>(r);
    size_t bad = pattern_mismatch(q, c.from, c.from);
    EXPECT_EQ(bad, c.from) << c.from << " -> " << c.to << ": byte " << bad << " lost";
    EXPECT_EQ(zero_mismatch(q + c.from, c.to - c.from), c.to - c.from) << "grown part not zero";
    memset(q + c.from, 0x21, c.to - c.from);
    EXPECT_EQ(pattern_mismatch(q, c.from, c.from), c.from);
    int t = tier_of(q), tl = tier_of(q + c.to - 1);
    EXPECT_TRUE((t == 0 || t == 1) && (tl == 0 || tl == 1)) << "moved mapping tiers " << t << ", " << tl;
    if (q != p && (q + c.to <= p || p + c.from <= q)) {
      int st = child_reads(p);
      EXPECT_TRUE(killed_by(st, SIGSEGV)) << "old address after a move: child " << describe_status(st);
    }
    munmap(q, c.to);
    munmap(blocker, kMiB);
  }
  // Shrinking with MREMAP_MAYMOVE.
  unsigned char *p = map_anon(4 * kMiB);
  ASSERT_NE(p, nullptr);
  fill_pattern(p, 4 * kMiB, 47);
  auto *q = static_cast<unsigned char *>(mremap(p, 4 * kMiB, kMiB, MREMAP_MAYMOVE));
  ASSERT_NE(static_cast<void *>(q), MAP_FAILED);
  EXPECT_EQ(pattern_mismatch(q, kMiB, 47), kMiB);
  munmap(q, kMiB);
}

TEST_F(MmapSemantics, MremapFixedMovesToTheGivenAddress) {
  const size_t len = 4 * kMiB;
  // Target inside the managed range: a managed mapping of 6 MiB whose first
  // 4 MiB are replaced.
  unsigned char *src = map_anon(len);
  unsigned char *dst = map_anon(6 * kMiB);
  ASSERT_TRUE(src && dst);
  ASSERT_NE(tier_of(dst), -1);
  fill_pattern(src, len, 51);
  memset(dst, 0x99, 6 * kMiB);
  void *r = mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(r, static_cast<void *>(dst)) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(dst, len, 51), len);
  EXPECT_EQ(byte_mismatch(dst + len, 2 * kMiB, 0x99), 2 * kMiB) << "part of the target not covered changed";
  int st = child_reads(src + 100);
  EXPECT_TRUE(killed_by(st, SIGSEGV)) << "source after MREMAP_FIXED: child " << describe_status(st);
  memset(dst, 0x12, len);
  munmap(dst, 6 * kMiB);

  // Target outside the managed range (a stack mapping is never managed).
  src = map_anon(len);
  auto *outside = static_cast<unsigned char *>(
      mmap(nullptr, 2 * len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0));
  ASSERT_TRUE(src && outside != MAP_FAILED);
  ASSERT_EQ(tier_of(outside), -1);
  fill_pattern(src, len, 53);
  r = mremap(src, len, 2 * len, MREMAP_MAYMOVE | MREMAP_FIXED, outside);
  ASSERT_EQ(r, static_cast<void *>(outside)) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(outside, len, 53), len);
  EXPECT_EQ(zero_mismatch(outside + len, len), len);
  memset(outside, 1, 2 * len);
  st = child_reads(src);
  EXPECT_TRUE(killed_by(st, SIGSEGV)) << "source after MREMAP_FIXED out of the heap: " << describe_status(st);
  munmap(outside, 2 * len);
}

// MREMAP_DONTUNMAP (Linux 5.7): the pages move, the old range stays mapped
// with its protection and reads zero; only a move of the same size.
TEST_F(MmapSemantics, MremapDontUnmapMovesThePagesAndKeepsTheOldRangeEmpty) {
  constexpr int kDontUnmap = 4;  // MREMAP_DONTUNMAP
  const size_t len = 4 * kMiB;
  unsigned char *src = map_anon(len);
  ASSERT_TRUE(src);
  ASSERT_NE(tier_of(src), -1);
  fill_pattern(src, len, 57);
  errno = 0;
  EXPECT_EQ(mremap(src, len, 2 * len, MREMAP_MAYMOVE | kDontUnmap), MAP_FAILED);
  EXPECT_EQ(errno, EINVAL) << "a size change with MREMAP_DONTUNMAP";
  EXPECT_EQ(mremap(src, len, len, kDontUnmap), MAP_FAILED) << "MREMAP_DONTUNMAP without MREMAP_MAYMOVE";
  EXPECT_EQ(pattern_mismatch(src, len, 57), len) << "a refused call changed the mapping";
  void *r = mremap(src, len, len, MREMAP_MAYMOVE | kDontUnmap);
  ASSERT_NE(r, MAP_FAILED) << strerror(errno);
  auto *dst = static_cast<unsigned char *>(r);
  EXPECT_NE(dst, src);
  EXPECT_EQ(pattern_mismatch(dst, len, 57), len);
  EXPECT_EQ(zero_mismatch(src, len), len) << "the old range does not read zero";
  memset(src, 0x31, len);  // still mapped and writable
  EXPECT_EQ(pattern_mismatch(dst, len, 57), len) << "a write to the old range reached the moved pages";
  munmap(src, len);
  munmap(dst, len);
}

// Advice a move's new mapping would lose pins a unit where it is
// (MADV_DONTDUMP); MADV_HUGEPAGE does not, since whole DRAM units get huge
// pages anyway (a JVM asks it for its whole heap), nor advice that puts
// the default back (MADV_DODUMP).
TEST_F(MmapSemantics, HugePageAdviceLeavesMemoryMovableAndKeptAdvicePinsIt) {
  auto move = reinterpret_cast<long (*)(const void *, size_t, int)>(dlsym(RTLD_DEFAULT, "mmtier_move"));
  ASSERT_NE(move, nullptr);
  const size_t len = 8 * kMiB;
  struct advised {
    int advice;
    bool movable;
  } cases[] = {{MADV_HUGEPAGE, true}, {MADV_DODUMP, true}, {MADV_DONTDUMP, false}, {MADV_NOHUGEPAGE, false}};
  // The process's first units are DRAM's and never move (start-up
  // memory): taken first.
  unsigned char *startup = map_anon(16 * kMiB);
  ASSERT_TRUE(startup);
  memset(startup, 1, 16 * kMiB);
  for (const advised &c : cases) {
    unsigned char *p = map_anon(len);
    ASSERT_TRUE(p);
    fill_pattern(p, len, 71);
    if (tier_of(p) != 0 && move(p, len, 0) < 0) GTEST_SKIP() << "mmtier_move: " << strerror(errno);
    ASSERT_EQ(tier_of(p), 0);
    ASSERT_EQ(madvise(p, len, c.advice), 0) << c.advice << ": " << strerror(errno);
    errno = 0;
    const long moved = move(p, len, 1);
    if (c.movable) {
      EXPECT_GT(moved, 0) << "advice " << c.advice << " pinned the memory (" << strerror(errno) << ")";
      EXPECT_EQ(tier_of(p + len / 2), 1) << "advice " << c.advice;
    } else {
      EXPECT_LE(moved, 0) << "advice " << c.advice << " lost by a move";
      EXPECT_EQ(tier_of(p + len / 2), 0) << "advice " << c.advice;
    }
    EXPECT_EQ(pattern_mismatch(p, len, 71), len) << "advice " << c.advice;
    munmap(p, len);
  }
  munmap(startup, 16 * kMiB);
}

// A moved mapping may hold pages the application made inaccessible (a guard
// page); the move must still carry every readable byte and not fault.
TEST_F(MmapSemantics, MremapMovesAMappingWithAGuardPageInside) {
  const size_t len = 4 * kMiB;
  unsigned char *src = map_anon(len);
  unsigned char *dst = map_anon(len);
  ASSERT_TRUE(src && dst);
  fill_pattern(src, len, 61);
  ASSERT_EQ(mprotect(src + kMiB, 4096, PROT_NONE), 0);
  void *r = mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(r, static_cast<void *>(dst)) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(dst, kMiB, 61), kMiB);
  std::vector<unsigned char> ref(len);
  fill_pattern(ref.data(), len, 61);
  const size_t after = kMiB + 4096;
  EXPECT_EQ(memcmp(dst + after, ref.data() + after, len - after), 0) << "bytes after the guard page were lost";
  munmap(dst, len);
}

TEST_F(MmapSemantics, UnmanagedMappingsCanBeRemapped) {
  unsigned char *p = map_anon(16 * kKiB);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(tier_of(p), -1);
  fill_pattern(p, 16 * kKiB, 55);
  auto *q = static_cast<unsigned char *>(mremap(p, 16 * kKiB, kMiB, MREMAP_MAYMOVE));
  ASSERT_NE(static_cast<void *>(q), MAP_FAILED) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(q, 16 * kKiB, 55), 16 * kKiB);
  EXPECT_EQ(zero_mismatch(q + 16 * kKiB, kMiB - 16 * kKiB), kMiB - 16 * kKiB);
  munmap(q, kMiB);
}

TEST_F(MmapSemantics, MapFixedOverManagedRangeGivesZeroedMemory) {
  on_each_tier_window([](int t, unsigned char *p, size_t len) {
    memset(p, 0xaa, len);
    void *r = mmap(p + 64 * kKiB, 128 * kKiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ASSERT_EQ(r, static_cast<void *>(p + 64 * kKiB)) << strerror(errno);
    EXPECT_EQ(zero_mismatch(p + 64 * kKiB, 128 * kKiB), 128 * kKiB)
        << tier_name(t) << ": MAP_FIXED replacement is not zero";
    EXPECT_EQ(byte_mismatch(p, 64 * kKiB, 0xaa), 64 * kKiB) << tier_name(t);
    EXPECT_EQ(byte_mismatch(p + 192 * kKiB, len - 192 * kKiB, 0xaa), len - 192 * kKiB) << tier_name(t);
    memset(p + 64 * kKiB, 0x0f, 128 * kKiB);
    EXPECT_EQ(byte_mismatch(p + 64 * kKiB, 128 * kKiB, 0x0f), 128 * kKiB);
    int now = tier_of(p + 64 * kKiB);
    EXPECT_TRUE(now == 0 || now == 1) << "MAP_FIXED anonymous replacement: tier " << now;
    // A single page.
    r = mmap(p + 300 * kKiB, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ASSERT_EQ(r, static_cast<void *>(p + 300 * kKiB));
    EXPECT_EQ(zero_mismatch(p + 300 * kKiB, kPage), kPage) << tier_name(t) << ": single page";
    EXPECT_EQ(byte_mismatch(p + 300 * kKiB + kPage, kPage, 0xaa), kPage);
  });
  if (HasFatalFailure()) return;
  // Over a whole mapping.
  unsigned char *m = map_anon(4 * kMiB);
  ASSERT_NE(m, nullptr);
  memset(m, 0xbb, 4 * kMiB);
  void *r = mmap(m, 4 * kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(r, static_cast<void *>(m));
  EXPECT_EQ(zero_mismatch(m, 4 * kMiB), 4 * kMiB);
  munmap(m, 4 * kMiB);
}

// Inode of the mapping covering p in /proc/self/maps (0: anonymous or none).
unsigned long inode_at(const void *p) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (!maps) return ~0ul;
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  char line[512];
  unsigned long result = 0;
  while (fgets(line, sizeof line, maps)) {
    unsigned long lo, hi, off, inode;
    char perms[8], dev[16];
    if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &lo, &hi, perms, &off, dev, &inode) == 6 && at >= lo && at < hi)
      result = inode;
  }
  fclose(maps);
  return result;
}

TEST_F(MmapSemantics, MapFixedFileOverManagedRangeShowsTheFile) {
  unsigned char *m = map_anon(kMiB);
  ASSERT_NE(m, nullptr);
  memset(m, 0xcc, kMiB);
  FILE *f = tmpfile();
  ASSERT_NE(f, nullptr);
  int fd = fileno(f);
  std::vector<unsigned char> content(64 * kKiB);
  fill_pattern(content.data(), content.size(), 57);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  void *r = mmap(m + 128 * kKiB, content.size(), PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  ASSERT_EQ(r, static_cast<void *>(m + 128 * kKiB)) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(m + 128 * kKiB, content.size(), 57), content.size());
  EXPECT_EQ(byte_mismatch(m, 128 * kKiB, 0xcc), 128 * kKiB);
  EXPECT_EQ(tier_of(m + 128 * kKiB), -1) << "file pages placed over managed memory are not managed";
  ASSERT_EQ(munmap(m, kMiB), 0);
  EXPECT_EQ(inode_at(m + 128 * kKiB), 0u) << "the file stays mapped after munmap";
  // The same over a reserved (PROT_NONE) managed range, never made accessible.
  auto *reserved = static_cast<unsigned char *>(
      mmap(nullptr, kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(reserved, MAP_FAILED);
  r = mmap(reserved + 128 * kKiB, content.size(), PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  ASSERT_EQ(r, static_cast<void *>(reserved + 128 * kKiB)) << strerror(errno);
  EXPECT_EQ(pattern_mismatch(reserved + 128 * kKiB, content.size(), 57), content.size());
  ASSERT_EQ(munmap(reserved, kMiB), 0);
  EXPECT_EQ(inode_at(reserved + 128 * kKiB), 0u) << "the file stays mapped after munmap";
  fclose(f);
}

TEST_F(MmapSemantics, GuardPageInTheMiddleOnBothTiers) {
  on_each_tier_window([](int t, unsigned char *p, size_t len) {
    fill_pattern(p, len, 61 + t);
    unsigned char *guard = p + len / 2;
    ASSERT_EQ(mprotect(guard, kPage, PROT_NONE), 0) << strerror(errno);
    int st = child_reads(guard + 100);
    EXPECT_TRUE(killed_by(st, SIGSEGV)) << tier_name(t) << ": reading the guard page: child "
                                        << describe_status(st);
    st = child_writes(guard);
    EXPECT_TRUE(killed_by(st, SIGSEGV)) << tier_name(t) << ": writing the guard page: child "
                                        << describe_status(st);
    st = child_reads(guard - 1);
    EXPECT_TRUE(exited_with(st, 0)) << "page before the guard: " << describe_status(st);
    st = child_reads(guard + kPage);
    EXPECT_TRUE(exited_with(st, 0)) << "page after the guard: " << describe_status(st);
    // Neighbours are still writable in this process.
    guard[-1] = pattern_byte(61 + t, len / 2 - 1);
    guard[kPage] = pattern_byte(61 + t, len / 2 + kPage);
    ASSERT_EQ(mprotect(guard, kPage, PROT_READ | PROT_WRITE), 0) << strerror(errno);
    EXPECT_EQ(pattern_mismatch(p, len, 61 + t), len)
        << tier_name(t) << ": contents changed by the PROT_NONE round trip";
    guard[0] = 1;
  });
}

TEST_F(MmapSemantics, ReadOnlyPagesFaultOnWrite) {
  on_each_tier_window([](int t, unsigned char *p, size_t len) {
    fill_pattern(p, len, 71 + t);
    ASSERT_EQ(mprotect(p, len, PROT_READ), 0) << strerror(errno);
    EXPECT_EQ(pattern_mismatch(p, len, 71 + t), len) << tier_name(t) << ": read-only pages read wrong";
    int st = child_writes(p + len / 3);
    EXPECT_TRUE(killed_by(st, SIGSEGV)) << tier_name(t) << ": write to PROT_READ page: child "
                                        << describe_status(st);
    st = child_reads(p + len / 3);
    EXPECT_TRUE(exited_with(st, 0)) << describe_status(st);
    ASSERT_EQ(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
    p[len / 3] = 9;
    EXPECT_EQ(p[len / 3], 9);
  });
  if (HasFatalFailure()) return;
  // A fresh read-only managed mapping reads zeros.
  unsigned char *r = map_anon(kMiB, PROT_READ);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(zero_mismatch(r, kMiB), kMiB);
  int st = child_writes(r);
  EXPECT_TRUE(killed_by(st, SIGSEGV)) << describe_status(st);
  munmap(r, kMiB);
}

TEST_F(MmapSemantics, SyscallsReadAndWriteManagedBuffers) {
  tier_windows w;
  ASSERT_NO_FATAL_FAILURE(w.find());
  const size_t len = tier_windows::kWindow;
  for (int from = 0; from < 2; ++from) {
    unsigned char *src = w.window[from];
    unsigned char *fresh = map_anon(len);  // never touched: the kernel's write places it
    ASSERT_NE(fresh, nullptr);
    unsigned char *dsts[2] = {w.window[1 - from], fresh};
    for (unsigned char *dst : dsts) {
      fill_pattern(src, len, 81 + from);
      if (dst != fresh) memset(dst, 0, len);
      int fds[2];
      ASSERT_EQ(pipe(fds), 0);
      const size_t chunk = 32 * kKiB;
      for (size_t off = 0; off < len; off += chunk) {
        ASSERT_EQ(write(fds[1], src + off, chunk), static_cast<ssize_t>(chunk)) << strerror(errno);
        size_t got = 0;
        while (got < chunk) {
          ssize_t n = read(fds[0], dst + off + got, chunk - got);
          ASSERT_GT(n, 0) << strerror(errno);
          got += static_cast<size_t>(n);
        }
      }
      close(fds[0]);
      close(fds[1]);
      EXPECT_EQ(pattern_mismatch(dst, len, 81 + from), len)
          << "write() from " << tier_name(from) << " then read() into "
          << (dst == fresh ? "a fresh mapping" : tier_name(1 - from));
    }
    // pread/pwrite through a file as well.
    FILE *f = tmpfile();
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(pwrite(fileno(f), src, len, 0), static_cast<ssize_t>(len));
    memset(fresh, 0, len);
    ASSERT_EQ(pread(fileno(f), fresh, len, 0), static_cast<ssize_t>(len));
    EXPECT_EQ(pattern_mismatch(fresh, len, 81 + from), len);
    fclose(f);
    munmap(fresh, len);
  }
}

#if defined(__x86_64__)
TEST_F(MmapSemantics, ExecutableCodeInManagedMemory) {
  static const unsigned char code[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};  // mov eax, 42; ret
  tier_windows w;
  ASSERT_NO_FATAL_FAILURE(w.find());
  unsigned char *plain = map_anon(64 * kKiB);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(tier_of(plain), -1);
  unsigned char *targets[3] = {w.window[0], w.window[1], plain};
  const char *names[3] = {"DRAM window", "PMem window", "64 KiB mapping"};
  for (int i = 0; i < 3; ++i) {
    unsigned char *p = targets[i];
    memcpy(p + kPage, code, sizeof code);
    ASSERT_EQ(mprotect(p, 64 * kKiB, PROT_READ | PROT_EXEC), 0) << names[i] << ": " << strerror(errno);
    auto fn = reinterpret_cast<int (*)()>(p + kPage);
    EXPECT_EQ(fn(), 42) << names[i];
    ASSERT_EQ(mprotect(p, 64 * kKiB, PROT_READ | PROT_WRITE), 0);
    p[kPage + 1] = 7;  // mov eax, 7
    ASSERT_EQ(mprotect(p, 64 * kKiB, PROT_READ | PROT_EXEC), 0);
    EXPECT_EQ(fn(), 7) << names[i] << " after rewriting the code";
    ASSERT_EQ(mprotect(p, 64 * kKiB, PROT_READ | PROT_WRITE), 0);
  }
  munmap(plain, 64 * kKiB);
  // Mapped executable directly: passed through, not managed.
  auto *x = static_cast<unsigned char *>(
      mmap(nullptr, kMiB, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(static_cast<void *>(x), MAP_FAILED);
  EXPECT_EQ(tier_of(x), -1);
  memcpy(x, code, sizeof code);
  EXPECT_EQ(reinterpret_cast<int (*)()>(x)(), 42);
  munmap(x, kMiB);
}
#else
TEST_F(MmapSemantics, ExecutableCodeInManagedMemory) { GTEST_SKIP() << "x86-64 only"; }
#endif

TEST_F(MmapSemantics, SmallFileSharedAndStackMappingsAreNotManaged) {
  for (size_t len : {kPage, 16 * kKiB, 64 * kKiB - kPage}) {
    unsigned char *p = map_anon(len);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(tier_of(p), -1) << len << "-byte mapping is below the threshold";
    EXPECT_EQ(zero_mismatch(p, len), len);
    fill_pattern(p, len, len);
    EXPECT_EQ(pattern_mismatch(p, len, len), len);
    EXPECT_EQ(munmap(p, len), 0);
  }
  auto *st = static_cast<unsigned char *>(
      mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0));
  ASSERT_NE(static_cast<void *>(st), MAP_FAILED);
  memset(st, 1, kMiB);
  EXPECT_EQ(tier_of(st), -1) << "MAP_STACK mapping";
  munmap(st, kMiB);

  // File mappings, private and shared.
  FILE *f = tmpfile();
  ASSERT_NE(f, nullptr);
  int fd = fileno(f);
  const size_t flen = 2 * kMiB;
  std::vector<unsigned char> content(flen);
  fill_pattern(content.data(), flen, 91);
  ASSERT_EQ(pwrite(fd, content.data(), flen, 0), static_cast<ssize_t>(flen));
  auto *fp = static_cast<unsigned char *>(mmap(nullptr, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
  ASSERT_NE(static_cast<void *>(fp), MAP_FAILED);
  EXPECT_EQ(tier_of(fp), -1) << "private file mapping";
  EXPECT_EQ(pattern_mismatch(fp, flen, 91), flen);
  memset(fp, 0, 4096);  // private: not written back
  auto *fs = static_cast<unsigned char *>(mmap(nullptr, flen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(static_cast<void *>(fs), MAP_FAILED);
  EXPECT_EQ(tier_of(fs), -1) << "shared file mapping";
  EXPECT_EQ(pattern_mismatch(fs, flen, 91), flen) << "private write leaked into the file";
  memset(fs + kMiB, 0x6b, kPage);
  unsigned char back[4096];
  ASSERT_EQ(pread(fd, back, sizeof back, kMiB), static_cast<ssize_t>(sizeof back));
  EXPECT_EQ(byte_mismatch(back, sizeof back, 0x6b), sizeof back) << "shared file mapping write not in the file";
  munmap(fp, flen);
  munmap(fs, flen);
  fclose(f);

  // Shared anonymous memory is not managed and is shared with a child.
  auto *sh = static_cast<unsigned char *>(
      mmap(nullptr, 4 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(static_cast<void *>(sh), MAP_FAILED);
  EXPECT_EQ(tier_of(sh), -1) << "MAP_SHARED anonymous mapping";
  EXPECT_EQ(zero_mismatch(sh, 4 * kMiB), 4 * kMiB);
  fill_pattern(sh, 2 * kMiB, 93);
  int status = run_in_child([sh] {
    // The child sees the parent's data and writes its own for the parent.
    if (pattern_mismatch(sh, 2 * kMiB, 93) != 2 * kMiB) _exit(3);
    fill_pattern(sh + 2 * kMiB, 2 * kMiB, 95);
  });
  ASSERT_TRUE(WIFEXITED(status)) << describe_status(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "child did not see the parent's writes to shared memory";
  EXPECT_EQ(pattern_mismatch(sh + 2 * kMiB, 2 * kMiB, 95), 2 * kMiB)
      << "parent does not see the child's writes to a MAP_SHARED anonymous mapping";
  munmap(sh, 4 * kMiB);

  // memfd shared mapping.
  int mfd = static_cast<int>(syscall(SYS_memfd_create, "mmtier-test", 0));
  ASSERT_GE(mfd, 0);
  ASSERT_EQ(ftruncate(mfd, static_cast<off_t>(kMiB)), 0);
  auto *mm = static_cast<unsigned char *>(mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0));
  ASSERT_NE(static_cast<void *>(mm), MAP_FAILED);
  EXPECT_EQ(tier_of(mm), -1);
  memset(mm, 0x2c, kMiB);
  ASSERT_EQ(pread(mfd, back, sizeof back, 12345), static_cast<ssize_t>(sizeof back));
  EXPECT_EQ(byte_mismatch(back, sizeof back, 0x2c), sizeof back);
  munmap(mm, kMiB);
  close(mfd);
}

}  // namespace
