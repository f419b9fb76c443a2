// Heap layer: migration, moving a unit between tiers at the same addresses
// while any number of threads (and system calls) read and write it (see
// heap.h, heap_migrate; why it is safe: docs/ARCHITECTURE.md, hazard 4).
//
// Between file-backed tiers both directions run under the heap lock, so no
// other heap operation sees a unit half-moved (between NUMA-node tiers the
// kernel moves the pages, outside it: node_moves.cc).  Only live pages
// move; a unit's other pages are reserved (PROT_NONE) and stay so.
//   promotion (PMem -> DRAM) is post-copy: each live run is replaced, in one
//     mremap, by anonymous memory registered for missing pages; the fault
//     service fills any page touched from a second view of the slot, while
//     the bulk copy fills the rest.  Nothing can write the slot once its run
//     is replaced, so the copy reads a stable source.  A unit in full use
//     is read into a huge page and moved in whole where the kernel can
//     move pages (fill_whole, 6.8); else it is filled page by page and
//     collapsed later (huge.cc).
//   demotion (DRAM -> PMem) holds writers off with userfaultfd
//     write-protection of the live runs, writes the pages that hold data
//     into a slot, maps the slot over them and wakes the writers, who retry
//     on the new mapping.  Before Linux 6.4 a page that does not exist yet
//     cannot be write-protected: the runs are registered for missing pages
//     as well, and a fault on one waits in the fault service's hold window
//     until the wake.
//
// Copies.  Where the cost of a migration goes is the first access to each
// page through a mapping that has not touched it: on a machine with shadow
// page tables (the measuring VM) the kernel's first read of a page the
// application wrote costs about as much as a page fault, 5-8 us, against
// 0.3 us to copy it.  So neither direction reads or writes the unit through
// a fresh mapping in the kernel:
//   - demotion gives the unit's pages to a pipe (vmsplice: the kernel takes
//     them by walking the page tables, not through the mapping) and the
//     tier splices them into the slot; 5 GB/s here against 0.5 for pwrite;
//   - promotion reads the slot into one staging area that stays mapped (and
//     so stays warm) and copies from there; 3.3 GB/s against 1.2 from a
//     fresh view of the slot.  Moved whole, the staging area gives its
//     huge page away and takes a fresh one (one fault) at the next read.
// Either falls back to the plain copy when its means are missing.
//
// Warm slots.  The PMem tier keeps a warm slot for each unit on DRAM (placed
// by policy), so that a demotion finds its storage allocated: allocating
// page-cache pages is most of a demotion's cost.  That is PMem capacity held
// for the units that may come back, never more than DRAM holds; it is given
// back when DRAM shrinks (units.cc, release_unit) and whenever the PMem tier
// runs out of room (units.cc, map_pages).
#include "heap/heap_internal.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/sample.h"
#include "platform/clock.h"
#include "platform/fd_guard.h"
#include "platform/pagemap.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "platform/uffd.h"
#include "support/log.h"
#include "support/world.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace mmtier::detail {
namespace {

// The copying means, made on first use; the heap lock guards them.
struct migration_state {
  int pipe_r = -1, pipe_w = -1;
  size_t pipe_cap = 0;
  bool pipe_failed = false;  // no pipe, or the PMem storage cannot splice
  char *staging = nullptr;   // one unit, mapped for good
};
migration_state g_mig;

// ---- copies ------------------------------------------------------------

void pipe_drop() {
  if (g_mig.pipe_r >= 0) {
    fd_unguard(g_mig.pipe_r);
    fd_unguard(g_mig.pipe_w);
    sys::close(g_mig.pipe_r);
    sys::close(g_mig.pipe_w);
  }
  g_mig.pipe_r = g_mig.pipe_w = -1;
  g_mig.pipe_cap = 0;
}

bool pipe_ready() {
  if (g_mig.pipe_r >= 0) return true;
  if (g_mig.pipe_failed) return false;
  int p[2];
  if (sys::raw(SYS_pipe2, reinterpret_cast<long>(p), O_CLOEXEC | O_NONBLOCK) < 0) {
    g_mig.pipe_failed = true;
    return false;
  }
  // The default size (64 KiB): a larger pipe would count against the
  // user's pipe quota (fs.pipe-user-pages-soft) in every process.
  const long cap = sys::raw(SYS_fcntl, p[1], F_GETPIPE_SZ);
  const int r = cap > 0 ? fd_guard(p[0]) : -1;
  const int w = r < 0 ? -1 : fd_guard(p[1]);
  if (w < 0) {
    // Never use a pipe the application could close and reuse: its data
    // would go into the tier's storage.
    if (r >= 0) {
      fd_unguard(r);
      sys::close(r);
    } else {
      sys::close(p[0]);
    }
    sys::close(p[1]);
    g_mig.pipe_failed = true;
    return false;
  }
  g_mig.pipe_r = r;
  g_mig.pipe_w = w;
  g_mig.pipe_cap = static_cast<size_t>(cap);
  return true;
}

// Copies [src, src + len) into the slot at off through the pipe; 0 or
// -errno.  After a failure the pipe may hold pages: it is dropped (a new
// one is made next time).
long splice_copy(tier &pm, uint32_t slot, const char *src, size_t len, size_t off) {
  if (!pm.ops->splice_in || !pipe_ready()) return -EOPNOTSUPP;
  const auto fail = [](long err) {
    pipe_drop();
    // Storage that cannot splice never will: stop trying.
    if (err == -EINVAL || err == -EOPNOTSUPP) g_mig.pipe_failed = true;
    return err;
  };
  size_t done = 0;
  while (done < len) {
    iovec v = {const_cast<char *>(src + done), std::min(len - done, g_mig.pipe_cap)};
    long n = sys::raw(SYS_vmsplice, g_mig.pipe_w, reinterpret_cast<long>(&v), 1, 0);
    if (n == -EINTR) continue;
    if (n <= 0) return fail(n ? n : -EIO);
    long r = pm.ops->splice_in(&pm, slot, off + done, g_mig.pipe_r, static_cast<size_t>(n));
    if (r < 0) return fail(r);
    done += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

// The unit's data into its slot (the unit is write-protected meanwhile).
long copy_to_slot(tier &pm, uint32_t slot, const char *src, size_t len, size_t off) {
  if (splice_copy(pm, slot, src, len, off) == 0) return 0;
  return pm.ops->write(&pm, slot, off, src, len);
}

namespace {

// The promotion staging area (huge page where the kernel gives one);
// nullptr if it cannot be had.
char *staging() {
  if (g_mig.staging) return g_mig.staging;
  long m = sys::mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(m)) return nullptr;
  const uintptr_t lo = static_cast<uintptr_t>(m), at = align_up(lo, kUnitSize);
  if (at > lo) sys::munmap(reinterpret_cast<void *>(lo), at - lo);
  if (at + kUnitSize < lo + 2 * kUnitSize)
    sys::munmap(reinterpret_cast<void *>(at + kUnitSize), lo + 2 * kUnitSize - at - kUnitSize);
  sys::madvise(reinterpret_cast<void *>(at), kUnitSize, MADV_HUGEPAGE);
  g_mig.staging = reinterpret_cast<char *>(at);
  return g_mig.staging;
}

// Reads [off, off + len) of the slot into the staging area at the same
// offset; the staging area, or nullptr if it could not (the caller copies
// from its own view).
const char *stage(tier &pm, uint32_t slot, size_t off, size_t len) {
  char *st = staging();
  if (!st || pm.ops->read(&pm, slot, off, st + off, len) < 0) return nullptr;
  return st;
}

// ---- promotion ---------------------------------------------------------

// Replaces each live run of unit idx by anonymous memory registered for
// missing pages; returns how many runs were swapped (all of them unless
// *err is set).
size_t swap_runs_for_postcopy(size_t idx, int fd, long *err) {
  const unit &u = g_heap.units[idx];
  size_t swapped = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (*err) return;
    const size_t len = n << kPageShift;
    long t = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sys::failed(t)) {
      *err = t;
      return;
    }
    // A unit in full use is advised for a huge page, as a unit mapped
    // whole is (dram_map): promoted onto one (fill_whole) or collapsed into
    // one later, it is sampled whole, moved out as one; a fault on it then,
    // in a mapping without the advice (THP's madvise setting), takes the
    // kernel's small-page path, which leaves a page table at the unit's
    // place, and the put-back splits the huge page into it.
    if (n == kPagesPerUnit && config_get().huge_units) sys::madvise(reinterpret_cast<void *>(t), len, MADV_HUGEPAGE);
    long r = sys::uffd::register_range(fd, reinterpret_cast<void *>(t), len, UFFDIO_REGISTER_MODE_MISSING);
    if (r == 0) {
      long m = sys::mremap(reinterpret_cast<void *>(t), len, len, MREMAP_MAYMOVE | MREMAP_FIXED, page_addr(idx, first));
      r = sys::failed(m) ? m : 0;
    }
    if (r < 0) {
      sys::munmap(reinterpret_cast<void *>(t), len);
      *err = r;
      return;
    }
    ++swapped;
  });
  return swapped;
}

// Fills pages [first, first + n) of unit idx (swapped for post-copy) from
// src (a copy of the slot's pages at their offsets); pages a fault filled
// first are skipped.  False if a page could not be filled: its file page is
// mapped back in its place (its data is still there).
bool fill_run(size_t idx, int fd, const char *src, size_t first, size_t n) {
  unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  bool ok = true;
  int tries = 0;
  for (size_t pg = first; pg < first + n;) {
    char *dst = static_cast<char *>(page_addr(idx, pg));
    size_t done = 0;
    long r = sys::uffd::copy(fd, dst, src + (pg << kPageShift), (first + n - pg) << kPageShift, &done);
    pg += done >> kPageShift;
    if (done) tries = 0;
    if (r == 0 || r == -EAGAIN) {
      if (r) sched_yield();
    } else if (r == -EEXIST) {
      ++pg;  // filled by a fault
    } else if (r == -ENOMEM && ++tries < 100) {
      sched_yield();
    } else {
      MMTIER_ERROR("promotion of unit %zu: copy failed (error %ld); the unit stays partly on PMem", idx, -r);
      if (pm.ops->map(&pm, dst, kPageSize, PROT_READ | PROT_WRITE, u.slot, pg << kPageShift) < 0)
        MMTIER_ERROR("promotion of unit %zu: page %p lost its mapping", idx, static_cast<void *>(dst));
      ok = false;
      tries = 0;
      ++pg;
    }
  }
  return ok;
}

// Whether a promoted unit is moved in whole (fill_whole): in full use,
// where pages can move, and not with MMTIER_HUGE_PAGES=kernel (the
// system's setting decides).
bool whole_candidate(const unit &u) {
  return config_get().huge_units && faults_can_move() && u.live == kPagesPerUnit;
}

// The staging area gave its last huge page away: a fresh one, each of its
// pages written once now, before the unit's faults are held.  The read
// into it is then as fast as into a page used before (on this VM, with
// shadow page tables, the first access to each 4 KiB page through a user
// mapping costs 5-8 us: 1 ms for a fresh huge page, at times 6-8 ms,
// against 0.4-1 ms for the read into a warm one and the move).
void warm_staging() {
  char *st = staging();
  if (!st) return;
  for (size_t off = 0; off < kUnitSize; off += kPageSize) static_cast<volatile char *>(st)[off] = 0;
}

// A unit whole_candidate says yes to, swapped for post-copy (one run) with
// its faults held: the slot read into the staging area, which the kernel
// backs with one huge page, and that page moved into the unit whole
// (UFFDIO_MOVE, Linux 6.8: one page-table entry changes hands, nothing is
// copied again), so the unit is one huge page at once instead of 512
// copies collapsed later.  Where the move splits it all the same (a page
// table left at the unit's place), the rest goes page by page.  Returns 1
// when the unit is filled and whole, 0 when filled on small pages, -1 when
// it was not tried (the caller fills the unit its own way).  *ok false
// when a page could not be filled (its file page is mapped back).
int fill_whole(size_t idx, int fd, tier &pm, bool *ok) {
  const unit &u = g_heap.units[idx];
  char *st = staging();
  if (!st || pm.ops->read(&pm, u.slot, 0, st, kUnitSize) < 0) return -1;
  // The staging area lost its huge page (a move split it, or its place
  // kept a page table of an earlier mapping, so the read got small
  // pages): collapsed once, it moves out whole, and each later read gets
  // a huge page again.
  bool huge = heap_pagemap().huge(reinterpret_cast<uintptr_t>(st), kUnitSize) == 1;
  if (!huge) huge = sys::madvise(st, kUnitSize, MADV_COLLAPSE) == 0;
  char *dst = static_cast<char *>(page_addr(idx, 0));
  size_t at = 0;
  bool whole = false;
  int tries = 0;
  for (bool first = true; huge && at < kUnitSize; first = false) {
    size_t done = 0;
    const long r = sys::uffd::move(fd, dst + at, st + at, kUnitSize - at, &done);
    at += done;
    if (r == 0) {
      whole = first;
      break;
    }
    if (done) tries = 0;
    if (r == -EEXIST) {
      at += kPageSize;  // filled meanwhile
    } else if (r != -EAGAIN || ++tries >= 100) {
      break;  // the rest is copied below
    } else {
      sched_yield();
    }
  }
  *ok = at >= kUnitSize || fill_run(idx, fd, st, at >> kPageShift, kPagesPerUnit - (at >> kPageShift));
  if (!whole)
    MMTIER_DEBUG("promotion of unit %zu: on small pages (%s)", idx,
                 huge ? "the move split the huge page" : "no huge page for the staging area");
  return whole ? 1 : 0;
}

}  // namespace

void (*g_promote_fill_hook)(void *unit) = nullptr;

namespace {

long promote(size_t idx) {
  unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  const int fd = faults_fd();
  // The fault service's view of the slot (the bulk copy reads it through
  // the staging area instead, when there is one).
  const long a = pm.ops->map_view ? pm.ops->map_view(&pm, u.slot) : -EOPNOTSUPP;
  if (sys::failed(a)) return a;
  const char *alias = reinterpret_cast<const char *>(a);
  faults_postcopy_open(page_addr(idx, 0), alias, kUnitSize);
  // A unit to be moved in whole: a page a fault filled first would split
  // the huge page (the move cannot put one over it), so the unit's faults
  // wait for it instead (the hold window, as a demotion's writers do: the
  // read of 2 MiB and the move, 0.4-1 ms here).
  const bool held = whole_candidate(u);
  if (held) {
    warm_staging();
    faults_hold_open(page_addr(idx, 0), kUnitSize);
  }
  long err = 0;
  const size_t swapped_runs = swap_runs_for_postcopy(idx, fd, &err);
  if (g_promote_fill_hook) g_promote_fill_hook(page_addr(idx, 0));
  // Copy whatever the faults did not: also after a failure, for the runs
  // that were swapped (their only copy of the data is the slot).
  bool partial = false;
  int whole = -1;
  if (held && swapped_runs == 1 && !err) {
    bool ok = true;
    whole = fill_whole(idx, fd, pm, &ok);
    partial = !ok;
  }
  size_t run = 0;
  if (whole < 0)
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
      if (run++ >= swapped_runs) return;
      const char *src = stage(pm, u.slot, first << kPageShift, n << kPageShift);
      if (!fill_run(idx, fd, src ? src : alias, first, n)) partial = true;
    });
  if (held) {
    // Every page is filled (or its file page mapped back): the waiters
    // retry on it; one that faults again finds the post-copy window.
    faults_hold_close();
    sys::uffd::wake(fd, page_addr(idx, 0), kUnitSize);
  }
  run = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (run++ < swapped_runs) sys::uffd::unregister_range(fd, page_addr(idx, first), n << kPageShift);
  });
  faults_postcopy_close();
  sys::munmap(const_cast<char *>(alias), kUnitSize);
  if (err || partial) {
    // Partly moved: the swapped runs are anonymous now.  The unit keeps its
    // slot for the rest and is read page by page from now on.
    if (swapped_runs) u.spilled = 1;
    return err ? err : -EIO;
  }
  retier(u, kTierDram, 0);
  // Its one run was advised (swap_runs_for_postcopy).
  u.huge_advised = swapped_runs == 1 && u.live == kPagesPerUnit && config_get().huge_units;
  // Filled page by page: one huge page again later (huge.cc).
  if (u.live == kPagesPerUnit && whole != 1) heap_rehuge_mark(idx);
  return static_cast<long>(u.live) << kPageShift;
}

}  // namespace

// ---- demotion ----------------------------------------------------------

// A slot for unit idx's data.  A warm slot (storage kept from a unit that
// moved out) takes the data without allocating: the one after a
// neighbour's if it is warm (their mappings then merge), else the lowest
// warm one.  Only without warm slots, the neighbour's follower if it is
// free, then any slot.  A warm slot's pages the unit does not use are
// punched: they must read as zero when placed later.
long demotion_slot(size_t idx, bool *was_warm) {
  const unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  long s = pmem_slot_for(idx, kTakeWarm);
  if (s < 0 && pm.ops->slot_take_warm) s = pm.ops->slot_take_warm(&pm);
  const bool warm = s >= 0;
  if (was_warm) *was_warm = warm;
  if (s < 0) s = pmem_slot_for(idx, kTakeFree);
  if (s >= 0 && warm) {
    long bad = 0;
    for_runs(u.live_bits, 0, kPagesPerUnit, false, [&](size_t first, size_t n) {
      if (!bad) bad = pm.ops->discard(&pm, nullptr, n << kPageShift, static_cast<uint32_t>(s), first << kPageShift);
    });
    if (bad < 0) {
      // Stale data would show through in pages placed later: not this slot.
      pm.ops->slot_free(&pm, static_cast<uint32_t>(s));
      s = -ENOENT;
    }
  }
  if (s < 0) s = pm.ops->slot_alloc(&pm);
  return s;
}

// Write-protects the live runs of unit idx (never-touched pages too);
// returns how many runs were protected (all unless *err is set).
size_t protect_runs(size_t idx, int fd, long *err) {
  const unit &u = g_heap.units[idx];
  const uint64_t mode =
      UFFDIO_REGISTER_MODE_WP | (faults_wp_unpopulated() ? 0 : uint64_t{UFFDIO_REGISTER_MODE_MISSING});
  size_t n_protected = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (*err) return;
    void *at = page_addr(idx, first);
    const size_t len = n << kPageShift;
    // A run registered with another userfaultfd (EBUSY: a lazy restore's
    // fill still owns it) is left alone: unregistering it here would
    // take it from that owner.
    *err = sys::uffd::register_range(fd, at, len, mode);
    if (*err) return;
    *err = sys::uffd::write_protect(fd, at, len, true);
    if (!*err) ++n_protected;
    else sys::uffd::unregister_range(fd, at, len);
  });
  return n_protected;
}

namespace {

// The live pages of unit idx that hold data (present or swapped): the
// others were never written or were dropped, and read as zero.  Read once
// the unit is protected, when no page can appear any more.  False if
// pagemap cannot tell.
bool data_pages(size_t idx, uint64_t bits[kPagesPerUnit / 64]) {
  static sys::page_info info[kPagesPerUnit];  // the heap lock guards it
  sys::pagemap_file &pagemap = heap_pagemap();
  pagemap.check_owner();
  if (!pagemap.info(reinterpret_cast<uintptr_t>(page_addr(idx, 0)), kPagesPerUnit, info)) return false;
  const unit &u = g_heap.units[idx];
  for (size_t w = 0; w < kPagesPerUnit / 64; ++w) {
    uint64_t b = 0;
    for (size_t i = 0; i < 64; ++i) {
      const sys::page_info &p = info[w * 64 + i];
      if (p.present || p.swapped) b |= uint64_t{1} << i;
    }
    bits[w] = b & u.live_bits[w];
  }
  return true;
}

std::atomic<size_t> g_check_mismatches{0};

// MMTIER_CHECK_MOVES: the slot's pages read back, against the unit's own
// (writers are held off, so they are what was copied) and zeros where the
// unit has no data.  What differs is said and counted (heap_check_mismatches);
// the demotion goes on.
void check_copy(size_t idx, uint32_t slot, const uint64_t *data) {
  tier &pm = pmem_tier();
  char *back = staging();  // a promotion's, free between moves
  if (!back || pm.ops->read(&pm, slot, 0, back, kUnitSize) < 0) {
    MMTIER_ERROR("demotion of unit %zu: cannot read back slot %u to check it", idx, slot);
    return;
  }
  static const char zeros[kPageSize] = {};
  size_t bad = 0, first = SIZE_MAX;
  for (size_t p = 0; p < kPagesPerUnit; ++p) {
    if (!((g_heap.units[idx].live_bits[p / 64] >> (p % 64)) & 1)) continue;
    const bool has = (data[p / 64] >> (p % 64)) & 1;
    if (memcmp(back + (p << kPageShift), has ? page_addr(idx, p) : zeros, kPageSize) == 0) continue;
    if (!bad++) first = p;
  }
  if (!bad) return;
  g_check_mismatches.fetch_add(bad, std::memory_order_relaxed);
  MMTIER_ERROR("demotion of unit %zu: %zu pages written into PMem slot %u differ from the unit's, the first page %zu",
               idx, bad, slot, first);
}

// Copies the live runs into the slot and maps it over them; returns how
// many runs were mapped (all unless *err is set).  Pages without data are
// not copied (a warm slot's are punched: they must read as zero); where a
// fault on one could not be held (the hold window is closed), every live
// page is copied, reading a missing one as zero.
size_t copy_and_map_runs(size_t idx, uint32_t slot, bool warm, bool held, long *err) {
  const unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  uint64_t data[kPagesPerUnit / 64];
  if (!data_pages(idx, data)) {
    // Reading a missing page here would wait in the hold window forever.
    if (held) *err = -EIO;
    else __builtin_memcpy(data, u.live_bits, sizeof data);
  }
  if (g_demote_copy_hook) g_demote_copy_hook(page_addr(idx, 0));
  // Writing the storage allocates its pages and copies in one pass (a full
  // filesystem is an error here, never a SIGBUS later).
  for_runs(data, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (!*err)
      *err = copy_to_slot(pm, slot, static_cast<const char *>(page_addr(idx, first)), n << kPageShift,
                          first << kPageShift);
  });
  if (warm && !*err) {
    uint64_t holes[kPagesPerUnit / 64];
    for (size_t w = 0; w < kPagesPerUnit / 64; ++w) holes[w] = u.live_bits[w] & ~data[w];
    for_runs(holes, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
      if (!*err) *err = pm.ops->discard(&pm, nullptr, n << kPageShift, slot, first << kPageShift);
    });
  }
  if (g_demote_copied_hook) g_demote_copied_hook(page_addr(idx, 0));
  if (!*err && config_get().check_moves) check_copy(idx, slot, data);
  size_t mapped = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (!*err)
      *err = pm.ops->map(&pm, page_addr(idx, first), n << kPageShift, PROT_READ | PROT_WRITE, slot, first << kPageShift);
    if (!*err) ++mapped;
  });
  if (*err) MMTIER_DEBUG("copy of unit %zu into slot %u failed (error %ld)", idx, slot, -*err);
  return mapped;
}

}  // namespace

void (*g_demote_copy_hook)(void *unit) = nullptr;
void (*g_demote_copied_hook)(void *unit) = nullptr;

size_t heap_check_mismatches() { return g_check_mismatches.load(std::memory_order_relaxed); }

// Wakes every writer held off (after a failure too: they retry on whatever
// is mapped), and drops the protection of runs that were not swapped.
void release_writers(size_t idx, int fd, size_t protected_runs, size_t mapped_runs) {
  const unit &u = g_heap.units[idx];
  size_t run = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    const size_t k = run++;
    if (k >= protected_runs) return;
    void *at = page_addr(idx, first);
    if (k >= mapped_runs) {  // still the anonymous run: unprotect it
      sys::uffd::write_protect(fd, at, n << kPageShift, false);
      sys::uffd::unregister_range(fd, at, n << kPageShift);
    }
    sys::uffd::wake(fd, at, n << kPageShift);
  });
}

namespace {

long demote(size_t idx) {
  unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  if (!pm.usable || !faults_can_demote() || !pm.ops->write) return -EOPNOTSUPP;
  const int fd = faults_fd();
  bool warm = false;
  const long s = demotion_slot(idx, &warm);
  if (s < 0) return s;
  const uint32_t slot = static_cast<uint32_t>(s);
  // Before 6.4: missing pages are held by the hold window, not by
  // write-protect.
  const bool held = !faults_wp_unpopulated();
  if (held) faults_hold_open(page_addr(idx, 0), kUnitSize);
  long err = 0;
  const size_t protected_runs = protect_runs(idx, fd, &err);
  const size_t mapped_runs = err ? 0 : copy_and_map_runs(idx, slot, warm, held, &err);
  // Closed before the wake: a fault read after it is answered (the range
  // is a file mapping now, or the anonymous run again, unregistered).
  if (held) faults_hold_close();
  release_writers(idx, fd, protected_runs, mapped_runs);
  if (err && mapped_runs) {
    // Some runs are on the new slot already, with writes made since: keep
    // the slot; the unit is mixed from now on.
    retier(u, kTierPmem, slot);
    u.spilled = 1;
    return err;
  }
  if (err) {
    pm.ops->slot_free(&pm, slot);
    return err;
  }
  retier(u, kTierPmem, slot);
  return static_cast<long>(u.live) << kPageShift;
}

}  // namespace

void retier(unit &u, int to, uint32_t slot) {
  const int from = unit_tier(u);
  tier &old = g_mgr.tiers[from];
  if (from == kTierPmem) keep_warm(g_mgr.counters.policy_units[kTierDram] + 1);
  if (old.ops->slot_recycle) old.ops->slot_recycle(&old, u.slot);
  else if (old.ops->slot_free) old.ops->slot_free(&old, u.slot);
  count_unit(u, from, -1);
  u.slot = slot;
  u.huge_advised = 0;
  u.tier1.store(static_cast<uint8_t>(to + 1), std::memory_order_release);
  count_unit(u, to, +1);
}

bool heap_unit_movable(size_t idx) {
  if (idx >= g_heap.nunits) return false;
  const unit &u = g_heap.units[idx];
  return unit_tier(u) >= 0 && u.by_policy && !u.frozen && !u.spilled && !u.custom_prot && !u.moving && u.live > 0 &&
         u.owner != kOwnerFree;
}

long migration_check_locked(size_t idx, int to) {
  if (!heap_unit_movable(idx)) return -EBUSY;
  sample_settle_unit_locked(idx);
  if (unit_tier(g_heap.units[idx]) == to) return 0;
  // The tiers' limits hold for migration as for placement.
  const heap_counters &c = g_mgr.counters;
  if (c.limit_units[to] != SIZE_MAX && c.units[to] >= c.limit_units[to]) return -ENOSPC;
  return 1;
}

long heap_migrate(size_t idx, int to) {
  if (to != kTierDram && to != kTierPmem) return -EINVAL;
  // Between node tiers the kernel moves the pages, outside the heap lock
  // (node_moves.cc).
  if (g_mgr.tiers[kTierDram].ops->move_in && g_mgr.tiers[kTierPmem].ops->move_in) return node_migrate(idx, to);
  if (!faults_start()) return -EOPNOTSUPP;
  heap_lock_guard g;
  const long ok = migration_check_locked(idx, to);
  if (ok <= 0) return ok;
  // Never touched: DRAM's untouched pages are the ones it has already.
  if (g_heap.units[idx].pending) return pending_to_dram(idx), 0;
  return to == kTierDram ? promote(idx) : demote(idx);
}

namespace {

// Unit idx's live pages copied into fresh anonymous memory at the same
// addresses and protections, with every other thread of the program
// stopped (heap lock held by the stop): for a unit the fault service
// cannot move (frozen by a fork, spilled, parts of it protected, or no
// userfaultfd).  Other advice the unit's mappings kept is not carried.
struct prot_part {
  uintptr_t lo, hi;
  int prot;
};
prot_part g_parts[64];  // the stop holds the heap lock

long anonymize_stopped(size_t idx) {
  unit &u = g_heap.units[idx];
  if (u.moving) return -EINVAL;
  // The protections of the unit's pages, as the maps say.
  const uintptr_t ubase = unit_addr(idx), uend = ubase + kUnitSize;
  size_t nparts = 0;
  sys::maps_reader maps;
  if (maps.open() < 0) return -EINVAL;
  for (sys::maps_entry e; maps.next(&e) && e.lo < uend;) {
    if (e.hi <= ubase) continue;
    if (nparts == sizeof g_parts / sizeof *g_parts) return -EINVAL;
    g_parts[nparts++] = {e.lo > ubase ? e.lo : ubase, e.hi < uend ? e.hi : uend, e.prot};
  }
  long err = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(page_addr(idx, first)), b = a + (n << kPageShift);
    for (size_t k = 0; k < nparts && !err; ++k) {
      const uintptr_t lo = g_parts[k].lo > a ? g_parts[k].lo : a, hi = g_parts[k].hi < b ? g_parts[k].hi : b;
      if (lo >= hi) continue;
      void *at = reinterpret_cast<void *>(lo);
      const size_t len = hi - lo;
      const int prot = g_parts[k].prot;
      const long fresh = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (sys::failed(fresh)) {
        err = fresh;
        return;
      }
      if (!(prot & PROT_READ)) sys::mprotect(at, len, PROT_READ);
      memcpy(reinterpret_cast<void *>(fresh), at, len);
      if (prot != (PROT_READ | PROT_WRITE)) sys::mprotect(reinterpret_cast<void *>(fresh), len, prot);
      const long r = sys::mremap(reinterpret_cast<void *>(fresh), len, len, MREMAP_MAYMOVE | MREMAP_FIXED, at);
      if (sys::failed(r)) {
        sys::munmap(reinterpret_cast<void *>(fresh), len);
        err = r;
      }
    }
  });
  // A failure leaves some runs anonymous, the rest as they were: the unit
  // is then spilled (pages of both kinds), as a promotion that stopped
  // half-way leaves one.
  if (err) {
    u.spilled = 1;
    return err;
  }
  if (u.frozen) {
    // Its slot is the fork's (retired) or an ancestor's: not this tier's
    // to free.
    unfreeze(u);
    count_unit(u, kTierPmem, -1);
    u.slot = 0;
    u.tier1.store(kTierDram + 1, std::memory_order_release);
    count_unit(u, kTierDram, +1);
  } else {
    retier(u, kTierDram, 0);
  }
  u.spilled = 0;
  g_mgr.counters_changed = true;
  return 0;
}

}  // namespace

long make_anonymous_locked(size_t idx, bool stopped) {
  unit &u = g_heap.units[idx];
  if (unit_tier(u) != kTierPmem || pmem_tier().anonymous) return 0;
  if (u.pending) return pending_to_dram(idx), 0;
  sample_settle_unit_locked(idx);
  if (!u.frozen && !u.spilled && !u.moving && !u.custom_prot && faults_fd() >= 0) {
    const long r = promote(idx);
    if (r >= 0) return 0;
    if (!u.spilled) return r;  // nothing moved
  }
  return stopped ? anonymize_stopped(idx) : kNeedsStop;
}

size_t heap_tier_room_units(int to) {
  if (to != kTierDram && to != kTierPmem) return SIZE_MAX;
  tier &t = g_mgr.tiers[to];
  if (!t.usable || !t.ops->room) return SIZE_MAX;
  // The tier keeps its room figure itself (atomics): no heap lock.
  const long long r = t.ops->room(&t);
  return r < 0 ? SIZE_MAX : static_cast<size_t>(r) >> kUnitShift;
}

size_t heap_tier_short_units(int to) {
  if (to != kTierDram && to != kTierPmem) return 0;
  tier &t = g_mgr.tiers[to];
  if (!t.usable || !t.ops->shortfall) return 0;
  const long long s = t.ops->shortfall(&t);
  return s <= 0 ? 0 : (static_cast<size_t>(s) + kUnitSize - 1) >> kUnitShift;
}

void migration_fork_child() {
  // The parent demotes through the same pipe: the child makes its own.
  pipe_drop();
  // A node-tier move the parent had under way (its kernel part runs without
  // the heap lock) is not the child's: the unit stays on the tier the move
  // counted it on, movable again (node_moves.cc).
  for_used_va_words([](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1)
      g_heap.units[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))].moving = 0;
  });
}

}  // namespace mmtier::detail
