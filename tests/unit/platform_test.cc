// Platform layer (lib/platform/sys.cc): raw system calls report -errno, and
// the /proc readers see what the kernel sees.
#include "platform/pagemap.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail {
namespace {

TEST(Platform, RawCallsReturnNegativeErrnoAndKeepErrno) {
  errno = 1234;
  EXPECT_EQ(sys::munmap(reinterpret_cast<void *>(4097), 4096), -EINVAL);
  EXPECT_EQ(sys::close(-1), -EBADF);
  EXPECT_EQ(errno, 1234) << "raw calls never touch errno";
  long r = sys::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  EXPECT_TRUE(sys::failed(-EINVAL));
  EXPECT_EQ(sys::munmap(reinterpret_cast<void *>(r), 8192), 0);
}

TEST(Platform, QueryProtReadsTheMapping) {
  long r = sys::mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  ASSERT_EQ(sys::mprotect(p + 4096, 4096, PROT_READ), 0);
  ASSERT_EQ(sys::mprotect(p + 8192, 4096, PROT_NONE), 0);
  EXPECT_EQ(sys::query_prot(p), PROT_READ | PROT_WRITE);
  EXPECT_EQ(sys::query_prot(p + 4096), PROT_READ);
  EXPECT_EQ(sys::query_prot(p + 8192), PROT_NONE);
  sys::munmap(p, 3 * 4096);
  EXPECT_EQ(sys::query_prot(p), -1) << "unmapped";
}

TEST(Platform, PagemapSeesPresenceAndAnonymity) {
  long r = sys::mmap(nullptr, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  p[4096] = 1;
  sys::page_info info[4];
  ASSERT_TRUE(sys::pagemap_read(reinterpret_cast<uintptr_t>(p), 4, info));
  EXPECT_FALSE(info[0].present);
  EXPECT_TRUE(info[1].present);
  EXPECT_FALSE(info[1].file) << "a written private anonymous page";
  EXPECT_TRUE(info[1].exclusive) << "mapped by this process only";
  EXPECT_TRUE(sys::private_copy(info[1], false));
  EXPECT_TRUE(sys::private_copy(info[1], true));
  EXPECT_FALSE(sys::file_or_copy(info[1], true));
  sys::munmap(p, 4 * 4096);
}

// After fork the parent's anonymous page is the child's too: not
// exclusive, so on DAX (where the file's own pages show the same) only its
// contents can tell; elsewhere it is still surely a copy.
TEST(Platform, PagemapSeesAPageAForkChildShares) {
  long r = sys::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_FALSE(sys::failed(r));
  char *p = reinterpret_cast<char *>(r);
  p[0] = 1;
  int to_child[2];
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // holds the page until the parent has looked
    char c;
    _exit(read(to_child[0], &c, 1) == 1 && p[0] == 1 ? 0 : 1);
  }
  sys::page_info info;
  const bool read_ok = sys::pagemap_read(reinterpret_cast<uintptr_t>(p), 1, &info);
  EXPECT_EQ(write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(to_child[0]);
  close(to_child[1]);
  ASSERT_TRUE(read_ok);
  EXPECT_TRUE(info.present);
  EXPECT_FALSE(info.file);
  EXPECT_FALSE(info.exclusive) << "the child maps it too";
  EXPECT_TRUE(sys::private_copy(info, false));
  EXPECT_FALSE(sys::private_copy(info, true));
  EXPECT_TRUE(sys::file_or_copy(info, true));
  sys::munmap(p, 4096);
}

}  // namespace
}  // namespace mmtier::detail
