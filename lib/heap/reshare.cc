// Heap layer: re-sharing units frozen by fork (heap.h, heap_reshare).
//
// Before fork the heap makes every shared mapping of PMem private (fork.cc),
// so that parent and child each keep their own view; a page either side
// writes afterwards is an anonymous copy, DRAM.  A server that forks
// regularly (Redis BGSAVE, a pre-fork worker pool) would end with its PMem
// data in DRAM.  Re-sharing gives such a unit a shared PMem mapping again,
// at the same addresses:
//   - on its own slot when no fork child holds the file any more (the
//     common case: BGSAVE's child has exited): only the pages that are no
//     longer the file's are written into it, the pages not live punched,
//     and the slot mapped shared over the unit;
//   - else on a fresh slot, filled with the whole unit as the process sees
//     it; the frozen slot is retired and reclaimed once the children let go
//     of the file (file_tier.cc: each child holds an OFD lock on it).
// Writers are held off meanwhile: with userfaultfd write-protect where the
// kernel can protect the frozen mapping (shmem on Linux 5.19+ with
// write-protect of unpopulated pages), the program's threads go on and
// only a writer to that unit waits; elsewhere (a DAX or other file
// system's file, older kernels) every other thread is stopped for the
// part that must not race (support/world.h), one unit per stop.  The
// fresh slot is filled before the stop: pages still the file's cannot
// change (a write makes a copy), so the stop copies only the others.
#include "heap/heap_internal.h"

#include "heap/faults.h"
#include "platform/clock.h"
#include "platform/pagemap.h"
#include "platform/sys.h"
#include "support/bitmap.h"
#include "support/log.h"
#include "support/world.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace mmtier::detail {
namespace {

// How long the mover waits for every thread to stop before it gives up on
// re-sharing this round (a thread blocked with signals masked, ...).
constexpr uint64_t kReshareStopTimeoutNs = 50'000'000;

// A frozen unit that can be re-shared: placed on PMem, every live page
// read/write (a new shared mapping would lose another protection).
bool resharable(const unit &u) {
  return u.frozen && unit_tier(u) == kTierPmem && !pmem_tier().anonymous && !u.custom_prot && !u.spilled &&
         u.live > 0;
}

// What the kernel has behind a frozen unit's live pages.
struct frozen_view {
  bool known = false;
  size_t copied = 0;  // present anonymous pages: copies written since the fork (DRAM)
  // Live pages whose contents are the file's: present file pages, and
  // pages not mapped whose file page is in memory (mincore says so for a
  // file mapping only; an anonymous page never touched, or one in swap, is
  // not).
  uint64_t file_bits[kPagesPerUnit / 64] = {};
  uint64_t copy_bits[kPagesPerUnit / 64] = {};  // the copies (present anonymous pages)
  // On DAX: present pages that are the file's or copies a fork child
  // shares (sys::file_or_copy); their contents decide.
  uint64_t unsure_bits[kPagesPerUnit / 64] = {};
  // Live pages mapped that are not surely copies: read (or written, on DAX)
  // through the frozen mapping since it was made.
  size_t mapped = 0;
};

sys::page_info g_view_info[kPagesPerUnit];  // the heap lock guards them
unsigned char g_view_core[kPagesPerUnit];

frozen_view view_of(size_t idx) {
  frozen_view v;
  const unit &u = g_heap.units[idx];
  if (!sys::pagemap_read(unit_addr(idx), kPagesPerUnit, g_view_info)) return v;
  const bool core = sys::raw(SYS_mincore, static_cast<long>(unit_addr(idx)), kUnitSize,
                             reinterpret_cast<long>(g_view_core)) == 0;
  v.known = true;
  const bool dax = pmem_tier().dax;
  for (size_t p = 0; p < kPagesPerUnit; ++p) {
    if (!bit_get(u.live_bits, p)) continue;
    const sys::page_info &i = g_view_info[p];
    if (i.present && !sys::private_copy(i, dax)) ++v.mapped;
    if (sys::private_copy(i, dax)) {
      ++v.copied;
      bit_set(v.copy_bits, p);
    } else if (sys::file_or_copy(i, dax)) {
      bit_set(v.unsure_bits, p);
    } else if (i.present || (core && !i.swapped && (g_view_core[p] & 1)) || (dax && !i.swapped)) {
      // Not mapped and not in swap: the mapping reads the file there.  On
      // DAX mincore cannot say so (no page cache: it reports only what is
      // mapped), and nothing can write-protect it into a marker.
      bit_set(v.file_bits, p);
    }
  }
  return v;
}

// Whether unit idx may go back onto its own slot: the slot is of this
// process's file and no fork child holds the file any more (nobody else
// maps it, so writing it changes no other process's view).
bool own_slot_free_to_write(const unit &u) {
  tier &pm = pmem_tier();
  return u.frozen == kFrozenOwn && pm.ops->storage_unheld && pm.ops->storage_unheld(&pm);
}

// A unit of a capsule's file (kFrozenCapsule) that has been read this much
// since it was frozen is in use: copied into storage of the process's own,
// it rejoins the units the mover places (a frozen unit is never sampled or
// moved, so a hot one would stay on PMem).  One never read costs nothing
// and stays.  A fork child's inherited units are left alone: a child that
// reads everything once (a Redis BGSAVE) must not copy the heap; so are a
// thin clone's, which share the capsule's pages with the other clones.
constexpr size_t kCapsuleInUsePages = kPagesPerUnit / 8;

// Worth re-sharing: a unit holding copies in DRAM, one of the process's own
// that can go back onto its slot (it rejoins the units the mover moves, and
// its new pages go to PMem again), or a capsule's in use.
bool worth_resharing(size_t idx) {
  const unit &u = g_heap.units[idx];
  if (!resharable(u)) return false;
  if (own_slot_free_to_write(u)) return true;
  const frozen_view v = view_of(idx);
  // A thin clone's unit: once at least half its live pages are copies (a
  // write to every unit must not copy the whole heap the clones share).
  if (g_mgr.thin_clone && u.frozen == kFrozenCapsule) return v.known && v.copied * 2 >= u.live;
  return v.known && (v.copied > 0 || (u.frozen == kFrozenCapsule && v.mapped >= kCapsuleInUsePages));
}

// Clears from bits the pages of unit idx in unsure whose contents are the
// slot's (on DAX: the file's own pages, mapped directly).  0 or -errno.
long drop_unchanged(size_t idx, uint32_t slot, const uint64_t *unsure, uint64_t *bits) {
  tier &pm = pmem_tier();
  alignas(64) static char page[kPageSize];  // the heap lock guards it
  long err = 0;
  for_runs(unsure, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    for (size_t p = first; p < first + n && !err; ++p) {
      if (!bit_get(bits, p)) continue;
      err = pm.ops->read(&pm, slot, p << kPageShift, page, kPageSize);
      if (!err && memcmp(page, page_addr(idx, p), kPageSize) == 0) bit_clear(bits, p);
    }
  });
  return err;
}

// Copies the live pages of unit idx that are no longer the file's (copies
// written since the fork, pages placed since) into the slot; adds the
// bytes to *copied.  Writers must be held off.  0 or -errno.
//
// pre: a view taken before writers were held off by write-protect, or
// nullptr.  Write-protect turns a page not mapped into a marker that
// pagemap and mincore show as swapped, so the view taken now cannot tell a
// file page from an anonymous one there; a page the file's before the hold
// and not a copy now has not changed.
long copy_changed_pages(size_t idx, uint32_t slot, size_t *copied, const frozen_view *pre) {
  const unit &u = g_heap.units[idx];
  const frozen_view v = view_of(idx);
  if (!v.known || (pre && !pre->known)) return -EIO;
  uint64_t bits[kPagesPerUnit / 64];
  for (size_t w = 0; w < kPagesPerUnit / 64; ++w) {
    const uint64_t file = (v.file_bits[w] | (pre ? pre->file_bits[w] : 0)) & ~v.copy_bits[w];
    bits[w] = u.live_bits[w] & ~file;
  }
  long err = drop_unchanged(idx, slot, v.unsure_bits, bits);
  if (err) return err;
  for_runs(bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (err) return;
    err = copy_to_slot(pmem_tier(), slot, static_cast<const char *>(page_addr(idx, first)), n << kPageShift,
                       first << kPageShift);
    if (!err) *copied += n << kPageShift;
  });
  return err;
}

// Maps the live runs of unit idx shared on the slot; the runs mapped (all
// unless *err is set).
size_t map_live_runs(size_t idx, uint32_t slot, long *err) {
  tier &pm = pmem_tier();
  size_t mapped = 0;
  for_runs(g_heap.units[idx].live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (!*err)
      *err = pm.ops->map(&pm, page_addr(idx, first), n << kPageShift, PROT_READ | PROT_WRITE, slot, first << kPageShift);
    if (!*err) ++mapped;
  });
  return mapped;
}

// A re-share under way: where the unit goes, and what it held when its new
// slot was filled (outside the writers' hold, so that the hold copies only
// what may have changed since).
struct reshare_plan {
  size_t idx = 0;
  bool in_place = false;
  uint32_t slot = 0;
  bool filled = false;   // the new slot has the whole unit as of the fill
  bool held = false;     // writers were held off since before the fill
  uint64_t live[kPagesPerUnit / 64] = {};
  uint64_t generation = 0;  // g_mgr.storage_generation when the slot was chosen
};

// Chooses where unit idx goes (heap lock held).  In place, when no fork
// child holds the file: the unit's own slot already holds every page
// still the file's.  Else a fresh slot, into which the whole unit is
// copied now, while the program runs: pages still the file's cannot change
// (a write makes a copy), so the hold has to copy only the rest again.
// 0 or -errno (nothing taken).
long plan_reshare(size_t idx, reshare_plan *p, size_t *copied) {
  unit &u = g_heap.units[idx];
  tier &pm = pmem_tier();
  if (!pm.usable || !pm.ops->write) return -EOPNOTSUPP;
  p->idx = idx;
  p->generation = g_mgr.storage_generation;
  p->in_place = own_slot_free_to_write(u);
  memcpy(p->live, u.live_bits, sizeof p->live);
  if (p->in_place) {
    p->slot = u.slot;
    // The slot may have holes under live pages: pages placed after the
    // fork (anonymous then), or a unit still waiting for its first touch
    // when it was frozen.  The copy skips a page that reads as the hole's
    // zeros, and a write there once mapped must not meet a full file
    // system (a SIGBUS): storage for every live run now (the finish
    // checks that the live pages are still these).
    long err = 0;
    if (pm.ops->reserve_keep)
      for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
        if (!err) err = pm.ops->reserve_keep(&pm, p->slot, first << kPageShift, n << kPageShift);
      });
    return err;
  }
  const long s = demotion_slot(idx);
  if (s < 0) return s;
  p->slot = static_cast<uint32_t>(s);
  long err = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (!err)
      err = copy_to_slot(pm, p->slot, static_cast<const char *>(page_addr(idx, first)), n << kPageShift,
                         first << kPageShift);
  });
  if (err) {
    pm.ops->slot_free(&pm, p->slot);
    return err;
  }
  *copied += static_cast<size_t>(u.live) << kPageShift;
  p->filled = true;
  return 0;
}

// Gives a plan's fresh slot back (heap lock held).
void drop_plan(const reshare_plan &p) {
  // A slot of storage handed over since is not this process's to free.
  if (!p.in_place && p.generation == g_mgr.storage_generation) pmem_tier().ops->slot_free(&pmem_tier(), p.slot);
}

// Carries a plan out with writers held off and the heap lock held: the
// pages that may have changed are copied, the pages not live punched (in
// place: the file kept what they held at the fork), and the live runs
// mapped shared.  Returns the runs mapped; *err 0 or -errno (-EBUSY: the
// unit changed since the plan: nothing done, the plan dropped).
size_t finish_reshare(const reshare_plan &p, const frozen_view *pre, size_t *copied, long *err) {
  unit &u = g_heap.units[p.idx];
  tier &pm = pmem_tier();
  if (!resharable(u) || memcmp(p.live, u.live_bits, sizeof p.live) != 0 || p.generation != g_mgr.storage_generation ||
      (p.in_place && !own_slot_free_to_write(u))) {
    drop_plan(p);
    *err = -EBUSY;
    return 0;
  }
  // Filled with writers held off: nothing changed since.
  if (!(p.filled && p.held)) *err = copy_changed_pages(p.idx, p.slot, copied, pre);
  if (!*err && p.in_place)
    for_runs(u.live_bits, 0, kPagesPerUnit, false, [&](size_t first, size_t n) {
      if (!*err) *err = pm.ops->discard(&pm, nullptr, n << kPageShift, p.slot, first << kPageShift);
    });
  if (*err) {
    // Nothing mapped: the unit stays frozen, its view unchanged.
    drop_plan(p);
    return 0;
  }
  const size_t mapped = map_live_runs(p.idx, p.slot, err);
  if (*err && !mapped) {
    drop_plan(p);
    return 0;
  }
  // Mapped, maybe only in part after a failure: the slot holds the unit's
  // contents for every run, and runs left private show the same; the unit
  // stays mixed then.
  unfreeze(u, /*keep_slot=*/p.in_place);
  u.slot = p.slot;
  if (*err) u.spilled = 1;
  ++g_mgr.counters.reshared;
  g_mgr.counters_changed = true;
  return mapped;
}

// Write-protecting a frozen unit's mapping with userfaultfd: writers wait
// at the fault service, nothing else stops.  It needs write-protect of
// unpopulated pages and of the file's own mapping (shmem on Linux 5.19+;
// not a DAX or other file system's file): tried once, remembered.
enum class wp_state { unknown, works, fails };
wp_state g_reshare_wp = wp_state::unknown;

// Re-shares unit idx with its writers held off by userfaultfd (heap lock
// held).  -ENOTSUP when write-protect cannot hold this mapping.
long reshare_with_wp(size_t idx, size_t *copied, bool *in_place) {
  if (g_reshare_wp == wp_state::fails || !faults_wp_unpopulated()) return -ENOTSUP;
  const int fd = faults_fd();
  const frozen_view pre = view_of(idx);
  long err = 0;
  const size_t protected_runs = protect_runs(idx, fd, &err);
  if (err && !protected_runs) {
    if (g_reshare_wp == wp_state::unknown && (err == -EINVAL || err == -EPERM || err == -ENOTSUP)) {
      g_reshare_wp = wp_state::fails;
      MMTIER_INFO("fork: write-protect of frozen PMem mappings unavailable (error %ld); re-sharing stops the "
                  "program's threads for each unit instead", -err);
    }
    return g_reshare_wp == wp_state::fails ? -ENOTSUP : err;
  }
  g_reshare_wp = wp_state::works;
  size_t mapped = 0;
  reshare_plan plan;
  plan.held = true;
  if (!err) err = plan_reshare(idx, &plan, copied);
  if (!err) {
    *in_place = plan.in_place;
    mapped = finish_reshare(plan, &pre, copied, &err);
  }
  release_writers(idx, fd, protected_runs, mapped);
  return err;
}

// Re-shares unit idx with every other thread of the program stopped for
// the part that must not race with them (support/world.h); the pause goes
// into *out.  The fresh slot is filled before the stop.
long reshare_with_stop(size_t idx, reshare_outcome *out, bool *in_place) {
  reshare_plan plan;
  {
    heap_lock_guard g;
    if (!resharable(g_heap.units[idx])) return -EBUSY;
    if (long e = plan_reshare(idx, &plan, &out->bytes); e < 0) return e;
  }
  const uint64_t t0 = sys::mono_ns();
  world_stats ws;
  const long r = world_stop(quiesce_reason::pause, kReshareStopTimeoutNs, &ws);
  if (r < 0) {
    heap_lock_guard g;
    drop_plan(plan);
    return r;
  }
  // The quiesce sequence holds the heap lock now.
  long err = 0;
  finish_reshare(plan, nullptr, &out->bytes, &err);
  world_resume();
  const uint64_t pause = sys::mono_ns() - t0;
  ++out->stops;
  out->pause_total_ns += pause;
  if (pause > out->pause_max_ns) out->pause_max_ns = pause;
  MMTIER_DEBUG("re-share of unit %zu (%s): %ld; %u threads stopped in %llu us, pause %llu us", idx,
               plan.in_place ? "in place" : "fresh slot", err, ws.threads,
               static_cast<unsigned long long>(ws.stop_ns / 1000), static_cast<unsigned long long>(pause / 1000));
  *in_place = plan.in_place;
  return err;
}

// The next frozen unit worth re-sharing at or after *cursor, looking at
// no more than *budget frozen units (heap lock held); SIZE_MAX if none.
// own_only: units frozen by this process's own fork alone.
size_t next_to_reshare(size_t *cursor, size_t *budget, bool own_only = false) {
  size_t found = SIZE_MAX;
  for_used_va_words([&](size_t w) {
    if (found != SIZE_MAX || !*budget || (w + 1) * 64 <= *cursor) return;
    for (uint64_t bits = g_mgr.va_bits[w]; bits && found == SIZE_MAX && *budget; bits &= bits - 1) {
      const size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      if (i < *cursor || !g_heap.units[i].frozen || (own_only && g_heap.units[i].frozen != kFrozenOwn)) continue;
      --*budget;
      if (worth_resharing(i)) found = i;
    }
  });
  // Past the last unit: start over next time.
  *cursor = found == SIZE_MAX ? (*budget ? 0 : *cursor) : found + 1;
  return found;
}

// Re-shares frozen units from *cursor on, looking at no more than budget
// of them, until max_units are or max_bytes copied (into *out): each with
// write-protect, else with a stop; now: units frozen by the process's own
// fork alone (next_to_reshare's own_only), and never a stop.
void reshare_units(size_t *cursor, size_t budget, size_t max_units, size_t max_bytes, bool now,
                   reshare_outcome *out) {
  while (out->units < max_units && out->bytes < max_bytes) {
    size_t idx;
    long e = -ENOTSUP;
    bool in_place = false;
    {
      heap_lock_guard g;
      idx = next_to_reshare(cursor, &budget, now);
      if (idx != SIZE_MAX) e = reshare_with_wp(idx, &out->bytes, &in_place);
    }
    if (idx == SIZE_MAX) break;
    if (e == -ENOTSUP && !now) e = reshare_with_stop(idx, out, &in_place);
    if (e == -EBUSY) continue;  // changed meanwhile: looked at again later
    if (e < 0) {
      out->err = e;
      break;
    }
    ++out->units;
    out->in_place += in_place;
  }
}

}  // namespace

reshare_outcome heap_reshare(size_t max_units, size_t max_bytes) {
  reshare_outcome out;
  tier &pm = pmem_tier();
  {
    heap_lock_guard g;
    // Retired slots come back once the fork children let go of the file.
    if (pm.ops->reclaim_retired) pm.ops->reclaim_retired(&pm);
    if (!g_mgr.counters.frozen_own && !g_mgr.counters.frozen_inherited) return out;
  }
  static size_t cursor = 0;  // the mover's own (the one caller)
  // Frozen units looked at per call: a pagemap read each (4 KiB).
  reshare_units(&cursor, 256, max_units, max_bytes, false, &out);
  return out;
}

// Every unit the process's own fork froze and worth it, now, in place,
// with write-protect alone (heap.h).
reshare_outcome heap_reshare_now() {
  reshare_outcome out;
  tier &pm = pmem_tier();
  {
    heap_lock_guard g;
    if (!g_mgr.counters.frozen_own) return out;
    // While a fork child holds the file, each unit would be copied whole
    // into a fresh slot: the mover's work, at its rate.
    if (!pm.ops->storage_unheld || !pm.ops->storage_unheld(&pm)) return out;
  }
  size_t cursor = 0;  // one pass, from the first unit
  reshare_units(&cursor, SIZE_MAX, SIZE_MAX, SIZE_MAX, true, &out);
  return out;
}

}  // namespace mmtier::detail
