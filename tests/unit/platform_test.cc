// Platform layer (lib/platform/sys.cc): raw system calls report -errno, and
// the /proc readers see what the kernel sees.
#include "platform/pagemap.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

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
  sys::munmap(p, 4 * 4096);
}

}  // namespace
}  // namespace mmtier::detail
