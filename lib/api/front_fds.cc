// The front-end of the interposed close family (see front_fds.h).
#include "api/front_fds.h"

#include "platform/fd_guard.h"
#include "platform/sys.h"

#include <linux/close_range.h>

#include <cerrno>
#include <climits>

namespace mmtier::detail {
namespace {

int fail(long r) {
  errno = static_cast<int>(-r);
  return -1;
}

// close_range over [first, last] without the guarded descriptors: the gaps
// between them, one call each.
int close_range_around(unsigned first, unsigned last, int flags) {
  int guarded[8];
  const int n = fd_guard_list(guarded, 8);
  unsigned lo = first;
  for (int i = 0; i < n; ++i) {
    const unsigned g = static_cast<unsigned>(guarded[i]);
    if (g < lo || g > last) continue;
    if (g > lo) {
      long r = sys::raw(SYS_close_range, lo, g - 1, flags);
      if (r < 0) return fail(r);
    }
    if (g == last) return 0;
    lo = g + 1;
  }
  long r = sys::raw(SYS_close_range, lo, last, flags);
  return r < 0 ? fail(r) : 0;
}

}  // namespace



int front_close(int fd) {
  if (__builtin_expect(fd_guarded(fd), 0)) {
    errno = EBADF;  // not the application's descriptor
    return -1;
  }
  long r = sys::close(fd);
  return r < 0 ? fail(r) : 0;
}

int front_close_range(unsigned first, unsigned last, int flags) {
  if (first > last || (flags & CLOSE_RANGE_CLOEXEC)) {
    // Marking close-on-exec harms nothing of ours (it is set already).
    long r = sys::raw(SYS_close_range, first, last, flags);
    return r < 0 ? fail(r) : 0;
  }
  return close_range_around(first, last, flags);
}

void front_closefrom(int lowfd) {
  if (lowfd < 0) lowfd = 0;
  close_range_around(static_cast<unsigned>(lowfd), UINT_MAX, 0);
}

}  // namespace mmtier::detail
