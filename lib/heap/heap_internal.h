// Heap layer, internal: what the heap's files share and nothing outside the
// layer may use.
//   units.cc     the unit manager: the reservation, address space, placing
//                and releasing pages and units, queries and counters
//   first_touch.cc  PMem storage allocated at a unit's first access
//   mappings.cc  the application's anonymous mappings on managed memory
//   migration.cc retiering a unit at the same address
//   node_moves.cc  the same between NUMA-node tiers, where the kernel moves
//                the pages
//   fork.cc      the fork freeze of file-backed units and the child's reset
//   reshare.cc   re-sharing units frozen by fork on PMem again
//   huge.cc      huge pages rebuilt after a fork or a promotion
//   sample.cc    access sampling (hidden pages); faults.cc its fault service
// Every mutation runs under the heap lock (heap_lock_guard); the change
// hook runs as the lock is released.
#pragma once

#include "heap/heap.h"
#include "platform/pagemap.h"
#include "support/bitmap.h"

#include <pthread.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kPackedCandidates = 8;

// The unit manager's state (units.cc), guarded by its lock.
struct unit_manager {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  tier tiers[kTierCount];
  uint64_t *va_bits = nullptr;     // unit in use
  uint64_t *va_summary = nullptr;  // bit w: va_bits[w] has a unit in use
  size_t va_cursor = 0;         // next-fit cursor of the general zone
  size_t small_cursor = 0;      // and of the small zone
  size_t small_units = 0;       // units [0, small_units) are the small zone
  size_t packed[kPackedCandidates] = {};  // unit indices + 1 with free pages (0: none)
  size_t packed_next = 0;
  heap_counters counters = {};
  // Units still to place on DRAM as start-up memory (see units.cc,
  // place_unit): not in the ratio, never moved.
  size_t startup_left = 0;
  bool counters_changed = false;  // since the change hook last ran
  bool warned_fallback[kTierCount] = {};
  bool said_dram_room = false;  // units.cc: a DRAM node without room placed units on PMem
  // Bumped when the PMem storage changes hands (a ZeroIO snapshot): a slot
  // chosen before belongs to storage the process no longer owns.
  uint64_t storage_generation = 0;
  // A thin clone (heap_note_thin_clone): its units map the capsule's pages,
  // shared with the other clones; reading them copies none.
  bool thin_clone = false;
  // The DRAM units the node agent allows this process (SIZE_MAX: none;
  // heap_set_node_dram_limit).  counters.limit_units[kTierDram] is the
  // tighter of it and MMTIER_DRAM_LIMIT.
  size_t node_dram_units = SIZE_MAX;
  // Bumped by every fork and snapshot (a restored process starts with its
  // snapshot's bump): the units' huge pages may have been split since
  // (huge.cc).
  uint64_t fork_epoch = 0;
};
extern unit_manager g_mgr;
// counters.limit_units[kTierDram] from MMTIER_DRAM_LIMIT and the node's
// budget (heap lock held).
void apply_dram_limit();

// The heap lock.  Released through heap_unlock, which runs the change hook
// first when a counter changed.
void heap_lock();
void heap_unlock();
struct heap_lock_guard {
  heap_lock_guard() { heap_lock(); }
  ~heap_lock_guard() { heap_unlock(); }
  heap_lock_guard(const heap_lock_guard &) = delete;
  heap_lock_guard &operator=(const heap_lock_guard &) = delete;
};

// The address bitmap: a unit is in use (reserved for an allocator or owned
// by an application mapping), and above it a summary with one bit per word
// of it, so that a pass over the units in use reads a few words, not the
// whole map (the reservation has millions of units; reading their bitmap
// would fault in half a megabyte at every process start).  Written under
// the heap lock; atomically, so that a pass may read them without it.
inline void va_mark(size_t idx) {
  const uint64_t old = __atomic_fetch_or(&g_mgr.va_bits[idx >> 6], uint64_t{1} << (idx & 63), __ATOMIC_RELAXED);
  if (!old) __atomic_fetch_or(&g_mgr.va_summary[idx >> 12], uint64_t{1} << ((idx >> 6) & 63), __ATOMIC_RELAXED);
}
inline void va_unmark(size_t idx) {
  const uint64_t bit = uint64_t{1} << (idx & 63);
  const uint64_t old = __atomic_fetch_and(&g_mgr.va_bits[idx >> 6], ~bit, __ATOMIC_RELAXED);
  if (old == bit)
    __atomic_fetch_and(&g_mgr.va_summary[idx >> 12], ~(uint64_t{1} << ((idx >> 6) & 63)), __ATOMIC_RELAXED);
}
// Calls fn(w) for each word w of the address bitmap with a unit in use,
// ascending (without the lock: a word just changed may be missed or seen).
template <class Fn>
void for_used_va_words(Fn &&fn) {
  const size_t words = (g_heap.nunits + 63) / 64;
  for (size_t s = 0; s < (words + 63) / 64; ++s) {
    uint64_t v = __atomic_load_n(&g_mgr.va_summary[s], __ATOMIC_RELAXED);
    while (v) {
      const size_t w = s * 64 + static_cast<size_t>(__builtin_ctzll(v));
      v &= v - 1;
      if (w < words) fn(w);
    }
  }
}

inline uintptr_t unit_addr(size_t idx) { return g_heap.base + (idx << kUnitShift); }
inline size_t unit_index(uintptr_t a) { return (a - g_heap.base) >> kUnitShift; }
inline void *page_addr(size_t idx, size_t page) {
  return reinterpret_cast<void *>(unit_addr(idx) + (page << kPageShift));
}
inline tier &tier_of_unit(const unit &u) { return g_mgr.tiers[unit_tier(u)]; }
inline tier &pmem_tier() { return g_mgr.tiers[kTierPmem]; }
inline tier &dram_tier() { return g_mgr.tiers[kTierDram]; }

// Calls fn(idx, first_page, npages) for each unit overlapping [addr, addr+len).
template <class Fn>
void for_units(uintptr_t addr, size_t len, Fn &&fn) {
  const uintptr_t end = addr + len;
  while (addr < end) {
    const size_t idx = unit_index(addr);
    const uintptr_t ubase = unit_addr(idx);
    const uintptr_t uend = ubase + kUnitSize < end ? ubase + kUnitSize : end;
    fn(idx, (addr - ubase) >> kPageShift, (uend - addr) >> kPageShift);
    addr = uend;
  }
}

// --- units.cc (heap lock held) ----------------------------------------------
// Makes [addr, addr + len) reserved addresses again (PROT_NONE, no storage).
long reserve_range(uintptr_t addr, size_t len);
// Next-fit search for n free units aligned to align units outside the small
// zone; claims them.  SIZE_MAX if none.
size_t va_alloc(size_t n, size_t align);
// A unit's count on tier t changes by delta.
void count_unit(const unit &u, int t, int delta);
// Places pages [first, first + n) of unit idx that are not yet live (and
// the unit, if unplaced).  0 or -errno.
long place_pages(size_t idx, size_t first, size_t n, int prot);
// Drops the contents of live pages in [first, first + n) of unit idx.  With
// unplace they also stop being live, and a unit left with no live page
// (and, for application units, no owned page) gives its placement back.
void discard_pages(size_t idx, size_t first, size_t n, bool unplace);
// Gives a unit's tier placement back; its addresses become reserved again.
void release_unit(unit &u, size_t idx);
// The unit is no longer frozen: its frozen slot is kept (keep_slot: the
// unit is shared on it again), retired (this process's own file: reclaimed
// once no fork child holds the file) or forgotten (an ancestor's), and the
// counters follow.
void unfreeze(unit &u, bool keep_slot = false);
// The PMem slot that would let unit idx's mapping merge with a neighbour's,
// taken from the PMem tier if it is free in a way `from` allows
// (kTakeWarm, kTakeFree); else -ENOENT.
long pmem_slot_for(size_t idx, int from);
// The PMem tier keeps at most `limit` warm slots (see migration.cc).
void keep_warm(size_t limit);
// Unit idx becomes anonymous memory of the process if it is not (the
// kernel takes MADV_WIPEONFORK only there), whatever DRAM's budget: a
// pending unit takes its untouched pages, a unit on a file tier moves to
// DRAM through the fault service; one that cannot (frozen by a fork,
// spilled, parts of it protected, no userfaultfd) is copied with every
// other thread stopped, keeping its protections:
// kNeedsStop unless stopped (the caller then stops them and calls again).
// 0 or -errno.
inline constexpr long kNeedsStop = -ERESTART;
long make_anonymous_locked(size_t idx, bool stopped);
// A placement that ran out of room on its tier: counted, and said once.
void note_fallback(int tier, long err, const char *what);

// --- first_touch.cc (heap lock held) -----------------------------------------
// Whether a fresh PMem unit placed with prot waits for its first access for
// its storage (MMTIER_PMEM_RESERVE=touch, a file tier, the fault service
// running).
bool pending_eligible(int prot);
// Marks u pending or not (and keeps the count the fault service reads).
void set_pending(unit &u, bool on);
// Untouched anonymous pages for [addr, addr + len) of a pending unit,
// registered with the fault service; 0 or -errno (nothing registered).
long map_pending(void *addr, size_t len);
// Storage at first touch: a pending unit (unit::pending) gets its file
// storage and mappings now, as at its first access; a unit that cannot get
// them becomes a DRAM unit.  Every path that holds the heap lock and would
// touch a pending unit's pages, or change them in a way its file mapping
// would not keep, calls this first (the fault service needs the lock to
// answer a pending unit's fault).  No-op for a unit that is not pending.
void materialize_locked(size_t idx);
// A pending unit becomes a DRAM unit (its untouched anonymous pages are
// DRAM's already); waiters woken.
void pending_to_dram(size_t idx);
// A pending unit stops waiting without storage (a fork or a snapshot
// freezes it: its untouched anonymous pages are its private copies).
void unpend_locked(size_t idx);
// The fault service's answer to a missing-page fault at page: 1 when it
// was a pending unit's (the unit materialized, its waiters woken), 0 when
// it was not, -EAGAIN when the heap lock is taken (try again later).
int heap_pending_fault(int fd, uintptr_t page);
// The fault service stops (its thread could not read its descriptor any
// more): no first touch would be answered, so every pending unit becomes
// DRAM and its waiters are woken.  Called by the service's thread, which
// answers nothing from then on.
void heap_pending_abandon();

// --- sample.cc --------------------------------------------------------------
// The heap's pagemap reader (the heap lock guards it; reopened in a fork
// child, forgotten in a restored process).
sys::pagemap_file &heap_pagemap();

// --- migration.cc -----------------------------------------------------------
// The means of a demotion, which re-sharing after fork (reshare.cc) uses
// too.  A slot for unit idx's data (a warm one first: *was_warm), or
// -errno.
long demotion_slot(size_t idx, bool *was_warm = nullptr);
// Copies [src, src + len) into the slot at off (through a pipe, else
// the tier's write); 0 or -errno.
long copy_to_slot(tier &pm, uint32_t slot, const char *src, size_t len, size_t off);
// userfaultfd write-protection of unit idx's live runs: the runs
// protected (all unless *err is set); then, after the swap, the writers
// woken and the runs not swapped (past mapped_runs) unprotected.
size_t protect_runs(size_t idx, int fd, long *err);
void release_writers(size_t idx, int fd, size_t protected_runs, size_t mapped_runs);
// A fork child (or a restored process) demotes through a pipe of its own,
// and has no node-tier move under way.
void migration_fork_child();
// Counts unit u on tier `to`, at slot, instead of its own tier, whose slot
// is recycled or freed.
void retier(unit &u, int to, uint32_t slot);
// Whether unit idx can move to tier `to` now (its samples settled): 1, 0
// when it is there already, or -errno (-EBUSY: not movable; -ENOSPC: the
// tier is at its limit).  Heap lock held.
long migration_check_locked(size_t idx, int to);

// --- node_moves.cc ----------------------------------------------------------
// heap_migrate between NUMA-node tiers.
long node_migrate(size_t idx, int to);

// --- huge.cc ----------------------------------------------------------------
// Unit idx (just promoted, in full use) is to be collapsed into a huge
// page (heap lock held).
void heap_rehuge_mark(size_t idx);
// In a fork child: no sweep of the parent's units.
void heap_rehuge_fork_child();

// --- fork.cc ----------------------------------------------------------------
// Registers the heap's part of the quiesce sequence (support/quiesce.h).
void heap_fork_register();

// --- the start hook (units.cc) ----------------------------------------------
struct start_hook_state {
  void (*hook)() = nullptr;
  size_t units = 0;  // due once this many units are placed
  bool armed = false;
};
extern start_hook_state g_start;
void check_start_hook();

}  // namespace mmtier::detail
