// ZeroIO linking (see zeroio.h).
#include "snapshot/zeroio.h"

#include "config/config.h"
#include "heap/heap.h"
#include "platform/sys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mmtier::detail {
namespace {

struct link_ctx {
  int dirfd;
  dev_t dir_dev;
  writer_args *wa;
  bool other_fs = false;
  int err = 0;    // the first linkat failure
  int err_k = 0;  // of which file
};

// Links the PMem file fd into the capsule as pmem-<k>.tier (an O_TMPFILE,
// or one linked into an earlier capsule: linkat through /proc gives it a
// name) and adds it to wa->links.
bool link_into(link_ctx *x, int fd, int k) {
  struct stat st;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) < 0 || x->wa->nlinks == kMaxPmemLinks) return false;
  if (st.st_dev != x->dir_dev) {
    x->other_fs = true;
    return false;
  }
  char from[40], name[32];
  snprintf(from, sizeof from, "/proc/thread-self/fd/%d", fd);
  snprintf(name, sizeof name, "pmem-%d.tier", k);
  const long r = sys::raw(SYS_linkat, AT_FDCWD, reinterpret_cast<long>(from), x->dirfd, reinterpret_cast<long>(name),
                          AT_SYMLINK_FOLLOW);
  if (r < 0) {
    if (!x->err) {
      x->err = static_cast<int>(-r);
      x->err_k = k;
    }
    return false;
  }
  pmem_link &l = x->wa->links[x->wa->nlinks++];
  l.dev = (uint64_t{major(st.st_dev)} << 32) | minor(st.st_dev);
  l.ino = st.st_ino;
  l.k = static_cast<uint32_t>(k);
  return true;
}

// Before the stop: the files held (k >= 1).  The own file (k 0) is linked
// in the stop, where it is handed over at once: a link made and then
// dropped would leave the O_TMPFILE unlinkable for good.
void link_held(void *c, int fd, int k) {
  auto *x = static_cast<link_ctx *>(c);
  if (k > 0) {
    link_into(x, fd, k);
    return;
  }
  struct stat st;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0 && st.st_dev != x->dir_dev) x->other_fs = true;
}

bool link_own(void *c, int fd) { return link_into(static_cast<link_ctx *>(c), fd, 0); }

void note(snap_result *res, const link_ctx &x) {
  if (x.other_fs)
    snprintf(res->pmem_note, sizeof res->pmem_note,
             "PMem units copied: the PMem tier (%.64s) is on another file system than the capsule",
             config_get().pmem_path);
  else if (x.err && !res->pmem_note[0])
    snprintf(res->pmem_note, sizeof res->pmem_note, "%s: cannot link %s: %s",
             x.err_k ? "PMem units of an earlier file copied" : "PMem units copied",
             !x.err_k ? "the PMem file" : x.err == ENOENT ? "it (the capsules that linked it are deleted)" : "it",
             strerror(x.err));
}

link_ctx g_ctx;  // from P0 to the stop, under the snapshot's lock

}  // namespace

void pmem_link_storage(int capsule_dirfd, writer_args *wa, snap_result *res) {
  wa->nlinks = 0;
  g_ctx = link_ctx{-1, 0, wa};
  struct stat dst;
  if (sys::raw(SYS_fstat, capsule_dirfd, reinterpret_cast<long>(&dst)) < 0) return;
  g_ctx.dirfd = capsule_dirfd;
  g_ctx.dir_dev = dst.st_dev;
  heap_pmem_storage_each(link_held, &g_ctx);
  note(res, g_ctx);
}

void pmem_hand_over(writer_args *wa, snap_result *res) {
  if (g_ctx.dirfd < 0 || g_ctx.wa != wa || g_ctx.other_fs) return;
  const uint32_t before = wa->nlinks;
  const int r = heap_snapshot_hand_over(link_own, &g_ctx);
  if (r == 1) {
    // The own file first, as k 0.
    const pmem_link own = wa->links[before];
    memmove(&wa->links[1], &wa->links[0], before * sizeof wa->links[0]);
    wa->links[0] = own;
  } else if (r == -EIO) {
    // Linked, but it could not change hands (its hold): copied after all.
    --wa->nlinks;
    sys::unlinkat(g_ctx.dirfd, "pmem-0.tier", 0);
    snprintf(res->pmem_note, sizeof res->pmem_note, "PMem units copied: the PMem file could not change hands");
  } else if (r == -EBUSY) {
    snprintf(res->pmem_note, sizeof res->pmem_note,
             "PMem units copied: the PMem files of earlier snapshots are all still in use");
  } else if (r == -ENOLINK) {
    note(res, g_ctx);
  }
}

}  // namespace mmtier::detail
