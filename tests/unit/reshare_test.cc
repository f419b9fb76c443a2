// Re-sharing units frozen by fork (heap_reshare, lib/heap/reshare.cc): the
// pages a process writes after a fork go back to PMem, in the parent (on a
// fresh slot while a child holds the file, on the unit's own slot once none
// does) and in a child (on a slot of its own file); each side keeps its own
// view throughout; the slots a fork froze come back once the children let go
// of the file; and writer threads and system calls running during a
// re-share lose nothing.  The same tests run with writers held off by
// userfaultfd write-protect (tmpfs on a recent kernel) and by stopping
// every thread (MMTIER_HIDE_FEATURES=wp-unpopulated, and a disk file
// system's PMem directory, registered in tests/CMakeLists.txt).
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/heap_internal.h"
#include "heap_test_util.h"
#include "platform/pagemap.h"
#include "support/world.h"
#include "tier/file_tier.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

using namespace test;

constexpr size_t kUnits = 4;

uint64_t pattern(uint64_t word, uint64_t gen) { return (word + 1) * 0x9E3779B97F4A7C15ull ^ (gen * 0x5bd1e995); }

// Words of n units that differ from generation gen (every 512th word, one
// per page, plus the last of each page).
size_t mismatches(const char *base, size_t units, uint64_t gen) {
  const auto *w = reinterpret_cast<const uint64_t *>(base);
  size_t bad = 0;
  for (size_t i = 0; i < units * kUnitSize / 8; i += 511) bad += w[i] != pattern(i, gen);
  return bad;
}

void fill(char *base, size_t units, uint64_t gen, size_t page_step = 1) {
  auto *w = reinterpret_cast<uint64_t *>(base);
  for (size_t page = 0; page < units * kPagesPerUnit; page += page_step)
    for (size_t i = page * 512; i < (page + 1) * 512; ++i) w[i] = pattern(i, gen);
}

// Pages of the range the kernel shows as anonymous copies (present and not
// the file's; on DAX, exclusive too); -1 if pagemap could not be read.
long anonymous_pages(const char *base, size_t units) {
  std::vector<sys::page_info> info(units * kPagesPerUnit);
  if (!sys::pagemap_read(reinterpret_cast<uintptr_t>(base), info.size(), info.data())) return -1;
  long n = 0;
  for (const sys::page_info &i : info) n += sys::private_copy(i, pmem_tier().dax);
  return n;
}

size_t frozen_units(const char *base, size_t units) {
  heap_lock_guard g;
  size_t n = 0;
  for (size_t u = 0; u < units; ++u) n += g_heap.units[unit_index_of(base + u * kUnitSize)].frozen != 0;
  return n;
}

// Re-shares until none of the range's units is frozen (or nothing more can
// be done); the totals of the calls.
reshare_outcome reshare_all(const char *base, size_t units) {
  reshare_outcome total;
  for (int i = 0; i < 64 && frozen_units(base, units); ++i) {
    const reshare_outcome o = heap_reshare(SIZE_MAX, SIZE_MAX);
    total.units += o.units;
    total.in_place += o.in_place;
    total.bytes += o.bytes;
    total.stops += o.stops;
    total.pause_max_ns = std::max(total.pause_max_ns, o.pause_max_ns);
    if (o.err) total.err = o.err;
    if (!o.units && o.err && o.err != -EAGAIN) break;
  }
  return total;
}

file_tier_state *pmem_state() { return static_cast<file_tier_state *>(pmem_tier().impl); }

// A one-byte message over a pipe (the other process waits for it).
void tell(int fd) { ASSERT_EQ(write(fd, "x", 1), 1); }
bool await(int fd) {
  char c;
  return read(fd, &c, 1) == 1;
}

// A fork with a pipe whose read end the child may wait on (tell(go[1])
// lets it go on): 0 in the child, the child's pid in the parent, -1 on
// failure.
pid_t fork_with_go(int go[2]) { return pipe(go) == 0 ? fork() : -1; }

class Reshare : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(runtime_start(), kReady);
    if (!pmem_tier().usable) GTEST_SKIP() << "no PMem tier here";
    // The fault service, where there is one: re-sharing then holds writers
    // off with write-protect where it can (else it stops the world).
    (void)faults_start();
    use_up_startup_units();
    // Retired slots of an earlier test's forks are reclaimed first.
    heap_reshare(0, 0);
  }
  // n units forced onto PMem, filled with generation 1.
  char *pmem_units(size_t n) {
    void *p = nullptr;
    EXPECT_EQ(heap_mmap(nullptr, n * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierPmem), 0);
    if (!p) return nullptr;
    fill(static_cast<char *>(p), n, 1);
    for (size_t u = 0; u < n; ++u) EXPECT_EQ(heap_tier_of(static_cast<char *>(p) + u * kUnitSize), kTierPmem);
    return static_cast<char *>(p);
  }
};

TEST_F(Reshare, ParentCopiesGoToAFreshSlotWhileTheChildHoldsTheFile) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  int go[2];
  const pid_t pid = fork_with_go(go);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child's view stays the fork instant's, whatever the parent does.
    if (!await(go[0])) _exit(3);
    _exit(mismatches(base, kUnits, 1) == 0 ? 0 : 1);
  }
  ASSERT_EQ(frozen_units(base, kUnits), kUnits);
  fill(base, kUnits, 2);
  const resident_split before = heap_resident_split();
  EXPECT_GE(before.frozen_copied, kUnits * kUnitSize) << "every page written since the fork is a DRAM copy";
  EXPECT_EQ(anonymous_pages(base, kUnits), static_cast<long>(kUnits * kPagesPerUnit));

  const reshare_outcome o = reshare_all(base, kUnits);
  EXPECT_EQ(frozen_units(base, kUnits), 0u) << "error " << o.err;
  EXPECT_GE(o.units, kUnits);
  EXPECT_EQ(o.in_place, 0u) << "the child holds the file: no slot it maps may be written";
  EXPECT_EQ(anonymous_pages(base, kUnits), 0) << "every page is the file's again";
  EXPECT_EQ(heap_resident_split().frozen_copied, 0u);
  EXPECT_EQ(mismatches(base, kUnits, 2), 0u) << "the parent's writes survive the re-share";
  // The frozen slots wait for the child.
  EXPECT_GE(pmem_state()->retired_count, kUnits);
  heap_reshare(0, 0);
  EXPECT_GE(pmem_state()->retired_count, kUnits) << "reclaimed while the child still maps them";

  tell(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's view changed: status " << status;
  heap_reshare(0, 0);
  EXPECT_EQ(pmem_state()->retired_count, 0u) << "the child is gone: its slots come back";
  EXPECT_EQ(mismatches(base, kUnits, 2), 0u);
  for (int fd : {go[0], go[1]}) close(fd);
  heap_munmap(base, kUnits * kUnitSize);
}

TEST_F(Reshare, InPlaceOnceNoChildHoldsTheFile) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  uint32_t slots[kUnits];
  for (size_t u = 0; u < kUnits; ++u) slots[u] = g_heap.units[unit_index_of(base + u * kUnitSize)].slot;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // Every other page written: half the unit is copies, half the file's.
  fill(base, kUnits, 2, 2);
  EXPECT_EQ(anonymous_pages(base, kUnits), static_cast<long>(kUnits * kPagesPerUnit / 2));
  const reshare_outcome o = reshare_all(base, kUnits);
  EXPECT_EQ(frozen_units(base, kUnits), 0u) << "error " << o.err;
  EXPECT_EQ(o.in_place, o.units);
  EXPECT_LE(o.bytes, kUnits * kUnitSize / 2) << "only the pages changed since the fork are written";
  for (size_t u = 0; u < kUnits; ++u)
    EXPECT_EQ(g_heap.units[unit_index_of(base + u * kUnitSize)].slot, slots[u]) << "back on its own slot";
  EXPECT_EQ(anonymous_pages(base, kUnits), 0);
  const auto *w = reinterpret_cast<const uint64_t *>(base);
  size_t bad = 0;
  for (size_t page = 0; page < kUnits * kPagesPerUnit; ++page)
    bad += w[page * 512 + 7] != pattern(page * 512 + 7, page % 2 == 0 ? 2 : 1);
  EXPECT_EQ(bad, 0u);
  heap_munmap(base, kUnits * kUnitSize);
}

// Before a snapshot's stop: every unit the program's fork left private is
// shared again in one call, in place, with no stop of the program's
// threads, once the child is gone (while it holds the file, nothing: each
// unit would be copied whole); where write-protect cannot hold the writers
// off, nothing is done and the call says so.
TEST_F(Reshare, NowSharesEveryUnitAForkLeftPrivateWithoutAStop) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  int go[2];
  const pid_t pid = fork_with_go(go);
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(await(go[0]) ? 0 : 3);
  fill(base, kUnits, 2);
  ASSERT_EQ(frozen_units(base, kUnits), kUnits);
  const reshare_outcome held = heap_reshare_now();
  EXPECT_EQ(held.units, 0u) << "copied whole while the child holds the file";
  EXPECT_EQ(held.bytes, 0u);
  EXPECT_EQ(frozen_units(base, kUnits), kUnits);
  tell(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  for (int fd : {go[0], go[1]}) close(fd);
  const reshare_outcome o = heap_reshare_now();
  EXPECT_EQ(o.stops, 0u) << "the program's threads were stopped";
  if (o.err == -ENOTSUP) {
    EXPECT_EQ(o.units, 0u);
    EXPECT_EQ(frozen_units(base, kUnits), kUnits) << "something was done where write-protect cannot hold";
  } else {
    EXPECT_EQ(o.err, 0);
    EXPECT_EQ(frozen_units(base, kUnits), 0u);
    EXPECT_GE(o.units, kUnits);
    EXPECT_EQ(o.in_place, o.units);
    EXPECT_EQ(anonymous_pages(base, kUnits), 0) << "every page is the file's again";
  }
  EXPECT_EQ(mismatches(base, kUnits, 2), 0u) << "the writes since the fork survive";
  heap_munmap(base, kUnits * kUnitSize);
}

// A unit still waiting for its first touch at the fork (first_touch.cc)
// has no storage on its slot; neither has a page placed after the fork.
// Mapped shared in place again, a write to such a page would find a full
// file system as a SIGBUS: the re-share gives every live page storage.
TEST_F(Reshare, InPlaceGivesStorageToPagesThatHadNone) {
  const size_t pending0 = heap_pending_units();
  void *q = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &q, kTierPmem), 0);
  char *p = static_cast<char *>(q);
  if (heap_pending_units() != pending0 + 1) {
    heap_munmap(p, kUnitSize);
    GTEST_SKIP() << "no storage at first touch here (no fault service)";
  }
  struct stat st0;
  ASSERT_EQ(fstat(pmem_state()->fd, &st0), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(frozen_units(p, 1), 1u);
  p[5 * 4096] = 5;  // a copy: worth re-sharing
  const reshare_outcome o = reshare_all(p, 1);
  ASSERT_EQ(frozen_units(p, 1), 0u) << "error " << o.err;
  EXPECT_EQ(o.in_place, 1u);
  struct stat st;
  ASSERT_EQ(fstat(pmem_state()->fd, &st), 0);
  EXPECT_GE((st.st_blocks - st0.st_blocks) * 512, static_cast<long>(kUnitSize)) << "live pages mapped on holes";
  EXPECT_EQ(p[5 * 4096], 5);
  EXPECT_EQ(p[6 * 4096], 0);
  p[7 * 4096] = 7;
  EXPECT_EQ(p[7 * 4096], 7);
  heap_munmap(p, kUnitSize);
}

TEST_F(Reshare, ChildResharesItsOwnCopiesAndLetsTheParentsFileGo) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    fill(base, kUnits, 3);
    const reshare_outcome o = reshare_all(base, kUnits);
    int bad = 0;
    if (frozen_units(base, kUnits) != 0 || o.in_place != 0) bad |= 1;
    if (anonymous_pages(base, kUnits) != 0) bad |= 2;
    if (mismatches(base, kUnits, 3) != 0) bad |= 4;
    heap_counters c;
    heap_counters_get(&c);
    if (c.frozen_inherited != 0) bad |= 8;
    tell(to_parent[1]);
    if (!await(to_child[0])) bad |= 16;
    if (mismatches(base, kUnits, 3) != 0) bad |= 32;
    _exit(bad);
  }
  ASSERT_TRUE(await(to_parent[0]));
  // The child maps none of the parent's file any more: the parent may
  // write its slots, and its own units go back in place.
  tier &pm = pmem_tier();
  EXPECT_TRUE(pm.ops->storage_unheld(&pm)) << "the child still holds the parent's file";
  EXPECT_EQ(mismatches(base, kUnits, 1), 0u) << "the child's writes reached the parent";
  fill(base, 1, 4);
  const reshare_outcome o = reshare_all(base, kUnits);
  EXPECT_EQ(o.in_place, o.units);
  EXPECT_EQ(mismatches(base, 1, 4), 0u);
  tell(to_child[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) close(fd);
  heap_munmap(base, kUnits * kUnitSize);
}

#if defined(__SANITIZE_THREAD__)
constexpr int kForkRounds = 4;
#else
constexpr int kForkRounds = 12;
#endif

// Forks again and again while writer threads update records across the
// units and a thread moves data through read()/write() on buffers inside
// them; after each fork every unit is re-shared (in place when the child
// has exited, on a fresh slot while it lives).  No write may be lost or
// torn, no system call fail.
TEST_F(Reshare, WritersAndSystemCallsDuringReshareLoseNothing) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  memset(base, 0, kUnits * kUnitSize);
  record_load load(base, kUnits * kPagesPerUnit, 2);
  size_t reshared = 0, in_place = 0, still_frozen = 0;
  long last_err = 0;
  for (int round = 0; round < kForkRounds; ++round) {
    int go[2];
    ASSERT_EQ(pipe(go), 0);
    const bool child_lives = round % 2 == 1;
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      char c;
      if (child_lives) (void)!read(go[0], &c, 1);
      _exit(0);
    }
    if (!child_lives) waitpid(pid, nullptr, 0);
    // Every unit written since the fork (a unit with no copy is not worth
    // re-sharing while the child holds the file): a full pass of updates,
    // however slowly a loaded machine runs the writers.
    load.wait_updates(kUnits * kPagesPerUnit * 4);
    const reshare_outcome o = reshare_all(base, kUnits);
    reshared += o.units;
    in_place += o.in_place;
    still_frozen += frozen_units(base, kUnits);
    if (o.err) last_err = o.err;
    if (child_lives) {
      tell(go[1]);
      waitpid(pid, nullptr, 0);
    }
    close(go[0]);
    close(go[1]);
  }
  load.stop();
  EXPECT_EQ(still_frozen, 0u) << "last error " << last_err;
  EXPECT_GE(reshared, kForkRounds * kUnits);
  EXPECT_GE(in_place, kForkRounds / 2 * kUnits) << "rounds whose child had exited go back in place";
  EXPECT_EQ(load.torn.load(), 0u);
  EXPECT_EQ(load.lost.load(), 0u);
  EXPECT_EQ(load.syscall_errors.load(), 0u);
  EXPECT_EQ(load.io_mismatch.load(), 0u);
  heap_reshare(0, 0);
  EXPECT_EQ(pmem_state()->retired_count, 0u) << "every child is gone";
  heap_munmap(base, kUnits * kUnitSize);
}

// A fork that begins while the threads are stopped for a re-share (the
// mover's world stop, which runs the same quiesce sequence) waits for the
// stop to end and is then a fork like any other: its units are frozen, so
// what the child writes stays the child's.  (It once read the stop's reason
// and left the PMem mappings shared with the child.)
TEST_F(Reshare, AForkBegunDuringAStopStillKeepsTheChildsWritesApart) {
  char *base = pmem_units(1);
  ASSERT_NE(base, nullptr);
  std::atomic<long> tid{0};
  std::atomic<bool> go{false};
  std::atomic<int> child_status{-1};
  std::thread forker([&] {
    // Not stopped itself: it must be inside fork() while the stop holds.
    world_exempt_self();
    tid.store(syscall(SYS_gettid));
    while (!go.load()) sched_yield();
    const pid_t pid = fork();
    if (pid == 0) {
      fill(base, 1, 2);
      _exit(mismatches(base, 1, 2) == 0 ? 0 : 1);
    }
    int st = -1;
    if (pid > 0 && waitpid(pid, &st, 0) == pid) child_status.store(st);
  });
  while (!tid.load()) sched_yield();
  world_stats ws;
  const long stopped = world_stop(quiesce_reason::pause, 5'000'000'000ull, &ws);
  go.store(true);
  if (stopped == 0) {
    // The forker has begun its fork and waits for the stop (or, were the
    // fork not to wait, has finished: its thread is gone).
    char task[64];
    snprintf(task, sizeof task, "/proc/self/task/%ld", tid.load());
    while (!thread_blocked(tid.load()) && access(task, F_OK) == 0) sched_yield();
    world_resume();
  }
  forker.join();
  ASSERT_EQ(stopped, 0);
  ASSERT_TRUE(WIFEXITED(child_status.load()));
  EXPECT_EQ(WEXITSTATUS(child_status.load()), 0) << "the child saw its own writes";
  EXPECT_EQ(mismatches(base, 1, 1), 0u) << "the parent does not see the child's writes";
  EXPECT_EQ(frozen_units(base, 1), 1u) << "the fork froze the unit";
  heap_munmap(base, kUnitSize);
}

// A ZeroIO snapshot's part in the heap: the stop freezes the units and
// hands the PMem file over to the capsule that linked it.  The file keeps
// the units' bytes of that instant whatever the program does after;
// a unit written or read since is re-shared into the process's new file,
// one left alone stays frozen at no cost.
TEST_F(Reshare, HandedOverFileKeepsTheInstantAndOnlyUnitsInUseComeBack) {
  char *base = pmem_units(kUnits);
  ASSERT_NE(base, nullptr);
  uint32_t slots[kUnits];
  {
    heap_lock_guard g;
    for (size_t u = 0; u < kUnits; ++u) slots[u] = g_heap.units[unit_index_of(base + u * kUnitSize)].slot;
  }
  // Linked in the stop as the capsule links it (lib/snapshot/zeroio.cc),
  // into a directory of the PMem tier's file system.
  std::string tmpl = std::string(pmem_state()->dir) + "/mmtier-zeroio-XXXXXX";
  std::vector<char> dirbuf(tmpl.begin(), tmpl.end());
  dirbuf.push_back(0);
  char *dir = dirbuf.data();
  ASSERT_NE(mkdtemp(dir), nullptr);
  struct ctx_t {
    std::string link;
    int err = 0;
  } ctx;
  ctx.link = std::string(dir) + "/pmem-0.tier";
  ASSERT_EQ(world_stop(quiesce_reason::snapshot, 1'000'000'000), 0);
  const int handed = heap_snapshot_hand_over(
      [](void *c, int fd) {
        auto *x = static_cast<ctx_t *>(c);
        char from[40];
        snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, from, AT_FDCWD, x->link.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
        x->err = errno;
        return false;
      },
      &ctx);
  world_resume();
  if (handed == -ENOLINK) {
    rmdir(dir);
    GTEST_SKIP() << "the PMem file cannot be linked: " << strerror(ctx.err);
  }
  ASSERT_EQ(handed, 1);
  const std::string link = ctx.link;
  {
    heap_lock_guard g;
    for (size_t u = 0; u < kUnits; ++u)
      EXPECT_EQ(g_heap.units[unit_index_of(base + u * kUnitSize)].frozen, kFrozenCapsule) << u;
  }
  // Nothing touched since: nothing worth copying.
  EXPECT_EQ(heap_reshare(SIZE_MAX, SIZE_MAX).units, 0u);
  // Unit 0 read through, unit 1 written once; 2 and 3 left alone.
  volatile uint64_t sum = 0;
  for (size_t i = 0; i < kUnitSize / 8; i += 512) sum = sum + reinterpret_cast<const uint64_t *>(base)[i];
  reinterpret_cast<uint64_t *>(base + kUnitSize)[0] = pattern(0, 7);
  reshare_outcome o = heap_reshare(SIZE_MAX, SIZE_MAX);
  EXPECT_EQ(o.err, 0);
  EXPECT_EQ(o.units, 2u);
  EXPECT_EQ(frozen_units(base, kUnits), 2u) << "units nobody touched stay on the capsule's file";
  reinterpret_cast<uint64_t *>(base + kUnitSize)[0] = pattern(0, 1);
  // The program rewrites everything: the capsule's file is not changed.
  fill(base, kUnits, 2);
  reshare_all(base, kUnits);
  EXPECT_EQ(frozen_units(base, kUnits), 0u);
  EXPECT_EQ(mismatches(base, kUnits, 2), 0u);
  const int lf = open(link.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(lf, 0);
  std::vector<char> unit(kUnitSize);
  for (size_t u = 0; u < kUnits; ++u) {
    ASSERT_EQ(pread(lf, unit.data(), kUnitSize, static_cast<off_t>(slots[u]) * kUnitSize),
              static_cast<ssize_t>(kUnitSize));
    const auto *w = reinterpret_cast<const uint64_t *>(unit.data());
    size_t bad = 0;
    for (size_t i = 0; i < kUnitSize / 8; i += 511) bad += w[i] != pattern(u * kUnitSize / 8 + i, 1);
    EXPECT_EQ(bad, 0u) << "unit " << u << " in the capsule's file";
  }
  close(lf);
  unlink(link.c_str());
  rmdir(dir);
  heap_munmap(base, kUnits * kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
