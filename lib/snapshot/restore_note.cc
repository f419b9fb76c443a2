// Snapshot layer: the restore note's lazy-fill sentinel (restore_note.h).
#include "snapshot/restore_note.h"

#include "platform/sys.h"

#include <fcntl.h>
#include <sys/syscall.h>

#include <cstdint>

namespace mmtier::detail {

bool lazy_fill_pending() {
  const uint64_t s = __atomic_load_n(&g_restore_note.lazy_sentinel, __ATOMIC_ACQUIRE);
  if (!s) return false;
  // In, or swapped out since (bit 63 present, 62 swapped): pagemap, not
  // mincore, which says 0 for a page in swap.
  uint64_t entry = 0;
  const long pm = sys::openat(AT_FDCWD, "/proc/thread-self/pagemap", O_RDONLY | O_CLOEXEC, 0);
  if (pm >= 0) {
    const long got = sys::pread(static_cast<int>(pm), &entry, sizeof entry, static_cast<off_t>(s / 4096 * 8));
    sys::close(static_cast<int>(pm));
    if (got != static_cast<long>(sizeof entry) || !(entry >> 62)) return true;
  } else {
    unsigned char in = 0;
    if (sys::raw(SYS_mincore, static_cast<long>(s), 4096, reinterpret_cast<long>(&in)) == 0 && !(in & 1)) return true;
  }
  // In (or gone): the fill has ended.
  uint64_t expected = s;
  if (__atomic_compare_exchange_n(&g_restore_note.lazy_sentinel, &expected, uint64_t{0}, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    sys::munmap(reinterpret_cast<void *>(s), 4096);
  return false;
}

}  // namespace mmtier::detail
