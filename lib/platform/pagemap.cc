// Platform layer: /proc/self/pagemap (see pagemap.h).
#include "platform/pagemap.h"

#include "platform/fd_guard.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>

namespace mmtier::detail::sys {
namespace {

constexpr size_t kChunk = 512;

// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h), not in every build
// host's headers.
struct page_region {
  uint64_t start, end, categories;
};
struct pm_scan_arg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, pm_scan_arg);
constexpr uint64_t kPageIsHuge = uint64_t{1} << 6;
// -1 not known yet, 0 no PAGEMAP_SCAN, 1 there.
int g_scan = -1;

void to_info(const uint64_t *e, size_t n, page_info *out) {
  for (size_t i = 0; i < n; ++i)
    out[i] = {(e[i] & kPagemapPresent) != 0, (e[i] & kPagemapFile) != 0, (e[i] & kPagemapSwapped) != 0,
              (e[i] & kPagemapExclusive) != 0};
}

// Reads the entries of pages [addr, addr + pages * 4 KiB) a chunk at a
// time, handing each chunk to f(entries, n, first page's index).
template <class F>
bool each_chunk(int fd, uintptr_t addr, size_t pages, F f) {
  uint64_t chunk[kChunk];
  for (size_t done = 0; done < pages;) {
    const size_t n = pages - done < kChunk ? pages - done : kChunk;
    if (!pagemap_entries(fd, addr + (done << 12), n, chunk)) return false;
    f(chunk, n, done);
    done += n;
  }
  return true;
}

bool read_info(int fd, uintptr_t addr, size_t pages, page_info *out) {
  return each_chunk(fd, addr, pages, [&](const uint64_t *e, size_t n, size_t at) { to_info(e, n, out + at); });
}

}  // namespace

bool pagemap_entries(int fd, uintptr_t addr, size_t pages, uint64_t *out) {
  const size_t want = pages * sizeof(uint64_t);
  size_t got = 0;
  while (got < want) {
    long r = pread(fd, reinterpret_cast<char *>(out) + got, want - got,
                   static_cast<off_t>((addr >> 12) * sizeof(uint64_t) + got));
    if (r == -EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

bool pagemap_read(uintptr_t addr, size_t pages, page_info *out) {
  long fd = openat(AT_FDCWD, "/proc/thread-self/pagemap", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = read_info(static_cast<int>(fd), addr, pages, out);
  ::close(static_cast<int>(fd));
  return ok;
}

void pagemap_file::close() {
  if (fd_ < 0) return;
  fd_unguard(fd_);
  ::close(fd_);
  fd_ = -1;
}

void pagemap_file::check_owner() {
  if (pid_ != getpid()) close();
  pid_ = getpid();
}

bool pagemap_file::ready() {
  if (fd_ >= 0) return true;
  long fd = openat(AT_FDCWD, "/proc/thread-self/pagemap", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  const int guarded = fd_guard(static_cast<int>(fd));
  if (guarded < 0) {
    ::close(static_cast<int>(fd));
    return false;
  }
  fd_ = guarded;
  pid_ = getpid();
  return true;
}

uint64_t pagemap_file::entry(uintptr_t addr) {
  uint64_t e = 0;
  if (!ready() || !pagemap_entries(fd_, addr, 1, &e)) return 0;
  return e;
}

int pagemap_file::huge(uintptr_t addr, size_t len) {
  if (g_scan == 0) return -ENOTTY;
  if (!ready()) return -EBADF;
  // The huge parts of the range, as regions; whole when one region covers it.
  page_region r[2] = {};
  pm_scan_arg a = {};
  a.size = sizeof a;
  a.start = addr;
  a.end = addr + len;
  a.vec = reinterpret_cast<uintptr_t>(r);
  a.vec_len = 2;
  a.category_mask = kPageIsHuge;
  a.return_mask = kPageIsHuge;
  const long n = raw(SYS_ioctl, fd_, static_cast<long>(kPagemapScan), reinterpret_cast<long>(&a));
  if (n == -ENOTTY && g_scan < 0) {
    g_scan = 0;
    return -ENOTTY;
  }
  if (n < 0) return static_cast<int>(n);
  g_scan = 1;
  return n == 1 && r[0].start == addr && r[0].end == addr + len;
}

bool pagemap_file::info(uintptr_t addr, size_t pages, page_info *out) {
  return ready() && read_info(fd_, addr, pages, out);
}

size_t pagemap_file::present(uintptr_t addr, size_t pages) {
  size_t n = 0;
  const bool ok = ready() && each_chunk(fd_, addr, pages, [&](const uint64_t *e, size_t k, size_t) {
    for (size_t i = 0; i < k; ++i) n += (e[i] & kPagemapPresent) != 0;
  });
  return ok ? n : 0;
}

}  // namespace mmtier::detail::sys
