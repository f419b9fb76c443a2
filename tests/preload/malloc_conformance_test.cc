// glibc malloc-family and C++ new/delete semantics under LD_PRELOAD=libmmtier.so:
// malloc(0), realloc edge cases, calloc zeroing (also of reused dirty memory),
// overflow and oversize requests (NULL + ENOMEM), the aligned allocators and
// their error cases, errno preserved by free, alignment and usable size,
// realloc across size classes, every form of operator new/delete, bad_alloc
// and the new-handler, and that malloc'd memory is placed on a tier.
#include "preload_api.h"

#include <malloc.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <new>
#include <sstream>
#include <algorithm>
#include <bit>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace preload_test;

class MallocConformance : public Preloaded {};

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

bool aligned_to(const void *p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// align 0: what malloc guarantees, 16 bytes for 16 bytes and more.
void use(problems &bad, void *p, size_t n, const std::string &what, size_t align = 0) {
  if (align == 0) align = n >= 16 ? 16 : std::bit_floor(n);
  if (!bad.check(p != nullptr, what + "(" + std::to_string(n) + ") returned NULL")) return;
  std::ostringstream where;
  where << p;
  bad.check(aligned_to(p, align), what + "(" + std::to_string(n) + ") gave " + where.str() +
                                      ", not aligned to " + std::to_string(align));
  memset(p, 0x5e, n);
  bad.check(byte_mismatch(p, n, 0x5e) == n, what + ": memory does not keep what was written");
  int t = tier_of(p);
  bad.check(t == 0 || t == 1, what + "(" + std::to_string(n) + ") gave " + where.str() + " on tier " +
                                  std::to_string(t));
}

TEST_F(MallocConformance, MallocZeroReturnsUniqueFreeablePointers) {
  void *a = malloc(opaque(size_t{0}));
  void *b = malloc(opaque(size_t{0}));
  escape(a);
  escape(b);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  std::vector<void *> many;
  for (int i = 0; i < 1000; ++i) {
    void *p = malloc(opaque(size_t{0}));
    ASSERT_NE(p, nullptr);
    many.push_back(p);
  }
  std::vector<void *> sorted = many;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end())
      << "malloc(0) returned the same pointer twice while both were live";
  for (void *p : many) free(p);
  free(a);
  free(b);
}

TEST_F(MallocConformance, ReallocToZeroFreesAndReturnsNull) {
  for (size_t size : {size_t{1}, size_t{100}, size_t{5000}, size_t{300000}, 5 * kMiB}) {
    void *p = malloc(size);
    ASSERT_NE(p, nullptr);
    memset(p, 1, size);
    void *q = realloc(p, opaque(size_t{0}));
    escape(q);
    EXPECT_EQ(q, nullptr) << "realloc(p, 0) of a " << size << "-byte block";
    if (q) free(q);
  }
}

TEST_F(MallocConformance, ReallocNullActsAsMalloc) {
  problems bad;
  for (size_t size : {size_t{0}, size_t{1}, size_t{24}, size_t{4096}, size_t{100000}, 3 * kMiB}) {
    void *p = realloc(nullptr, opaque(size));
    ASSERT_NE(p, nullptr) << "realloc(NULL, " << size << ")";
    if (size) use(bad, p, size, "realloc(NULL, n)");
    bad.check(malloc_usable_size(p) >= size, "realloc(NULL, " + std::to_string(size) +
                                                 "): malloc_usable_size " +
                                                 std::to_string(malloc_usable_size(p)));
    free(p);
  }
  EXPECT_NO_PROBLEMS(bad);
}

TEST_F(MallocConformance, CallocZeroesFreshAndReusedDirtyMemory) {
  const size_t sizes[] = {1, 8, 16, 24, 100, 1000, 4096, 10000, 65536, 100000, 1 * kMiB, 3 * kMiB + 17};
  for (size_t size : sizes) {
    for (int round = 0; round < 40; ++round) {
      void *dirty = malloc(size);
      ASSERT_NE(dirty, nullptr);
      memset(dirty, 0xff, size);
      escape(dirty);
      free(dirty);
      auto *z = static_cast<unsigned char *>(calloc(1, size));
      ASSERT_NE(z, nullptr) << "calloc(1, " << size << ")";
      size_t bad = zero_mismatch(z, size);
      ASSERT_EQ(bad, size) << "calloc(1, " << size << ") round " << round << ": byte " << bad
                           << " is " << int(z[bad]) << " (reused block " << (void *)z
                           << (static_cast<void *>(z) == dirty ? ", same as the freed dirty one" : "")
                           << ")";
      // Also as count * size.
      memset(z, 0xee, size);
      free(z);
      auto *y = static_cast<unsigned char *>(calloc(size, 1));
      ASSERT_NE(y, nullptr);
      bad = zero_mismatch(y, size);
      ASSERT_EQ(bad, size) << "calloc(" << size << ", 1) round " << round << ": byte " << bad;
      free(y);
    }
  }
  // Many live dirty blocks freed at once, then calloc'd back.
  std::vector<void *> blocks;
  for (int i = 0; i < 2000; ++i) {
    size_t size = 16 + (static_cast<size_t>(i) * 37) % 3000;
    void *p = malloc(size);
    ASSERT_NE(p, nullptr);
    memset(p, 0xa5, size);
    blocks.push_back(p);
  }
  for (void *p : blocks) free(p);
  for (int i = 0; i < 2000; ++i) {
    size_t size = 16 + (static_cast<size_t>(i) * 37) % 3000;
    auto *p = static_cast<unsigned char *>(calloc(1, size));
    ASSERT_NE(p, nullptr);
    size_t bad = zero_mismatch(p, size);
    ASSERT_EQ(bad, size) << "calloc(1, " << size << ") after mass free: byte " << bad;
    blocks[static_cast<size_t>(i)] = p;
  }
  for (void *p : blocks) free(p);
}

TEST_F(MallocConformance, CallocAndReallocarrayOverflowGiveEnomem) {
  const size_t pairs[][2] = {{SIZE_MAX, 2}, {SIZE_MAX / 2 + 1, 2}, {size_t{1} << 33, size_t{1} << 31},
                             {65537, SIZE_MAX / 65536}, {2, SIZE_MAX}};
  for (const auto &pr : pairs) {
    errno = 0;
    void *p = calloc(opaque(pr[0]), opaque(pr[1]));
    escape(p);
    EXPECT_EQ(p, nullptr) << "calloc(" << pr[0] << ", " << pr[1] << ")";
    EXPECT_EQ(errno, ENOMEM) << "calloc(" << pr[0] << ", " << pr[1] << ")";
    errno = 0;
    p = reallocarray(nullptr, opaque(pr[0]), opaque(pr[1]));
    escape(p);
    EXPECT_EQ(p, nullptr) << "reallocarray(NULL, " << pr[0] << ", " << pr[1] << ")";
    EXPECT_EQ(errno, ENOMEM);
    // A failed reallocarray leaves the old block alone.
    auto *old = static_cast<unsigned char *>(malloc(100));
    ASSERT_NE(old, nullptr);
    fill_pattern(old, 100, 7);
    errno = 0;
    p = reallocarray(old, opaque(pr[0]), opaque(pr[1]));
    EXPECT_EQ(p, nullptr);
    EXPECT_EQ(errno, ENOMEM);
    EXPECT_EQ(pattern_mismatch(old, 100, 7), 100u) << "old block changed by a failed reallocarray";
    free(old);
  }
  // reallocarray without overflow works.
  auto *q = static_cast<int *>(reallocarray(nullptr, 1000, sizeof(int)));
  ASSERT_NE(q, nullptr);
  for (int i = 0; i < 1000; ++i) q[i] = i;
  q = static_cast<int *>(reallocarray(q, 100000, sizeof(int)));
  ASSERT_NE(q, nullptr);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(q[i], i);
  free(q);
}

TEST_F(MallocConformance, SizesAbovePtrdiffMaxGiveEnomem) {
  const size_t huge[] = {size_t{PTRDIFF_MAX} + 1, SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX - 15,
                         size_t{PTRDIFF_MAX} + 4096};
  for (size_t n : huge) {
    errno = 0;
    void *p = malloc(opaque(n));
    escape(p);
    EXPECT_EQ(p, nullptr) << "malloc(" << n << ")";
    EXPECT_EQ(errno, ENOMEM) << "malloc(" << n << ")";
    errno = 0;
    p = calloc(1, opaque(n));
    escape(p);
    EXPECT_EQ(p, nullptr) << "calloc(1, " << n << ")";
    EXPECT_EQ(errno, ENOMEM) << "calloc(1, " << n << ")";
    auto *old = static_cast<unsigned char *>(malloc(64));
    ASSERT_NE(old, nullptr);
    fill_pattern(old, 64, 9);
    errno = 0;
    p = realloc(old, opaque(n));
    escape(p);
    EXPECT_EQ(p, nullptr) << "realloc(p, " << n << ")";
    EXPECT_EQ(errno, ENOMEM) << "realloc(p, " << n << ")";
    EXPECT_EQ(pattern_mismatch(old, 64, 9), 64u) << "block changed by a failed realloc";
    free(old);
    errno = 0;
    p = realloc(nullptr, opaque(n));
    EXPECT_EQ(p, nullptr) << "realloc(NULL, " << n << ")";
    EXPECT_EQ(errno, ENOMEM);
  }
}

TEST_F(MallocConformance, PosixMemalignRejectsBadAlignment) {
  void *const sentinel = reinterpret_cast<void *>(uintptr_t{0xdeadbeef0});
  const size_t bad[] = {0, 3, 24, sizeof(void *) / 2, 1, 2, 48, 4095, 4097, (size_t{1} << 20) + 8};
  for (size_t a : bad) {
    void *p = sentinel;
    int r = posix_memalign(&p, opaque(a), 64);
    EXPECT_EQ(r, EINVAL) << "posix_memalign(&p, " << a << ", 64)";
    EXPECT_EQ(p, sentinel) << "*p changed by posix_memalign with alignment " << a;
  }
  // Failure for a huge size: ENOMEM, *p unchanged.
  void *p = sentinel;
  EXPECT_EQ(posix_memalign(&p, 64, opaque(SIZE_MAX - 100)), ENOMEM);
  EXPECT_EQ(p, sentinel);
}

TEST_F(MallocConformance, AlignedAllocatorsHonourAlignment) {
  std::vector<void *> live;
  problems bad;
  auto check = [&](void *p, size_t a, size_t size, const char *fn, unsigned char fillv) {
    const std::string what = std::string(fn) + "(" + std::to_string(a) + ", " + std::to_string(size) + ")";
    if (!bad.check(p != nullptr, what + " returned NULL")) return;
    std::ostringstream where;
    where << p;
    bad.check(aligned_to(p, a), what + " gave misaligned " + where.str());
    bad.check(malloc_usable_size(p) >= size,
              what + ": malloc_usable_size " + std::to_string(malloc_usable_size(p)));
    const int t = tier_of(p);
    bad.check(t == 0 || t == 1, what + " gave " + where.str() + " on tier " + std::to_string(t));
    memset(p, fillv, size);
    live.push_back(p);
  };
  for (size_t a = 1; a <= kMiB; a <<= 1) {
    for (size_t size : {size_t{1}, size_t{100}, a, 3 * a + 5}) {
      if (a >= sizeof(void *)) {
        void *p = nullptr;
        int r = posix_memalign(&p, a, size);
        bad.check(r == 0, "posix_memalign(" + std::to_string(a) + ") returned " + std::to_string(r));
        check(r == 0 ? p : nullptr, a, size, "posix_memalign", 0x11);
      }
      check(aligned_alloc(a, size), a, size, "aligned_alloc", 0x22);
      check(memalign(a, size), a, size, "memalign", 0x33);
    }
  }
  for (size_t size : {size_t{1}, size_t{4096}, size_t{10000}, 2 * kMiB + 1})
    check(valloc(size), kPage, size, "valloc", 0x44);
  EXPECT_NO_PROBLEMS(bad);
  for (void *p : live) free(p);
}

TEST_F(MallocConformance, PvallocRoundsUpToWholePages) {
  struct { size_t req, min_usable; } cases[] = {
      {0, 0} /* glibc: a minimal block, page aligned */, {1, kPage}, {kPage - 1, kPage}, {kPage, kPage}, {kPage + 1, 2 * kPage},
      {10 * kPage + 3, 11 * kPage}, {kMiB + 1, kMiB + kPage}};
  for (const auto &c : cases) {
    void *p = pvalloc(opaque(c.req));
    ASSERT_NE(p, nullptr) << "pvalloc(" << c.req << ")";
    EXPECT_TRUE(aligned_to(p, kPage)) << "pvalloc(" << c.req << ") gave " << p;
    size_t usable = malloc_usable_size(p);
    EXPECT_GE(usable, c.min_usable) << "pvalloc(" << c.req << ")";
    memset(p, 0x55, c.min_usable);  // the whole rounded size is usable
    EXPECT_EQ(byte_mismatch(p, c.min_usable, 0x55), c.min_usable);
    free(p);
  }
}

TEST_F(MallocConformance, MemalignRoundsNonPowerOfTwoAlignmentUp) {
  struct { size_t align, expect; } cases[] = {
      {24, 32}, {48, 64}, {100, 128}, {3000, 4096}, {5000, 8192}, {100000, 131072}, {3, 4},
      {(size_t{1} << 20) - 1, size_t{1} << 20}};
  for (const auto &c : cases) {
    void *p = memalign(opaque(c.align), 200);
    ASSERT_NE(p, nullptr) << "memalign(" << c.align << ", 200)";
    EXPECT_TRUE(aligned_to(p, c.expect))
        << "memalign(" << c.align << ") gave " << p << ", not aligned to " << c.expect;
    memset(p, 0x66, 200);
    free(p);
  }
}

TEST_F(MallocConformance, FreeNullIsANoOp) {
  errno = 4242;
  free(nullptr);
  EXPECT_EQ(errno, 4242);
  void *p = malloc(10);
  free(nullptr);
  ASSERT_NE(p, nullptr);
  free(p);
}

TEST_F(MallocConformance, FreePreservesErrno) {
  std::vector<std::pair<void *, size_t>> blocks;
  for (int i = 0; i < 300; ++i) blocks.push_back({malloc(64 + static_cast<size_t>(i)), 64});
  for (int i = 0; i < 60; ++i) blocks.push_back({malloc(64 * kKiB + static_cast<size_t>(i) * 4096), 64 * kKiB});
  for (int i = 0; i < 24; ++i) blocks.push_back({malloc(4 * kMiB + static_cast<size_t>(i) * 12345), 4 * kMiB});
  for (int i = 0; i < 6; ++i) blocks.push_back({malloc(32 * kMiB), 32 * kMiB});
  for (auto &b : blocks) {
    ASSERT_NE(b.first, nullptr);
    memset(b.first, 0x77, b.second);  // dirty pages, so freeing has something to purge
  }
  int changed = 0;
  size_t first_bad = SIZE_MAX;
  int bad_value = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    errno = 9876;
    free(blocks[i].first);
    if (errno != 9876) {
      if (!changed) {
        first_bad = i;
        bad_value = errno;
      }
      ++changed;
    }
  }
  EXPECT_EQ(changed, 0) << changed << " of " << blocks.size() << " free() calls changed errno; first: block "
                        << first_bad << " (" << blocks[first_bad == SIZE_MAX ? 0 : first_bad].second
                        << " bytes) set errno to " << bad_value;
  // Repeated large malloc/free churn (purging, unit release) keeps errno too.
  for (int i = 0; i < 40; ++i) {
    void *p = malloc(8 * kMiB);
    ASSERT_NE(p, nullptr);
    memset(p, 1, 8 * kMiB);
    errno = 1234;
    free(p);
    ASSERT_EQ(errno, 1234) << "free of an 8 MiB block, iteration " << i;
  }
}

TEST_F(MallocConformance, SixteenByteAlignmentForRequestsOf16AndMore) {
  std::vector<void *> live;
  size_t misaligned = 0, checked = 0;
  std::string example;
  auto check = [&](size_t size) {
    void *p = malloc(size);
    ASSERT_NE(p, nullptr) << "malloc(" << size << ")";
    ++checked;
    if (!aligned_to(p, 16)) {
      if (!misaligned) example = "malloc(" + std::to_string(size) + ")";
      ++misaligned;
    }
    live.push_back(p);
    if (live.size() >= 256) {
      for (void *q : live) free(q);
      live.clear();
    }
  };
  for (size_t s = 16; s <= 8192; ++s) check(s);
  for (size_t s = 8192; s <= 8 * kMiB; s = s * 5 / 4 + 3) check(s);
  for (void *q : live) free(q);
  live.clear();
  EXPECT_EQ(misaligned, 0u) << misaligned << " of " << checked
                            << " allocations were not 16-byte aligned, e.g. " << example;
  for (size_t s = 16; s < 2048; s += 16) {
    void *c = calloc(1, s);
    void *r = realloc(nullptr, s);
    ASSERT_TRUE(c && r);
    EXPECT_TRUE(aligned_to(c, 16) && aligned_to(r, 16)) << s;
    r = realloc(r, s * 3 + 1);
    ASSERT_NE(r, nullptr);
    EXPECT_TRUE(aligned_to(r, 16));
    free(c);
    free(r);
  }
}

TEST_F(MallocConformance, UsableSizeIsAtLeastRequestedAndWritable) {
  EXPECT_EQ(malloc_usable_size(nullptr), 0u);
  for (size_t s = 1; s < 40 * kMiB; s = s < 64 ? s + 1 : s * 3 / 2 + 1) {
    auto *p = static_cast<unsigned char *>(malloc(s));
    ASSERT_NE(p, nullptr) << s;
    size_t u = malloc_usable_size(p);
    ASSERT_GE(u, s) << "malloc_usable_size of a " << s << "-byte block";
    fill_pattern(p, u, s);
    ASSERT_EQ(pattern_mismatch(p, u, s), u) << "usable bytes of a " << s << "-byte block";
    free(p);
  }
}

TEST_F(MallocConformance, ReallocPreservesContentsAcrossSizeClasses) {
  const size_t steps[] = {1,      7,       24,       100,     1000,     4096,     5000,    40000,
                          100000, kMiB,    3 * kMiB, 8 * kMiB, 64 * kMiB, 65 * kMiB, 9 * kMiB,
                          kMiB,   200000,  4000,     100,     16,       3};
  auto *p = static_cast<unsigned char *>(malloc(steps[0]));
  ASSERT_NE(p, nullptr);
  fill_pattern(p, steps[0], 42);
  size_t cur = steps[0];
  for (size_t i = 1; i < sizeof steps / sizeof steps[0]; ++i) {
    const size_t next = steps[i];
    auto *q = static_cast<unsigned char *>(realloc(p, next));
    ASSERT_NE(q, nullptr) << "realloc " << cur << " -> " << next;
    const size_t keep = cur < next ? cur : next;
    size_t bad = pattern_mismatch(q, keep, 42);
    ASSERT_EQ(bad, keep) << "realloc " << cur << " -> " << next << " lost byte " << bad;
    if (next >= 16) {
      EXPECT_TRUE(aligned_to(q, 16)) << "realloc to " << next << " gave " << static_cast<void *>(q);
    }
    EXPECT_GE(malloc_usable_size(q), next);
    int t = tier_of(q);
    EXPECT_TRUE(t == 0 || t == 1) << "after realloc to " << next << ": tier " << t;
    fill_pattern(q, next, 42);
    p = q;
    cur = next;
  }
  free(p);
}

// ---- C++ operator new / delete --------------------------------------------------

struct alignas(64) Line64 {
  unsigned char b[64];
};
struct alignas(4096) Page4K {
  unsigned char b[4096];
};

TEST_F(MallocConformance, OperatorNewAndDeleteInEveryForm) {
  problems bad;
  for (size_t n : {size_t{1}, size_t{48}, size_t{3000}, size_t{200000}, 5 * kMiB}) {
    void *p = ::operator new(n);
    use(bad, p, n, "operator new");
    ::operator delete(p);
    p = ::operator new[](n);
    use(bad, p, n, "operator new[]");
    ::operator delete[](p);
    p = ::operator new(n, std::nothrow);
    use(bad, p, n, "operator new nothrow");
    ::operator delete(p, std::nothrow);
    p = ::operator new[](n, std::nothrow);
    use(bad, p, n, "operator new[] nothrow");
    ::operator delete[](p, std::nothrow);
    p = ::operator new(n);
    use(bad, p, n, "operator new (sized delete)");
    ::operator delete(p, n);
    p = ::operator new[](n);
    use(bad, p, n, "operator new[] (sized delete[])");
    ::operator delete[](p, n);
    for (size_t a : {size_t{64}, size_t{4096}, size_t{1} << 16}) {
      const std::align_val_t al{a};
      p = ::operator new(n, al);
      use(bad, p, n, "aligned operator new", a);
      ::operator delete(p, al);
      p = ::operator new[](n, al);
      use(bad, p, n, "aligned operator new[]", a);
      ::operator delete[](p, al);
      p = ::operator new(n, al);
      use(bad, p, n, "aligned operator new (aligned sized delete)", a);
      ::operator delete(p, n, al);
      p = ::operator new[](n, al);
      use(bad, p, n, "aligned operator new[] (aligned sized delete[])", a);
      ::operator delete[](p, n, al);
      p = ::operator new(n, al, std::nothrow);
      use(bad, p, n, "aligned nothrow operator new", a);
      ::operator delete(p, al, std::nothrow);
      p = ::operator new[](n, al, std::nothrow);
      use(bad, p, n, "aligned nothrow operator new[]", a);
      ::operator delete[](p, al, std::nothrow);
    }
  }
  // new-expressions, including over-aligned types.
  auto *i = new int(5);
  use(bad, i, sizeof *i, "new int");
  delete i;
  auto *arr = new long[1000];
  use(bad, arr, 1000 * sizeof(long), "new long[]");
  delete[] arr;
  auto *l = new Line64;
  EXPECT_TRUE(aligned_to(l, 64)) << l;
  use(bad, l, sizeof *l, "new alignas(64)");
  delete l;
  auto *pg = new Page4K[3];
  EXPECT_TRUE(aligned_to(pg, 4096)) << pg;
  use(bad, pg, 3 * sizeof(Page4K), "new alignas(4096)[]");
  delete[] pg;
  auto *nt = new (std::nothrow) Page4K;
  ASSERT_NE(nt, nullptr);
  EXPECT_TRUE(aligned_to(nt, 4096)) << nt;
  delete nt;
  auto s = std::make_unique<std::string>(1000, 'x');
  EXPECT_EQ(s->size(), 1000u);
  int t = tier_of(s->data());
  bad.check(t == 0 || t == 1, "std::string buffer on tier " + std::to_string(t));
  EXPECT_NO_PROBLEMS(bad);
}

TEST_F(MallocConformance, AbsurdNewThrowsBadAllocAndNothrowReturnsNull) {
  const size_t absurd[] = {SIZE_MAX - 4096, size_t{PTRDIFF_MAX} + 1, size_t{1} << 50};
  for (size_t n : absurd) {
    EXPECT_THROW(
        {
          void *p = ::operator new(opaque(n));
          escape(p);
          ::operator delete(p);
        },
        std::bad_alloc)
        << n;
    EXPECT_THROW(
        {
          void *p = ::operator new[](opaque(n));
          escape(p);
          ::operator delete[](p);
        },
        std::bad_alloc)
        << n;
    EXPECT_THROW(
        {
          void *p = ::operator new(opaque(n), std::align_val_t{64});
          escape(p);
          ::operator delete(p, std::align_val_t{64});
        },
        std::bad_alloc)
        << n;
    void *p = ::operator new(opaque(n), std::nothrow);
    EXPECT_EQ(p, nullptr) << n;
    p = ::operator new[](opaque(n), std::nothrow);
    EXPECT_EQ(p, nullptr) << n;
    p = ::operator new(opaque(n), std::align_val_t{4096}, std::nothrow);
    EXPECT_EQ(p, nullptr) << n;
  }
  // The process keeps allocating normally afterwards.
  problems bad;
  void *ok = ::operator new(100);
  use(bad, ok, 100, "operator new after bad_alloc");
  EXPECT_NO_PROBLEMS(bad);
  ::operator delete(ok);
}

int g_handler_calls = 0;
void counting_handler() {
  ++g_handler_calls;
  std::set_new_handler(nullptr);  // the next attempt finds no handler and throws
}

TEST_F(MallocConformance, NewHandlerIsCalledOnFailure) {
  const size_t n = opaque(SIZE_MAX - 8192);
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  EXPECT_THROW(
      {
        void *p = ::operator new(n);
        escape(p);
      },
      std::bad_alloc);
  EXPECT_EQ(g_handler_calls, 1);
  EXPECT_EQ(std::get_new_handler(), nullptr);

  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  void *p = ::operator new(n, std::nothrow);
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(g_handler_calls, 1) << "nothrow operator new must call the new-handler too";

  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  EXPECT_THROW(
      {
        void *q = ::operator new(n, std::align_val_t{256});
        escape(q);
      },
      std::bad_alloc);
  EXPECT_EQ(g_handler_calls, 1) << "aligned operator new";
  std::set_new_handler(nullptr);
}

TEST_F(MallocConformance, MallocMemoryIsManaged) {
  struct { void *p; size_t n; } blocks[] = {
      {malloc(8), 8}, {malloc(100), 100}, {malloc(5000), 5000}, {malloc(300000), 300000},
      {malloc(6 * kMiB), 6 * kMiB}, {calloc(10, 1000), 10000}, {aligned_alloc(64, 640), 640}};
  for (auto &b : blocks) {
    ASSERT_NE(b.p, nullptr);
    memset(b.p, 0x42, b.n);
    int first = tier_of(b.p);
    int last = tier_of(static_cast<char *>(b.p) + b.n - 1);
    EXPECT_TRUE(first == 0 || first == 1) << b.n << "-byte block " << b.p << " has tier " << first;
    EXPECT_TRUE(last == 0 || last == 1) << "last byte of " << b.n << "-byte block: tier " << last;
    if (api().owns) {
      EXPECT_TRUE(api().owns(b.p)) << b.n << "-byte block not owned by mmtier";
    }
  }
  for (auto &b : blocks) free(b.p);
  int on_stack = 0;
  static int in_data = 0;
  EXPECT_EQ(tier_of(&on_stack), -1);
  EXPECT_EQ(tier_of(&in_data), -1);
  EXPECT_EQ(tier_of(nullptr), -1);
}

}  // namespace
