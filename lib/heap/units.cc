// Heap layer: the unit manager (see heap.h, heap_internal.h).  The
// reservation, the address space inside it, placing pages and units on
// tiers and giving them back, the allocators' reservations, queries,
// counters and the hooks other layers attach to the heap.
#include "heap/heap_internal.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/placement.h"
#include "heap/sample.h"
#include "platform/pagemap.h"
#include "platform/sys.h"
#include "support/log.h"
#include "support/meta.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mmtier::detail {

heap_globals g_heap;
unit_manager g_mgr;
std::atomic<bool> g_start_due{false};
start_hook_state g_start;

namespace {

constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

// The change hook (heap_set_change_hook): runs before the heap lock is
// released when a counter changed.
void (*g_change_hook)(const heap_counters &) = nullptr;

// ---- address allocation (units) --------------------------------------

bool va_free_run(size_t idx, size_t n) {
  if (idx + n > g_heap.nunits) return false;
  for (size_t i = idx; i < idx + n; ++i)
    if (bit_get(g_mgr.va_bits, i)) return false;
  return true;
}

void va_claim(size_t idx, size_t n) {
  for (size_t i = idx; i < idx + n; ++i) va_mark(i);
}

// Next-fit search for n free units aligned to align units in [lo, hi),
// starting at cursor; SIZE_MAX if none.
size_t va_alloc_in(size_t n, size_t align, size_t lo, size_t hi, size_t &cursor) {
  if (cursor < lo || cursor >= hi) cursor = lo;
  for (int pass = 0; pass < 2; ++pass) {
    size_t i = pass == 0 ? cursor : lo;
    const size_t end = pass == 0 ? hi : cursor + n;
    i = (i + align - 1) / align * align;
    while (i + n <= hi && i < end + n) {
      // Skip fully used words quickly.
      if ((i & 63) == 0 && i + 64 <= hi && g_mgr.va_bits[i >> 6] == ~uint64_t{0}) {
        i += 64;
        continue;
      }
      size_t j = 0;
      while (j < n && !bit_get(g_mgr.va_bits, i + j)) ++j;
      if (j == n) {
        va_claim(i, n);
        cursor = i + n;
        return i;
      }
      i = (i + j + 1 + align - 1) / align * align;
    }
  }
  return SIZE_MAX;
}

// ---- placing units -----------------------------------------------------

// The slot following the lower neighbour's, else the one before the upper
// neighbour's (a mapping merges with the next only when their file offsets
// run on); -1 when neither neighbour is a plain PMem unit.  Every
// migration otherwise leaves a mapping of its own (vm.max_map_count).
long neighbour_slot(size_t idx) {
  auto plain_pmem = [](const unit &n) { return unit_tier(n) == kTierPmem && !unit_mixed(n); };
  if (idx > 0 && plain_pmem(g_heap.units[idx - 1]) && g_heap.units[idx - 1].slot != UINT32_MAX)
    return static_cast<long>(g_heap.units[idx - 1].slot) + 1;
  if (idx + 1 < g_heap.nunits && plain_pmem(g_heap.units[idx + 1]) && g_heap.units[idx + 1].slot > 0)
    return static_cast<long>(g_heap.units[idx + 1].slot) - 1;
  return -1;
}

// A unit the policy places on DRAM, when DRAM is a NUMA node without room
// for it (node_tier.cc, node_claim: its free memory, less the units placed
// there whose pages are not made yet, under what its zones keep): PMem, if
// it can take the unit.  Left to the kernel, its
// pages would come from the slow node all the same, once huge-page faults
// had drained the fast node to its min watermark, where the kernel's own
// allocations wait for reclaim: in the 6.1 guest that froze the whole
// machine for over a minute.  The mover promotes the hot ones when room
// returns.
int dram_room_or_pmem(const placement_input &in) {
  tier &d = dram_tier();
  if (!d.ops->claim || !in.usable[kTierPmem] || in.units[kTierPmem] >= in.limit_units[kTierPmem] ||
      g_mgr.counters.pmem_full || d.ops->claim(&d, kUnitSize))
    return kTierDram;
  if (!g_mgr.said_dram_room) {
    g_mgr.said_dram_room = true;
    MMTIER_INFO("DRAM tier: NUMA node %d has no room above its watermarks: units placed on PMem until it has "
                "(the mover promotes the hot ones)",
                d.node);
  }
  return kTierPmem;
}

// Places an unplaced unit on a tier; returns the tier or -errno.
long place_unit(unit &u) {
  placement_input in;
  for (int t = 0; t < kTierCount; ++t) {
    in.units[t] = g_mgr.counters.units[t];
    in.policy_units[t] = g_mgr.counters.policy_units[t];
    in.limit_units[t] = g_mgr.counters.limit_units[t];
    in.usable[t] = g_mgr.tiers[t].usable;
  }
  const size_t idx = static_cast<size_t>(&u - g_heap.units);
  if (idx > 0 && g_heap.units[idx - 1].by_policy && !g_heap.units[idx - 1].frozen)
    in.neighbour = unit_tier(g_heap.units[idx - 1]);
  // Start-up memory: a process's first kStartupUnits units that would be
  // placed by policy go to DRAM, outside the ratio.  A small process (a
  // shell tool, a build step) then never touches the PMem tier: no file, no
  // descriptor, and its report shows nothing placed by policy rather than a
  // ratio of a handful of units.
  const bool startup = u.forced1 == 0 && g_mgr.startup_left > 0 && in.usable[kTierDram] &&
                       in.units[kTierDram] < in.limit_units[kTierDram];
  placement_result pr = choose_tier(in, config_get(), startup ? kTierDram : static_cast<int>(u.forced1) - 1);
  int t = pr.tier;
  if (t == kTierDram && u.forced1 == 0 && !startup && !pr.fallback) t = dram_room_or_pmem(in);
  uint32_t slot = 0;
  if (g_mgr.tiers[t].ops->slot_alloc) {
    // A fresh unit reads as zero: a warm slot would need its stale contents
    // dropped first.
    long s = t == kTierPmem ? pmem_slot_for(idx, kTakeFree) : -ENOENT;
    if (s < 0) s = g_mgr.tiers[t].ops->slot_alloc(&g_mgr.tiers[t]);
    if (s < 0) {
      if (t == kTierDram) return s;
      g_mgr.counters.pmem_full = true;
      if (!g_mgr.warned_fallback[t]) {
        g_mgr.warned_fallback[t] = true;
        MMTIER_WARN("PMem tier cannot take more memory (error %ld); placing on DRAM instead", -s);
      }
      t = kTierDram;
      pr.fallback = true;
    } else {
      slot = static_cast<uint32_t>(s);
    }
  }
  if (pr.fallback) {
    ++g_mgr.counters.fallbacks;
    g_mgr.counters_changed = true;
    if (!g_mgr.warned_fallback[kTierDram] && t == kTierDram) {
      g_mgr.warned_fallback[kTierDram] = true;
      MMTIER_WARN("%s; placing beyond the DRAM budget",
                  pmem_tier().usable ? "PMem tier is full" : "PMem tier is unavailable");
    }
  }
  u.slot = slot;
  u.by_policy = u.forced1 == 0 && !startup;
  if (startup) --g_mgr.startup_left;
  u.tier1.store(static_cast<uint8_t>(t + 1), std::memory_order_release);
  count_unit(u, t, +1);
  check_start_hook();
  return t;
}

// A DRAM unit mapped whole carries the huge-page advice (dram_map).  A run
// of it mapped again (pages given back in place, then taken again: an
// allocator's free and malloc) gets the advice too: its mapping would
// otherwise differ from the rest of the unit's in that alone and never
// merge back, one mapping more for every such run, which every snapshot
// and restore would keep.  A unit first mapped in parts stays without it
// (the kernel would give a huge page to a part-used unit whose runs merge
// into one mapping of it, and split it again at the next partial unmap),
// and so does one whose protection or advice the program chose.
void advise_run(unit &u, size_t n, void *addr) {
  if (!config_get().huge_units || dram_tier().ops != &dram_tier_ops) return;
  if (n == kPagesPerUnit) u.huge_advised = 1;
  else if (u.huge_advised && !u.custom_prot) sys::madvise(addr, n << kPageShift, MADV_HUGEPAGE);
}

// Maps pages [first, first + n) of a placed unit on its tier with prot.  A
// mixed unit gets anonymous pages instead: writing a frozen file would show
// through to the other process, and a spilled unit's tier has no room.
long map_pages(unit &u, size_t idx, size_t first, size_t n, int prot) {
  tier &t = tier_of_unit(u);
  void *addr = page_addr(idx, first);
  const size_t len = n << kPageShift, off = first << kPageShift;
  if (unit_mixed(u)) return dram_tier().ops->map(&dram_tier(), addr, len, prot, 0, 0);
  if (u.pending) {
    if (prot == (PROT_READ | PROT_WRITE) && map_pending(addr, len) == 0) return 0;
    materialize_locked(idx);
    if (unit_tier(u) == kTierDram || unit_mixed(u)) return dram_tier().ops->map(&dram_tier(), addr, len, prot, 0, 0);
  }
  long r = t.ops->reserve(&t, u.slot, off, len);
  // Room held for demotions comes second to memory asked for now.
  if (r == -ENOSPC && t.ops->warm_limit && t.ops->warm_limit(&t, 0) > 0) r = t.ops->reserve(&t, u.slot, off, len);
  if (r < 0) return r;
  r = t.ops->map(&t, addr, len, prot, u.slot, off);
  if (r == 0 && unit_tier(u) == kTierDram) advise_run(u, n, addr);
  return r;
}

// A unit whose tier ran out of room while placing pages: a fresh unit goes
// to DRAM whole; one with live pages keeps them and gets DRAM pages from now
// on (spilled).
void spill(unit &u, long err) {
  const int old = unit_tier(u);
  note_fallback(old, err, "PMem tier is full");
  if (u.live == 0) {
    tier &t = g_mgr.tiers[old];
    if (t.ops->slot_free) t.ops->slot_free(&t, u.slot);
    count_unit(u, old, -1);
    u.tier1.store(kTierDram + 1, std::memory_order_release);
    count_unit(u, kTierDram, +1);
  } else {
    u.spilled = 1;
  }
}

}  // namespace

// ---- shared with the layer's other files (heap_internal.h) ----------------

void note_fallback(int tier, long err, const char *what) {
  ++g_mgr.counters.fallbacks;
  if (tier == kTierPmem) g_mgr.counters.pmem_full = true;
  g_mgr.counters_changed = true;
  if (!g_mgr.warned_fallback[tier]) {
    g_mgr.warned_fallback[tier] = true;
    MMTIER_WARN("%s (error %ld); placing on DRAM instead", what, -err);
  }
}


void heap_lock() { pthread_mutex_lock(&g_mgr.lock); }

void heap_unlock() {
  if (g_mgr.counters_changed) {
    g_mgr.counters_changed = false;
    if (g_change_hook) g_change_hook(g_mgr.counters);
  }
  pthread_mutex_unlock(&g_mgr.lock);
}

long reserve_range(uintptr_t addr, size_t len) {
  long r = sys::mmap(reinterpret_cast<void *>(addr), len, PROT_NONE, kReserveFlags | MAP_FIXED, -1, 0);
  return sys::failed(r) ? r : 0;
}

size_t va_alloc(size_t n, size_t align) {
  return va_alloc_in(n, align, g_mgr.small_units, g_heap.nunits, g_mgr.va_cursor);
}

void count_unit(const unit &u, int t, int delta) {
  heap_counters &c = g_mgr.counters;
  c.units[t] += static_cast<size_t>(delta);
  if (u.by_policy) c.policy_units[t] += static_cast<size_t>(delta);
  if (c.units[t] > c.peak_units[t]) c.peak_units[t] = c.units[t];
  if (c.policy_units[t] > c.policy_peak_units[t]) c.policy_peak_units[t] = c.policy_units[t];
  g_mgr.counters_changed = true;
}

long pmem_slot_for(size_t idx, int from) {
  tier &pm = pmem_tier();
  const long want = neighbour_slot(idx);
  if (want < 0 || !pm.ops->slot_take) return -ENOENT;
  return pm.ops->slot_take(&pm, static_cast<uint32_t>(want), from);
}

void keep_warm(size_t limit) {
  tier &pm = pmem_tier();
  if (pm.ops && pm.ops->warm_limit) pm.ops->warm_limit(&pm, limit);
}

long place_pages(size_t idx, size_t first, size_t n, int prot) {
  unit &u = g_heap.units[idx];
  if (unit_tier(u) < 0) {
    long t = place_unit(u);
    if (t < 0) return t;
    if (t == kTierPmem && pending_eligible(prot)) set_pending(u, true);
  }
  long err = 0;
  for_runs(u.live_bits, first, first + n, false, [&](size_t a, size_t c) {
    if (err) return;
    long r = map_pages(u, idx, a, c, prot);
    if (r < 0 && unit_tier(u) != kTierDram) {
      spill(u, r);
      r = map_pages(u, idx, a, c, prot);
    }
    if (r < 0) {
      err = r;
      return;
    }
    for (size_t i = a; i < a + c; ++i) bit_set(u.live_bits, i);
    u.live = static_cast<uint16_t>(u.live + c);
  });
  return err;
}

namespace {

// A dropped range of a frozen or spilled unit that could not get fresh
// pages (no mapping left under vm.max_map_count): zeros written in place,
// so that it never shows the file's bytes again (a private copy of zeros;
// the memory comes back once the unit is re-shared or released).
void zero_in_place(void *addr, size_t len, int prot) {
  const bool writable = prot & PROT_WRITE;
  if (!writable && sys::mprotect(addr, len, PROT_READ | PROT_WRITE) < 0) {
    MMTIER_WARN("cannot clear %zu bytes given back at %p (no mapping left); they keep their contents", len, addr);
    return;
  }
  memset(addr, 0, len);
  if (!writable) sys::mprotect(addr, len, prot);
}

}  // namespace

void discard_pages(size_t idx, size_t first, size_t n, bool unplace) {
  unit &u = g_heap.units[idx];
  if (unit_tier(u) < 0) return;
  sample_settle_unit_locked(idx);
  tier &t = tier_of_unit(u);
  for_runs(u.live_bits, first, first + n, true, [&](size_t a, size_t c) {
    void *addr = page_addr(idx, a);
    const size_t len = c << kPageShift;
    if (u.pending) {
      // Untouched (a touch would have given the unit its storage): they
      // read zero already, and the file holds nothing for them.
    } else if (unit_mixed(u)) {
      // Cannot punch a frozen file, and a spilled unit's pages may be
      // anonymous: replace with fresh anonymous pages (and give a spilled
      // unit's file storage back).
      int prot = unplace ? PROT_READ | PROT_WRITE : sys::query_prot(addr);
      if (prot < 0) prot = PROT_READ | PROT_WRITE;
      if (dram_tier().ops->map(&dram_tier(), addr, len, prot, 0, 0) < 0) zero_in_place(addr, len, prot);
      if (!u.frozen) t.ops->discard(&t, addr, len, u.slot, a << kPageShift);
    } else {
      t.ops->discard(&t, addr, len, u.slot, a << kPageShift);
    }
    if (unplace) {
      for (size_t i = a; i < a + c; ++i) bit_clear(u.live_bits, i);
      u.live = static_cast<uint16_t>(u.live - c);
    }
  });
  if (unplace && u.live == 0 && u.owned == 0) release_unit(u, idx);
}

void release_unit(unit &u, size_t idx) {
  const int t = unit_tier(u);
  if (t >= 0) {
    reserve_range(unit_addr(idx), kUnitSize);  // also ends a pending unit's registration
    set_pending(u, false);
    tier &tt = g_mgr.tiers[t];
    if (!u.frozen && tt.ops->slot_free) tt.ops->slot_free(&tt, u.slot);
    unfreeze(u);
    count_unit(u, t, -1);
    if (t == kTierPmem) g_mgr.counters.pmem_full = false;
    // Warm slots are kept for DRAM units only (migration.cc).
    if (t == kTierDram) keep_warm(g_mgr.counters.policy_units[kTierDram]);
  }
  u.tier1.store(0, std::memory_order_release);
  u.moving = 0;  // a move under way is void (node_moves.cc)
  u.frozen = 0;
  u.spilled = 0;
  u.custom_prot = 0;
  u.huge_advised = 0;
  u.live = 0;
  memset(u.live_bits, 0, sizeof u.live_bits);
}

void unfreeze(unit &u, bool keep_slot) {
  if (!u.frozen) return;
  tier &pm = pmem_tier();
  if (u.frozen == kFrozenOwn) {
    --g_mgr.counters.frozen_own;
    if (!keep_slot && pm.ops->slot_retire) pm.ops->slot_retire(&pm, u.slot);
  } else {
    --g_mgr.counters.frozen_inherited;
    if (g_mgr.counters.frozen_inherited == 0 && pm.ops->drop_inherited) pm.ops->drop_inherited(&pm);
  }
  u.frozen = 0;
  g_mgr.counters_changed = true;
}

void check_start_hook() {
  const heap_counters &c = g_mgr.counters;
  if (g_start.armed && c.units[kTierDram] + c.units[kTierPmem] >= g_start.units) {
    g_start.armed = false;
    g_start_due.store(true, std::memory_order_release);
  }
}

// ---- initialisation ----------------------------------------------------

bool heap_init() {
  static const size_t sizes[] = {size_t{8} << 40, size_t{2} << 40, size_t{512} << 30, size_t{64} << 30,
                                 size_t{8} << 30};
  for (size_t want : sizes) {
    long r = sys::mmap(nullptr, want + kUnitSize, PROT_NONE, kReserveFlags, -1, 0);
    if (sys::failed(r)) continue;
    const uintptr_t raw = static_cast<uintptr_t>(r);
    const uintptr_t base = align_up(raw, kUnitSize);
    if (base > raw) sys::munmap(reinterpret_cast<void *>(raw), base - raw);
    const uintptr_t tail = raw + want + kUnitSize;
    if (tail > base + want) sys::munmap(reinterpret_cast<void *>(base + want), tail - (base + want));
    g_heap.base = base;
    g_heap.size = want;
    g_heap.nunits = want >> kUnitShift;
    // One eighth of the addresses (1 TiB of 8) for small-object segments.
    g_mgr.small_units = g_heap.nunits / 8;
    g_heap.small_size = g_mgr.small_units << kUnitShift;
    break;
  }
  if (!g_heap.size) {
    MMTIER_ERROR("cannot reserve an address range for the managed heap");
    return false;
  }
  g_heap.units = static_cast<unit *>(meta_map(g_heap.nunits * sizeof(unit)));
  const size_t va_words = (g_heap.nunits + 63) / 64;
  g_mgr.va_bits = static_cast<uint64_t *>(meta_map(va_words * 8));
  g_mgr.va_summary = static_cast<uint64_t *>(meta_map((va_words + 63) / 64 * 8));
  if (!g_heap.units || !g_mgr.va_bits || !g_mgr.va_summary) {
    MMTIER_ERROR("cannot map the unit table");
    sys::munmap(reinterpret_cast<void *>(g_heap.base), g_heap.size);
    g_heap = heap_globals{};
    return false;
  }
  const config &cfg = config_get();
  // Slow memory that is a NUMA node makes both tiers node tiers.
  const int slow_node = node_tier_choose(cfg);
  const bool nodes = slow_node >= 0;
  dram_tier().ops = nodes ? &node_fast_tier_ops : &dram_tier_ops;
  dram_tier().index = kTierDram;
  pmem_tier().ops = nodes ? &node_slow_tier_ops : &file_tier_ops;
  pmem_tier().index = kTierPmem;
  dram_tier().node = pmem_tier().node = slow_node;
  for (auto &t : g_mgr.tiers) (void)t.ops->open(&t, cfg);
  if (nodes && (!dram_tier().usable || !pmem_tier().usable)) {
    MMTIER_WARN("the NUMA-node tiers cannot be used here; the PMem tier is the file in %s", cfg.pmem_path);
    dram_tier() = tier{};
    pmem_tier() = tier{};
    dram_tier().ops = &dram_tier_ops;
    pmem_tier().ops = &file_tier_ops;
    pmem_tier().index = kTierPmem;
    for (auto &t : g_mgr.tiers) (void)t.ops->open(&t, cfg);
  }
  apply_dram_limit();
  g_mgr.counters.limit_units[kTierPmem] = cfg.pmem_limit == SIZE_MAX ? SIZE_MAX : cfg.pmem_limit >> kUnitShift;
  if (policy_splits(cfg.policy) && cfg.ratio_dram == 0 && !pmem_tier().usable)
    MMTIER_WARN("MMTIER_DRAM_RATIO gives DRAM nothing but the PMem tier is unavailable");
  // No start-up memory where DRAM is to get nothing.
  const bool dram_gets_nothing = (policy_splits(cfg.policy) && cfg.ratio_dram == 0) || cfg.dram_limit == 0;
  g_mgr.startup_left = dram_gets_nothing ? 0 : kStartupUnits;
  heap_fork_register();
  MMTIER_INFO("heap: %zu GiB of addresses at %p, unit %zu KiB", g_heap.size >> 30,
              reinterpret_cast<void *>(g_heap.base), kUnitSize >> 10);
  return true;
}

// ---- queries -------------------------------------------------------------

int heap_tier_of(const void *p) {
  if (!heap_contains(p)) return -1;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const size_t idx = unit_index(a);
  const unit &u = g_heap.units[idx];
  const int t = unit_tier(u);
  if (t < 0) return -1;
  const size_t page = (a - unit_addr(idx)) >> kPageShift;
  if (!bit_get(u.live_bits, page)) return -1;
  if (unit_mixed(u)) {
    // After fork the unit is a private view of its frozen file: pages
    // written since are anonymous DRAM pages (as are a spilled unit's).
    sys::page_info pi;
    if (sys::pagemap_read(align_down(a, kPageSize), 1, &pi) && sys::private_copy(pi, pmem_tier().dax)) return kTierDram;
  }
  return t;
}

int heap_slow_node() {
  const tier &pm = pmem_tier();
  return pm.anonymous && pm.usable ? pm.node : -1;
}

size_t heap_tier_limit(int t) {
  if (t < 0 || t >= kTierCount) return 0;
  const config &cfg = config_get();
  return t == kTierDram ? cfg.dram_limit : cfg.pmem_limit;
}

// ---- allocator engine ------------------------------------------------------

void *heap_engine_reserve(void *want, size_t size, size_t align, int forced) {
  const size_t n = (size + kUnitSize - 1) >> kUnitShift;
  const size_t align_units = align > kUnitSize ? align >> kUnitShift : 1;
  heap_lock_guard g;
  size_t idx;
  if (want) {
    const uintptr_t w = reinterpret_cast<uintptr_t>(want);
    if (!heap_contains(want) || heap_small_contains(want) || (w & (kUnitSize - 1)) ||
        !va_free_run(unit_index(w), n))
      return nullptr;
    idx = unit_index(w);
    va_claim(idx, n);
  } else {
    idx = va_alloc(n, align_units);
    if (idx == SIZE_MAX) return nullptr;
  }
  for (size_t i = idx; i < idx + n; ++i) {
    unit &u = g_heap.units[i];
    u.owner = kOwnerEngine;
    u.forced1 = static_cast<uint8_t>(forced + 1);
  }
  return reinterpret_cast<void *>(unit_addr(idx));
}

void heap_engine_release(void *addr, size_t size) {
  heap_lock_guard g;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const size_t n = (size + kUnitSize - 1) >> kUnitShift;
  for (size_t idx = unit_index(a); idx < unit_index(a) + n; ++idx) {
    sample_settle_unit_locked(idx);
    unit &u = g_heap.units[idx];
    if (unit_tier(u) >= 0) release_unit(u, idx);
    u.owner = kOwnerFree;
    u.forced1 = 0;
    va_unmark(idx);
  }
}

long heap_commit(void *addr, size_t len) {
  heap_lock_guard g;
  long err = 0;
  for_units(reinterpret_cast<uintptr_t>(addr), len, [&](size_t idx, size_t first, size_t n) {
    if (!err) err = place_pages(idx, first, n, PROT_READ | PROT_WRITE);
  });
  return err;
}

long heap_discard(void *addr, size_t len, bool unplace) {
  heap_lock_guard g;
  for_units(reinterpret_cast<uintptr_t>(addr), len,
            [&](size_t idx, size_t first, size_t n) { discard_pages(idx, first, n, unplace); });
  return 0;
}

// ---- small-object allocator ----------------------------------------------

void *heap_small_reserve() {
  heap_lock_guard g;
  const size_t idx = va_alloc_in(1, 1, 0, g_mgr.small_units, g_mgr.small_cursor);
  if (idx == SIZE_MAX) return nullptr;
  unit &u = g_heap.units[idx];
  u.owner = kOwnerSmall;
  u.forced1 = 0;
  return reinterpret_cast<void *>(unit_addr(idx));
}

void heap_small_release(void *segment) {
  heap_lock_guard g;
  const size_t idx = unit_index(reinterpret_cast<uintptr_t>(segment));
  sample_settle_unit_locked(idx);
  unit &u = g_heap.units[idx];
  if (unit_tier(u) >= 0) release_unit(u, idx);
  u.owner = kOwnerFree;
  va_unmark(idx);
}

// ---- hooks -------------------------------------------------------------------

std::atomic<bool> g_extra_due{false};
std::atomic<void (*)()> g_extra_fn{nullptr};

void heap_run_start_hook() {
  if (g_extra_due.exchange(false, std::memory_order_acq_rel))
    if (void (*fn)() = g_extra_fn.load(std::memory_order_acquire)) fn();
  if (g_start_due.exchange(false, std::memory_order_acq_rel) && g_start.hook) g_start.hook();
}

void heap_before_large_slow(size_t bytes) {
  if (faults_ready() || !__atomic_load_n(&g_start.armed, __ATOMIC_RELAXED)) return;
  const config &cfg = config_get();
  if (!cfg.promote || !cfg.pmem_reserve_at_touch) return;
  bool due;
  {
    heap_lock_guard g;
    const heap_counters &c = g_mgr.counters;
    due = g_start.armed && c.units[kTierDram] + c.units[kTierPmem] + bytes / kUnitSize >= g_start.units;
  }
  // Only the fault service, which the mover starts first anyway: the rest
  // of the start (the mover, the control thread, which wants the statistics
  // page this allocation publishes) follows it as before.
  if (due) (void)faults_start();
}

void heap_start_soon(void (*fn)()) {
  g_extra_fn.store(fn, std::memory_order_release);
  g_extra_due.store(true, std::memory_order_release);
}

void heap_set_start_hook(void (*hook)(), size_t min_units) {
  heap_lock_guard g;
  g_start.hook = hook;
  g_start.units = min_units;
  g_start.armed = hook != nullptr;
  if (hook) check_start_hook();
}

void heap_set_change_hook(void (*hook)(const heap_counters &)) {
  heap_lock_guard g;
  g_change_hook = hook;
}

// ---- statistics --------------------------------------------------------------

void apply_dram_limit() {
  const size_t dram_limit = config_get().dram_limit;
  const size_t own = dram_limit == SIZE_MAX ? SIZE_MAX : dram_limit >> kUnitShift;
  const size_t limit = std::min(own, g_mgr.node_dram_units);
  if (g_mgr.counters.limit_units[kTierDram] != limit) g_mgr.counters_changed = true;
  g_mgr.counters.limit_units[kTierDram] = limit;
}

void heap_set_node_dram_limit(size_t units) {
  heap_lock_guard g;
  g_mgr.node_dram_units = units;
  apply_dram_limit();
}

void heap_counters_get(heap_counters *out) {
  heap_lock_guard g;
  *out = g_mgr.counters;
}

size_t heap_movable_units(uint32_t *units, uint8_t *tiers, size_t cap) {
  heap_lock_guard g;
  size_t n = 0;
  for_used_va_words([&](size_t w) {
    uint64_t bits = g_mgr.va_bits[w];
    while (bits && n < cap) {
      const size_t idx = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (!heap_unit_movable(idx)) continue;
      units[n] = static_cast<uint32_t>(idx);
      tiers[n] = static_cast<uint8_t>(unit_tier(g_heap.units[idx]));
      ++n;
    }
  });
  return n;
}

namespace {

// Adds the pages present in units [lo, hi) (lo a multiple of 64, hi - lo
// at most 64) to pages[].  Runs of placed, unmixed units share one mincore
// call: on the measuring VM a system call costs tens of microseconds,
// which for a pass over a large heap matters more than the page walk.  On
// a DAX tier a unit's PMem pages are what its slot stores (mincore sees
// only the pages mapped now; the others are in no cache, only in the
// storage), and a frozen unit's copies are DRAM on top of that.
void resident_range_locked(size_t lo, size_t hi, size_t pages[kTierCount], size_t *copied) {
  static unsigned char vec[64 * kPagesPerUnit];  // the heap lock guards them
  static sys::page_info info[kPagesPerUnit];
  const tier &pm = pmem_tier();
  const bool stored = pm.dax && pm.ops && pm.ops->stored;
  size_t run = lo, run_len = 0;  // units [run, run + run_len) wait for one call
  const auto flush = [&]() {
    if (!run_len) return;
    const bool whole = sys::raw(SYS_mincore, static_cast<long>(unit_addr(run)), static_cast<long>(run_len * kUnitSize),
                                reinterpret_cast<long>(vec)) == 0;
    for (size_t k = 0; k < run_len; ++k) {
      const unit &u = g_heap.units[run + k];
      const int ut = bit_get(g_mgr.va_bits, run + k) ? unit_tier(u) : -1;
      if (ut < 0 || unit_mixed(u) || (stored && ut == kTierPmem)) continue;  // a hole in the run, or counted apart
      // Unit by unit if the run could not be taken at once.
      unsigned char *v = vec + k * kPagesPerUnit;
      if (!whole && sys::raw(SYS_mincore, static_cast<long>(unit_addr(run + k)), kUnitSize, reinterpret_cast<long>(v)) < 0)
        continue;
      size_t n = 0;
      for (size_t p = 0; p < kPagesPerUnit; ++p) n += v[p] & 1;
      pages[ut] += n;
    }
    run_len = 0;
  };
  for (size_t i = lo; i < hi; ++i) {
    const unit &u = g_heap.units[i];
    const int ut = bit_get(g_mgr.va_bits, i) ? unit_tier(u) : -1;
    if (ut < 0) continue;
    const bool by_storage = stored && ut == kTierPmem;
    if (by_storage) {
      const long b = pm.ops->stored(&pm, u.slot);
      if (b > 0) pages[kTierPmem] += static_cast<size_t>(b) >> kPageShift;
      if (!unit_mixed(u)) continue;
    }
    if (unit_mixed(u)) {
      if (sys::pagemap_read(unit_addr(i), kPagesPerUnit, info))
        for (size_t p = 0; p < kPagesPerUnit; ++p) {
          if (!info[p].present) continue;
          const bool copy = sys::private_copy(info[p], pm.dax);
          if (copy || !by_storage) ++pages[copy ? kTierDram : ut];
          if (copy && u.frozen) ++*copied;
        }
      continue;
    }
    // Units between two of the run that are unplaced or mixed are skipped
    // when the run is counted (their addresses are mapped: reserved or
    // placed), so a run only ends where mincore could not go on.
    if (!run_len) run = i;
    run_len = i - run + 1;
  }
  flush();
}

std::atomic<size_t> g_frozen_copied_last{0};

}  // namespace

size_t heap_frozen_copied_last() { return g_frozen_copied_last.load(std::memory_order_relaxed); }

// Only groups of 64 units with one in use are visited (the summary of the
// address bitmap): the reservation holds millions of units, a process a few.
resident_split heap_resident_split_locked() {
  size_t pages[kTierCount] = {}, copied = 0;
  for_used_va_words([&](size_t w) { resident_range_locked(w * 64, std::min(w * 64 + 64, g_heap.nunits), pages, &copied); });
  resident_split r;
  for (int t = 0; t < kTierCount; ++t) r.bytes[t] = pages[t] << kPageShift;
  r.frozen_copied = copied << kPageShift;
  g_frozen_copied_last.store(r.frozen_copied, std::memory_order_relaxed);
  return r;
}

resident_split heap_resident_split() {
  // 64 units at a time, so that a large heap's allocations do not wait for
  // the whole pass (about 1.5 ms per GiB).  A group that gets its first
  // unit during the pass may be missed: it is counted next time.
  size_t pages[kTierCount] = {}, copied = 0;
  for_used_va_words([&](size_t w) {
    heap_lock_guard g;
    resident_range_locked(w * 64, std::min(w * 64 + 64, g_heap.nunits), pages, &copied);
  });
  resident_split r;
  for (int t = 0; t < kTierCount; ++t) r.bytes[t] = pages[t] << kPageShift;
  r.frozen_copied = copied << kPageShift;
  g_frozen_copied_last.store(r.frozen_copied, std::memory_order_relaxed);
  return r;
}

size_t heap_resident_bytes(int t) {
  if (t < 0 || t >= kTierCount) return 0;
  return heap_resident_split().bytes[t];
}

}  // namespace mmtier::detail
