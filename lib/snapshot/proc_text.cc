#include "snapshot/proc_text.h"

#include "platform/sys.h"

#include <fcntl.h>

namespace mmtier::detail {

void read_small(const char *path, char *buf, size_t cap) {
  buf[0] = 0;
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  size_t have = 0;
  for (long n; have < cap - 1 && (n = sys::read(static_cast<int>(fd), buf + have, cap - 1 - have)) > 0;)
    have += static_cast<size_t>(n);
  sys::close(static_cast<int>(fd));
  buf[have] = 0;
  if (have && buf[have - 1] == '\n') buf[have - 1] = 0;
}

}  // namespace mmtier::detail
