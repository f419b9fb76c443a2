// Storage at first touch (lib/heap/first_touch.cc): a PMem unit's file
// storage is allocated at the first access to the unit, not when it is
// placed, so memory allocated and never used costs nothing; every way of
// reaching a pending unit's pages (a thread, the kernel in a system call,
// several threads at once, a protection change, advice, a move, a fork)
// sees zeros until written and keeps what was written.
#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/sample.h"
#include "heap_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

class FirstTouch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(runtime_start(), kReady);
    ASSERT_TRUE(faults_start());
    // The handler thread says it reads the descriptor once it runs.
    for (int i = 0; i < 1000000 && !faults_serving(); ++i) sched_yield();
    ASSERT_TRUE(faults_serving());
  }

  // n units of an application mapping placed on PMem.
  char *map_pmem(size_t n) {
    void *p = nullptr;
    EXPECT_EQ(heap_mmap(nullptr, n * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p, kTierPmem),
              0);
    return static_cast<char *>(p);
  }
};

// Bytes of storage held by this process's unnamed regular files (the PMem
// tier's file is one): a difference of two readings is what a test did.
size_t unnamed_file_bytes() {
  size_t total = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return 0;
  while (dirent *e = readdir(d)) {
    struct stat st;
    if (e->d_name[0] == '.' || fstat(atoi(e->d_name), &st) != 0) continue;
    if (S_ISREG(st.st_mode) && st.st_nlink == 0) total += static_cast<size_t>(st.st_blocks) * 512;
  }
  closedir(d);
  return total;
}

// Whether the mapping at p maps a file (its /proc/self/maps line names one),
// as a PMem unit's slot is mapped, not anonymous memory.  (pagemap's file
// bit would not do: a DAX file's pages have no page cache to show.)
bool file_mapping_at(const void *p) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f) return false;
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  char line[4096];
  bool file = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0, ino = 0;
    int name = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %lu %n", &lo, &hi, &ino, &name) < 3 || at < lo || at >= hi) continue;
    file = ino != 0 && line[name] == '/';
    break;
  }
  fclose(f);
  return file;
}

bool zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

TEST_F(FirstTouch, UntouchedPmemMemoryTakesNoStorageUntilItsUnitIsTouched) {
  constexpr size_t kUnits = 32;
  const size_t pending0 = heap_pending_units();
  const size_t storage0 = unnamed_file_bytes();
  char *p = map_pmem(kUnits);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits);
  EXPECT_LT(unnamed_file_bytes(), storage0 + kUnitSize) << "placing 64 MiB allocated its storage";
  for (size_t u = 0; u < kUnits; ++u) ASSERT_EQ(heap_tier_of(p + u * kUnitSize), kTierPmem) << u;
  // A write to unit 3 and a read of unit 17: each gives its unit storage.
  p[3 * kUnitSize + 12345] = 42;
  EXPECT_EQ(p[17 * kUnitSize + 999], 0);
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits - 2);
  const size_t storage = unnamed_file_bytes();
  EXPECT_GE(storage, storage0 + 2 * kUnitSize);
  EXPECT_LT(storage, storage0 + 3 * kUnitSize);
  EXPECT_EQ(p[3 * kUnitSize + 12345], 42);
  EXPECT_TRUE(zero(p + 3 * kUnitSize, 12345));
  EXPECT_TRUE(zero(p + 17 * kUnitSize, kUnitSize));
  ASSERT_EQ(heap_tier_of(p + 3 * kUnitSize), kTierPmem);
  // Dropping pages of a pending unit leaves it pending and zero.
  ASSERT_EQ(heap_madvise(p + 5 * kUnitSize, kUnitSize, MADV_DONTNEED), 0);
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits - 2);
  EXPECT_TRUE(zero(p + 5 * kUnitSize, kUnitSize));
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits - 3) << "the read above is a first touch";
  // A protection the file mapping must carry: storage now, contents kept.
  ASSERT_EQ(heap_mprotect(p + 7 * kUnitSize, kUnitSize, PROT_READ), 0);
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits - 4);
  EXPECT_TRUE(zero(p + 7 * kUnitSize, kUnitSize));
  ASSERT_EQ(heap_mprotect(p + 7 * kUnitSize, kUnitSize, PROT_READ | PROT_WRITE), 0);
  p[7 * kUnitSize] = 7;
  EXPECT_EQ(p[7 * kUnitSize], 7);
  // Advice that populates pages, taken under the heap lock: no deadlock.
  ASSERT_EQ(heap_madvise(p + 9 * kUnitSize, kUnitSize, MADV_POPULATE_WRITE), 0);
  EXPECT_EQ(heap_pending_units(), pending0 + kUnits - 5);
  EXPECT_TRUE(zero(p + 9 * kUnitSize, kUnitSize));
  ASSERT_EQ(heap_munmap(p, kUnits * kUnitSize), 0);
  EXPECT_EQ(heap_pending_units(), pending0);
  EXPECT_LT(unnamed_file_bytes(), storage0 + kUnitSize) << "storage given back";
}

TEST_F(FirstTouch, TheKernelWritingInsideASystemCallGivesTheUnitStorage) {
  char *p = map_pmem(2);
  ASSERT_NE(p, nullptr);
  const size_t pending0 = heap_pending_units();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const char msg[] = "written by read(2)";
  ASSERT_EQ(write(fds[1], msg, sizeof msg), static_cast<ssize_t>(sizeof msg));
  ASSERT_EQ(read(fds[0], p + kUnitSize + 4000, sizeof msg), static_cast<ssize_t>(sizeof msg));
  close(fds[0]);
  close(fds[1]);
  EXPECT_STREQ(p + kUnitSize + 4000, msg);
  EXPECT_EQ(heap_pending_units(), pending0 - 1);
  EXPECT_EQ(heap_tier_of(p + kUnitSize), kTierPmem);
  heap_munmap(p, 2 * kUnitSize);
}

TEST_F(FirstTouch, ThreadsTouchingOneUnitAtOnceAllKeepTheirWrites) {
  constexpr size_t kThreads = 4;
  for (int round = 0; round < 20; ++round) {
    char *p = map_pmem(1);
    ASSERT_NE(p, nullptr);
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (size_t t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        while (!go.load(std::memory_order_acquire)) {
        }
        for (size_t pg = t; pg < kPagesPerUnit; pg += kThreads) p[pg * 4096 + t] = static_cast<char>(t + 1);
      });
    go.store(true, std::memory_order_release);
    for (auto &t : ts) t.join();
    for (size_t pg = 0; pg < kPagesPerUnit; ++pg)
      ASSERT_EQ(p[pg * 4096 + pg % kThreads], static_cast<char>(pg % kThreads + 1)) << "round " << round << " page " << pg;
    EXPECT_EQ(heap_tier_of(p), kTierPmem);
    heap_munmap(p, kUnitSize);
  }
}

TEST_F(FirstTouch, AForkKeepsEachSidesWritesToUntouchedUnitsItsOwn) {
  char *p = map_pmem(2);
  ASSERT_NE(p, nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child writes first, into both units; the parent must not see it.
    p[100] = 'c';
    p[kUnitSize + 100] = 'c';
    _exit(p[100] == 'c' && p[kUnitSize + 100] == 'c' && p[200] == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(p[100], 0);
  EXPECT_EQ(p[kUnitSize + 100], 0);
  p[100] = 'p';
  EXPECT_EQ(p[100], 'p');
  EXPECT_TRUE(zero(p + kUnitSize, kUnitSize));
  heap_munmap(p, 2 * kUnitSize);
}

// A debugger or a profiler reads another process's memory through
// process_vm_readv or /proc/PID/mem.  process_vm_readv lets the fault
// service answer: an untouched unit reads as zeros.  /proc/PID/mem (gdb,
// ptrace) reaches pages without letting a userfaultfd answer, so there an
// untouched unit is an I/O error (documented; MMTIER_PMEM_RESERVE=place
// avoids it): never other data, and the unit stays whole for its program.
TEST_F(FirstTouch, ReadsFromOutsideSeeZerosOrACleanError) {
  char *p = map_pmem(3);
  ASSERT_NE(p, nullptr);
  char buf[64];
  memset(buf, 1, sizeof buf);
  iovec local = {buf, sizeof buf}, remote = {p + kUnitSize + 8192, sizeof buf};
  ASSERT_EQ(process_vm_readv(getpid(), &local, 1, &remote, 1, 0), static_cast<ssize_t>(sizeof buf)) << strerror(errno);
  EXPECT_TRUE(zero(buf, sizeof buf));
  const int fd = open("/proc/self/mem", O_RDWR);
  ASSERT_GE(fd, 0);
  const off_t at = static_cast<off_t>(reinterpret_cast<uintptr_t>(p + 4096));
  memset(buf, 1, sizeof buf);
  ssize_t n = pread(fd, buf, sizeof buf, at);
  if (n < 0) {
    EXPECT_EQ(errno, EIO);
  } else {
    EXPECT_EQ(n, static_cast<ssize_t>(sizeof buf));
    EXPECT_TRUE(zero(buf, sizeof buf));
  }
  const char v[] = "set by a debugger";
  n = pwrite(fd, v, sizeof v, at + 100);
  if (n < 0) EXPECT_EQ(errno, EIO);
  else EXPECT_STREQ(p + 4096 + 100, v);
  // Once the program has touched the unit, both ways work.
  if (n < 0) EXPECT_TRUE(zero(p, kUnitSize));
  p[4096 + 100] = 0;
  memset(buf, 1, sizeof buf);
  ASSERT_EQ(pread(fd, buf, sizeof buf, at), static_cast<ssize_t>(sizeof buf)) << strerror(errno);
  EXPECT_TRUE(zero(buf, sizeof buf));
  ASSERT_EQ(pwrite(fd, v, sizeof v, at + 100), static_cast<ssize_t>(sizeof v)) << strerror(errno);
  EXPECT_STREQ(p + 4096 + 100, v);
  close(fd);
  for (size_t u = 0; u < 3; ++u) EXPECT_EQ(heap_tier_of(p + u * kUnitSize), kTierPmem) << u;
  heap_munmap(p, 3 * kUnitSize);
}

// If the fault service stops (its descriptor unreadable), no first touch
// would ever be answered: the units waiting for one become DRAM, and a
// thread touching them goes on.  In a child: the service stays down there.
TEST_F(FirstTouch, UnitsWaitingForAFirstTouchBecomeDramWhenTheServiceStops) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (!faults_start() || !faults_serving()) _exit(2);
    char *p = map_pmem(4);
    if (!p || heap_pending_units() < 4) _exit(3);
    // Reads fail from now on: the service's thread leaves its loop.
    const int bad = open("/dev/null", O_WRONLY);
    if (bad < 0 || syscall(SYS_dup3, bad, faults_fd(), O_CLOEXEC) < 0) _exit(4);
    // A first touch ends the wait the thread is in (on the old descriptor,
    // which its closing then answers); it finds the new one unreadable.
    p[0] = 1;
    for (int i = 0; i < 10000 && (faults_serving() || heap_pending_units() > 0); ++i) usleep(1000);
    if (heap_pending_units() != 0) _exit(5);
    if (p[0] != 1) _exit(6);
    for (size_t u = 0; u < 4; ++u)
      if (heap_tier_of(p + u * kUnitSize) != kTierDram) _exit(7);
    p[kUnitSize + 5] = 5;
    if (p[kUnitSize + 5] != 5 || !zero(p + 2 * kUnitSize, 2 * kUnitSize)) _exit(8);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// With mlockall(MCL_FUTURE) every new mapping is populated at once: such
// pages cannot wait for a first touch, and the unit gets its storage as it
// is placed (a write to them would otherwise bypass the fault service).
TEST_F(FirstTouch, LockedFutureMappingsGetStorageAtPlacement) {
  // The system call itself: sanitizers make mlockall() do nothing.
  ASSERT_EQ(syscall(SYS_mlockall, MCL_FUTURE), 0) << strerror(errno);
  const size_t pending0 = heap_pending_units();
  char *p = map_pmem(2);
  syscall(SYS_munlockall);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(heap_pending_units(), pending0);
  EXPECT_EQ(heap_tier_of(p + kUnitSize), kTierPmem);
  p[kUnitSize + 3] = 3;
  ASSERT_EQ(heap_madvise(p + kUnitSize, kUnitSize, MADV_DONTNEED), 0);
  EXPECT_TRUE(zero(p + kUnitSize, kUnitSize)) << "a drop must reach the unit's storage";
  heap_munmap(p, 2 * kUnitSize);
}

TEST_F(FirstTouch, MovingAnUntouchedUnitToDramCopiesNothingAndKeepsItUsable) {
  test::use_up_startup_units();
  constexpr size_t kUnits = 10;
  void *q = nullptr;
  // Placed by policy (the mover moves only those): most on PMem at 1:4.
  ASSERT_EQ(heap_mmap(nullptr, kUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &q), 0);
  char *p = static_cast<char *>(q);
  char *u = nullptr;
  for (size_t i = 0; i < kUnits && !u; ++i)
    if (heap_tier_of(p + i * kUnitSize) == kTierPmem) u = p + i * kUnitSize;
  ASSERT_NE(u, nullptr) << "no unit of ten on PMem";
  const size_t pending0 = heap_pending_units();
  ASSERT_GE(heap_migrate(test::unit_index_of(u), kTierDram), 0);
  EXPECT_EQ(heap_tier_of(u), kTierDram);
  EXPECT_EQ(heap_pending_units(), pending0 - 1);
  EXPECT_TRUE(zero(u, kUnitSize));
  u[5] = 5;
  EXPECT_EQ(u[5], 5);
  heap_munmap(p, kUnits * kUnitSize);
}

// A DRAM unit freed while one of its pages is sampled, its addresses placed
// again in the same window as a PMem unit waiting for its first touch: the
// window's end (which puts the sample back and unregisters it, once) leaves
// the new unit's registration alone, so its first write reaches the fault
// service, which gives it its storage, and the write is the file's.  (The
// window's end unregistered the range again: the write landed in an
// anonymous page of a unit still counted as untouched, and a later PMem
// sample or first touch dropped it.)
TEST_F(FirstTouch, AUnitFreedInASampleWindowAndPlacedAgainKeepsItsFirstTouch) {
  ASSERT_TRUE(faults_can_sample());
  test::use_up_startup_units();
  void *v = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &v), 0);
  char *d = static_cast<char *>(v);
  memset(d, 1, kUnitSize);
  const uint32_t unit = static_cast<uint32_t>(test::unit_index_of(d));
  if (heap_tier_of(d) != kTierDram) ASSERT_GE(heap_migrate(unit, kTierDram), 0);
  const uint8_t one = 1;
  ASSERT_EQ(heap_sample_begin(&unit, &one, 1, 3), 1u);
  ASSERT_EQ(heap_munmap(d, kUnitSize), 0);
  void *again = nullptr;
  ASSERT_EQ(heap_mmap(d, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, &again,
                      kTierPmem),
            0);
  ASSERT_EQ(again, v);
  const size_t pending = heap_pending_units();
  sample_result r[2];
  heap_sample_end(r, 2);
  d[7 * kPageSize + 3] = 9;
  EXPECT_EQ(heap_pending_units(), pending - 1) << "the first write did not reach the fault service";
  EXPECT_EQ(heap_tier_of(d), kTierPmem);
  EXPECT_TRUE(file_mapping_at(d + 7 * kPageSize)) << "the written page is anonymous memory, not the unit's storage";
  EXPECT_EQ(d[7 * kPageSize + 3], 9);
  EXPECT_TRUE(zero(d, 7 * kPageSize));
  heap_munmap(d, kUnitSize);
}

}  // namespace
}  // namespace mmtier::detail
