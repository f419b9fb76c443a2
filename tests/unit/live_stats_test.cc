// Live statistics publishing (lib/stats/live_stats.cc): a process publishes
// once it has placed 16 MiB by policy, and not before; the page is where
// readers look for it, private, mapped with no descriptor left open, follows
// the heap's counters and the stats API's resident figures; a fork child of
// a publishing process publishes a page of its own without touching its
// parent's; a process that is gone maps its file no more.  (Each test runs
// in a process of its own: ctest starts the binary per test.)
#include "api/runtime.h"
#include "heap/heap.h"
#include "stats/live_format.h"
#include "stats/report.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fstream>
#include <string>

namespace mmtier::detail {
namespace {

using live_format::stats_page;

std::string stats_dir() { return "/dev/shm/mmtier-" + std::to_string(geteuid()); }
std::string stats_path(pid_t pid) { return stats_dir() + "/" + std::to_string(pid) + ".stats"; }

// A reader's view, as the mmtier command has it: open, copy consistently
// with pread.
struct reader {
  int fd = -1;
  explicit reader(pid_t pid) { fd = open(stats_path(pid).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); }
  ~reader() {
    if (fd >= 0) close(fd);
  }
  stats_page snapshot() const {
    stats_page s = {};
    EXPECT_EQ(live_format::read_stats_fd(fd, &s), 1);
    return s;
  }
};

// Whether process pid maps the file at path (how readers tell a live file).
bool maps(pid_t pid, const std::string &path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  char want[64];
  snprintf(want, sizeof want, " %02x:%02x %llu", major(st.st_dev), minor(st.st_dev),
           static_cast<unsigned long long>(st.st_ino));
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(in, line);)
    if (line.find(want) != std::string::npos) return true;
  return false;
}

// Whether this process holds a descriptor of the file at path.
bool holds_descriptor(const std::string &path) {
  DIR *d = opendir("/proc/self/fd");
  bool found = false;
  while (dirent *e = d ? readdir(d) : nullptr) {
    char target[PATH_MAX] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(link.c_str(), target, sizeof target - 1) > 0 && path == target) found = true;
  }
  if (d) closedir(d);
  return found;
}

// Places units by policy until the process has published (at most 16).
char *place_until_published(size_t *units) {
  char *p = static_cast<char *>(heap_engine_reserve(nullptr, 16 * kUnitSize, kUnitSize, -1));
  if (!p) return nullptr;
  for (*units = 0; *units < 16 && access(stats_path(getpid()).c_str(), F_OK) != 0; ++*units)
    if (heap_commit(p + *units * kUnitSize, kUnitSize) != 0) return nullptr;
  return p;
}

TEST(Publish, NothingIsPublishedUntilEnoughIsPlaced) {
  ASSERT_EQ(runtime_start(), kReady);
  heap_counters c;
  heap_counters_get(&c);
  ASSERT_LT(c.policy_units[0] + c.policy_units[1], 8u) << "a fresh test process has placed little";
  EXPECT_NE(access(stats_path(getpid()).c_str(), F_OK), 0) << "a small process publishes nothing";
  size_t units = 0;
  char *p = place_until_published(&units);
  ASSERT_NE(p, nullptr);
  heap_counters_get(&c);
  EXPECT_EQ(c.policy_units[0] + c.policy_units[1], 8u) << "published at 16 MiB placed by policy";
  heap_engine_release(p, 16 * kUnitSize);
}

TEST(Publish, PageIsPrivateMappedWithoutDescriptorAndFollowsTheHeap) {
  ASSERT_EQ(runtime_start(), kReady);
  size_t units = 0;
  char *big = place_until_published(&units);
  ASSERT_NE(big, nullptr);
  struct stat st;
  ASSERT_EQ(stat(stats_dir().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(stats_path(getpid()).c_str(), &st), 0) << stats_path(getpid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_TRUE(maps(getpid(), stats_path(getpid()))) << "a live process maps its page";
  EXPECT_FALSE(holds_descriptor(stats_path(getpid()))) << "and keeps no descriptor of it";

  reader r(getpid());
  ASSERT_GE(r.fd, 0);
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
  EXPECT_EQ(placed.tiers[kTierPmem].policy_bytes, before.tiers[kTierPmem].policy_bytes)
      << "units forced to a tier are not placed by policy";
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
  heap_engine_release(big, 16 * kUnitSize);
}

TEST(Publish, ForkChildPublishesItsOwnPageAndLeavesTheParentsAlone) {
  ASSERT_EQ(runtime_start(), kReady);
  size_t units = 0;
  ASSERT_NE(place_until_published(&units), nullptr);
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
    EXPECT_TRUE(maps(pid, stats_path(pid)));
    EXPECT_FALSE(maps(pid, stats_path(getpid()))) << "the child does not keep the parent's page";
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

TEST(Publish, AFileNoProcessMapsIsStale) {
  // A process that dies without exit() leaves its file behind, mapped by
  // nobody: that is how readers tell it is stale.
  ASSERT_EQ(runtime_start(), kReady);
  size_t units = 0;
  ASSERT_NE(place_until_published(&units), nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char *q = static_cast<char *>(heap_engine_reserve(nullptr, kUnitSize, kUnitSize, kTierDram));
    if (!q || heap_commit(q, kUnitSize) != 0) _exit(2);
    _exit(maps(getpid(), stats_path(getpid())) ? 0 : 4);
  }
  // Not reaped yet (WNOWAIT): while the pid exists, no other process's
  // sweep removes its file.
  siginfo_t info = {};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(info.si_code, CLD_EXITED);
  ASSERT_EQ(info.si_status, 0) << "4: the child did not map its page";
  {
    reader r(pid);
    ASSERT_GE(r.fd, 0) << "_exit leaves the file";
    EXPECT_FALSE(maps(pid, stats_path(pid)));
    EXPECT_EQ(r.snapshot().pid, pid);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  unlink(stats_path(pid).c_str());
}

}  // namespace
}  // namespace mmtier::detail
