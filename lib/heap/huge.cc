// Huge pages rebuilt (heap_rehuge): DRAM units in full use that lost their
// huge page are collapsed into one again (MADV_COLLAPSE, Linux 6.1).
//
// What splits them: a fork (the program's own, or a snapshot's writer
// child) while the program writes: since 5.8 the kernel copies a written
// page of a huge page it shares as one 4 KiB page and splits the mapping,
// so a heap written all over while a child lives ends on small pages for
// good; and a promotion before 6.8 (or one whose move split), whose
// post-copy fills a unit page by page (migration.cc).  Such
// a unit costs 512 page-table entries where one did: every later fork (a
// snapshot's pause: about 23 ms per GiB here, against 1 ms on huge pages)
// and the TLB pay for them.  khugepaged would rebuild them at 16 MiB per
// 10 s, and not at all with THP's madvise setting for a promoted unit's
// fresh mapping.
//
// Which units: after every fork or snapshot, all (a sweep, in rotation);
// after a promotion, that unit (unit::rehuge).  A unit is collapsed only
// when its 512 pages are present and mapped by this process alone:
//   - present: a unit whose pages were never all written is not filled
//     (the collapse would commit the rest);
//   - alone: while a fork child still shares the pages, a collapse would
//     copy them, doubling the memory; the unit stays marked, and the mover
//     tries again later when a call got nothing done (`shared`).
// Each collapse holds the heap lock (a free or a migration of the unit
// cannot race it) and copies 2 MiB: 0.25-0.6 ms here, counted against the
// migration rate by the mover.
#include "heap/heap_internal.h"

#include "config/config.h"
#include "platform/sys.h"
#include "support/layout.h"
#include "support/log.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace mmtier::detail {
namespace {

enum class usable : uint8_t { unknown, yes, no };

struct rehuge_state {
  usable can = usable::unknown;
  uint64_t epoch_seen = 0;  // the fork epoch the last sweep began at
  bool sweep = false;       // every unit is a candidate until the cursor wraps
  bool marked = false;      // some unit may carry unit::rehuge
  bool marks_seen = false;  // a mark was met in this round
  size_t cursor = 0;        // next unit to look at
};
rehuge_state g_rh;  // the heap lock guards it

// Whether the system's THP setting is never (the administrator's no).
bool thp_never() {
  const long fd = sys::openat(AT_FDCWD, "/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  char buf[96] = {};
  const long n = sys::read(static_cast<int>(fd), buf, sizeof buf - 1);
  sys::close(static_cast<int>(fd));
  return n > 0 && strstr(buf, "[never]") != nullptr;
}

// Whether collapsing can work here, decided once: MMTIER_HUGE_PAGES=units,
// THP not off, and a collapse of an aligned scratch unit with one page
// written succeeds (EINVAL before 6.1, or with huge pages disabled for the
// process).  Says once why not.  A test collapse that finds no huge page
// free decides nothing: asked again on a later call.
bool collapse_usable() {
  if (g_rh.can != usable::unknown) return g_rh.can == usable::yes;
  g_rh.can = usable::no;
  const char *why = nullptr;
  if (!config_get().huge_units) return false;  // the user chose the kernel's setting: nothing to say
  if (dram_tier().ops != &dram_tier_ops) return false;  // node tiers: the kernel's setting
  if (thp_never()) {
    why = "transparent huge pages are off on this system (never)";
  } else {
    long r = sys::mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (!sys::failed(r)) {
      char *at = reinterpret_cast<char *>(align_up(static_cast<uintptr_t>(r), kUnitSize));
      *at = 1;
      const long c = sys::madvise(at, kUnitSize, MADV_COLLAPSE);
      sys::munmap(reinterpret_cast<void *>(r), 2 * kUnitSize);
      if (c == 0) {
        g_rh.can = usable::yes;
      } else if (c == -EINVAL) {
        why = "the kernel cannot collapse pages into a huge page (MADV_COLLAPSE, Linux 6.1), or huge pages are "
              "disabled for this process";
      } else {
        g_rh.can = usable::unknown;  // no huge page free now (ENOMEM, EAGAIN, EBUSY): asked again later
        return false;
      }
    } else {
      g_rh.can = usable::unknown;
      return false;
    }
  }
  if (why)
    MMTIER_INFO("huge pages: DRAM units split by a fork's copy-on-write, and units promoted from PMem, stay on small "
                "pages (%s); a fork or snapshot of the process copies 512 page-table entries per such unit",
                why);
  return g_rh.can == usable::yes;
}

enum class verdict : uint8_t { skip, busy, whole, shared, collapse };

// What to do with unit idx (the heap lock held).
verdict look_at(size_t idx) {
  static sys::page_info info[kPagesPerUnit];  // the heap lock guards it
  const unit &u = g_heap.units[idx];
  if (unit_tier(u) != kTierDram || u.live != kPagesPerUnit || u.custom_prot || u.pending || u.frozen ||
      u.owner == kOwnerFree)
    return verdict::skip;
  // Being sampled now (some of its pages hidden, or write-protected): the
  // sample ends within a window, the unit is looked at again later.
  if (u.sample) return verdict::busy;
  const uintptr_t at = unit_addr(idx);
  sys::pagemap_file &pm = heap_pagemap();
  pm.check_owner();
  if (!pm.info(at, kPagesPerUnit, info)) return verdict::skip;
  bool shared = false;
  for (const sys::page_info &p : info) {
    if (!p.present || p.file) return verdict::skip;  // never all written (or swapped): not filled
    shared |= !p.exclusive;
  }
  // Shared, even if still whole: the program's next write into it splits
  // it while the child lives.
  if (shared) return verdict::shared;
  // Whole already (6.7+: PAGEMAP_SCAN tells; before, the collapse finds it
  // so in a microsecond).
  return pm.huge(at, kUnitSize) == 1 ? verdict::whole : verdict::collapse;
}

// Collapses unit idx (all its pages present and this process's alone).
// Linux 6.1 (not 6.18) wants one page of the 512 mapped writable, and
// none is in a unit whose pages were all write-protected since last
// written: by a fork (pages no child shares any more stay read-only until
// the next write), or by write-protect sampling (lifting the protection
// leaves them read-only); it refuses with EINVAL ("no_writable_page").
// A write fault on the first page (MADV_POPULATE_WRITE, 5.14: the fault
// without a write, so the program's bytes are not touched) maps it
// writable, and the collapse is asked once more.
long collapse(size_t idx) {
  void *at = reinterpret_cast<void *>(unit_addr(idx));
  const long r = sys::madvise(at, kUnitSize, MADV_COLLAPSE);
  if (r != -EINVAL || sys::madvise(at, kPageSize, MADV_POPULATE_WRITE) != 0) return r;
  return sys::madvise(at, kUnitSize, MADV_COLLAPSE);
}

// The next used unit at or after g_rh.cursor that is a candidate, or
// SIZE_MAX: *looks ran out (the cursor where it stopped), or the round
// ended (the cursor back at 0).  A round is a pass from unit 0 to the end
// of the reservation over the units in use, across calls.
size_t next_candidate(size_t *looks) {
  const size_t words = (g_heap.nunits + 63) / 64;
  size_t w = g_rh.cursor / 64;
  while (w < words) {
    const uint64_t sum = __atomic_load_n(&g_mgr.va_summary[w / 64], __ATOMIC_RELAXED) & (~uint64_t{0} << (w % 64));
    if (!sum) {
      w = (w / 64 + 1) * 64;
      continue;
    }
    w = w / 64 * 64 + static_cast<size_t>(__builtin_ctzll(sum));
    if (w >= words) break;
    uint64_t bits = __atomic_load_n(&g_mgr.va_bits[w], __ATOMIC_RELAXED);
    if (w == g_rh.cursor / 64) bits &= ~uint64_t{0} << (g_rh.cursor % 64);
    for (; bits; bits &= bits - 1) {
      if (!*looks) return SIZE_MAX;
      const size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      --*looks;
      g_rh.cursor = i + 1;
      if (g_heap.units[i].rehuge) g_rh.marks_seen = true;
      if (g_rh.sweep || g_heap.units[i].rehuge) return i;
    }
    ++w;
  }
  // The round is over: the sweep is done, and the marks are when none was
  // met (a unit marked behind the cursor sets marks_seen too).
  g_rh.cursor = 0;
  g_rh.sweep = false;
  if (!g_rh.marks_seen) g_rh.marked = false;
  g_rh.marks_seen = false;
  return SIZE_MAX;
}

}  // namespace

void heap_rehuge_mark(size_t idx) {
  g_heap.units[idx].rehuge = 1;
  g_rh.marked = g_rh.marks_seen = true;
}

void heap_rehuge_fork_child() {
  // The child's pages are its parent's until written: no sweep of its own
  // (a collapse of a shared page would copy it); units it writes whole
  // are its own again and found by a later fork's sweep or mark.
  g_rh.epoch_seen = g_mgr.fork_epoch;
  g_rh.sweep = false;
}

rehuge_outcome heap_rehuge(size_t max_bytes, size_t max_looks) {
  rehuge_outcome out;
  size_t looks = max_looks;
  bool wrapped = false;  // at most one round's end per call
  while (out.bytes < max_bytes && looks) {
    heap_lock_guard g;
    if (g_rh.epoch_seen != g_mgr.fork_epoch) {
      g_rh.epoch_seen = g_mgr.fork_epoch;
      g_rh.sweep = true;
      g_rh.cursor = 0;
      g_rh.marks_seen = false;
    }
    if (!g_rh.sweep && !g_rh.marked) break;
    if (!collapse_usable()) {
      // Never here: nothing to remember.  Not now: the marks wait.
      if (g_rh.can == usable::no) g_rh.sweep = g_rh.marked = false;
      out.err = g_rh.can == usable::no ? 0 : -EAGAIN;
      break;
    }
    const size_t before = g_rh.cursor;
    const size_t idx = next_candidate(&looks);
    if (idx == SIZE_MAX) {
      // Out of looks, or the round ended: the next one begins in this call
      // only if this one did not (the units left marked, shared with a
      // child, are looked at again in a later call).
      if (!looks || before == 0 || wrapped) break;
      wrapped = true;
      continue;
    }
    unit &u = g_heap.units[idx];
    ++out.looked;
    const verdict v = look_at(idx);
    if (v == verdict::busy) {
      if (!u.rehuge) heap_rehuge_mark(idx);
      ++out.busy;
      continue;
    }
    if (v == verdict::shared) {
      // A fork child still has these pages: looked at again in a later
      // round (other units may be the process's alone: a long-lived child
      // of a pre-fork server shares only what neither has written).
      if (!u.rehuge) heap_rehuge_mark(idx);
      out.shared = true;
      continue;
    }
    if (v == verdict::collapse) {
      // No MADV_HUGEPAGE first: the collapse does not need it, and advice
      // on part of a mapping would split it in three (vm.max_map_count).
      const long r = collapse(idx);
      if (r == -EAGAIN || r == -ENOMEM || r == -EBUSY) {
        // Try again later (a page locked or in transit; no huge page free;
        // the cgroup's limit).
        if (!u.rehuge) heap_rehuge_mark(idx);
        g_rh.cursor = idx;
        out.err = r;
        break;
      }
      out.bytes += kUnitSize;
      if (r == 0) {
        ++out.units;
      } else {
        ++out.failed;
        MMTIER_DEBUG("huge pages: the kernel refused to collapse unit %zu (error %ld)", idx, -r);
      }
    }
    u.rehuge = 0;
  }
  return out;
}

}  // namespace mmtier::detail
