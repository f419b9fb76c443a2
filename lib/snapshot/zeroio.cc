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
  int err = 0;  // the first linkat failure
  int err_k = 0;  // of which file
};

void link_one(void *c, int fd, int k) {
  auto *x = static_cast<link_ctx *>(c);
  struct stat st;
  if (sys::raw(SYS_fstat, fd, reinterpret_cast<long>(&st)) < 0 || x->wa->nlinks == kMaxPmemLinks) return;
  if (st.st_dev != x->dir_dev) {
    x->other_fs = true;
    return;
  }
  char from[40], name[32];
  snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
  snprintf(name, sizeof name, "pmem-%d.tier", k);
  // The storage is an O_TMPFILE file (or one already linked into an
  // earlier capsule): linkat through /proc gives it a name.
  const long r = sys::raw(SYS_linkat, AT_FDCWD, reinterpret_cast<long>(from), x->dirfd, reinterpret_cast<long>(name),
                          AT_SYMLINK_FOLLOW);
  if (r < 0) {
    if (!x->err) {
      x->err = static_cast<int>(-r);
      x->err_k = k;
    }
    return;
  }
  pmem_link &l = x->wa->links[x->wa->nlinks++];
  l.dev = (uint64_t{major(st.st_dev)} << 32) | minor(st.st_dev);
  l.ino = st.st_ino;
  l.k = static_cast<uint32_t>(k);
}

void unlink_k(int dirfd, uint32_t k) {
  char name[32];
  snprintf(name, sizeof name, "pmem-%u.tier", k);
  sys::unlinkat(dirfd, name, 0);
}

}  // namespace

void pmem_link_storage(int capsule_dirfd, writer_args *wa, snap_result *res) {
  wa->nlinks = 0;
  struct stat dst;
  if (sys::raw(SYS_fstat, capsule_dirfd, reinterpret_cast<long>(&dst)) < 0) return;
  link_ctx x{capsule_dirfd, dst.st_dev, wa};
  const bool can_hand_over = heap_pmem_storage_each(link_one, &x);
  if (wa->nlinks && wa->links[0].k == 0 && !can_hand_over) {
    // Held files of earlier snapshots fill the table: the own file could
    // not change hands, so its units are copied this time.
    unlink_k(capsule_dirfd, 0);
    memmove(&wa->links[0], &wa->links[1], (wa->nlinks - 1) * sizeof wa->links[0]);
    --wa->nlinks;
    snprintf(res->pmem_note, sizeof res->pmem_note,
             "PMem units copied: the files of earlier snapshots are all still mapped");
  }
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

void pmem_hand_over(writer_args *wa, snap_result *res) {
  if (!wa->nlinks || wa->links[0].k != 0) return;
  if (heap_snapshot_hand_over(makedev(wa->links[0].dev >> 32, wa->links[0].dev & 0xffffffffu), wa->links[0].ino)) return;
  // Not linked after all (its hold could not be taken): the writer copies
  // the units and removes the link.
  memmove(&wa->links[0], &wa->links[1], (wa->nlinks - 1) * sizeof wa->links[0]);
  --wa->nlinks;
  snprintf(res->pmem_note, sizeof res->pmem_note, "PMem units copied: the PMem file could not change hands");
}

}  // namespace mmtier::detail
