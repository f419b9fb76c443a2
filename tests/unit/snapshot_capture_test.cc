// The capture (lib/snapshot/capture.cc) linked into the test, so the
// sanitizer runs cover it: heap units on both tiers, written by threads
// that run through the snapshot, are in the capsule as of the snapshot
// instant; a record torn or newer than its thread's count at that instant
// would be a write from after it (the PMem units are made private before
// the stop, while the writers run), and the stopped threads' registers point
// into their own stacks; the process's signal dispositions, limits, umask
// and cwd are recorded as they were.
#include "api/runtime.h"
#include "capsule_reader.h"
#include "heap/heap.h"
#include "heap_test_util.h"
#include "snapshot/capture.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
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
  // Process state the capsule records: a handler, a limit, the umask, cwd.
  struct sigaction sa = {}, old_sa;
  sa.sa_handler = [](int) {};
  sa.sa_flags = SA_RESTART;
  sigaddset(&sa.sa_mask, SIGUSR2);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old_sa), 0);
  struct rlimit old_core, core;
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &old_core), 0);
  core = {4096 * 3, old_core.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &core), 0);
  const mode_t old_umask = umask(027);
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
  temp_dir dir;
  snap_result res;
  const long taken = snapshot_take({"cap", dir.path.c_str()}, &res);
  umask(old_umask);
  setrlimit(RLIMIT_CORE, &old_core);
  sigaction(SIGUSR1, &old_sa, nullptr);
  ASSERT_EQ(taken, 0) << res.line;
  // The PMem units' mappings were made private before the stop, while the
  // writers ran on (their writes since went to private copies, which the
  // checks below find as of the instant); the stop froze at most what the
  // mover re-shared in between.
  EXPECT_GE(res.frozen_before, kUnits * kUnitSize);
  EXPECT_LT(res.frozen_in_stop, res.frozen_before);
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
  const cap::table_entry *pt = capsule_test::table_of(c, cap::table_kind::procstate);
  ASSERT_NE(pt, nullptr);
  ASSERT_EQ(pt->record_size, sizeof(cap::procstate_record));
  ASSERT_EQ(pt->count, 1u);
  const auto &proc =
      *reinterpret_cast<const cap::procstate_record *>(reinterpret_cast<const char *>(c.storage.data()) + pt->offset);
  EXPECT_EQ(proc.sigactions[SIGUSR1 - 1].handler, reinterpret_cast<uint64_t>(sa.sa_handler));
  EXPECT_TRUE(proc.sigactions[SIGUSR1 - 1].flags & SA_RESTART);
  EXPECT_EQ(proc.sigactions[SIGUSR1 - 1].mask, uint64_t{1} << (SIGUSR2 - 1));
  EXPECT_EQ(proc.sigactions[SIGTERM - 1].handler, reinterpret_cast<uint64_t>(SIG_DFL));
  EXPECT_EQ(proc.rlimits[RLIMIT_CORE].cur, 4096u * 3);
  EXPECT_EQ(proc.rlimits[RLIMIT_CORE].max, static_cast<uint64_t>(old_core.rlim_max));
  EXPECT_EQ(proc.umask, 027u);
  EXPECT_STREQ(cap::string_at(c.m, proc.cwd), cwd);
  for (void *m : mem) EXPECT_EQ(heap_munmap(m, kUnits * kUnitSize), 0);
}

}  // namespace
}  // namespace mmtier::detail
