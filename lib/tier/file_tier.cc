// File-backed tier (PMem on a DAX filesystem, or any directory standing in
// for it).  One unnamed file per process, created with O_TMPFILE (mode 0600)
// so nothing is left behind when the process exits, crashes or is killed;
// where O_TMPFILE is unsupported a randomly named file is created with
// O_EXCL|O_NOFOLLOW and unlinked at once.  Each unit placed here owns one
// unit-sized slot; storage is reserved with fallocate at placement so a full
// filesystem is seen as an error then, never as SIGBUS at first touch.
#include "support/layout.h"
#include "platform/sys.h"
#include "platform/fd_guard.h"
#include "support/log.h"
#include "support/meta.h"
#include "tier/tier.h"

#include <dlfcn.h>
#include <cerrno>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>

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

long file_open(tier *t, const config &cfg) {
  format(t->dir, sizeof t->dir, "%s", cfg.pmem_path);
  long fd = open_unnamed(t->dir);
  if (fd < 0) {
    MMTIER_WARN("cannot create the PMem file in %s (error %ld); using DRAM only", t->dir, -fd);
    return fd;
  }
  const int guarded = fd_guard(static_cast<int>(fd));
  if (guarded < 0) {
    sys::close(static_cast<int>(fd));
    MMTIER_WARN("no room to guard the PMem file's descriptor; using DRAM only");
    return guarded;
  }
  t->fd = guarded;
  t->free_cap = kMaxSlots;
  t->free_slots = static_cast<uint32_t *>(meta_map(kMaxSlots * sizeof(uint32_t)));
  if (!t->free_slots) return -ENOMEM;
  // Probe for a real DAX mount: MAP_SYNC is only accepted there.
  if (sys::ftruncate(t->fd, kUnitSize) == 0) {
    long m = sys::mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE,
                       MAP_SHARED_VALIDATE | MAP_SYNC, t->fd, 0);
    if (!sys::failed(m)) {
      t->dax = true;
      // libpmem confirms the mapping is persistent memory (it is loaded
      // only here, never on machines without DAX).
      if (void *lib = dlopen("libpmem.so.1", RTLD_NOW | RTLD_LOCAL)) {
        using is_pmem_fn = int (*)(const void *, size_t);
        if (auto fn = reinterpret_cast<is_pmem_fn>(dlsym(lib, "pmem_is_pmem")))
          MMTIER_INFO("PMem tier %s: DAX, pmem_is_pmem=%d", t->dir,
                      fn(reinterpret_cast<void *>(m), kUnitSize));
      }
      sys::munmap(reinterpret_cast<void *>(m), kUnitSize);
    }
    sys::ftruncate(t->fd, 0);
  }
  MMTIER_INFO("PMem tier in %s (%s)", t->dir, t->dax ? "DAX, MAP_SYNC" : "page cache");
  t->usable = true;
  return 0;
}

// The next never-used slot, growing the (sparse) file for it if needed.
long take_fresh(tier *t) {
  if (t->slot_high >= kMaxSlots) return -ENOSPC;
  if (t->slot_high >= t->file_slots) {
    uint64_t want = t->file_slots + kGrowSlots;
    long r = sys::ftruncate(t->fd, static_cast<off_t>(want * kUnitSize));
    if (r < 0) return r;
    t->file_slots = want;
  }
  return static_cast<long>(t->slot_high++);
}

long file_slot_alloc(tier *t) {
  if (t->free_count > 0) return t->free_slots[--t->free_count];
  return take_fresh(t);
}

void file_slot_free(tier *t, uint32_t slot) {
  // A slot whose storage could not be given back still holds its data: it
  // is never handed out again (a unit placed there must read zeros).
  long r = sys::fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(uint64_t{slot} * kUnitSize), kUnitSize);
  if (r == 0 && t->free_count < t->free_cap) t->free_slots[t->free_count++] = slot;
}

void file_slot_recycle(tier *t, uint32_t slot) {
  if (t->warm_count < t->warm_limit && t->warm_count < tier::kWarmMax) t->warm_slots[t->warm_count++] = slot;
  else file_slot_free(t, slot);
}

long file_slot_take_warm(tier *t) {
  if (!t->warm_count) return -ENOENT;
  uint32_t low = 0;
  for (uint32_t i = 1; i < t->warm_count; ++i)
    if (t->warm_slots[i] < t->warm_slots[low]) low = i;
  const uint32_t slot = t->warm_slots[low];
  t->warm_slots[low] = t->warm_slots[--t->warm_count];
  return static_cast<long>(slot);
}

// Released slots searched for a particular one: the most recently released
// (a unit's old slot is usually among them); older ones are not worth a
// long search.
constexpr uint32_t kTakeSearch = 1024;

long file_slot_take(tier *t, uint32_t slot, int from) {
  if (slot < t->slot_high && (from & kTakeWarm)) {
    for (uint32_t i = 0; i < t->warm_count; ++i)
      if (t->warm_slots[i] == slot) {
        t->warm_slots[i] = t->warm_slots[--t->warm_count];
        return slot;
      }
  }
  if (!(from & kTakeFree)) return -ENOENT;
  if (slot < t->slot_high) {
    const uint32_t lowest = t->free_count > kTakeSearch ? t->free_count - kTakeSearch : 0;
    for (uint32_t i = t->free_count; i-- > lowest;)
      if (t->free_slots[i] == slot) {
        for (uint32_t j = i; j + 1 < t->free_count; ++j) t->free_slots[j] = t->free_slots[j + 1];
        --t->free_count;
        return slot;
      }
    return -ENOENT;
  }
  if (slot != t->slot_high) return -ENOENT;
  return take_fresh(t);
}

long file_reserve(tier *t, uint32_t slot, size_t off, size_t len) {
  long r = sys::fallocate(t->fd, FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(uint64_t{slot} * kUnitSize + off),
                          static_cast<off_t>(len));
  return r == -EOPNOTSUPP ? 0 : r;
}

long file_map(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off) {
  int flags = MAP_FIXED | (t->dax ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED);
  long r = sys::mmap(addr, len, prot, flags, t->fd,
                     static_cast<off_t>(uint64_t{slot} * kUnitSize + off));
  if (sys::failed(r)) return r;
  // Page-table entries of 4 KiB, never one entry for 2 MiB: access sampling
  // unmaps single pages, and on a PMD-mapped large folio (ext4 and xfs make
  // them for large writes) that would unmap, and report, the whole unit.
  sys::madvise(addr, len, MADV_NOHUGEPAGE);
  return 0;
}

long file_discard(tier *t, void *, size_t len, uint32_t slot, size_t off) {
  return sys::fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(uint64_t{slot} * kUnitSize + off),
                        static_cast<off_t>(len));
}

}  // namespace

const tier_ops file_tier_ops = {"file",      file_open, file_slot_alloc, file_slot_free, file_reserve,
                                file_map,    file_discard, file_slot_recycle, file_slot_take_warm,
                                file_slot_take};

}  // namespace mmtier::detail
