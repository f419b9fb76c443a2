// The public C API: under LD_PRELOAD it is found with dlsym and behaves as
// include/mmtier/mmtier.h says (tier_of, tier_limit, explicit-tier
// allocation, errors, stats, resident bytes); linked without preload
// (libmmtier_api.so) the explicit API and the C++ tier allocator work too.
#include "preload_api.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

using preload_test::describe;
using preload_test::exec_result;
using preload_test::exited_with;
using preload_test::plain_environment;
using preload_test::run_program;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kPage = 4096;

struct api {
  int (*tier_of)(const void *);
  size_t (*resident_bytes)(int);
  size_t (*tier_limit)(int);
  void *(*malloc_on)(int, size_t);
  void *(*calloc_on)(int, size_t, size_t);
  void *(*aligned_alloc_on)(int, size_t, size_t);
  void (*free)(void *);
  int (*get_stats)(struct mmtier_stats *);
  int (*owns)(const void *);
};

template <class F>
void find(F *&fn, const char *name, std::string &missing) {
  fn = reinterpret_cast<F *>(dlsym(RTLD_DEFAULT, name));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + name;
}

class Api : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string missing;
    find(a.tier_of, "mmtier_tier_of", missing);
    find(a.resident_bytes, "mmtier_resident_bytes", missing);
    find(a.tier_limit, "mmtier_tier_limit", missing);
    find(a.malloc_on, "mmtier_malloc_on", missing);
    find(a.calloc_on, "mmtier_calloc_on", missing);
    find(a.aligned_alloc_on, "mmtier_aligned_alloc_on", missing);
    find(a.free, "mmtier_free", missing);
    find(a.get_stats, "mmtier_get_stats", missing);
    find(a.owns, "mmtier_owns", missing);
    ASSERT_TRUE(missing.empty()) << "not found with dlsym(RTLD_DEFAULT) under LD_PRELOAD="
                                 << (getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "(unset)") << ": "
                                 << missing;
  }
  api a{};
};

void touch(void *p, size_t n) {
  auto *c = static_cast<volatile unsigned char *>(p);
  for (size_t i = 0; i < n; i += kPage) c[i] = static_cast<unsigned char>(i / kPage + 1);
  c[n - 1] = 0x7e;
}

TEST_F(Api, FoundWithDlsym) {
  // SetUp asserted every function is there; they are the library's.
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void *>(a.tier_of), &info), 0);
  EXPECT_NE(strstr(info.dli_fname, "libmmtier"), nullptr) << info.dli_fname;
}

TEST_F(Api, TierLimitDefaultsToNone) {
  EXPECT_EQ(a.tier_limit(0), SIZE_MAX);
  EXPECT_EQ(a.tier_limit(1), SIZE_MAX);
}

TEST_F(Api, TierOfUnmanagedAddresses) {
  int on_stack = 0;
  EXPECT_EQ(a.tier_of(&on_stack), -1);
  EXPECT_EQ(a.tier_of(nullptr), -1);
  EXPECT_EQ(a.tier_of(reinterpret_cast<void *>(&touch)), -1);
}

TEST_F(Api, MallocOnPlacesOnTheTier) {
  for (size_t size : {size_t{16}, size_t{4096}, kMiB, 16 * kMiB}) {
    for (int tier : {1, 0}) {
      SCOPED_TRACE("tier " + std::to_string(tier) + ", " + std::to_string(size) + " bytes");
      void *p = a.malloc_on(tier, size);
      ASSERT_NE(p, nullptr) << strerror(errno);
      touch(p, size);
      EXPECT_EQ(a.tier_of(p), tier);
      EXPECT_EQ(a.tier_of(static_cast<char *>(p) + size - 1), tier);
      EXPECT_TRUE(a.owns(p));
      a.free(p);
    }
  }
}

TEST_F(Api, CallocOnZeroes) {
  for (int tier : {0, 1}) {
    for (size_t size : {size_t{48}, size_t{8192}, 3 * kMiB}) {
      SCOPED_TRACE("tier " + std::to_string(tier) + ", " + std::to_string(size) + " bytes");
      // Dirty memory of that size first so a reused block would show it.
      for (int i = 0; i < 4; ++i) {
        void *d = a.malloc_on(tier, size);
        ASSERT_NE(d, nullptr);
        memset(d, 0xab, size);
        a.free(d);
      }
      auto *p = static_cast<unsigned char *>(a.calloc_on(tier, size / 8, 8));
      ASSERT_NE(p, nullptr);
      size_t nonzero = 0;
      for (size_t i = 0; i < size; ++i) nonzero += p[i] != 0;
      EXPECT_EQ(nonzero, 0u);
      EXPECT_EQ(a.tier_of(p), tier);
      a.free(p);
    }
  }
  errno = 0;
  EXPECT_EQ(a.calloc_on(0, SIZE_MAX / 2, 4), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST_F(Api, AlignedAllocOnAligns) {
  for (int tier : {0, 1}) {
    for (size_t align : {size_t{16}, size_t{64}, size_t{4096}, size_t{65536}, 2 * kMiB}) {
      for (size_t size : {size_t{1}, size_t{100}, 3 * kMiB + 5}) {
        SCOPED_TRACE("tier " + std::to_string(tier) + ", align " + std::to_string(align) + ", size " +
                     std::to_string(size));
        void *p = a.aligned_alloc_on(tier, align, size);
        ASSERT_NE(p, nullptr) << strerror(errno);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u);
        memset(p, 1, size);
        EXPECT_EQ(a.tier_of(p), tier);
        a.free(p);
      }
    }
  }
  errno = 0;
  EXPECT_EQ(a.aligned_alloc_on(0, 24, 64), nullptr);  // not a power of two
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(Api, BadTierIsEinval) {
  for (int tier : {-1, 2, 99}) {
    SCOPED_TRACE("tier " + std::to_string(tier));
    errno = 0;
    EXPECT_EQ(a.malloc_on(tier, 64), nullptr);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(a.calloc_on(tier, 8, 8), nullptr);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(a.aligned_alloc_on(tier, 64, 64), nullptr);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(a.tier_of(&tier), -1);
  }
  a.free(nullptr);  // must be a no-op
}

TEST_F(Api, StatsAreConsistent) {
  void *d = a.malloc_on(0, 8 * kMiB);
  void *p = a.malloc_on(1, 8 * kMiB);
  ASSERT_NE(d, nullptr);
  ASSERT_NE(p, nullptr);
  touch(d, 8 * kMiB);
  touch(p, 8 * kMiB);

  struct mmtier_stats st;
  memset(&st, 0xff, sizeof st);
  ASSERT_EQ(a.get_stats(&st), 0) << strerror(errno);
  size_t res0 = a.resident_bytes(0), res1 = a.resident_bytes(1);

  EXPECT_GT(st.unit_size, 0u);
  EXPECT_EQ(st.unit_size & (st.unit_size - 1), 0u) << "unit size not a power of two";
  for (int t = 0; t < 2; ++t) {
    SCOPED_TRACE("tier " + std::to_string(t));
    EXPECT_GT(st.units[t], 0u);
    EXPECT_GE(st.peak_units[t], st.units[t]);
    EXPECT_GE(st.units[t] * st.unit_size, 8 * kMiB);
    EXPECT_GE(st.resident_bytes[t], 8 * kMiB);
    EXPECT_LE(st.resident_bytes[t], st.units[t] * st.unit_size);
    EXPECT_EQ(st.limit_bytes[t], a.tier_limit(t));
  }
  const double slack = 16 * kPage;
  EXPECT_NEAR(double(st.resident_bytes[0]), double(res0), slack);
  EXPECT_NEAR(double(st.resident_bytes[1]), double(res1), slack);

  errno = 0;
  EXPECT_EQ(a.get_stats(nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  a.free(d);
  a.free(p);
}

TEST_F(Api, ResidentBytesGrowWithPmemAllocation) {
  const size_t n = 64 * kMiB;
  const size_t before1 = a.resident_bytes(1);
  const size_t before0 = a.resident_bytes(0);
  void *p = a.malloc_on(1, n);
  ASSERT_NE(p, nullptr);
  touch(p, n);
  const size_t after1 = a.resident_bytes(1);
  const size_t after0 = a.resident_bytes(0);
  std::cout << "PMem resident " << before1 / kMiB << " -> " << after1 / kMiB << " MiB, DRAM "
            << before0 / kMiB << " -> " << after0 / kMiB << " MiB" << std::endl;
  EXPECT_GE(after1, before1 + n / 10 * 9);
  EXPECT_LT(after0, before0 + n / 10) << "the PMem allocation grew DRAM";
  a.free(p);
}

// ---- linked use, no preload -------------------------------------------------

TEST(LinkedApi, ExplicitPlacementAndCxxAllocator) {
  exec_result r = run_program(MMTIER_LINKED_PROBE, {MMTIER_LINKED_PROBE, "linked"}, plain_environment());
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(r.out + r.err, "linked ok\n") << describe(r);
}

// Threads that existed before the runtime started allocate through it.  The
// library is loaded with dlopen after the threads started; its engine uses
// initial-exec TLS, so glibc must be given room for it (documented).
TEST(LinkedApi, ThreadsThatExistedBeforeStartUp) {
  exec_result r = run_program(MMTIER_LATE_START_PROBE, {MMTIER_LATE_START_PROBE, MMTIER_API_LIB},
                              plain_environment({"GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384"}));
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(r.out, "late start ok\n") << describe(r);
}

// Every function the public header declares is exported by the preload
// library (and nothing of the engine's is): the export lists in
// preload/exports.map and lib/api/api.map must follow the header.
TEST(ApiExports, EveryHeaderFunctionIsFoundAndNothingElse) {
  std::ifstream header(MMTIER_SOURCE_DIR "/include/mmtier/mmtier.h");
  ASSERT_TRUE(header.is_open());
  std::string text((std::istreambuf_iterator<char>(header)), std::istreambuf_iterator<char>());
  std::regex decl(R"(MMTIER_API[^;(]*\b(mmtier_[a-z_]+)\s*\()");
  size_t count = 0;
  for (std::sregex_iterator it(text.begin(), text.end(), decl), end; it != end; ++it) {
    const std::string name = (*it)[1];
    EXPECT_NE(dlsym(RTLD_DEFAULT, name.c_str()), nullptr) << name << " is declared but not exported";
    ++count;
  }
  EXPECT_GE(count, 13u);
  for (const char *engine : {"mmtier_je_malloc", "mmtier_je_mallctl", "mmtier_je_nallocx"})
    EXPECT_EQ(dlsym(RTLD_DEFAULT, engine), nullptr) << engine << " leaks from the library";
}

}  // namespace
