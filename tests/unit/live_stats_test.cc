// Live statistics publishing (lib/stats/live_stats.cc): the page of this
// process is where readers look for it, private, locked while the process
// lives, follows the heap's counters and the stats API's resident figures,
// and a fork child publishes a page of its own without touching its
// parent's.
#include "api/runtime.h"
#include "heap/heap.h"
#include "stats/live_format.h"
#include "stats/report.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace mmtier::detail {
namespace {

using live_format::stats_page;

std::string stats_dir() { return "/dev/shm/mmtier-" + std::to_string(geteuid()); }
std::string stats_path(pid_t pid) { return stats_dir() + "/" + std::to_string(pid) + ".stats"; }

// A reader's view, as the mmtier command has it: open, check the lock,
// copy consistently with pread.
struct reader {
  int fd = -1;
  explicit reader(pid_t pid) { fd = open(stats_path(pid).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); }
  ~reader() {
    if (fd >= 0) close(fd);
  }
  bool locked_by_writer() const { return flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK; }
  stats_page snapshot() const {
    stats_page s = {};
    EXPECT_EQ(live_format::read_stats_fd(fd, &s), 1);
    return s;
  }
};

TEST(Publish, PageIsPrivateLockedAndFollowsTheHeap) {
  ASSERT_EQ(runtime_start(), kReady);
  struct stat st;
  ASSERT_EQ(stat(stats_dir().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(stats_path(getpid()).c_str(), &st), 0) << stats_path(getpid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());

  reader r(getpid());
  ASSERT_GE(r.fd, 0);
  EXPECT_TRUE(r.locked_by_writer()) << "a live process holds its page locked";
  stats_page before = r.snapshot();
  EXPECT_EQ(before.pid, getpid());
  EXPECT_EQ(before.uid, geteuid());
  EXPECT_EQ(before.unit_size, kUnitSize);

  const size_t n = 3 * kUnitSize;
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, n, kUnitSize, kTierPmem));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(heap_commit(p, n), 0);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  stats_page placed = r.snapshot();
  EXPECT_EQ(placed.tiers[kTierPmem].placed_bytes, before.tiers[kTierPmem].placed_bytes + n)
      << "placement is published as it happens";
  EXPECT_GT(placed.seq, before.seq);

  // The stats API publishes the resident figures it measured.
  mmtier_stats api;
  stats_fill(&api, true);
  stats_page after = r.snapshot();
  for (int t = 0; t < kTierCount; ++t) {
    EXPECT_EQ(after.tiers[t].placed_bytes, api.units[t] * api.unit_size) << "tier " << t;
    EXPECT_EQ(after.tiers[t].peak_bytes, api.peak_units[t] * api.unit_size) << "tier " << t;
    EXPECT_EQ(after.tiers[t].resident_bytes, api.resident_bytes[t]) << "tier " << t;
  }
  EXPECT_GE(after.resident_ns, placed.updated_ns);
  heap_engine_release(p, n);
  EXPECT_EQ(r.snapshot().tiers[kTierPmem].placed_bytes, before.tiers[kTierPmem].placed_bytes);
}

TEST(Publish, ForkChildPublishesItsOwnPageAndLeavesTheParentsAlone) {
  ASSERT_EQ(runtime_start(), kReady);
  reader parent(getpid());
  ASSERT_GE(parent.fd, 0);
  const stats_page before = parent.snapshot();
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The page is there from the fork on; then the child places a unit.
    char c = access(stats_path(getpid()).c_str(), F_OK) == 0 ? 'y' : 'n';
    char *q = static_cast<char *>(heap_engine_reserve(nullptr, 2 * kUnitSize, kUnitSize, kTierDram));
    if (!q || heap_commit(q, 2 * kUnitSize) != 0) c = 'f';
    if (write(to_parent[1], &c, 1) != 1) _exit(2);
    if (read(to_child[0], &c, 1) != 1) _exit(3);
    exit(0);  // exit(): the page is removed
  }
  close(to_parent[1]);
  close(to_child[0]);
  char c = 0;
  ASSERT_EQ(read(to_parent[0], &c, 1), 1);
  EXPECT_EQ(c, 'y') << "n: the child had no page after fork; f: placement failed";
  {
    reader child(pid);
    ASSERT_GE(child.fd, 0) << "the child publishes a page of its own";
    EXPECT_TRUE(child.locked_by_writer());
    const stats_page cs = child.snapshot();
    EXPECT_EQ(cs.pid, pid);
    EXPECT_EQ(cs.tiers[kTierDram].placed_bytes, before.tiers[kTierDram].placed_bytes + 2 * kUnitSize);
    const stats_page ps = parent.snapshot();
    EXPECT_EQ(ps.pid, getpid());
    EXPECT_EQ(ps.tiers[kTierDram].placed_bytes, before.tiers[kTierDram].placed_bytes)
        << "the child's placement is not written into the parent's page";
  }
  ASSERT_EQ(write(to_child[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(access(stats_path(pid).c_str(), F_OK), 0) << "removed at exit";
  close(to_parent[0]);
  close(to_child[1]);
}

TEST(Publish, AStaleFileIsNotLocked) {
  // A process that dies without exit() leaves its file behind, unlocked:
  // that is how readers tell it is stale.
  ASSERT_EQ(runtime_start(), kReady);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char *q = static_cast<char *>(heap_engine_reserve(nullptr, kUnitSize, kUnitSize, kTierDram));
    if (!q || heap_commit(q, kUnitSize) != 0) _exit(2);
    _exit(0);
  }
  // Not reaped yet (WNOWAIT): while the pid exists, no other process's
  // sweep removes its file, which is unlocked from the exit on.
  siginfo_t info = {};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(info.si_code, CLD_EXITED);
  ASSERT_EQ(info.si_status, 0);
  {
    reader r(pid);
    ASSERT_GE(r.fd, 0) << "_exit leaves the file";
    EXPECT_FALSE(r.locked_by_writer());
    EXPECT_EQ(r.snapshot().pid, pid);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  unlink(stats_path(pid).c_str());
}

}  // namespace
}  // namespace mmtier::detail
