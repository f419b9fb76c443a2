// Heap layer: the application's anonymous mappings on managed memory (the
// interposed mmap, munmap, mremap, madvise and mprotect of preload/mmap.cc
// land here for addresses inside the reservation).  Managed memory behaves
// exactly as anonymous memory does: pages read zero until written, a
// discard reads back zero on both tiers, protections and advice apply per
// page, and a managed range is never moved with the kernel's mremap (a PMem
// page's file offset belongs to its unit).
#include "heap/heap_internal.h"

#include "config/config.h"

#include "heap/faults.h"
#include "heap/sample.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "support/world.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail {
namespace {

// Moves every live page of a file-backed unit to anonymous DRAM pages at the
// same addresses, keeping each page's protection.  Used when the file's
// filesystem refuses an mprotect (PROT_EXEC on a noexec mount: JIT code).
// The copy is made beside the unit and moved over it with one mremap, so a
// reader never sees a half-copied page; concurrent writers are not expected
// on memory whose protection the application is changing.
long move_unit_to_dram(size_t idx) {
  unit &u = g_heap.units[idx];
  sample_settle_unit_locked(idx);
  materialize_locked(idx);  // the copy reads its pages under the lock
  const uintptr_t ubase = unit_addr(idx);
  long tmp = sys::mmap(nullptr, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(tmp)) return tmp;
  char *copy = reinterpret_cast<char *>(tmp);
  long err = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
    for (size_t p = a; p < a + c && !err; ++p) {
      void *page = reinterpret_cast<void *>(ubase + (p << kPageShift));
      int prot = sys::query_prot(page);
      if (prot < 0) prot = PROT_READ | PROT_WRITE;
      if (!(prot & PROT_READ)) sys::mprotect(page, kPageSize, PROT_READ);
      memcpy(copy + (p << kPageShift), page, kPageSize);
      if (!(prot & PROT_READ)) sys::mprotect(page, kPageSize, prot);
      long r = sys::mprotect(copy + (p << kPageShift), kPageSize, prot);
      if (r < 0) err = r;
    }
  });
  if (!err) {
    // Only live runs move; other pages of the unit (reserved, or another
    // mapping of the application's) stay as they are.
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
      long r = sys::mremap(copy + (a << kPageShift), c << kPageShift, c << kPageShift,
                           MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void *>(ubase + (a << kPageShift)));
      if (sys::failed(r) && !err) err = r;
    });
  }
  sys::munmap(copy, kUnitSize);  // what did not move
  if (err) return err;
  const int old = unit_tier(u);
  tier &from = g_mgr.tiers[old];
  if (!u.frozen && from.ops->slot_free) from.ops->slot_free(&from, u.slot);
  unfreeze(u);
  count_unit(u, old, -1);
  u.spilled = 0;
  u.tier1.store(kTierDram + 1, std::memory_order_release);
  count_unit(u, kTierDram, +1);
  return 0;
}

// Marks pages owned by an application mapping.
void own_pages(size_t idx, size_t first, size_t n, uint8_t owner) {
  unit &u = g_heap.units[idx];
  if (u.owner == kOwnerFree) {
    u.owner = owner;
    u.forced1 = 0;
    va_mark(idx);
  }
  for (size_t i = first; i < first + n; ++i) {
    if (!bit_get(u.owned_bits, i)) {
      bit_set(u.owned_bits, i);
      ++u.owned;
    }
  }
}

void remember_packed(size_t idx) {
  for (size_t c : g_mgr.packed)
    if (c == idx + 1) return;
  g_mgr.packed[g_mgr.packed_next] = idx + 1;
  g_mgr.packed_next = (g_mgr.packed_next + 1) % kPackedCandidates;
}

// Unmaps the application pages [first, first + n) of unit idx.
void unmap_app_pages(size_t idx, size_t first, size_t n) {
  unit &u = g_heap.units[idx];
  sample_settle_unit_locked(idx);
  if (owner_is_allocator(u.owner) || u.owner == kOwnerFree) {
    if (u.owner != kOwnerFree)  // an application bug; keep the range reserved
      reserve_range(unit_addr(idx) + (first << kPageShift), n << kPageShift);
    return;
  }
  size_t dropped = 0;
  for (size_t i = first; i < first + n; ++i) {
    if (bit_get(u.owned_bits, i)) {
      bit_clear(u.owned_bits, i);
      ++dropped;
    }
  }
  discard_pages(idx, first, n, true);
  if (dropped == 0) return;
  u.owned = static_cast<uint16_t>(u.owned - dropped);
  g_mgr.counters.mmap_bytes -= dropped << kPageShift;
  g_mgr.counters_changed = true;
  // Back to reserved addresses (also over a mapping of the application's own
  // that a MAP_FIXED put here, see heap_forget).
  reserve_range(unit_addr(idx) + (first << kPageShift), n << kPageShift);
  if (u.owned == 0) {
    if (unit_tier(u) >= 0) release_unit(u, idx);
    u.owner = kOwnerFree;
    va_unmark(idx);
    for (size_t &c : g_mgr.packed)
      if (c == idx + 1) c = 0;
  } else if (u.owner == kOwnerPacked) {
    remember_packed(idx);
  }
}

// Finds n consecutive unowned pages in a packed unit; returns the first page
// or SIZE_MAX.
size_t find_pages(const unit &u, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < kPagesPerUnit; ++i) {
    if (bit_get(u.owned_bits, i)) {
      run = 0;
    } else if (++run == n) {
      return i + 1 - n;
    }
  }
  return SIZE_MAX;
}

long map_app(uintptr_t addr, size_t len, int prot) {
  if (prot == PROT_NONE) return 0;  // reserved only; placed when made accessible
  long err = 0;
  for_units(addr, len, [&](size_t idx, size_t first, size_t n) {
    if (prot != (PROT_READ | PROT_WRITE)) g_heap.units[idx].custom_prot = 1;
    if (!err) err = place_pages(idx, first, n, prot);
  });
  return err;
}

}  // namespace

long heap_mmap(void *hint, size_t len, int prot, int flags, void **out, int forced) {
  len = align_up(len, kPageSize);
  const size_t pages = len >> kPageShift;
  heap_lock_guard g;
  uintptr_t addr = 0;
  if (flags & MAP_FIXED) {
    addr = reinterpret_cast<uintptr_t>(hint);
    // Replace whatever the application had there, as the kernel would.
    for_units(addr, len, [&](size_t idx, size_t first, size_t n) {
      unit &u = g_heap.units[idx];
      if (owner_is_allocator(u.owner)) return;
      unmap_app_pages(idx, first, n);
      own_pages(idx, first, n, n == kPagesPerUnit ? kOwnerMmap : kOwnerPacked);
    });
  } else if (len >= kUnitSize) {
    const size_t n = (len + kUnitSize - 1) >> kUnitShift;
    size_t idx = va_alloc(n, 1);
    if (idx == SIZE_MAX) return -ENOMEM;
    addr = unit_addr(idx);
    for_units(addr, len, [&](size_t i, size_t first, size_t c) {
      g_heap.units[i].owner = kOwnerMmap;
      own_pages(i, first, c, kOwnerMmap);
    });
  } else {
    size_t found = SIZE_MAX, first = 0;
    for (size_t c : g_mgr.packed) {
      if (!c) continue;
      size_t f = find_pages(g_heap.units[c - 1], pages);
      if (f != SIZE_MAX) {
        found = c - 1;
        first = f;
        break;
      }
    }
    if (found == SIZE_MAX) {
      found = va_alloc(1, 1);
      if (found == SIZE_MAX) return -ENOMEM;
      g_heap.units[found].owner = kOwnerPacked;
      first = 0;
      remember_packed(found);
    }
    own_pages(found, first, pages, kOwnerPacked);
    addr = unit_addr(found) + (first << kPageShift);
  }
  if (forced >= 0)
    for_units(addr, len, [&](size_t idx, size_t, size_t) {
      unit &u = g_heap.units[idx];
      if (unit_tier(u) < 0) u.forced1 = static_cast<uint8_t>(forced + 1);
    });
  g_mgr.counters.mmap_bytes += len;
  g_mgr.counters_changed = true;
  long r = map_app(addr, len, prot);
  if (r < 0) {
    for_units(addr, len, [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
    return r;
  }
  if (flags & MAP_POPULATE) {
    // Populating touches every page, under this lock: storage first.
    for_units(addr, len, [](size_t idx, size_t, size_t) { materialize_locked(idx); });
    sys::madvise(reinterpret_cast<void *>(addr), len, MADV_POPULATE_WRITE);
  }
  *out = reinterpret_cast<void *>(addr);
  return 0;
}

long heap_munmap(void *addr, size_t len) {
  heap_lock_guard g;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
  return 0;
}

void heap_forget(void *addr, size_t len) {
  // The kernel already replaced the pages with the application's mapping;
  // the addresses stay claimed (owned but never live) until it unmaps them.
  heap_lock_guard g;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) {
              unit &u = g_heap.units[idx];
              if (owner_is_allocator(u.owner)) return;
              sample_settle_unit_locked(idx);
              size_t dropped = 0;
              for (size_t i = first; i < first + n; ++i) {
                if (bit_get(u.live_bits, i)) {
                  bit_clear(u.live_bits, i);
                  ++dropped;
                }
              }
              u.live = static_cast<uint16_t>(u.live - dropped);
              own_pages(idx, first, n, n == kPagesPerUnit ? kOwnerMmap : kOwnerPacked);
            });
}

long heap_mprotect(void *addr, size_t len, int prot) {
  heap_lock_guard g;
  long err = 0;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) {
              if (err) return;
              unit &u = g_heap.units[idx];
              const uintptr_t ubase = unit_addr(idx);
              sample_settle_unit_locked(idx);
              if (u.owner == kOwnerFree) {
                err = -ENOMEM;
                return;
              }
              if (!owner_is_allocator(u.owner)) {
                for (size_t i = first; i < first + n; ++i)
                  if (!bit_get(u.owned_bits, i)) {
                    err = -ENOMEM;
                    return;
                  }
              }
              if (prot != (PROT_READ | PROT_WRITE)) {
                u.custom_prot = 1;
                // The file mapping a pending unit gets at its first access
                // is read/write: it takes its storage now instead.
                materialize_locked(idx);
              }
              // Live pages change protection in place; pages that were only
              // reserved are placed now that they become accessible.
              for_runs(u.live_bits, first, first + n, true, [&](size_t a, size_t c) {
                if (err) return;
                void *at = reinterpret_cast<void *>(ubase + (a << kPageShift));
                long r = sys::mprotect(at, c << kPageShift, prot);
                if (r == -EACCES && unit_tier(u) != kTierDram && move_unit_to_dram(idx) == 0)
                  r = sys::mprotect(at, c << kPageShift, prot);
                if (r < 0) err = r;
              });
              if (!err && prot != PROT_NONE && !owner_is_allocator(u.owner))
                err = place_pages(idx, first, n, prot);
            });
  return err;
}

namespace {

constexpr int kMadvCollapse = 25;  // MADV_COLLAPSE (Linux 6.1)

// Advice that only hints at how the pages will be used: the mapping keeps
// nothing and no page is made.
bool hint_only(int advice) {
  return advice == MADV_NORMAL || advice == MADV_RANDOM || advice == MADV_SEQUENTIAL || advice == MADV_WILLNEED ||
         advice == MADV_COLD || advice == MADV_PAGEOUT;
}

// Whether advice is kept in the mapping, where a move's new mapping would
// lose it (WIPEONFORK, DONTFORK, DONTDUMP, HUGEPAGE, NOHUGEPAGE,
// MERGEABLE, ...): such a unit stays where it is.  Not advice that acts
// at once (COLLAPSE, POPULATE_*, WILLNEED, COLD, PAGEOUT, the discards),
// nor advice that puts the mapping's default back (DODUMP, DOFORK,
// KEEPONFORK, UNMERGEABLE), which a new mapping has anyway.
bool pins(int advice) {
  if (hint_only(advice)) return false;
  switch (advice) {
    case MADV_POPULATE_READ: case MADV_POPULATE_WRITE: case kMadvCollapse:
    case MADV_DODUMP: case MADV_DOFORK: case MADV_KEEPONFORK: case MADV_UNMERGEABLE:
      return false;
    default:
      return true;
  }
}

// heap_madvise with the heap lock held (by the caller, or by a world stop
// when stopped).  kNeedsStop: a unit to be wiped in a fork child needs
// the other threads stopped to become anonymous (nothing after it done).
long madvise_locked(void *addr, size_t len, int advice, bool stopped) {
  long err = 0;
  const bool wipe = advice == MADV_WIPEONFORK;
  const bool thp_wish = advice == MADV_HUGEPAGE && config_get().huge_units && !pmem_tier().anonymous;
  const bool drop = advice == MADV_DONTNEED || advice == MADV_REMOVE || advice == MADV_FREE ||
                    advice == MADV_DONTNEED_LOCKED;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) {
              unit &u = g_heap.units[idx];
              if (unit_tier(u) < 0 || err == kNeedsStop) return;
              sample_settle_unit_locked(idx);
              if (drop) {
                discard_pages(idx, first, n, false);
                return;
              }
              // The kernel wipes only anonymous memory in a fork child.
              if (wipe) {
                const long r = make_anonymous_locked(idx, stopped);
                if (r == kNeedsStop) err = r;
                if (r < 0) {
                  if (!err) err = r;
                  return;
                }
              }
              // Huge pages are the heap's to give: whole DRAM units get them
              // (MMTIER_HUGE_PAGES=units), again after every move, and the PMem
              // tier's mappings never do.  The wish changes nothing then,
              // and pins nothing (a JVM asks it for its whole heap).
              if (thp_wish && (unit_tier(u) != kTierDram || unit_mixed(u))) return;
              if (pins(advice) && !thp_wish) u.custom_prot = 1;
              // Advice the mapping keeps, or that populates pages (a fault
              // the fault service would answer under this lock): a
              // pending unit takes its storage first.
              if (!hint_only(advice)) materialize_locked(idx);
              const uintptr_t ubase = unit_addr(idx);
              for_runs(u.live_bits, first, first + n, true, [&](size_t a, size_t c) {
                long r = sys::madvise(reinterpret_cast<void *>(ubase + (a << kPageShift)),
                                      c << kPageShift, advice);
                if (r < 0 && !err) err = r;
              });
            });
  return err;
}

// A stop to make memory anonymous is short (a copy of the units to be
// wiped); a thread that does not park within this gives up the advice
// (EAGAIN).
constexpr uint64_t kWipeStopTimeoutNs = 200'000'000;

}  // namespace

long heap_madvise(void *addr, size_t len, int advice) {
  // Moving a unit to DRAM needs the fault service, started outside the
  // lock.
  if (advice == MADV_WIPEONFORK) (void)faults_start();
  long err;
  {
    heap_lock_guard g;
    err = madvise_locked(addr, len, advice, false);
  }
  if (err != kNeedsStop) return err;
  // Units the fault service cannot move are copied with the program's
  // other threads stopped (support/world.h; the stop holds the heap lock).
  if (const long r = world_stop(quiesce_reason::pause, kWipeStopTimeoutNs); r < 0) return r == -EAGAIN ? r : -EINVAL;
  err = madvise_locked(addr, len, advice, true);
  world_resume();
  return err;
}

namespace {

// Whether [a, a + len) is wholly pages of application mappings (heap lock
// held).
bool app_range_locked(uintptr_t a, size_t len) {
  bool whole = true;
  for_units(a, len, [&](size_t idx, size_t first, size_t n) {
    const unit &u = g_heap.units[idx];
    if (u.owner != kOwnerMmap && u.owner != kOwnerPacked) {
      whole = false;
      return;
    }
    for (size_t i = first; i < first + n; ++i)
      if (!bit_get(u.owned_bits, i)) whole = false;
  });
  return whole;
}

// Grows the mapping [old, old + old_len) to new_len where it is, when the
// addresses that follow are free; 0, or -ENOMEM when they are not.
long grow_in_place(uintptr_t old, size_t old_len, size_t new_len, int prot) {
  heap_lock_guard g;
  if (!heap_contains(reinterpret_cast<void *>(old + new_len - 1))) return -ENOMEM;
  const uintptr_t grow = old + old_len;
  const size_t more = new_len - old_len;
  bool room = true;
  for_units(grow, more, [&](size_t idx, size_t first, size_t n) {
    const unit &u = g_heap.units[idx];
    if (u.owner == kOwnerFree) return;
    if (u.owner != kOwnerMmap && u.owner != kOwnerPacked) {
      room = false;
      return;
    }
    for (size_t i = first; i < first + n; ++i)
      if (bit_get(u.owned_bits, i)) room = false;
  });
  if (!room) return -ENOMEM;
  for_units(grow, more, [&](size_t idx, size_t first, size_t n) {
    const uint8_t owner = g_heap.units[idx].owner;
    own_pages(idx, first, n, owner == kOwnerFree ? uint8_t{kOwnerMmap} : owner);
  });
  g_mgr.counters.mmap_bytes += more;
  g_mgr.counters_changed = true;
  if (map_app(grow, more, prot) == 0) return 0;
  for_units(grow, more, [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
  return -ENOMEM;
}

// Moves the mapping by copying it into a new one (managed when it lands in
// the reservation), then unmapping the old.
constexpr int kMremapDontUnmap = 4;  // MREMAP_DONTUNMAP (Linux 5.7)

long move_by_copy(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr, int prot,
                  void **out) {
  const bool keep_old = flags & kMremapDontUnmap;
  const uintptr_t old = reinterpret_cast<uintptr_t>(old_addr);
  void *dst = nullptr;
  long r;
  if (flags & MREMAP_FIXED) {
    const uintptr_t na = reinterpret_cast<uintptr_t>(new_addr);
    if ((na & (kPageSize - 1)) || (na < old + old_len && old < na + new_len)) return -EINVAL;
    if (heap_contains(new_addr) && heap_contains(reinterpret_cast<void *>(na + new_len - 1))) {
      r = heap_mmap(new_addr, new_len, PROT_READ | PROT_WRITE, MAP_FIXED, &dst);
    } else {
      long m = sys::mmap(new_addr, new_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      r = sys::failed(m) ? m : 0;
      dst = new_addr;
    }
  } else {
    r = heap_mmap(nullptr, new_len, PROT_READ | PROT_WRITE, 0, &dst);
  }
  if (r < 0) return r;
  const size_t copy = old_len < new_len ? old_len : new_len;
  // The source is unmapped (or emptied) right after: make all of it
  // readable (guard pages in the middle included) so the copy cannot fault.
  sys::mprotect(old_addr, copy, PROT_READ);
  memcpy(dst, old_addr, copy);
  if (prot != (PROT_READ | PROT_WRITE)) {
    if (heap_contains(dst)) heap_mprotect(dst, new_len, prot);
    else sys::mprotect(dst, new_len, prot);
  }
  if (keep_old) {
    // MREMAP_DONTUNMAP: the old range stays mapped, reading zero.
    heap_madvise(old_addr, old_len, MADV_DONTNEED);
    heap_mprotect(old_addr, old_len, prot);
  } else {
    heap_munmap(old_addr, old_len);
  }
  *out = dst;
  return 0;
}

}  // namespace

long heap_mremap(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr, void **out) {
  const uintptr_t old = reinterpret_cast<uintptr_t>(old_addr);
  old_len = align_up(old_len, kPageSize);
  new_len = align_up(new_len, kPageSize);
  if ((old & (kPageSize - 1)) || new_len == 0 || old_len == 0) return -EINVAL;
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | kMremapDontUnmap)) return -EINVAL;
  if ((flags & (MREMAP_FIXED | kMremapDontUnmap)) && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  // The old range keeps its pages' places: only a move of the same size.
  if ((flags & kMremapDontUnmap) && old_len != new_len) return -EINVAL;
  {
    heap_lock_guard g;
    if (!app_range_locked(old, old_len)) return -EFAULT;
  }
  int prot = sys::query_prot(reinterpret_cast<void *>(old + old_len - kPageSize));
  if (prot < 0) prot = PROT_NONE;
  if (!(flags & (MREMAP_FIXED | kMremapDontUnmap))) {
    if (new_len <= old_len) {
      if (new_len < old_len) heap_munmap(reinterpret_cast<void *>(old + new_len), old_len - new_len);
      *out = old_addr;
      return 0;
    }
    if (grow_in_place(old, old_len, new_len, prot) == 0) {
      *out = old_addr;
      return 0;
    }
    if (!(flags & MREMAP_MAYMOVE)) return -ENOMEM;
  }
  return move_by_copy(old_addr, old_len, new_len, flags, new_addr, prot, out);
}

}  // namespace mmtier::detail
