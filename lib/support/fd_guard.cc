// Guarded descriptors (see fd_guard.h): a handful, in a lock-free table.
#include "support/fd_guard.h"

#include <atomic>

namespace mmtier::detail {
namespace {

constexpr int kSlots = 8;
std::atomic<int> g_fds[kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1};

}  // namespace

void fd_guard(int fd) {
  if (fd < 0 || fd_guarded(fd)) return;
  for (auto &slot : g_fds) {
    int empty = -1;
    if (slot.compare_exchange_strong(empty, fd, std::memory_order_acq_rel)) return;
  }
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

}  // namespace mmtier::detail
