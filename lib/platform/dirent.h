// Platform layer: walking a directory with getdents64 into a buffer on the
// stack: no allocation and no C library state (opendir allocates), so it
// works inside the allocator, in a stopped world and in a fork child whose
// locks are held by a thread that is not there.
#pragma once

#include "platform/sys.h"

#include <cstring>

namespace mmtier::detail::sys {

// Calls f(name, d_type) for each entry of the open directory dirfd from its
// current position on, "." and ".." left out, until f returns non-zero
// (returned) or the end (0); a getdents64 error is returned as -errno.
template <class F>
long for_each_dirent(int dirfd, F &&f) {
  alignas(8) char buf[2048];
  for (;;) {
    const long n = raw(SYS_getdents64, dirfd, reinterpret_cast<long>(buf), sizeof buf);
    if (n <= 0) return n;
    for (long off = 0; off < n;) {
      const char *rec = buf + off;
      unsigned short reclen;
      memcpy(&reclen, rec + 16, sizeof reclen);
      off += reclen;
      const char *name = rec + 19;
      if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
      if (const long r = f(name, static_cast<unsigned char>(rec[18]))) return r;
    }
  }
}

}  // namespace mmtier::detail::sys
