// Guarded descriptors (see fd_guard.h): a handful, in a lock-free table.
#include "platform/fd_guard.h"

#include "platform/sys.h"

#include <fcntl.h>

#include <atomic>

namespace mmtier::detail {
namespace {

constexpr int kSlots = 16;
constexpr int kHigh = 64;
std::atomic<int> g_fds[kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};

}  // namespace

int fd_guard(int fd) {
  if (fd < 0) return fd;
  if (fd_guarded(fd)) return fd;
  if (fd < kHigh) {
    long r = sys::raw(SYS_fcntl, fd, F_DUPFD_CLOEXEC, kHigh);
    if (r < 0 && fd <= 2) r = sys::raw(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 3);  // a low file limit
    if (r >= 0) {
      sys::close(fd);
      fd = static_cast<int>(r);
    }
  }
  for (auto &slot : g_fds) {
    int empty = -1;
    if (slot.compare_exchange_strong(empty, fd, std::memory_order_acq_rel)) return fd;
  }
  return -EMFILE;
}

void fd_unguard(int fd) {
  for (auto &slot : g_fds) {
    int want = fd;
    slot.compare_exchange_strong(want, -1, std::memory_order_acq_rel);
  }
}

bool fd_guarded(int fd) {
  if (fd < 0) return false;
  for (auto &slot : g_fds)
    if (slot.load(std::memory_order_acquire) == fd) return true;
  return false;
}

int fd_guard_list(int *out, int cap) {
  int n = 0;
  for (auto &slot : g_fds) {
    const int fd = slot.load(std::memory_order_acquire);
    if (fd < 0 || n == cap) continue;
    int i = n++;
    for (; i > 0 && out[i - 1] > fd; --i) out[i] = out[i - 1];
    out[i] = fd;
  }
  return n;
}

void fd_guard_forget_all() {
  for (auto &slot : g_fds) slot.store(-1, std::memory_order_relaxed);
}

}  // namespace mmtier::detail
