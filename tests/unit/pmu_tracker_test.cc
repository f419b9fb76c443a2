// PMU access tracker (lib/track/pmu_tracker): the thread coverage set, and
// the live path: open() says why it cannot sample on a machine without a PMU
// (or samples where it can), and the whole perf plumbing runs here with
// software page-fault events, which carry the faulting address the way PEBS
// samples carry data addresses.
#include "track/pmu_tracker.h"

#include "pmu_test_util.h"
#include "track/pmu_counts.h"

#include <gtest/gtest.h>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

using pmu_test::capture;
using pmu_test::fake_sysfs;
using pmu_test::kBase;
using pmu_test::kRange;
using pmu_test::task_event;

// --- thread coverage

TEST(PmuThreads, ThreadsWithoutForkRecordsAreAttachedAfterTwoScans) {
  auto t = std::make_unique<pmu_threads>();
  uint32_t attach[8];
  t->covered(100, 1);  // the thread that opened the events
  const uint32_t scan1[] = {100, 101};
  EXPECT_EQ(t->scan(scan1, 2, attach, 8), 0u) << "a new thread is only pending at first";
  EXPECT_TRUE(t->is_pending(101));
  t->covered(102, 5);  // a FORK record: inherited the events
  const uint32_t scan2[] = {102, 100, 101};
  ASSERT_EQ(t->scan(scan2, 3, attach, 8), 1u);
  EXPECT_EQ(attach[0], 101u) << "still without a FORK record: give it events";
  t->covered(101, 6);
  EXPECT_EQ(t->scan(scan2, 3, attach, 8), 0u);
  EXPECT_TRUE(t->is_covered(102));

  // An EXIT older than the entry belongs to an earlier thread with this tid.
  t->exited(102, 4);
  EXPECT_TRUE(t->is_covered(102));
  t->exited(102, 7);
  EXPECT_FALSE(t->is_covered(102));

  // A pending thread whose FORK record arrives before the next scan is not
  // attached.
  const uint32_t scan3[] = {100, 101, 103};
  EXPECT_EQ(t->scan(scan3, 3, attach, 8), 0u);
  t->covered(103, 8);
  EXPECT_EQ(t->scan(scan3, 3, attach, 8), 0u);
  EXPECT_TRUE(t->is_covered(103));

  // Threads gone from the list are forgotten.
  const uint32_t scan4[] = {100};
  EXPECT_EQ(t->scan(scan4, 1, attach, 8), 0u);
  EXPECT_EQ(t->size(), 1u);
  EXPECT_FALSE(t->is_covered(101));
}

// --- the live path

bool sysfs_lists_memory_sampling() {
  namespace fs = std::filesystem;
  const fs::path d = "/sys/bus/event_source/devices";
  return fs::exists(d / "cpu/events/mem-loads") || fs::exists(d / "cpu_core/events/mem-loads") ||
         fs::exists(d / "cpu_atom/events/mem-loads") || fs::exists(d / "ibs_op/type");
}

long open_cycles_counter() {
  perf_event_attr a{};
  a.type = PERF_TYPE_HARDWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_HW_CPU_CYCLES;
  a.disabled = 1;
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  long fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
  if (fd >= 0) close(static_cast<int>(fd));
  return fd;
}

TEST(PmuTracker, OpenSaysWhyItCannotSampleOrSamplesABusyLoop) {
  const size_t len = size_t{64} << 20;
  void *m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto t = std::make_unique<pmu_tracker>();
  pmu_params p;
  p.base = reinterpret_cast<uintptr_t>(m);
  p.size = len;
  const pmu_status s = t->open(p);
  ASSERT_NE(t->reason(), nullptr);
  EXPECT_GT(strlen(t->reason()), 10u) << pmu_status_name(s);
  if (s != pmu_status::ok) {
    EXPECT_TRUE(s == pmu_status::no_pmu || s == pmu_status::no_permission ||
                s == pmu_status::unsupported_event || s == pmu_status::no_kernel_support ||
                s == pmu_status::out_of_resources)
        << pmu_status_name(s) << ": " << t->reason();
    EXPECT_FALSE(t->is_open());
    EXPECT_EQ(t->cpus(), 0u);
    capture c;
    EXPECT_EQ(t->drain(c.sink()), 0u);
    EXPECT_EQ(t->refresh(), 0u);
    if (!sysfs_lists_memory_sampling() && open_cycles_counter() < 0) {
      // This machine: no PMU at all, and the reason says how that was found.
      EXPECT_EQ(s, pmu_status::no_pmu) << t->reason();
      EXPECT_NE(std::string(t->reason()).find("cpu-cycles"), std::string::npos) << t->reason();
    }
    t->close();
    munmap(m, len);
    return;
  }
  // A PMU with memory sampling: random accesses over 64 MiB miss the caches.
  std::vector<uint64_t> storage((pmu_unit_counts::storage_bytes(len >> kUnitShift) + 7) / 8);
  pmu_unit_counts counts;
  ASSERT_TRUE(counts.init(p.base, len >> kUnitShift, storage.data()));
  auto *words = static_cast<volatile uint64_t *>(m);
  const size_t nwords = len / 8;
  uint64_t x = 88172645463325252ull, sum = 0;
  for (int round = 0; round < 400 && counts.touched() == 0; round++) {
    for (int i = 0; i < 1'000'000; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      if (i & 1) words[x % nwords] = x;
      else sum += words[x % nwords];
    }
    t->drain(counts.sink());
  }
  EXPECT_GT(counts.touched(), 0u) << "no sample in 400M accesses: " << t->reason() << " sum "
                                  << sum;
  EXPECT_EQ(t->stats().corrupt, 0u);
  t->close();
  EXPECT_FALSE(t->is_open());
  munmap(m, len);
}

TEST(PmuTracker, BadArgumentsAreReportedNotFatal) {
  static constinit pmu_tracker global;  // a library global needs no constructor call
  EXPECT_EQ(global.status(), pmu_status::closed);
  EXPECT_FALSE(global.is_open());
  auto t = std::make_unique<pmu_tracker>();
  pmu_params p;
  p.base = kBase;
  p.size = kRange;
  p.ring_pages = 3;
  EXPECT_EQ(t->open(p), pmu_status::invalid_argument);
  EXPECT_NE(std::string(t->reason()).find("ring_pages"), std::string::npos) << t->reason();
  pmu_plan empty{};
  p.ring_pages = 4;
  p.plan = &empty;
  EXPECT_EQ(t->open(p), pmu_status::invalid_argument);
  EXPECT_FALSE(t->is_open());

  // A sysfs without any PMU: no_pmu where the kernel has no PMU either,
  // unsupported_event where it counts cycles.
  fake_sysfs fs;
  fs.write("devices/system/cpu/online", "0\n");
  p.plan = nullptr;
  p.sysfs_root = fs.root();
  const pmu_status s = t->open(p);
  const long cycles = open_cycles_counter();
  if (cycles >= 0) EXPECT_EQ(s, pmu_status::unsupported_event) << t->reason();
  else if (cycles == -1 && errno == ENOSYS)
    EXPECT_EQ(s, pmu_status::no_kernel_support) << t->reason();
  else EXPECT_EQ(s, pmu_status::no_pmu) << t->reason();
  t->close();
  EXPECT_EQ(t->status(), pmu_status::closed);
}

uint32_t gettid_now() { return static_cast<uint32_t>(syscall(SYS_gettid)); }

// Writes one byte to the first `pages` pages of unit u of the region.
void touch(char *region, uint32_t u, int pages) {
  for (int i = 0; i < pages; i++) {
    volatile char *b = region + (size_t{u} << kUnitShift) + static_cast<size_t>(i) * 4096;
    *b = 1;
  }
}

// The live plumbing on this machine: per-CPU inherited events with one ring
// per CPU (SET_OUTPUT), a thread alive before open() attached as a root, a
// thread created after it covered by inheritance (and its FORK record), the
// production parser on rings the kernel wrote, and a fork child that closes
// its copies.  Software page-fault events stand in for PEBS: each carries the
// faulting address, and a first write to an anonymous page faults once.
// NOLINTNEXTLINE(readability-function-size): one scenario, each step on the state the last left
TEST(PmuTracker, LivePathWithSoftwarePageFaultEvents) {
  constexpr uint32_t kN = 8;
  const size_t len = size_t{kN} << kUnitShift;
  // Aligned to a unit so that unit i of the tracker is unit i here.
  void *raw =
      mmap(nullptr, len + kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  char *region = reinterpret_cast<char *>(align_up(reinterpret_cast<uintptr_t>(raw), kUnitSize));
  ASSERT_EQ(madvise(region, len, MADV_NOHUGEPAGE), 0);

  char online[256] = "";
  {
    std::ifstream in("/sys/devices/system/cpu/online");
    in.getline(online, sizeof online);
  }
  pmu_plan plan{};
  plan.vendor = pmu_vendor::none;
  plan.n = 1;
  pmu_event_spec &s = plan.ev[0];
  s.kind = pmu_kind::load;
  s.type = PERF_TYPE_SOFTWARE;
  s.config[0] = PERF_COUNT_SW_PAGE_FAULTS;
  s.period = 1;
  s.exclude_ok = true;
  ASSERT_TRUE(pmu_parse_cpu_list(online, &s.cpus)) << online;
  ASSERT_GT(s.cpus.count(), 0u);
  snprintf(s.pmu, sizeof s.pmu, "software");

  // A thread alive before open(): it must get its own events.
  std::promise<void> go;
  std::shared_future<void> go_f = go.get_future().share();
  std::atomic<uint32_t> early_tid{0};
  std::thread early([&] {
    early_tid = gettid_now();
    go_f.wait();
    touch(region, 5, 9);
  });
  while (early_tid.load() == 0) std::this_thread::yield();

  auto t = std::make_unique<pmu_tracker>();
  pmu_params p;
  p.base = reinterpret_cast<uintptr_t>(region);
  p.size = len;
  p.plan = &plan;
  p.ring_pages = 8;
  ASSERT_EQ(t->open(p), pmu_status::ok) << t->reason();
  EXPECT_EQ(t->cpus(), s.cpus.count());
  EXPECT_GE(t->stats().threads_attached, 2u) << "this thread and the early one";

  go.set_value();
  early.join();
  touch(region, 0, 10);
  touch(region, 1, 20);
  touch(region, 3, 5);
  *(volatile char *)(region + len) = 1;  // the page just past the range
  std::atomic<uint32_t> late_tid{0};
  std::thread late([&] {  // created after open(): inherits the events
    late_tid = gettid_now();
    touch(region, 4, 7);
  });
  late.join();

  std::vector<uint64_t> storage((pmu_unit_counts::storage_bytes(kN) + 7) / 8);
  pmu_unit_counts counts;
  ASSERT_TRUE(counts.init(p.base, kN, storage.data()));
  capture c;
  struct both {
    pmu_unit_counts *counts;
    capture *cap;
  } b{&counts, &c};
  pmu_sink sink;
  sink.sample = [](void *x, const pmu_sample &smp) {
    auto *bb = static_cast<both *>(x);
    bb->counts->add(smp.addr, smp.is_store);
    bb->cap->samples.push_back(smp);
  };
  sink.task = [](void *x, bool exit, uint32_t pid, uint32_t tid, uint64_t time) {
    static_cast<both *>(x)->cap->tasks.push_back({exit, pid, tid, time});
  };
  sink.ctx = &b;
  t->drain(sink);

  const int expect[kN] = {10, 20, 0, 5, 7, 9, 0, 0};
  for (uint32_t u = 0; u < kN; u++) {
    SCOPED_TRACE(u);
    EXPECT_EQ(counts.count(u).reads, static_cast<uint32_t>(expect[u]));
    EXPECT_EQ(counts.count(u).writes, 0u);
  }
  size_t late_samples = 0, early_samples = 0;
  for (const pmu_sample &x : c.samples) {
    EXPECT_EQ(x.pid, static_cast<uint32_t>(getpid()));
    late_samples += x.tid == late_tid.load();
    early_samples += x.tid == early_tid.load();
  }
  EXPECT_EQ(late_samples, 7u);
  EXPECT_EQ(early_samples, 9u);
  bool fork_seen = false;
  for (const task_event &e : c.tasks) fork_seen |= !e.exit && e.tid == late_tid.load();
  EXPECT_TRUE(fork_seen) << "the inherited thread's FORK record";
  EXPECT_EQ(t->stats().lost, 0u);
  EXPECT_EQ(t->stats().corrupt, 0u);
  EXPECT_GE(t->stats().foreign, 1u) << "faults outside the range are seen and dropped";

  // Every thread is covered (the FORK record said so): refresh attaches
  // nobody, now or at the next scan.
  EXPECT_EQ(t->refresh(), 0u);
  t->drain(sink);
  EXPECT_EQ(t->refresh(), 0u);

  // A fork child closes its copies; the parent keeps sampling, and the
  // child's own faults never reach the parent's rings.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    t->forget_after_fork();
    touch(region, 7, 3);
    _exit(t->is_open() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  touch(region, 6, 4);
  counts.clear();
  t->drain(sink);
  EXPECT_EQ(counts.count(6).reads, 4u);
  EXPECT_EQ(counts.count(7).reads, 0u);

  // Samples of an ignored thread are dropped.
  std::thread ignored([&] {
    t->ignore_tid(gettid_now());
    touch(region, 2, 6);
  });
  ignored.join();
  counts.clear();
  const uint64_t before = t->stats().ignored_tid;
  t->drain(sink);
  EXPECT_EQ(counts.count(2).reads, 0u);
  // Its six faults in the range, and any elsewhere (its stack): the tid
  // filter comes before the range filter.
  EXPECT_GE(t->stats().ignored_tid - before, 6u);

  t->close();
  EXPECT_FALSE(t->is_open());
  EXPECT_EQ(t->drain(sink), 0u);
  munmap(raw, len + kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
