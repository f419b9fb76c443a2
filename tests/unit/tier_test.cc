// Tier layer (lib/tier/): the file-backed tier creates an unnamed 0600 file,
// hands out and reuses slots, maps them shared, and discards to zero; the
// DRAM tier maps anonymous memory.
#include "support/layout.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "tier/file_tier.h"
#include "platform/proc_maps.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace mmtier::detail {
namespace {

size_t entries(const char *dir) {
  size_t n = 0;
  DIR *d = opendir(dir);
  if (!d) return SIZE_MAX;
  while (dirent *e = readdir(d))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) ++n;
  closedir(d);
  return n;
}

class FileTier : public ::testing::TestWithParam<const char *> {
 protected:
  void SetUp() override {
    std::string tmpl = std::string(GetParam()) + "/mmtier-tier-XXXXXX";
    snprintf(dir_, sizeof dir_, "%s", tmpl.c_str());
    ASSERT_NE(mkdtemp(dir_), nullptr);
    snprintf(cfg_.pmem_path, sizeof cfg_.pmem_path, "%s", dir_);
    t_.ops = &file_tier_ops;
    t_.index = kTierPmem;
    ASSERT_EQ(t_.ops->open(&t_, cfg_), 0);
  }
  void TearDown() override {
    if (file_state(&t_)->fd >= 0) {
      fd_unguard(file_state(&t_)->fd);  // guards are few: a suite in one process would run out
      close(file_state(&t_)->fd);
    }
    rmdir(dir_);
  }
  char dir_[256];
  config cfg_;
  tier t_;
};

TEST_P(FileTier, NoFileUntilTheFirstSlot) {
  EXPECT_TRUE(t_.usable);
  EXPECT_EQ(file_state(&t_)->fd, -1) << "opening the tier only checks the directory";
  EXPECT_EQ(entries(dir_), 0u);
  ASSERT_GE(t_.ops->slot_alloc(&t_), 0);
  EXPECT_GE(file_state(&t_)->fd, 64) << "made for the first slot, out of the application's way";
}

TEST_P(FileTier, UnnamedPrivateFile) {
  ASSERT_GE(t_.ops->slot_alloc(&t_), 0);
  EXPECT_TRUE(t_.usable);
  EXPECT_EQ(entries(dir_), 0u) << "the file has no name";
  struct stat st;
  ASSERT_EQ(fstat(file_state(&t_)->fd, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_nlink, 0u);
}

TEST_P(FileTier, SlotsAreReusedAfterRelease) {
  long a = t_.ops->slot_alloc(&t_), b = t_.ops->slot_alloc(&t_);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_NE(a, b);
  t_.ops->slot_free(&t_, static_cast<uint32_t>(a));
  EXPECT_EQ(t_.ops->slot_alloc(&t_), a);
}

TEST_P(FileTier, AParticularSlotIsTakenFromWhereverItIsFree) {
  ASSERT_NE(t_.ops->slot_take, nullptr);
  const int any = kTakeWarm | kTakeFree;
  long s[4];
  for (long &x : s) x = t_.ops->slot_alloc(&t_);
  ASSERT_EQ(s[1], s[0] + 1);
  // In use: not free.
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(s[1]), any), -ENOENT);
  // The next never-used slot, and not the one after it.
  const long next = s[3] + 1;
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(next + 1), any), -ENOENT);
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(next), kTakeWarm), -ENOENT) << "fresh is not warm";
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(next), kTakeFree), next);
  EXPECT_EQ(t_.ops->slot_alloc(&t_), next + 1) << "taken slots are not handed out again";
  // Released (below the top of the stack of released slots).
  t_.ops->slot_free(&t_, static_cast<uint32_t>(s[1]));
  t_.ops->slot_free(&t_, static_cast<uint32_t>(s[2]));
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(s[1]), kTakeWarm), -ENOENT) << "released is not warm";
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(s[1]), kTakeFree), s[1]);
  EXPECT_EQ(t_.ops->slot_alloc(&t_), s[2]) << "the stack keeps its other slots";
  // Warm: only when allowed.
  t_.ops->warm_limit(&t_, 4);
  t_.ops->slot_recycle(&t_, static_cast<uint32_t>(s[3]));
  ASSERT_EQ(file_state(&t_)->warm_count, 1u);
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(s[3]), kTakeFree), -ENOENT);
  EXPECT_EQ(t_.ops->slot_take(&t_, static_cast<uint32_t>(s[3]), kTakeWarm), s[3]);
  EXPECT_EQ(file_state(&t_)->warm_count, 0u);
}

TEST_P(FileTier, WarmSlotsComeBackLowestFirst) {
  long s[3];
  for (long &x : s) x = t_.ops->slot_alloc(&t_);
  t_.ops->warm_limit(&t_, 4);
  for (int i : {1, 2, 0}) t_.ops->slot_recycle(&t_, static_cast<uint32_t>(s[i]));
  for (long want : s) EXPECT_EQ(t_.ops->slot_take_warm(&t_), want);
  EXPECT_EQ(t_.ops->slot_take_warm(&t_), -ENOENT);
}

TEST_P(FileTier, MappedSlotIsSharedWithTheFileAndDiscardsToZero) {
  long slot = t_.ops->slot_alloc(&t_);
  ASSERT_GE(slot, 0);
  long r = sys::mmap(nullptr, kUnitSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  ASSERT_EQ(t_.ops->reserve(&t_, static_cast<uint32_t>(slot), 0, kUnitSize), 0);
  ASSERT_EQ(t_.ops->map(&t_, p, kUnitSize, PROT_READ | PROT_WRITE, static_cast<uint32_t>(slot), 0), 0);
  memset(p, 0x77, kUnitSize);
  char buf[16] = {};
  ASSERT_EQ(pread(file_state(&t_)->fd, buf, sizeof buf, static_cast<off_t>(slot) * static_cast<off_t>(kUnitSize) + 8192),
            static_cast<ssize_t>(sizeof buf));
  EXPECT_EQ(buf[0], 0x77) << "the mapping writes the file";
  ASSERT_EQ(t_.ops->discard(&t_, p + 8192, 4096, static_cast<uint32_t>(slot), 8192), 0);
  for (size_t i = 8192; i < 8192 + 4096; ++i) ASSERT_EQ(p[i], 0) << i;
  EXPECT_EQ(p[8191], 0x77);
  EXPECT_EQ(p[8192 + 4096], 0x77);
  sys::munmap(p, kUnitSize);
}

TEST_P(FileTier, WarmLimitFreesTheOverflowLowestFirst) {
  long s[3];
  for (long &x : s) x = t_.ops->slot_alloc(&t_);
  EXPECT_EQ(t_.ops->warm_limit(&t_, 8), 0u);
  for (long x : s) t_.ops->slot_recycle(&t_, static_cast<uint32_t>(x));
  ASSERT_EQ(file_state(&t_)->warm_count, 3u);
  EXPECT_EQ(t_.ops->warm_limit(&t_, 1), 2u) << "two over the limit are freed";
  EXPECT_EQ(file_state(&t_)->warm_count, 1u);
  EXPECT_EQ(t_.ops->slot_take_warm(&t_), s[2]) << "the highest stays: the lower ones went first";
  EXPECT_EQ(t_.ops->warm_limit(&t_, 1000), 0u);
  EXPECT_EQ(file_state(&t_)->warm_limit, file_tier_state::kWarmMax) << "capped by the tier";
}

// The copies migration uses: write and read a slot without mapping it, a
// second read-only view, and a splice from a pipe.
TEST_P(FileTier, CopiesInAndOutOfASlotWithoutMappingIt) {
  const long slot = t_.ops->slot_alloc(&t_);
  ASSERT_GE(slot, 0);
  const uint32_t s = static_cast<uint32_t>(slot);
  std::string in(3 * 4096, 'a');
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<char>('a' + i % 23);
  ASSERT_EQ(t_.ops->write(&t_, s, 4096, in.data(), in.size()), 0);
  std::string out(in.size(), '\0');
  ASSERT_EQ(t_.ops->read(&t_, s, 4096, out.data(), out.size()), 0);
  EXPECT_EQ(out, in);
  const long view = t_.ops->map_view(&t_, s);
  ASSERT_FALSE(sys::failed(view));
  EXPECT_EQ(memcmp(reinterpret_cast<const char *>(view) + 4096, in.data(), in.size()), 0);
  EXPECT_EQ(reinterpret_cast<const char *>(view)[0], 0) << "never written: zero";
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(write(p[1], "spliced!", 8), 8);
  const long r = t_.ops->splice_in(&t_, s, 100, p[0], 8);
  close(p[0]);
  close(p[1]);
  ASSERT_EQ(r, 0);
  EXPECT_EQ(memcmp(reinterpret_cast<const char *>(view) + 100, "spliced!", 8), 0);
  sys::munmap(reinterpret_cast<void *>(view), kUnitSize);
}

// What a slot stores, as the file system sees it: the bytes written into
// it, no more (not a neighbour's, not storage only reserved).
TEST_P(FileTier, StoredCountsTheBytesWrittenIntoASlot) {
  const long a = t_.ops->slot_alloc(&t_), b = t_.ops->slot_alloc(&t_), c = t_.ops->slot_alloc(&t_);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_GE(c, 0);
  const std::string pages(3 * 4096, 'x');
  ASSERT_EQ(t_.ops->write(&t_, static_cast<uint32_t>(b), 8192, pages.data(), pages.size()), 0);
  ASSERT_EQ(t_.ops->write(&t_, static_cast<uint32_t>(c), kUnitSize - 4096, pages.data(), 4096), 0);
  EXPECT_EQ(t_.ops->stored(&t_, static_cast<uint32_t>(a)), 0) << "never written";
  EXPECT_EQ(t_.ops->stored(&t_, static_cast<uint32_t>(b)), 3 * 4096);
  EXPECT_EQ(t_.ops->stored(&t_, static_cast<uint32_t>(c)), 4096) << "its last page";
}

// fork: the tier tells its own shared mappings, and makes a private view
// that keeps the contents of the moment and takes no later write.
TEST_P(FileTier, PrivateViewKeepsTheStorageOfTheMoment) {
  const long slot = t_.ops->slot_alloc(&t_);
  ASSERT_GE(slot, 0);
  const uint32_t s = static_cast<uint32_t>(slot);
  long r = sys::mmap(nullptr, kUnitSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  ASSERT_EQ(t_.ops->reserve(&t_, s, 0, kUnitSize), 0);
  ASSERT_EQ(t_.ops->map(&t_, p, kUnitSize, PROT_READ | PROT_WRITE, s, 0), 0);
  p[0] = 1;
  sys::maps_reader maps;
  ASSERT_EQ(maps.open(), 0);
  sys::maps_entry e;
  bool found = false;
  while (maps.next(&e))
    if (e.lo == reinterpret_cast<uintptr_t>(p)) found = t_.ops->maps_storage(&t_, e);
  EXPECT_TRUE(found) << "the shared mapping of the slot is the tier's";
  ASSERT_EQ(t_.ops->map_private(&t_, p, kUnitSize, PROT_READ | PROT_WRITE, s, 0), 0);
  EXPECT_EQ(p[0], 1) << "the contents of the moment";
  p[0] = 2;  // a private copy now
  char b = 0;
  ASSERT_EQ(t_.ops->read(&t_, s, 0, &b, 1), 0);
  EXPECT_EQ(b, 1) << "the write did not reach the storage";
  ASSERT_EQ(maps.open(), 0);
  found = false;
  while (maps.next(&e))
    if (e.lo == reinterpret_cast<uintptr_t>(p)) found = t_.ops->maps_storage(&t_, e);
  EXPECT_FALSE(found) << "a private view is not a shared mapping of the storage";
  sys::munmap(p, kUnitSize);
}

// ZeroIO: the file linked into a capsule changes hands.  The tier names
// its file, gives it up (held, as an ancestor's), takes a new one for the
// next slot, and never counts a linked file as free to write.
TEST_P(FileTier, HandedOverFileIsHeldAndNeverWrittenAgain) {
  int fds[16];
  bool can = true;
  EXPECT_EQ(t_.ops->storage_fds(&t_, fds, 16, &can), 1);
  EXPECT_EQ(fds[0], -1) << "no file before the first slot";
  EXPECT_FALSE(can);
  EXPECT_FALSE(t_.ops->hand_over(&t_)) << "nothing to hand over";
  const long slot = t_.ops->slot_alloc(&t_);
  ASSERT_GE(slot, 0);
  ASSERT_EQ(t_.ops->write(&t_, static_cast<uint32_t>(slot), 0, "snap", 4), 0);
  ASSERT_EQ(t_.ops->storage_fds(&t_, fds, 16, &can), 1);
  ASSERT_GE(fds[0], 0);
  EXPECT_TRUE(can);
  EXPECT_TRUE(t_.ops->storage_unheld(&t_)) << "an unlinked file nobody holds";
  // Linked (as a capsule links it): no longer free to write in place.
  const std::string link = std::string(dir_) + "/pmem-0.tier";
  ASSERT_EQ(linkat(AT_FDCWD, ("/proc/self/fd/" + std::to_string(fds[0])).c_str(), AT_FDCWD, link.c_str(),
                   AT_SYMLINK_FOLLOW), 0) << strerror(errno);
  EXPECT_FALSE(t_.ops->storage_unheld(&t_)) << "a capsule links it";
  struct stat linked;
  ASSERT_EQ(stat(link.c_str(), &linked), 0);
  ASSERT_TRUE(t_.ops->hand_over(&t_));
  EXPECT_EQ(file_state(&t_)->fd, -1) << "a new file only when a slot is needed";
  ASSERT_EQ(t_.ops->storage_fds(&t_, fds, 16, &can), 2);
  EXPECT_EQ(fds[0], -1);
  struct stat held;
  ASSERT_EQ(fstat(fds[1], &held), 0);
  EXPECT_EQ(held.st_ino, linked.st_ino) << "the handed-over file is held";
  // The next slot is in a new file, from slot 0 again; the old one keeps
  // its bytes.
  EXPECT_EQ(t_.ops->slot_alloc(&t_), 0);
  ASSERT_EQ(t_.ops->write(&t_, 0, 0, "next", 4), 0);
  struct stat now;
  ASSERT_EQ(fstat(file_state(&t_)->fd, &now), 0);
  EXPECT_NE(now.st_ino, linked.st_ino);
  char b[5] = {};
  const int lf = open(link.c_str(), O_RDONLY);
  ASSERT_GE(lf, 0);
  EXPECT_EQ(pread(lf, b, 4, static_cast<off_t>(slot) * kUnitSize), 4);
  EXPECT_STREQ(b, "snap");
  close(lf);
  unlink(link.c_str());
  t_.ops->drop_inherited(&t_);
  EXPECT_EQ(t_.ops->storage_fds(&t_, fds, 16, &can), 1) << "no hold left";
}

// tmpfs and ext4 here; and the directory MMTIER_PMEM_PATH names when it is
// set (a DAX mount in a qemu guest; docs/ARCHITECTURE.md, "Known limitations").
std::vector<const char *> filesystems() {
  std::vector<const char *> dirs = {"/dev/shm", "/var/tmp"};
  if (const char *d = getenv("MMTIER_PMEM_PATH"); d && *d) dirs.push_back(d);
  return dirs;
}
INSTANTIATE_TEST_SUITE_P(Filesystems, FileTier, ::testing::ValuesIn(filesystems()), [](const auto &info) {
  return std::string(info.index == 0 ? "tmpfs" : info.index == 1 ? "ext4" : "pmem_path");
});

TEST(FileTierErrors, MissingDirectoryIsAnError) {
  config cfg;
  snprintf(cfg.pmem_path, sizeof cfg.pmem_path, "/nonexistent/mmtier");
  tier t;
  t.ops = &file_tier_ops;
  EXPECT_LT(t.ops->open(&t, cfg), 0);
  EXPECT_FALSE(t.usable);
}

TEST(DramTier, MapsAnonymousMemoryAndDiscardsToZero) {
  tier t;
  t.ops = &dram_tier_ops;
  config cfg;
  ASSERT_EQ(t.ops->open(&t, cfg), 0);
  long r = sys::mmap(nullptr, 16384, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  ASSERT_EQ(t.ops->map(&t, p, 16384, PROT_READ | PROT_WRITE, 0, 0), 0);
  memset(p, 1, 16384);
  ASSERT_EQ(t.ops->discard(&t, p, 4096, 0, 0), 0);
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[4096], 1);
  sys::munmap(p, 16384);
}

}  // namespace
}  // namespace mmtier::detail
