// Heap layer: fork.  A unit on a file-backed tier is a MAP_SHARED mapping: a
// child inheriting it would share every later write with its parent.
// Before fork the heap remaps every shared mapping of the tier's storage
// inside the reservation MAP_PRIVATE over the same range (no copy: the
// pages stay in the file), so parent and child both see the storage as it
// was at the fork instant and their later writes go to private
// copy-on-write pages, exactly as for anonymous memory.  The ranges of such
// units are then frozen: never written, punched or reused by either
// process.  The child takes storage of its own for new units.
//
// The heap's part of the quiesce sequence (support/quiesce.h), rank
// kRankHeap: enter takes the heap lock and, for a fork (or a snapshot's
// capture, which forks its writer), settles every
// sample (a hidden anonymous page would read as zero in the child) and
// freezes; leave releases the lock; the child resets what belonged to the
// parent.  The fault service's start lock is registered at its own rank.
#include "heap/heap_internal.h"

#include "heap/faults.h"
#include "heap/sample.h"
#include "platform/proc_maps.h"
#include "platform/sys.h"
#include "support/log.h"
#include "support/quiesce.h"

#include <sys/stat.h>

#include <cerrno>

namespace mmtier::detail {
namespace {

struct frozen_range {
  uintptr_t lo, hi;
  uint64_t off;
  int prot;
};
// Remapping changes the maps file under the reader: ranges are collected
// first (up to this many per pass), then remapped.  Static: the fork path
// must not need a large stack.
frozen_range g_todo[4096];
constexpr size_t kFreezePiece = size_t{16} << 20;
// Whether the last freeze made every shared mapping of the storage private
// (a snapshot hands the storage over only then).
bool g_freeze_complete = false;
// Bytes of mappings the last freeze made private.
size_t g_frozen_bytes = 0;

void freeze_shared_mappings() {
  g_freeze_complete = false;
  g_frozen_bytes = 0;
  tier &pm = pmem_tier();
  if (!pm.ops->maps_storage || !pm.ops->map_private) return;
  bool complete = true;
  const uintptr_t lo_heap = g_heap.base, hi_heap = g_heap.base + g_heap.size;
  for (;;) {
    sys::maps_reader maps;
    if (long r = maps.open(); r < 0) {
      MMTIER_ERROR("fork: cannot read /proc/self/maps (error %ld); file-backed units stay shared", -r);
      return;  // incomplete
    }
    size_t count = 0;
    bool more = false;
    sys::maps_entry e;
    while (maps.next(&e)) {
      if (e.hi <= lo_heap || e.lo >= hi_heap || !pm.ops->maps_storage(&pm, e)) continue;
      if (count == sizeof g_todo / sizeof g_todo[0]) {
        more = true;
        break;
      }
      g_todo[count++] = {e.lo, e.hi, e.offset, e.prot};
    }
    maps.close();
    for (size_t i = 0; i < count; ++i) {
      const frozen_range &f = g_todo[i];
      // In pieces: remapping a piece drops its page table entries under
      // the address-space lock, and a thread that faults meanwhile (on that
      // piece; before 6.4, which locks mappings one by one, on any page)
      // waits for one piece's remap, not the whole tier's (the pre-freeze
      // runs beside the program).  Neighbouring pieces of one file merge
      // again into one mapping.
      for (uintptr_t at = f.lo; at < f.hi; at += kFreezePiece) {
        const size_t len = f.hi - at < kFreezePiece ? f.hi - at : kFreezePiece;
        long r = pm.ops->map_private(&pm, reinterpret_cast<void *>(at), len, f.prot, 0, f.off + (at - f.lo));
        if (r < 0) {
          MMTIER_ERROR("fork: cannot make %p private (error %ld)", reinterpret_cast<void *>(at), -r);
          complete = false;
        } else {
          g_frozen_bytes += len;
        }
      }
    }
    // More mappings than one pass holds: go again over what is left.
    if (!more) break;
  }
  g_freeze_complete = complete;
  for_used_va_words([](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1) {
      unit &u = g_heap.units[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))];
      if (unit_tier(u) == kTierPmem && !u.frozen) {
        u.frozen = kFrozenOwn;
        ++g_mgr.counters.frozen_own;
      }
    }
  });
}

// Every frozen unit (of kind `only`, when not 0) becomes `to`: its slot is
// in storage this process no longer owns, counted with the inherited ones.
void refreeze(uint8_t only, uint8_t to) {
  for_used_va_words([only, to](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1) {
      unit &u = g_heap.units[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))];
      if (u.frozen && (!only || u.frozen == only)) u.frozen = to;
    }
  });
  g_mgr.counters.frozen_inherited += g_mgr.counters.frozen_own;
  g_mgr.counters.frozen_own = 0;
}

void enter() {
  heap_lock();
  const quiesce_reason why = quiesce_reason_now();
  if (!g_heap.size || (why != quiesce_reason::fork && why != quiesce_reason::snapshot)) return;
  // A hidden page of an anonymous unit would read as zero in the child.
  sample_settle_all_locked();
  // A unit whose storage waits for its first access: its untouched
  // anonymous pages are private already and stay as they are, unregistered
  // (the child has no registration; it is frozen below like every PMem
  // unit).  Before the freeze, which may give up early.
  for_used_va_words([](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1)
      unpend_locked(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
  });
  freeze_shared_mappings();
  // The child will map frozen ranges of the file: it holds the file (a
  // lock this process takes for it) until it no longer does, and no slot
  // of it is reused meanwhile.
  tier &pm = pmem_tier();
  if (g_mgr.counters.units[kTierPmem] && pm.ops->fork_prepare) pm.ops->fork_prepare(&pm);
  if (why == quiesce_reason::fork) ++g_mgr.counters.forks;
  ++g_mgr.fork_epoch;
  g_mgr.counters_changed = true;
}

void leave() {
  tier &pm = pmem_tier();
  if (g_heap.size && pm.ops->fork_parent) pm.ops->fork_parent(&pm);
  heap_unlock();
}

void leave_child() {
  pthread_mutex_init(&g_mgr.lock, nullptr);
  g_mgr.counters.units_at_fork = g_mgr.counters.units[kTierDram] + g_mgr.counters.units[kTierPmem];
  // The node agent's budget was the parent's; the child asks for its own.
  g_mgr.node_dram_units = SIZE_MAX;
  apply_dram_limit();
  refreeze(0, kFrozenInherited);
  g_mgr.counters.reshared = 0;
  heap_rehuge_fork_child();
  migration_fork_child();
  // The fork counted is the parent's; the child's statistics start with its
  // own first change.
  g_mgr.counters_changed = false;
  sample_fork_child();
  if (g_start.hook) {
    // The child gets its own mover once it has placed as much memory of
    // its own as a fresh process needs: most children exec (or exit) soon,
    // and should not pay for two threads first.  A child mapping units
    // frozen by the fork gets one at its next call into mmtier (a
    // pre-fork worker's copies go back to PMem like its parent's; the
    // mover waits a while before its first scan, so that a child that
    // exits soon, a Redis BGSAVE, pays only for the thread).
    g_start.units += g_mgr.counters.units[kTierDram] + g_mgr.counters.units[kTierPmem];
    g_start.armed = true;
    g_start_due.store(false, std::memory_order_relaxed);
    if (g_mgr.counters.frozen_inherited) {
      g_start.armed = false;
      g_start_due.store(true, std::memory_order_relaxed);
    }
    check_start_hook();
  }
}

// Node tiers: the restore wrote every unit's pages afresh, wherever the
// kernel put them, and the memory policies of the original's mappings are
// gone.  Each unit's live runs are bound to its tier again and its pages
// moved there (a thin clone's frozen units keep the capsule's pages).
void rebind_node_units() {
  for_used_va_words([](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1) {
      const size_t idx = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      unit &u = g_heap.units[idx];
      const int t = unit_tier(u);
      if (t < 0 || u.frozen || !u.live) continue;
      tier &tt = g_mgr.tiers[t];
      for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
        tt.ops->move_in(&tt, page_addr(idx, first), n << kPageShift);
        tt.ops->bind(&tt, page_addr(idx, first), n << kPageShift);
      });
    }
  });
}

// In a restored process (the stop's thread holds the heap lock).  Every
// frozen unit maps a private copy of its pages (the restore copied them
// from the capsule) or the capsule's linked PMem file privately (ZeroIO):
// the capsule's, and re-shared into storage of this process by the mover
// once it holds copies or is in use (reshare.cc).  Every other thread of the
// program is alive, so nothing of theirs is dropped; what the dead
// original's mmtier threads and descriptors held is forgotten.
void restored() {
  if (g_heap.size) {
    for_used_va_words([](size_t w) {
      for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1) {
        unit &u = g_heap.units[w * 64 + static_cast<size_t>(__builtin_ctzll(bits))];
        if (unit_tier(u) == kTierPmem && !pmem_tier().anonymous && !u.frozen)
          u.frozen = kFrozenOwn;  // its file is gone too
        if (u.frozen) {
          u.frozen = kFrozenCapsule;
        } else if (g_mgr.thin_clone && unit_tier(u) >= 0 && u.live) {
          u.frozen = kFrozenCapsule;  // a DRAM unit mapping the capsule's pages
          ++g_mgr.counters.frozen_inherited;
        }
      }
    });
    g_mgr.counters.frozen_inherited += g_mgr.counters.frozen_own;
    g_mgr.counters.frozen_own = 0;
    g_mgr.counters.reshared = 0;
    // The dead original's node budget: this process asks the agent anew,
    // as a process of its own.
    g_mgr.node_dram_units = SIZE_MAX;
    g_mgr.counters.units_at_fork = 0;
    apply_dram_limit();
    tier &pm = pmem_tier();
    if (pm.ops->restored) pm.ops->restored(&pm);
    if (pm.anonymous) rebind_node_units();
    migration_fork_child();
    sample_restored();
    g_mgr.counters_changed = true;
    // The mover and the fault service start again once the restore's
    // caller raises g_start_due (the dead original's service threads must
    // end first: new ones would take their TIDs and stacks).
    g_start.armed = false;
  }
  heap_unlock();
}

// Once every layer is reset: opening storage may allocate (on a DAX mount
// the file tier loads libpmem), which must wait for the engine's locks.
void child_ready() {
  if (!g_heap.size) return;
  // The parent's storage holds only frozen ranges now; new units go to
  // storage of the child's own.
  heap_lock_guard g;
  tier &pm = pmem_tier();
  if (pm.ops->fork_child && pm.ops->fork_child(&pm, config_get()) < 0) pm.usable = false;
}

}  // namespace

void heap_pmem_storage_each(void (*fn)(void *ctx, int fd, int k), void *ctx) {
  heap_lock_guard g;
  tier &pm = pmem_tier();
  if (!g_heap.size || !pm.ops->storage_fds) return;
  int fds[16];
  bool can = false;
  const int n = pm.ops->storage_fds(&pm, fds, 16, &can);
  for (int k = 0; k < n; ++k)
    if (fds[k] >= 0) fn(ctx, fds[k], k);
}

size_t heap_snapshot_prefreeze() {
  heap_lock_guard g;
  if (!g_heap.size) return 0;
  freeze_shared_mappings();
  return g_frozen_bytes;
}

size_t heap_snapshot_frozen_in_stop() { return g_frozen_bytes; }

int heap_snapshot_hand_over(bool (*link)(void *ctx, int fd), void *ctx) {
  tier &pm = pmem_tier();
  if (!g_heap.size || !pm.ops->storage_fds || !pm.ops->hand_over) return 0;
  int fd = -1;
  bool can = false;
  if (pm.ops->storage_fds(&pm, &fd, 1, &can) < 1 || fd < 0) return 0;
  if (!g_freeze_complete || !can) return -EBUSY;
  if (!link(ctx, fd)) return -ENOLINK;
  if (!pm.ops->hand_over(&pm)) return -EIO;
  ++g_mgr.storage_generation;
  // The stop froze every unit on the file: the capsule's now.
  refreeze(kFrozenOwn, kFrozenCapsule);
  g_mgr.counters_changed = true;
  MMTIER_DEBUG("snapshot: the PMem file went to the capsule; new units go to a new one");
  return 1;
}

void heap_adopt_capsule_storage(const int *fds, size_t n) {
  heap_lock_guard g;
  tier &pm = pmem_tier();
  for (size_t i = 0; i < n; ++i) {
    if (fds[i] < 0) continue;
    const bool kept = g_heap.size && g_mgr.counters.frozen_inherited && pm.ops->adopt_held &&
                      pm.ops->adopt_held(&pm, fds[i]);
    if (!kept) sys::close(fds[i]);
  }
}

void heap_note_thin_clone() { g_mgr.thin_clone = true; }

void heap_fork_register() {
  faults_fork_register();
  quiesce_register(kRankHeap, {enter, leave, leave_child, child_ready, restored});
  quiesce_install_fork_handlers();
}

}  // namespace mmtier::detail
