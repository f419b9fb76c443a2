// The capture (lib/snapshot/capture.cc) linked into the test, so the
// sanitizer runs cover it: heap units on both tiers, written by threads
// that run through the snapshot, are in the capsule as of the snapshot
// instant; a record torn or newer than its thread's count at that instant
// would be a write from after it, and the stopped threads' registers point
// into their own stacks.
#include "api/runtime.h"
#include "capsule_reader.h"
#include "heap/heap.h"
#include "heap_test_util.h"
#include "snapshot/capture.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

namespace cap = capsule;

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/var/tmp/mmtier-capture-XXXXXX";
    path = mkdtemp(tmpl) ? tmpl : "";
  }
  ~temp_dir() {
    if (!path.empty()) (void)system(("rm -rf '" + path + "'").c_str());
  }
};

TEST(SnapshotCapture, UnitsOnBothTiersAsOfTheInstantWithEveryThread) {
  ASSERT_EQ(runtime_start(), kReady);
  test::use_up_startup_units();
  // Three units forced on each tier.
  constexpr size_t kUnits = 3;
  void *mem[2] = {};
  for (int tier = 0; tier < 2; ++tier)
    ASSERT_EQ(heap_mmap(nullptr, kUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &mem[tier],
                        tier),
              0);
  // Records of 8 words, one per writer and page; each writer counts.
  constexpr int kWriters = 2;
  constexpr size_t kPerRegion = kUnits * kUnitSize / 4096, kPages = 2 * kPerRegion;
  constexpr size_t kPerPage = 4096 / sizeof(test::record);
  auto rec = [&](size_t page, int t) -> test::record & {
    return static_cast<test::record *>(mem[page / kPerRegion])[(page % kPerRegion) * kPerPage + t];
  };
  std::atomic<uint64_t> count[kWriters] = {};
  std::atomic<int> tids[kWriters] = {};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t)
    threads.emplace_back([&, t] {
      tids[t] = static_cast<int>(syscall(SYS_gettid));
      for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
        test::put(rec(v % kPages, t), v);
        count[t].store(v, std::memory_order_release);
      }
    });
  for (auto &c : count)
    while (c.load() < 2 * kPages) std::this_thread::yield();
  for (int tier = 0; tier < 2; ++tier)
    for (size_t u = 0; u < kUnits; ++u) ASSERT_EQ(heap_tier_of(static_cast<char *>(mem[tier]) + u * kUnitSize), tier);
  temp_dir dir;
  snap_result res;
  ASSERT_EQ(snapshot_take({"cap", dir.path.c_str()}, &res), 0) << res.line;
  uint64_t after[kWriters];
  for (int t = 0; t < kWriters; ++t) after[t] = count[t].load();
  stop = true;
  for (auto &th : threads) th.join();

  capsule_test::capsule_reader c(res.path);
  ASSERT_EQ(c.err, cap::parse_error::ok) << cap::parse_error_text(c.err);
  EXPECT_EQ(c.m.status->state, static_cast<uint32_t>(cap::status::durable));
  EXPECT_EQ(c.m.hdr->mem_size, res.mem_bytes);
  EXPECT_GE(res.threads, static_cast<uint32_t>(kWriters + 1));
  std::vector<test::record> image(kPages * kPerPage);
  for (int tier = 0; tier < 2; ++tier)
    ASSERT_TRUE(c.read(reinterpret_cast<uintptr_t>(mem[tier]), &image[tier * kPerRegion * kPerPage], kUnits * kUnitSize));
  const cap::table_entry *tt = capsule_test::table_of(c, cap::table_kind::threads);
  ASSERT_NE(tt, nullptr);
  const auto *threads_rec =
      reinterpret_cast<const cap::thread_record *>(reinterpret_cast<const char *>(c.storage.data()) + tt->offset);
  for (int t = 0; t < kWriters; ++t) {
    // The writer's count at the instant, from the capsule.
    uint64_t at = 0;
    ASSERT_TRUE(c.read(reinterpret_cast<uintptr_t>(&count[t]), &at, sizeof at));
    EXPECT_LT(at, after[t]) << "the thread ran on after the snapshot";
    // Only the record being written at the instant (count at + 1) may be
    // half written: the thread stopped between two of its words.
    size_t torn = 0, newer = 0;
    for (size_t p = 0; p < kPages; ++p) {
      uint64_t v = 0;
      const test::record &r = image[p * kPerPage + t];
      if (!test::check(r, &v) && p != (at + 1) % kPages) ++torn;
      if (v > at + 1) ++newer;
    }
    EXPECT_EQ(torn, 0u) << "writer " << t;
    EXPECT_EQ(newer, 0u) << "writer " << t << ": writes from after the snapshot";
    bool found = false;
    for (uint64_t i = 0; i < tt->count; ++i) {
      if (threads_rec[i].tid != tids[t].load()) continue;
      found = true;
      EXPECT_NE(threads_rec[i].uc_addr, 0u);
      EXPECT_NE(threads_rec[i].fs_base, 0u);
#if defined(__x86_64__)
      // The stack pointer it stopped with is in a mapping of the capsule.
      const uint64_t sp = threads_rec[i].gregs[REG_RSP];
      uint64_t word = 0;
      EXPECT_TRUE(c.read(sp, &word, sizeof word)) << std::hex << sp;
#endif
    }
    EXPECT_TRUE(found) << "writer " << t << " has no thread record";
  }
  for (void *m : mem) EXPECT_EQ(heap_munmap(m, kUnits * kUnitSize), 0);
}

}  // namespace
}  // namespace mmtier::detail
