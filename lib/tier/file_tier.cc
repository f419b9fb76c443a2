// File-backed tier (PMem on a DAX filesystem, or any directory standing in
// for it).  One unnamed file per process, created with O_TMPFILE (mode 0600)
// so nothing is left behind when the process exits, crashes or is killed;
// where O_TMPFILE is unsupported a randomly named file is created with
// O_EXCL|O_NOFOLLOW and unlinked at once.  Each unit placed here owns one
// unit-sized slot; storage is reserved with fallocate (reserve) before
// pages are mapped, so a full filesystem is seen as an error then, never as
// SIGBUS at first touch (the heap calls it at a unit's first access:
// heap/first_touch.cc).
#include "tier/file_tier.h"

#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "support/errors.h"
#include "support/layout.h"
#include "support/log.h"
#include "support/meta.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <new>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace mmtier::detail {
namespace {

constexpr uint64_t kGrowSlots = 64;  // grow the file 128 MiB at a time (sparse)
constexpr uint64_t kMaxSlots = uint64_t{1} << 26;

long open_unnamed(const char *dir) {
  // The directory itself may be reached through a symlink (as configured);
  // the file is created relative to it and never through a symlink.
  long dfd = sys::openat(AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return dfd;
  const int d = static_cast<int>(dfd);
  long fd = sys::openat(d, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (fd != -EOPNOTSUPP && fd != -EISDIR && fd != -EINVAL)) {
    sys::close(d);
    return fd;
  }
  // Fallback: an exclusive random name, unlinked immediately.
  char name[64];
  uint64_t seed = static_cast<uint64_t>(sys::getpid()) * 0x9E3779B97F4A7C15ull ^
                  reinterpret_cast<uintptr_t>(&name);
  for (int attempt = 0; attempt < 16; ++attempt) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    format(name, sizeof name, ".mmtier-%lx", static_cast<unsigned long>(seed >> 8));
    fd = sys::openat(d, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd == -EEXIST) continue;
    if (fd >= 0) sys::unlinkat(d, name, 0);
    break;
  }
  sys::close(d);
  return fd;
}

off_t file_off(uint32_t slot, size_t off) { return static_cast<off_t>(uint64_t{slot} * kUnitSize + off); }

// The directory is checked when the tier opens (a bad one is said at once,
// and the tier is unusable); the file is made when the first slot is
// needed, so a process that never places a PMem unit has no file, no
// descriptor and no DAX probe (most processes of a host are small).
long file_open(tier *t, const config &cfg) {
  t->usable = false;
  if (!t->impl) {
    void *mem = meta_map(sizeof(file_tier_state));
    if (!mem) return -ENOMEM;
    t->impl = new (mem) file_tier_state();
  }
  file_tier_state *f = file_state(t);
  format(f->dir, sizeof f->dir, "%s", cfg.pmem_path);
  long dfd = sys::openat(AT_FDCWD, f->dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  long r = dfd < 0 ? dfd : sys::raw(SYS_faccessat2, dfd, reinterpret_cast<long>("."), W_OK | X_OK, 0);
  if (r == -ENOSYS) r = sys::raw(SYS_faccessat, dfd, reinterpret_cast<long>("."), W_OK | X_OK);
  if (dfd >= 0) sys::close(static_cast<int>(dfd));
  if (r < 0) {
    MMTIER_WARN("cannot use the PMem directory %s (error %ld); using DRAM only", f->dir, -r);
    return r;
  }
  t->usable = true;
  return 0;
}

// Says once when the PMem directory is on a disk file system without DAX
// (ext4 or xfs on a block device, or anything else not kept in memory):
// every PMem page is then a page-cache page of a disk file, which the
// kernel writes back to the disk while the program runs.  Measured: a JVM
// with ParallelGC took 1.98x and a Rust program 2.9x the time they took
// with the tier on tmpfs.  Memory file systems (a stand-in: tmpfs, ramfs,
// hugetlbfs) and DAX mounts are what the tier is for.
void warn_if_disk(int fd, const char *dir) {
  struct statfs sf;
  if (sys::raw(SYS_fstatfs, fd, reinterpret_cast<long>(&sf)) < 0) return;
  if (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC || sf.f_type == HUGETLBFS_MAGIC) return;
  const char *fs = sf.f_type == EXT4_SUPER_MAGIC ? "ext4" : sf.f_type == XFS_SUPER_MAGIC ? "xfs"
                   : sf.f_type == BTRFS_SUPER_MAGIC ? "btrfs" : sf.f_type == OVERLAYFS_SUPER_MAGIC ? "overlayfs"
                                                                                     : "a file system";
  MMTIER_WARN("PMem directory %s is on %s without DAX: PMem pages are written back to its disk while the program "
              "runs (up to 2-3x its run time); use a DAX mount (-o dax) for persistent memory, or a tmpfs such as "
              "/dev/shm to stand in for one",
              dir, fs);
}

// Makes the tier's file on first use: 0, or -errno with the tier unusable
// from now on (said once).  Runs inside allocation (a slot for a unit being
// placed): system calls only, nothing that allocates.
long file_ready(tier *t) {
  file_tier_state *f = file_state(t);
  if (f->fd >= 0) return 0;
  if (!t->usable) return -ENOSPC;
  long fd = open_unnamed(f->dir);
  const int guarded = fd < 0 ? -1 : fd_guard(static_cast<int>(fd));
  if (fd >= 0 && guarded < 0) sys::close(static_cast<int>(fd));
  if (!f->free_slots) f->free_slots = static_cast<uint32_t *>(meta_map(kMaxSlots * sizeof(uint32_t)));
  if (guarded < 0 || !f->free_slots) {
    t->usable = false;
    if (fd < 0)
      MMTIER_WARN("cannot create the PMem file in %s (error %ld); using DRAM only", f->dir, -fd);
    else
      MMTIER_WARN("no room for the PMem file's descriptor or slot table; using DRAM only");
    return fd < 0 ? fd : -ENOMEM;
  }
  f->fd = guarded;
  f->free_cap = kMaxSlots;
  // A real DAX mount: MAP_SYNC is only accepted there (the probe's only
  // use of it, see file_map).
  if (sys::ftruncate(f->fd, kUnitSize) == 0) {
    long m = sys::mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, f->fd, 0);
    if (!sys::failed(m)) {
      t->dax = true;
      sys::munmap(reinterpret_cast<void *>(m), kUnitSize);
    }
    sys::ftruncate(f->fd, 0);
  }
  // Said of the first file only: a fork child's or the one after a
  // snapshot took the last (ZeroIO) is in the same directory.
  if (!f->announced) {
    MMTIER_INFO("PMem tier in %s (%s)", f->dir, t->dax ? "DAX: persistent memory mapped directly" : "page cache");
    if (!t->dax) warn_if_disk(f->fd, f->dir);
    f->announced = true;
  }
  return 0;
}

// The next never-used slot, growing the (sparse) file for it if needed.
long take_fresh(tier *t) {
  file_tier_state *f = file_state(t);
  if (long r = file_ready(t); r < 0) return r;
  if (f->slot_high >= kMaxSlots) return -ENOSPC;
  if (f->slot_high >= f->file_slots) {
    uint64_t want = f->file_slots + kGrowSlots;
    long r = sys::ftruncate(f->fd, static_cast<off_t>(want * kUnitSize));
    if (r < 0) return r;
    f->file_slots = want;
  }
  return static_cast<long>(f->slot_high++);
}

long file_slot_alloc(tier *t) {
  file_tier_state *f = file_state(t);
  if (f->free_count > 0) return f->free_slots[--f->free_count];
  return take_fresh(t);
}

void file_slot_free(tier *t, uint32_t slot) {
  file_tier_state *f = file_state(t);
  // A slot whose storage could not be given back still holds its data: it
  // is never handed out again (a unit placed there must read zeros).
  long r = sys::fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          file_off(slot, 0), kUnitSize);
  if (r == 0 && f->free_count < f->free_cap) f->free_slots[f->free_count++] = slot;
}

void file_slot_recycle(tier *t, uint32_t slot) {
  file_tier_state *f = file_state(t);
  if (f->warm_count < f->warm_limit && f->warm_count < file_tier_state::kWarmMax) f->warm_slots[f->warm_count++] = slot;
  else file_slot_free(t, slot);
}

long file_slot_take_warm(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f->warm_count) return -ENOENT;
  uint32_t low = 0;
  for (uint32_t i = 1; i < f->warm_count; ++i)
    if (f->warm_slots[i] < f->warm_slots[low]) low = i;
  const uint32_t slot = f->warm_slots[low];
  f->warm_slots[low] = f->warm_slots[--f->warm_count];
  return static_cast<long>(slot);
}

// Released slots searched for a particular one: the most recently released
// (a unit's old slot is usually among them); older ones are not worth a
// long search.
constexpr uint32_t kTakeSearch = 1024;

long file_slot_take(tier *t, uint32_t slot, int from) {
  file_tier_state *f = file_state(t);
  if (slot < f->slot_high && (from & kTakeWarm)) {
    for (uint32_t i = 0; i < f->warm_count; ++i)
      if (f->warm_slots[i] == slot) {
        f->warm_slots[i] = f->warm_slots[--f->warm_count];
        return slot;
      }
  }
  if (!(from & kTakeFree)) return -ENOENT;
  if (slot < f->slot_high) {
    const uint32_t lowest = f->free_count > kTakeSearch ? f->free_count - kTakeSearch : 0;
    for (uint32_t i = f->free_count; i-- > lowest;)
      if (f->free_slots[i] == slot) {
        for (uint32_t j = i; j + 1 < f->free_count; ++j) f->free_slots[j] = f->free_slots[j + 1];
        --f->free_count;
        return slot;
      }
    return -ENOENT;
  }
  if (slot != f->slot_high) return -ENOENT;
  return take_fresh(t);
}

// Zeros written over [off, off + len) of the file (pages no unit uses yet).
long write_zeros(int fd, off_t off, size_t len) {
  alignas(4096) static char zeros[256 << 10];  // .bss: never written, never resident
  while (len > 0) {
    const size_t n = len < sizeof zeros ? len : sizeof zeros;
    const long w = sys::pwrite(fd, zeros, n, off);
    if (w == -EINTR) continue;
    if (w <= 0) return w ? w : -EIO;
    off += w;
    len -= static_cast<size_t>(w);
  }
  return 0;
}

long file_reserve(tier *t, uint32_t slot, size_t off, size_t len) {
  file_tier_state *f = file_state(t);
  long r = sys::fallocate(f->fd, FALLOC_FL_KEEP_SIZE,
                          file_off(slot, off),
                          static_cast<off_t>(len));
  if (r == -EOPNOTSUPP) r = 0;
  // On DAX the first fault on a page of an unwritten extent converts it
  // under a journal handle, page by page (python3 1.6x slower than with the
  // tier on tmpfs, on an emulated NVDIMM); zeros written now make the
  // range's blocks written in a few calls, and faults only map them.
  if (r == 0 && t->dax) r = write_zeros(f->fd, file_off(slot, off), len);
  return r;
}

long file_reserve_keep(tier *t, uint32_t slot, size_t off, size_t len) {
  const long r = sys::fallocate(file_state(t)->fd, FALLOC_FL_KEEP_SIZE, file_off(slot, off), static_cast<off_t>(len));
  return r == -EOPNOTSUPP ? 0 : r;
}

long file_map(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off) {
  file_tier_state *f = file_state(t);
  // Never MAP_SYNC, also on DAX: it makes every first write to a page wait
  // for a journal commit (measured on an emulated NVDIMM under 6.1: python3
  // 23x slower), to keep the file's block map durable at each fault.  The
  // heap's file is unnamed and dies with the process; a capsule that links
  // it is made durable by the snapshot writer's fsync (which on DAX also
  // flushes the CPU caches of the dirty ranges).
  long r = sys::mmap(addr, len, prot, MAP_FIXED | MAP_SHARED, f->fd, file_off(slot, off));
  if (sys::failed(r)) return r;
  // Page-table entries of 4 KiB, never one entry for 2 MiB: access sampling
  // unmaps single pages, and on a PMD-mapped large folio (ext4 and xfs make
  // them for large writes) that would unmap, and report, the whole unit.
  sys::madvise(addr, len, MADV_NOHUGEPAGE);
  return 0;
}

long file_discard(tier *t, void *, size_t len, uint32_t slot, size_t off) {
  file_tier_state *f = file_state(t);
  return sys::fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        file_off(slot, off),
                        static_cast<off_t>(len));
}

size_t file_warm_limit(tier *t, size_t limit) {
  file_tier_state *f = file_state(t);
  f->warm_limit = static_cast<uint32_t>(limit < file_tier_state::kWarmMax ? limit : file_tier_state::kWarmMax);
  size_t freed = 0;
  while (f->warm_count > f->warm_limit) {
    long s = file_slot_take_warm(t);
    if (s < 0) break;
    file_slot_free(t, static_cast<uint32_t>(s));
    ++freed;
  }
  return freed;
}

long file_read(tier *t, uint32_t slot, size_t off, void *dst, size_t len) {
  const int fd = file_state(t)->fd;
  for (size_t done = 0; done < len;) {
    long r = sys::pread(fd, static_cast<char *>(dst) + done, len - done, file_off(slot, off + done));
    if (r > 0) done += static_cast<size_t>(r);
    else if (r != -EINTR) return r ? r : -EIO;
  }
  return 0;
}

long file_write(tier *t, uint32_t slot, size_t off, const void *src, size_t len) {
  const int fd = file_state(t)->fd;
  for (size_t done = 0; done < len;) {
    long r = sys::pwrite(fd, static_cast<const char *>(src) + done, len - done, file_off(slot, off + done));
    if (r > 0) done += static_cast<size_t>(r);
    else if (r != -EINTR) return r ? r : -EIO;
  }
  return 0;
}

long file_splice_in(tier *t, uint32_t slot, size_t off, int pipe_fd, size_t len) {
  const int fd = file_state(t)->fd;
  loff_t at = file_off(slot, off);
  for (size_t left = len; left > 0;) {
    long m = sys::raw(SYS_splice, pipe_fd, 0, fd, reinterpret_cast<long>(&at), static_cast<long>(left), 0);
    if (m == -EINTR) continue;
    if (m <= 0) return m ? m : -EIO;
    left -= static_cast<size_t>(m);
  }
  return 0;
}

long file_stored(const tier *t, uint32_t slot) {
  const int fd = file_state(t)->fd;
  const long end = static_cast<long>(file_off(slot, kUnitSize));
  long total = 0;
  for (long at = static_cast<long>(file_off(slot, 0)); at < end;) {
    const long data = sys::raw(SYS_lseek, fd, at, SEEK_DATA);
    if (data == -ENXIO || (data >= 0 && data >= end)) break;  // no data from here on
    if (data < 0) return data;
    const long hole = sys::raw(SYS_lseek, fd, data, SEEK_HOLE);
    if (hole < 0) return hole;
    total += (hole < end ? hole : end) - data;
    at = hole;
  }
  return total;
}

long file_map_view(tier *t, uint32_t slot) {
  return sys::mmap(nullptr, kUnitSize, PROT_READ, MAP_SHARED, file_state(t)->fd, file_off(slot, 0));
}

bool file_maps_storage(const tier *t, const sys::maps_entry &e) {
  // (No file yet: nothing maps it.)
  const file_tier_state *f = file_state(t);
  struct stat st;
  if (!f || f->fd < 0 || !e.shared || sys::raw(SYS_fstat, f->fd, reinterpret_cast<long>(&st)) < 0) return false;
  return e.inode == st.st_ino && e.dev_major == major(st.st_dev) && e.dev_minor == minor(st.st_dev);
}

long file_map_private(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off) {
  long r = sys::mmap(addr, len, prot, MAP_PRIVATE | MAP_FIXED, file_state(t)->fd, file_off(slot, off));
  return sys::failed(r) ? r : 0;
}

// A shared lock on the whole file through a descriptor of its own (an open
// file description of its own: an OFD lock belongs to it, and a fork child
// holding the same description keeps it).  The descriptor, or -errno.
long hold_file(int fd) {
  char path[32];
  format(path, sizeof path, "/proc/thread-self/fd/%d", fd);
  long h = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (h < 0) return h;
  struct flock fl = {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  long r = sys::raw(SYS_fcntl, h, F_OFD_SETLK, reinterpret_cast<long>(&fl));
  const int guarded = r < 0 ? -1 : fd_guard(static_cast<int>(h));
  if (guarded < 0) {
    sys::close(static_cast<int>(h));
    return r < 0 ? r : -EMFILE;
  }
  return guarded;
}

void file_fork_prepare(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f || f->fd < 0 || f->fork_hold >= 0) return;
  const long h = hold_file(f->fd);
  if (h >= 0) {
    f->fork_hold = static_cast<int>(h);
  } else if (!f->hold_failed) {
    f->hold_failed = true;
    char name[24];
    MMTIER_WARN("fork: cannot hold the PMem file for the child (%s): slots a fork froze are not reused "
                "by this process",
                errno_name(-h, name));
  }
}

void file_fork_parent(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f || f->fork_hold < 0) return;
  // The child's copy of the descriptor keeps the lock for as long as it
  // holds it (an OFD lock belongs to the description, not the process).
  fd_unguard(f->fork_hold);
  sys::close(f->fork_hold);
  f->fork_hold = -1;
}

long file_fork_child(tier *t, const config &) {
  // The parent's file holds only frozen ranges now; they stay mapped, and
  // new units go to a file of the child's own, made when it needs one.
  // The child keeps the hold the parent took for it until it maps none of
  // the parent's file.
  file_tier_state *f = file_state(t);
  if (!f) return 0;
  if (f->fork_hold >= 0) {
    int k = 0;
    while (k < file_tier_state::kHeldMax && f->held[k] >= 0) ++k;
    if (k < file_tier_state::kHeldMax) {
      f->held[k] = f->fork_hold;
    } else {
      // More generations of files mapped at once than the table holds:
      // the hold stays open (guarded, closed at exec or exit) and the
      // ancestor never reclaims that file's retired slots; nothing is lost.
      MMTIER_DEBUG("fork: more than %d ancestors' PMem files held; this hold stays until exit",
                   file_tier_state::kHeldMax);
    }
    f->fork_hold = -1;
  }
  if (f->fd < 0) return 0;
  fd_unguard(f->fd);
  sys::close(f->fd);
  f->fd = -1;
  f->file_slots = f->slot_high = f->free_count = 0;
  f->warm_count = 0;
  f->retired_count = 0;  // slots of the parent's file
  f->hold_failed = false;
  t->dax = false;
  return 0;
}

void file_drop_inherited(tier *t) {
  file_tier_state *f = file_state(t);
  for (int &h : f->held) {
    if (h < 0) continue;
    fd_unguard(h);
    sys::close(h);
    h = -1;
  }
}

void file_slot_retire(tier *t, uint32_t slot) {
  file_tier_state *f = file_state(t);
  if (!f->retired) f->retired = static_cast<uint32_t *>(meta_map(kMaxSlots * sizeof(uint32_t)));
  if (f->retired && f->retired_count < kMaxSlots) f->retired[f->retired_count++] = slot;
}

bool file_storage_unheld(tier *t) {
  file_tier_state *f = file_state(t);
  if (f->fd < 0 || f->hold_failed) return false;
  // Linked into a capsule (a descendant's ZeroIO snapshot mapped frozen
  // ranges of it): the capsule holds it for as long as it exists.
  struct stat st;
  if (sys::raw(SYS_fstat, f->fd, reinterpret_cast<long>(&st)) < 0 || st.st_nlink > 0) return false;
  // Would a write lock on the whole file conflict?  Then a fork child
  // still holds it (and may map any of it).
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return sys::raw(SYS_fcntl, f->fd, F_OFD_GETLK, reinterpret_cast<long>(&fl)) == 0 && fl.l_type == F_UNLCK;
}

size_t file_reclaim_retired(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f->retired_count || !file_storage_unheld(t)) return 0;
  const size_t n = f->retired_count;
  for (uint64_t i = 0; i < n; ++i) file_slot_free(t, f->retired[i]);
  f->retired_count = 0;
  return n;
}

void file_restored(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f) return;
  for (int &h : f->held) h = -1;
  f->fork_hold = -1;
  f->fd = -1;
  f->file_slots = f->slot_high = f->free_count = 0;
  f->warm_count = 0;
  f->retired_count = 0;
  f->hold_failed = false;
  t->dax = false;
}

int file_storage_fds(const tier *t, int *out, int cap, bool *can_hand_over) {
  const file_tier_state *f = file_state(t);
  *can_hand_over = false;
  int n = 0;
  if (!f || cap <= 0) return 0;
  out[n++] = f->fd;
  int held = 0;
  for (int h : f->held)
    if (h >= 0) {
      ++held;
      if (n < cap) out[n++] = h;
    }
  *can_hand_over = f->fd >= 0 && held < file_tier_state::kHeldMax;
  return n;
}

bool file_hand_over(tier *t) {
  file_tier_state *f = file_state(t);
  if (!f || f->fd < 0) return false;
  int k = 0;
  while (k < file_tier_state::kHeldMax && f->held[k] >= 0) ++k;
  if (k == file_tier_state::kHeldMax) return false;
  if (f->fork_hold >= 0) {
    f->held[k] = f->fork_hold;  // the writer's copy of the description goes with it; this one stays
    f->fork_hold = -1;
  } else {
    const long h = hold_file(f->fd);
    if (h < 0) return false;
    f->held[k] = static_cast<int>(h);
  }
  // As a fork child leaves its parent's file: mapped where mapped, never
  // written again; new units go to a file made when one is needed.
  fd_unguard(f->fd);
  sys::close(f->fd);
  f->fd = -1;
  f->file_slots = f->slot_high = f->free_count = 0;
  f->warm_count = 0;
  f->retired_count = 0;
  f->hold_failed = false;
  return true;
}

bool file_adopt_held(tier *t, int fd) {
  file_tier_state *f = file_state(t);
  if (!f) return false;
  int k = 0;
  while (k < file_tier_state::kHeldMax && f->held[k] >= 0) ++k;
  if (k == file_tier_state::kHeldMax) return false;
  const int guarded = fd_guard(fd);
  if (guarded < 0) return false;
  f->held[k] = guarded;
  return true;
}

}  // namespace

const tier_ops file_tier_ops = {
    "file",           file_open,           file_slot_alloc, file_slot_free,
    file_reserve,     file_map,            file_discard,    file_slot_recycle,
    file_slot_take_warm, file_slot_take,   file_warm_limit, file_read,
    file_write,       file_splice_in,      file_map_view,   file_maps_storage,
    file_map_private, file_fork_prepare, file_fork_parent, file_fork_child,
    file_drop_inherited, file_slot_retire, file_reclaim_retired, file_storage_unheld,
    file_stored,      file_restored,       file_storage_fds, file_hand_over,
    file_adopt_held,  nullptr /* move_in */, nullptr /* bind */, file_reserve_keep,
};

}  // namespace mmtier::detail
