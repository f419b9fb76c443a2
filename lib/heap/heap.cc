// Heap layer (see heap.h): the reservation, the unit table, address
// allocation inside the reservation, and placing, discarding and releasing
// pages of units on their tiers.
#include "heap/heap.h"

#include "heap/faults.h"
#include "heap/placement.h"
#include "heap/sample.h"
#include "platform/sys.h"
#include "platform/uffd.h"
#include "platform/fd_guard.h"
#include "support/log.h"
#include "support/meta.h"

#include <cerrno>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

namespace mmtier::detail {

heap_globals g_heap;
std::atomic<bool> g_start_due{false};

namespace {

constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
constexpr size_t kPackedCandidates = 8;

struct heap_state {
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  tier tiers[kTierCount];
  uint64_t *va_bits = nullptr;  // unit in use
  size_t va_cursor = 0;        // next-fit cursor of the general zone
  size_t small_cursor = 0;     // and of the small zone
  size_t small_units = 0;      // units [0, small_units) are the small zone
  size_t packed[kPackedCandidates] = {};  // unit indices with free pages (0: none)
  size_t packed_next = 0;
  heap_counters counters = {};
  bool counters_changed = false;  // since the change hook last ran
  // Migration copies (see "copies" below): a pipe for demotion, a staging
  // area for promotion; made on first use.
  int pipe_r = -1, pipe_w = -1;
  size_t pipe_cap = 0;
  bool pipe_failed = false;
  char *staging = nullptr;
  bool warned_fallback[kTierCount] = {};
};

heap_state S;

// The change hook (heap_set_change_hook): runs before the heap lock is
// released when a counter changed.
void (*g_change_hook)(const heap_counters &) = nullptr;

void unlock_heap() {
  if (S.counters_changed) {
    S.counters_changed = false;
    if (g_change_hook) g_change_hook(S.counters);
  }
  pthread_mutex_unlock(&S.lock);
}

struct lock_guard {
  lock_guard() { pthread_mutex_lock(&S.lock); }
  ~lock_guard() { unlock_heap(); }
};

// The start hook (heap_set_start_hook): armed until it is due; due once
// the heap is big enough (g_start_due, heap.h).
void (*g_start_hook)() = nullptr;
size_t g_start_units = 0;
bool g_start_armed = false;

void check_start_hook() {
  if (g_start_armed && S.counters.units[kTierDram] + S.counters.units[kTierPmem] >= g_start_units) {
    g_start_armed = false;
    g_start_due.store(true, std::memory_order_release);
  }
}

inline uintptr_t unit_addr(size_t idx) { return g_heap.base + (idx << kUnitShift); }
inline size_t unit_index(uintptr_t a) { return (a - g_heap.base) >> kUnitShift; }

inline bool bit_get(const uint64_t *w, size_t i) { return (w[i >> 6] >> (i & 63)) & 1; }
inline void bit_set(uint64_t *w, size_t i) { w[i >> 6] |= uint64_t{1} << (i & 63); }
inline void bit_clear(uint64_t *w, size_t i) { w[i >> 6] &= ~(uint64_t{1} << (i & 63)); }

// Calls fn(first, count) for each maximal run in [lo, hi) of pages whose bit
// in bits equals want.
template <class Fn>
void for_runs(const uint64_t *bits, size_t lo, size_t hi, bool want, Fn &&fn) {
  size_t i = lo;
  while (i < hi) {
    while (i < hi && bit_get(bits, i) != want) ++i;
    size_t start = i;
    while (i < hi && bit_get(bits, i) == want) ++i;
    if (i > start) fn(start, i - start);
  }
}

long reserve_range(uintptr_t addr, size_t len) {
  long r = sys::mmap(reinterpret_cast<void *>(addr), len, PROT_NONE, kReserveFlags | MAP_FIXED, -1, 0);
  return sys::failed(r) ? r : 0;
}

// ---- address allocation (units) --------------------------------------

bool va_free_run(size_t idx, size_t n) {
  if (idx + n > g_heap.nunits) return false;
  for (size_t i = idx; i < idx + n; ++i)
    if (bit_get(S.va_bits, i)) return false;
  return true;
}

void va_claim(size_t idx, size_t n) {
  for (size_t i = idx; i < idx + n; ++i) bit_set(S.va_bits, i);
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
      if ((i & 63) == 0 && i + 64 <= hi && S.va_bits[i >> 6] == ~uint64_t{0}) {
        i += 64;
        continue;
      }
      size_t j = 0;
      while (j < n && !bit_get(S.va_bits, i + j)) ++j;
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

// Units for the engine and application mappings: outside the small zone.
size_t va_alloc(size_t n, size_t align) {
  return va_alloc_in(n, align, S.small_units, g_heap.nunits, S.va_cursor);
}

// ---- units -----------------------------------------------------------

tier &tier_of_unit(const unit &u) { return S.tiers[unit_tier(u)]; }

// The PMem tier keeps a warm slot for each unit on DRAM (placed by policy),
// so that a demotion finds its storage allocated: allocating page-cache
// pages is most of a demotion's cost (5-8 us a page on this machine,
// against 0.3 us to copy one).  That is PMem capacity held for the units
// that may come back, never more than DRAM holds; it is given back when
// DRAM shrinks and whenever the PMem tier runs out of room.
void keep_warm(size_t limit) {
  tier &pm = S.tiers[kTierPmem];
  pm.warm_limit = static_cast<uint32_t>(std::min<size_t>(limit, tier::kWarmMax));
  while (pm.warm_count > pm.warm_limit && pm.ops && pm.ops->slot_take_warm) {
    long s = pm.ops->slot_take_warm(&pm);
    if (s < 0) break;
    pm.ops->slot_free(&pm, static_cast<uint32_t>(s));
  }
}

void count_unit(const unit &u, int t, int delta) {
  S.counters.units[t] += static_cast<size_t>(delta);
  if (u.by_policy) S.counters.policy_units[t] += static_cast<size_t>(delta);
  if (S.counters.units[t] > S.counters.peak_units[t]) S.counters.peak_units[t] = S.counters.units[t];
  S.counters_changed = true;
}

// The PMem slot that would let unit idx's mapping merge with a neighbour's:
// the one after its lower neighbour's slot, else the one before its upper
// neighbour's (a mapping merges with the next only when their file offsets
// run on).  -1 when neither neighbour is a plain PMem unit.  Every
// migration otherwise leaves a mapping of its own (vm.max_map_count).
long neighbour_slot(size_t idx) {
  auto plain_pmem = [](const unit &n) { return unit_tier(n) == kTierPmem && !unit_mixed(n); };
  if (idx > 0 && plain_pmem(g_heap.units[idx - 1]) && g_heap.units[idx - 1].slot != UINT32_MAX)
    return static_cast<long>(g_heap.units[idx - 1].slot) + 1;
  if (idx + 1 < g_heap.nunits && plain_pmem(g_heap.units[idx + 1]) && g_heap.units[idx + 1].slot > 0)
    return static_cast<long>(g_heap.units[idx + 1].slot) - 1;
  return -1;
}

// The slot neighbour_slot(idx) names, taken from the PMem tier if it is
// free in a way `from` allows (kTakeWarm, kTakeFree), else -ENOENT.
long pmem_slot_for(size_t idx, int from) {
  tier &pm = S.tiers[kTierPmem];
  const long want = neighbour_slot(idx);
  if (want < 0 || !pm.ops->slot_take) return -ENOENT;
  return pm.ops->slot_take(&pm, static_cast<uint32_t>(want), from);
}

// Places an unplaced unit on a tier; returns the tier or -errno.
long place_unit(unit &u) {
  placement_input in;
  for (int t = 0; t < kTierCount; ++t) {
    in.units[t] = S.counters.units[t];
    in.policy_units[t] = S.counters.policy_units[t];
    in.limit_units[t] = S.counters.limit_units[t];
    in.usable[t] = S.tiers[t].usable;
  }
  const size_t idx = static_cast<size_t>(&u - g_heap.units);
  if (idx > 0 && g_heap.units[idx - 1].by_policy && !g_heap.units[idx - 1].frozen)
    in.neighbour = unit_tier(g_heap.units[idx - 1]);
  placement_result pr = choose_tier(in, config_get(), static_cast<int>(u.forced1) - 1);
  int t = pr.tier;
  uint32_t slot = 0;
  if (S.tiers[t].ops->slot_alloc) {
    // A fresh unit reads as zero: a warm slot would need its stale contents
    // dropped first.
    long s = t == kTierPmem ? pmem_slot_for(idx, kTakeFree) : -ENOENT;
    if (s < 0) s = S.tiers[t].ops->slot_alloc(&S.tiers[t]);
    if (s < 0) {
      if (t == kTierDram) return s;
      if (!S.warned_fallback[t]) {
        S.warned_fallback[t] = true;
        MMTIER_WARN("PMem tier cannot take more memory (error %ld); placing on DRAM instead", -s);
      }
      t = kTierDram;
      pr.fallback = true;
    } else {
      slot = static_cast<uint32_t>(s);
    }
  }
  if (pr.fallback) {
    ++S.counters.fallbacks;
    S.counters_changed = true;
    if (!S.warned_fallback[kTierDram] && t == kTierDram) {
      S.warned_fallback[kTierDram] = true;
      MMTIER_WARN("%s; placing beyond the DRAM budget",
                  S.tiers[kTierPmem].usable ? "PMem tier is full" : "PMem tier is unavailable");
    }
  }
  u.slot = slot;
  u.by_policy = u.forced1 == 0;
  u.tier1.store(static_cast<uint8_t>(t + 1), std::memory_order_release);
  count_unit(u, t, +1);
  check_start_hook();
  return t;
}

// Gives a unit's tier placement back; the unit's addresses become reserved
// (PROT_NONE) again.  Slots frozen by fork are never reused.
void release_unit(unit &u, size_t idx) {
  const int t = unit_tier(u);
  if (t >= 0) {
    reserve_range(unit_addr(idx), kUnitSize);
    if (!u.frozen && S.tiers[t].ops->slot_free) S.tiers[t].ops->slot_free(&S.tiers[t], u.slot);
    count_unit(u, t, -1);
    if (t == kTierDram && S.tiers[kTierPmem].warm_count > S.counters.policy_units[kTierDram])
      keep_warm(S.counters.policy_units[kTierDram]);
  }
  u.tier1.store(0, std::memory_order_release);
  u.frozen = 0;
  u.spilled = 0;
  u.custom_prot = 0;
  u.live = 0;
  memset(u.live_bits, 0, sizeof u.live_bits);
}

// Maps pages [first, first + n) of a placed unit on its tier with prot.  A
// mixed unit gets anonymous pages instead: writing a frozen file would show
// through to the other process, and a spilled unit's tier has no room.
long map_pages(unit &u, size_t idx, size_t first, size_t n, int prot) {
  tier &t = tier_of_unit(u);
  void *addr = reinterpret_cast<void *>(unit_addr(idx) + (first << kPageShift));
  const size_t len = n << kPageShift, off = first << kPageShift;
  if (unit_mixed(u)) return S.tiers[kTierDram].ops->map(&S.tiers[kTierDram], addr, len, prot, 0, 0);
  long r = t.ops->reserve(&t, u.slot, off, len);
  if (r == -ENOSPC && t.warm_count) {
    // Room held for demotions comes second to memory asked for now.
    keep_warm(0);
    r = t.ops->reserve(&t, u.slot, off, len);
  }
  if (r < 0) return r;
  return t.ops->map(&t, addr, len, prot, u.slot, off);
}

void warn_full(int tier, long err) {
  ++S.counters.fallbacks;
  S.counters_changed = true;
  if (!S.warned_fallback[tier]) {
    S.warned_fallback[tier] = true;
    MMTIER_WARN("PMem tier is full (error %ld); placing on DRAM instead", -err);
  }
}

// Places pages [first, first + n) of unit idx that are not yet live.
long place_pages(size_t idx, size_t first, size_t n, int prot) {
  unit &u = g_heap.units[idx];
  if (unit_tier(u) < 0) {
    long t = place_unit(u);
    if (t < 0) return t;
  }
  long err = 0;
  for_runs(u.live_bits, first, first + n, false, [&](size_t a, size_t c) {
    if (err) return;
    long r = map_pages(u, idx, a, c, prot);
    if (r < 0 && unit_tier(u) != kTierDram) {
      const int old = unit_tier(u);
      warn_full(old, r);
      if (u.live == 0) {
        // A fresh unit whose tier ran out of room: the whole unit goes to DRAM.
        if (S.tiers[old].ops->slot_free) S.tiers[old].ops->slot_free(&S.tiers[old], u.slot);
        count_unit(u, old, -1);
        u.tier1.store(kTierDram + 1, std::memory_order_release);
        count_unit(u, kTierDram, +1);
      } else {
        // Pages already live stay where they are; the new ones are DRAM.
        u.spilled = 1;
      }
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

// Drops the contents of live pages in [first, first + n) of unit idx.  With
// unplace they also stop being live, and a unit left with no live page (and,
// for application units, no owned page) gives its placement back.
void discard_pages(size_t idx, size_t first, size_t n, bool unplace) {
  unit &u = g_heap.units[idx];
  if (unit_tier(u) < 0) return;
  sample_settle_unit_locked(idx);
  tier &t = tier_of_unit(u);
  for_runs(u.live_bits, first, first + n, true, [&](size_t a, size_t c) {
    void *addr = reinterpret_cast<void *>(unit_addr(idx) + (a << kPageShift));
    const size_t len = c << kPageShift;
    if (unit_mixed(u)) {
      // Cannot punch a frozen file, and a spilled unit's pages may be
      // anonymous: replace with fresh anonymous pages (and give a spilled
      // unit's file storage back).
      int prot = unplace ? PROT_READ | PROT_WRITE : sys::query_prot(addr);
      if (prot < 0) prot = PROT_READ | PROT_WRITE;
      S.tiers[kTierDram].ops->map(&S.tiers[kTierDram], addr, len, prot, 0, 0);
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

// Moves every live page of a file-backed unit to anonymous DRAM pages at the
// same addresses, keeping each page's protection.  Used when the file's
// filesystem refuses an mprotect (PROT_EXEC on a noexec mount: JIT code).
// The copy is made beside the unit and moved over it with one mremap, so a
// reader never sees a half-copied page; concurrent writers are not expected
// on memory whose protection the application is changing.
long move_unit_to_dram(size_t idx) {
  unit &u = g_heap.units[idx];
  sample_settle_unit_locked(idx);
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
  if (!u.frozen && S.tiers[old].ops->slot_free) S.tiers[old].ops->slot_free(&S.tiers[old], u.slot);
  count_unit(u, old, -1);
  u.frozen = 0;
  u.spilled = 0;
  u.tier1.store(kTierDram + 1, std::memory_order_release);
  count_unit(u, kTierDram, +1);
  return 0;
}

// Calls fn(idx, first_page, npages) for each unit overlapping [addr, addr+len).
template <class Fn>
void for_units(uintptr_t addr, size_t len, Fn &&fn) {
  uintptr_t end = addr + len;
  while (addr < end) {
    size_t idx = unit_index(addr);
    uintptr_t ubase = unit_addr(idx);
    uintptr_t uend = ubase + kUnitSize < end ? ubase + kUnitSize : end;
    fn(idx, (addr - ubase) >> kPageShift, (uend - addr) >> kPageShift);
    addr = uend;
  }
}

// ---- application mappings --------------------------------------------

// Marks pages owned by an application mapping.
void own_pages(size_t idx, size_t first, size_t n, uint8_t owner) {
  unit &u = g_heap.units[idx];
  if (u.owner == kOwnerFree) {
    u.owner = owner;
    u.forced1 = 0;
    bit_set(S.va_bits, idx);
  }
  for (size_t i = first; i < first + n; ++i) {
    if (!bit_get(u.owned_bits, i)) {
      bit_set(u.owned_bits, i);
      ++u.owned;
    }
  }
}

void remember_packed(size_t idx) {
  for (size_t c : S.packed)
    if (c == idx + 1) return;
  S.packed[S.packed_next] = idx + 1;
  S.packed_next = (S.packed_next + 1) % kPackedCandidates;
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
  S.counters.mmap_bytes -= dropped << kPageShift;
  S.counters_changed = true;
  // Back to reserved addresses (also over a mapping of the application's own
  // that a MAP_FIXED put here, see heap_forget).
  reserve_range(unit_addr(idx) + (first << kPageShift), n << kPageShift);
  if (u.owned == 0) {
    if (unit_tier(u) >= 0) release_unit(u, idx);
    u.owner = kOwnerFree;
    bit_clear(S.va_bits, idx);
    for (size_t &c : S.packed)
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

// ---- initialisation ----------------------------------------------------

bool heap_init() {
  static const size_t sizes[] = {size_t{8} << 40, size_t{2} << 40, size_t{512} << 30,
                                 size_t{64} << 30, size_t{8} << 30};
  for (size_t want : sizes) {
    long r = sys::mmap(nullptr, want + kUnitSize, PROT_NONE, kReserveFlags, -1, 0);
    if (sys::failed(r)) continue;
    uintptr_t raw = static_cast<uintptr_t>(r);
    uintptr_t base = align_up(raw, kUnitSize);
    if (base > raw) sys::munmap(reinterpret_cast<void *>(raw), base - raw);
    uintptr_t tail = raw + want + kUnitSize;
    if (tail > base + want) sys::munmap(reinterpret_cast<void *>(base + want), tail - (base + want));
    g_heap.base = base;
    g_heap.size = want;
    g_heap.nunits = want >> kUnitShift;
    // One eighth of the addresses (1 TiB of 8) for small-object segments.
    S.small_units = g_heap.nunits / 8;
    g_heap.small_size = S.small_units << kUnitShift;
    break;
  }
  if (!g_heap.size) {
    MMTIER_ERROR("cannot reserve an address range for the managed heap");
    return false;
  }
  g_heap.units = static_cast<unit *>(meta_map(g_heap.nunits * sizeof(unit)));
  S.va_bits = static_cast<uint64_t *>(meta_map((g_heap.nunits + 63) / 64 * 8));
  if (!g_heap.units || !S.va_bits) {
    MMTIER_ERROR("cannot map the unit table");
    sys::munmap(reinterpret_cast<void *>(g_heap.base), g_heap.size);
    g_heap = heap_globals{};
    return false;
  }
  const config &cfg = config_get();
  S.tiers[kTierDram].ops = &dram_tier_ops;
  S.tiers[kTierDram].index = kTierDram;
  S.tiers[kTierPmem].ops = &file_tier_ops;
  S.tiers[kTierPmem].index = kTierPmem;
  for (auto &t : S.tiers) (void)t.ops->open(&t, cfg);
  S.counters.limit_units[kTierDram] = cfg.dram_limit == SIZE_MAX ? SIZE_MAX : cfg.dram_limit >> kUnitShift;
  S.counters.limit_units[kTierPmem] = cfg.pmem_limit == SIZE_MAX ? SIZE_MAX : cfg.pmem_limit >> kUnitShift;
  if (cfg.policy == policy_kind::ratio && cfg.ratio_dram == 0 && !S.tiers[kTierPmem].usable)
    MMTIER_WARN("MMTIER_DRAM_RATIO gives DRAM nothing but the PMem tier is unavailable");
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
    if (sys::pagemap_read(align_down(a, kPageSize), 1, &pi) && pi.present && !pi.file)
      return kTierDram;
  }
  return t;
}

// ---- allocator engine ------------------------------------------------------

void *heap_engine_reserve(void *want, size_t size, size_t align, int forced) {
  const size_t n = (size + kUnitSize - 1) >> kUnitShift;
  size_t align_units = align > kUnitSize ? align >> kUnitShift : 1;
  lock_guard g;
  size_t idx;
  if (want) {
    uintptr_t w = reinterpret_cast<uintptr_t>(want);
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
  lock_guard g;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const size_t n = (size + kUnitSize - 1) >> kUnitShift;
  for (size_t idx = unit_index(a); idx < unit_index(a) + n; ++idx) {
    sample_settle_unit_locked(idx);
    unit &u = g_heap.units[idx];
    if (unit_tier(u) >= 0) release_unit(u, idx);
    u.owner = kOwnerFree;
    u.forced1 = 0;
    bit_clear(S.va_bits, idx);
  }
}

// ---- small-object allocator ----------------------------------------------

void *heap_small_reserve() {
  lock_guard g;
  size_t idx = va_alloc_in(1, 1, 0, S.small_units, S.small_cursor);
  if (idx == SIZE_MAX) return nullptr;
  unit &u = g_heap.units[idx];
  u.owner = kOwnerSmall;
  u.forced1 = 0;
  return reinterpret_cast<void *>(unit_addr(idx));
}

void heap_small_release(void *segment) {
  lock_guard g;
  const size_t idx = unit_index(reinterpret_cast<uintptr_t>(segment));
  sample_settle_unit_locked(idx);
  unit &u = g_heap.units[idx];
  if (unit_tier(u) >= 0) release_unit(u, idx);
  u.owner = kOwnerFree;
  bit_clear(S.va_bits, idx);
}

long heap_commit(void *addr, size_t len) {
  lock_guard g;
  long err = 0;
  for_units(reinterpret_cast<uintptr_t>(addr), len, [&](size_t idx, size_t first, size_t n) {
    if (!err) err = place_pages(idx, first, n, PROT_READ | PROT_WRITE);
  });
  return err;
}

long heap_discard(void *addr, size_t len, bool unplace) {
  lock_guard g;
  for_units(reinterpret_cast<uintptr_t>(addr), len,
            [&](size_t idx, size_t first, size_t n) { discard_pages(idx, first, n, unplace); });
  return 0;
}

// ---- application mappings --------------------------------------------------

long heap_mmap(void *hint, size_t len, int prot, int flags, void **out, int forced) {
  len = align_up(len, kPageSize);
  const size_t pages = len >> kPageShift;
  lock_guard g;
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
    for (size_t c : S.packed) {
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
  S.counters.mmap_bytes += len;
  S.counters_changed = true;
  long r = map_app(addr, len, prot);
  if (r < 0) {
    for_units(addr, len, [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
    return r;
  }
  if (flags & MAP_POPULATE) sys::madvise(reinterpret_cast<void *>(addr), len, MADV_POPULATE_WRITE);
  *out = reinterpret_cast<void *>(addr);
  return 0;
}

long heap_munmap(void *addr, size_t len) {
  lock_guard g;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
  return 0;
}

void heap_forget(void *addr, size_t len) {
  // The kernel already replaced the pages with the application's mapping;
  // the addresses stay claimed (owned but never live) until it unmaps them.
  lock_guard g;
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
  lock_guard g;
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
              if (prot != (PROT_READ | PROT_WRITE)) u.custom_prot = 1;
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

long heap_madvise(void *addr, size_t len, int advice) {
  lock_guard g;
  long err = 0;
  const bool drop = advice == MADV_DONTNEED || advice == MADV_REMOVE || advice == MADV_FREE ||
                    advice == MADV_DONTNEED_LOCKED;
  for_units(reinterpret_cast<uintptr_t>(addr), align_up(len, kPageSize),
            [&](size_t idx, size_t first, size_t n) {
              unit &u = g_heap.units[idx];
              if (unit_tier(u) < 0) return;
              sample_settle_unit_locked(idx);
              if (drop) {
                discard_pages(idx, first, n, false);
                return;
              }
              // Advice kept in the mapping (WIPEONFORK, DONTFORK, DONTDUMP,
              // HUGEPAGE, MERGEABLE, ...) would be lost by a migration's new
              // mapping: such a unit stays where it is.
              if (advice != MADV_NORMAL && advice != MADV_RANDOM && advice != MADV_SEQUENTIAL &&
                  advice != MADV_WILLNEED && advice != MADV_COLD && advice != MADV_PAGEOUT &&
                  advice != MADV_POPULATE_READ && advice != MADV_POPULATE_WRITE)
                u.custom_prot = 1;
              const uintptr_t ubase = unit_addr(idx);
              for_runs(u.live_bits, first, first + n, true, [&](size_t a, size_t c) {
                long r = sys::madvise(reinterpret_cast<void *>(ubase + (a << kPageShift)),
                                      c << kPageShift, advice);
                if (r < 0 && !err) err = r;
              });
            });
  return err;
}

long heap_mremap(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr,
                 void **out) {
  const uintptr_t old = reinterpret_cast<uintptr_t>(old_addr);
  old_len = align_up(old_len, kPageSize);
  new_len = align_up(new_len, kPageSize);
  if ((old & (kPageSize - 1)) || new_len == 0 || old_len == 0) return -EINVAL;
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED)) return -EINVAL;  // DONTUNMAP: not for managed memory
  if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  int prot;
  {
    lock_guard g;
    bool whole = true;
    for_units(old, old_len, [&](size_t idx, size_t first, size_t n) {
      unit &u = g_heap.units[idx];
      if (u.owner != kOwnerMmap && u.owner != kOwnerPacked) {
        whole = false;
        return;
      }
      for (size_t i = first; i < first + n; ++i)
        if (!bit_get(u.owned_bits, i)) whole = false;
    });
    if (!whole) return -EFAULT;
  }
  prot = sys::query_prot(reinterpret_cast<void *>(old + old_len - kPageSize));
  if (prot < 0) prot = PROT_NONE;
  if (!(flags & MREMAP_FIXED)) {
    if (new_len <= old_len) {
      if (new_len < old_len) heap_munmap(reinterpret_cast<void *>(old + new_len), old_len - new_len);
      *out = old_addr;
      return 0;
    }
    // Grow in place when the following addresses are free.
    lock_guard g;
    bool room = heap_contains(reinterpret_cast<void *>(old + new_len - 1));
    const uintptr_t grow = old + old_len;
    if (room) {
      for_units(grow, new_len - old_len, [&](size_t idx, size_t first, size_t n) {
        unit &u = g_heap.units[idx];
        if (u.owner == kOwnerFree) return;
        if (u.owner != kOwnerMmap && u.owner != kOwnerPacked) {
          room = false;
          return;
        }
        for (size_t i = first; i < first + n; ++i)
          if (bit_get(u.owned_bits, i)) room = false;
      });
    }
    if (room) {
      for_units(grow, new_len - old_len, [&](size_t idx, size_t first, size_t n) {
        const uint8_t owner = g_heap.units[idx].owner;
        own_pages(idx, first, n, owner == kOwnerFree ? uint8_t{kOwnerMmap} : owner);
      });
      S.counters.mmap_bytes += new_len - old_len;
      S.counters_changed = true;
      long r = map_app(grow, new_len - old_len, prot);
      if (r == 0) {
        *out = old_addr;
        return 0;
      }
      for_units(grow, new_len - old_len, [&](size_t idx, size_t first, size_t n) { unmap_app_pages(idx, first, n); });
    }
    if (!(flags & MREMAP_MAYMOVE)) return -ENOMEM;
  }
  // Move: a new managed mapping, a copy of the contents, then unmap the old.
  void *dst = nullptr;
  long r;
  if (flags & MREMAP_FIXED) {
    const uintptr_t na = reinterpret_cast<uintptr_t>(new_addr);
    if ((na & (kPageSize - 1)) || (na < old + old_len && old < na + new_len)) return -EINVAL;
    if (heap_contains(new_addr) && heap_contains(reinterpret_cast<void *>(na + new_len - 1))) {
      r = heap_mmap(new_addr, new_len, PROT_READ | PROT_WRITE, MAP_FIXED, &dst);
    } else {
      long m = sys::mmap(new_addr, new_len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      r = sys::failed(m) ? m : 0;
      dst = new_addr;
    }
  } else {
    r = heap_mmap(nullptr, new_len, PROT_READ | PROT_WRITE, 0, &dst);
  }
  if (r < 0) return r;
  const size_t copy = old_len < new_len ? old_len : new_len;
  // The source is unmapped right after: make all of it readable (guard pages
  // in the middle included) so the copy cannot fault.
  sys::mprotect(old_addr, copy, PROT_READ);
  memcpy(dst, old_addr, copy);
  if (prot != (PROT_READ | PROT_WRITE)) {
    if (heap_contains(dst)) heap_mprotect(dst, new_len, prot);
    else sys::mprotect(dst, new_len, prot);
  }
  heap_munmap(old_addr, old_len);
  *out = dst;
  return 0;
}


// ---- migration ---------------------------------------------------------------
//
// Both directions keep the unit's addresses and run under the heap lock, so
// no other heap operation sees a unit half-moved.  Only live pages move; a
// unit's other pages are reserved (PROT_NONE) and stay so.

namespace {

void retier(unit &u, int to, uint32_t slot) {
  const int from = unit_tier(u);
  tier &old = S.tiers[from];
  if (from == kTierPmem) keep_warm(S.counters.policy_units[kTierDram] + 1);
  if (old.ops->slot_recycle) old.ops->slot_recycle(&old, u.slot);
  else if (old.ops->slot_free) old.ops->slot_free(&old, u.slot);
  count_unit(u, from, -1);
  u.slot = slot;
  u.tier1.store(static_cast<uint8_t>(to + 1), std::memory_order_release);
  count_unit(u, to, +1);
}

// ---- copies ------------------------------------------------------------
//
// Where the cost of a migration goes is the first access to each page
// through a mapping that has not touched it: on a machine with shadow page
// tables (this one) the kernel's first read of a page the application
// wrote costs about as much as a page fault, 5-8 us, against 0.3 us to
// copy it.  So neither direction reads or writes the unit through a fresh
// mapping in the kernel:
// - demotion gives the unit's pages to a pipe (vmsplice: the kernel takes
//   them by walking the page tables, not through the mapping) and splices
//   them into the slot; 5 GB/s here against 0.5 for pwrite;
// - promotion reads the slot into one staging area that stays mapped (and
//   so stays warm) and copies from there; 3.3 GB/s against 1.2 from a
//   fresh view of the slot.
// Either falls back to the plain copy when its means are missing.

void pipe_drop() {
  if (S.pipe_r >= 0) {
    fd_unguard(S.pipe_r);
    fd_unguard(S.pipe_w);
    sys::close(S.pipe_r);
    sys::close(S.pipe_w);
  }
  S.pipe_r = S.pipe_w = -1;
  S.pipe_cap = 0;
}

bool pipe_ready() {
  if (S.pipe_r >= 0) return true;
  if (S.pipe_failed) return false;
  int p[2];
  if (sys::raw(SYS_pipe2, reinterpret_cast<long>(p), O_CLOEXEC | O_NONBLOCK) < 0) {
    S.pipe_failed = true;
    return false;
  }
  // The default size (64 KiB): a larger pipe would count against the
  // user's pipe quota (fs.pipe-user-pages-soft) in every process.
  long cap = sys::raw(SYS_fcntl, p[1], F_GETPIPE_SZ);
  if (cap <= 0) {
    sys::close(p[0]);
    sys::close(p[1]);
    S.pipe_failed = true;
    return false;
  }
  const int r = fd_guard(p[0]);
  const int w = r < 0 ? -1 : fd_guard(p[1]);
  if (w < 0) {
    // Never use a pipe the application could close and reuse: its data
    // would go into the tier's file.
    if (r >= 0) {
      fd_unguard(r);
      sys::close(r);
    } else {
      sys::close(p[0]);
    }
    sys::close(p[1]);
    S.pipe_failed = true;
    return false;
  }
  S.pipe_r = r;
  S.pipe_w = w;
  S.pipe_cap = static_cast<size_t>(cap);
  return true;
}

// Copies [src, src + len) into fd at off through the pipe; 0 or -errno.
// After a failure the pipe may hold pages: it is dropped (a new one is
// made next time).
long splice_copy(int fd, const char *src, size_t len, off_t off) {
  if (!pipe_ready()) return -EOPNOTSUPP;
  const auto fail = [](long err) {
    pipe_drop();
    // A file system that cannot splice never will: stop trying.
    if (err == -EINVAL || err == -EOPNOTSUPP) S.pipe_failed = true;
    return err;
  };
  size_t done = 0;
  while (done < len) {
    iovec v = {const_cast<char *>(src + done), std::min(len - done, S.pipe_cap)};
    long n = sys::raw(SYS_vmsplice, S.pipe_w, reinterpret_cast<long>(&v), 1, 0);
    if (n == -EINTR) continue;
    if (n <= 0) return fail(n ? n : -EIO);
    loff_t at = off + static_cast<off_t>(done);
    for (long left = n; left > 0;) {
      long m = sys::raw(SYS_splice, S.pipe_r, 0, fd, reinterpret_cast<long>(&at), left, 0);
      if (m == -EINTR) continue;
      if (m <= 0) return fail(m ? m : -EIO);
      left -= m;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

long pwrite_all(int fd, const char *src, size_t len, off_t off) {
  size_t done = 0;
  while (done < len) {
    long w = sys::pwrite(fd, src + done, len - done, off + static_cast<off_t>(done));
    if (w > 0) done += static_cast<size_t>(w);
    else if (w != -EINTR) return w ? w : -EIO;
  }
  return 0;
}

// The unit's data into its slot (the unit is write-protected meanwhile).
long copy_to_slot(int fd, const char *src, size_t len, off_t off) {
  long r = splice_copy(fd, src, len, off);
  return r == 0 ? 0 : pwrite_all(fd, src, len, off);
}

// The promotion staging area: one unit, mapped for good (huge page where
// the kernel gives one); nullptr if it cannot be had.
char *staging() {
  if (S.staging) return S.staging;
  long m = sys::mmap(nullptr, 2 * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(m)) return nullptr;
  const uintptr_t lo = static_cast<uintptr_t>(m), at = (lo + kUnitSize - 1) & ~(kUnitSize - 1);
  if (at > lo) sys::munmap(reinterpret_cast<void *>(lo), at - lo);
  if (at + kUnitSize < lo + 2 * kUnitSize)
    sys::munmap(reinterpret_cast<void *>(at + kUnitSize), lo + 2 * kUnitSize - at - kUnitSize);
  sys::madvise(reinterpret_cast<void *>(at), kUnitSize, MADV_HUGEPAGE);
  S.staging = reinterpret_cast<char *>(at);
  return S.staging;
}

// Reads [off, off + len) of the slot into the staging area at the same
// offset; false if it could not (the caller copies from its own view).
bool stage(int fd, off_t slot_off, size_t off, size_t len) {
  char *st = staging();
  if (!st) return false;
  size_t done = 0;
  while (done < len) {
    long r = sys::pread(fd, st + off + done, len - done, slot_off + static_cast<off_t>(off + done));
    if (r > 0) done += static_cast<size_t>(r);
    else if (r != -EINTR) return false;
  }
  return true;
}

// PMem -> DRAM.  Each live run is replaced, in one mremap, by anonymous
// memory registered for missing pages; from then on the fault service fills
// any page touched from a second view of the file slot, while this thread
// copies the rest in bulk.  Nothing can write the file slot once the run is
// replaced, so the copy is of a stable source.
long promote(size_t idx) {
  unit &u = g_heap.units[idx];
  tier &pm = S.tiers[kTierPmem];
  const int fd = faults_fd();
  const uintptr_t ubase = unit_addr(idx);
  const off_t slot_off = static_cast<off_t>(u.slot) << kUnitShift;
  // The fault service's view of the slot (the bulk copy reads it through
  // the staging area instead, when there is one).
  long a = sys::mmap(nullptr, kUnitSize, PROT_READ, MAP_SHARED, pm.fd, slot_off);
  if (sys::failed(a)) return a;
  const char *alias = reinterpret_cast<const char *>(a);
  faults_postcopy_open(reinterpret_cast<void *>(ubase), alias, kUnitSize);
  long err = 0;
  size_t swapped_runs = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (err) return;
    const size_t len = n << kPageShift;
    long t = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sys::failed(t)) {
      err = t;
      return;
    }
    long r = sys::uffd::register_range(fd, reinterpret_cast<void *>(t), len, UFFDIO_REGISTER_MODE_MISSING);
    if (r == 0) {
      long m = sys::mremap(reinterpret_cast<void *>(t), len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
                           reinterpret_cast<void *>(ubase + (first << kPageShift)));
      r = sys::failed(m) ? m : 0;
    }
    if (r < 0) {
      sys::munmap(reinterpret_cast<void *>(t), len);
      err = r;
      return;
    }
    ++swapped_runs;
  });
  // Copy whatever the faults did not: also after a failure, for the runs
  // that were swapped (their only copy of the data is the file slot).
  bool partial = false;
  size_t run = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (run++ >= swapped_runs) return;
    // The slot cannot change now: nothing maps it writable any more.
    const char *src = stage(pm.fd, slot_off, first << kPageShift, n << kPageShift) ? S.staging : alias;
    int tries = 0;
    for (size_t pg = first; pg < first + n;) {
      char *dst = reinterpret_cast<char *>(ubase + (pg << kPageShift));
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
        // The page cannot be filled: put the file page back in its place
        // (its data is still there) and keep the slot.
        MMTIER_ERROR("promotion of unit %zu: copy failed (error %ld); the unit stays partly on PMem", idx, -r);
        if (pm.ops->map(&pm, dst, kPageSize, PROT_READ | PROT_WRITE, u.slot, pg << kPageShift) < 0)
          MMTIER_ERROR("promotion of unit %zu: page %p lost its mapping", idx, static_cast<void *>(dst));
        partial = true;
        tries = 0;
        ++pg;
      }
    }
  });
  run = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (run++ < swapped_runs)
      sys::uffd::unregister_range(fd, reinterpret_cast<void *>(ubase + (first << kPageShift)), n << kPageShift);
  });
  faults_postcopy_close();
  sys::munmap(const_cast<char *>(alias), kUnitSize);
  if (err || partial) {
    if (swapped_runs) {
      // Partly moved: the swapped runs are anonymous now.  The unit keeps
      // its slot for the rest and is read page by page from now on.
      u.spilled = 1;
    }
    return err ? err : -EIO;
  }
  retier(u, kTierDram, 0);
  return static_cast<long>(u.live) << kPageShift;
}

// DRAM -> PMem.  Writers are held off by write-protecting the live runs
// (never-touched pages too), the runs are written into a fresh file slot and
// it is mapped over them, and the waiting writers are woken: they retry on
// the new mapping.  Readers never wait.
long demote(size_t idx) {
  unit &u = g_heap.units[idx];
  tier &pm = S.tiers[kTierPmem];
  if (!pm.usable || !faults_can_demote()) return -EOPNOTSUPP;
  const int fd = faults_fd();
  const uintptr_t ubase = unit_addr(idx);
  // A warm slot (storage kept from a unit that moved out) takes the data
  // without allocating, which is most of a demotion's cost: the one after a
  // neighbour's if it is warm (their mappings then merge), else the lowest
  // warm one.  Only without warm slots, the neighbour's follower if it is
  // free, then any slot.  A warm slot's other pages must read as zero when
  // placed.
  long s = pmem_slot_for(idx, kTakeWarm);
  if (s < 0 && pm.ops->slot_take_warm) s = pm.ops->slot_take_warm(&pm);
  const bool warm = s >= 0;
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
  if (s < 0) return s;
  const uint32_t slot = static_cast<uint32_t>(s);
  const off_t slot_off = static_cast<off_t>(slot) << kUnitShift;
  long err = 0;
  size_t protected_runs = 0, mapped_runs = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (err) return;
    void *at = reinterpret_cast<void *>(ubase + (first << kPageShift));
    const size_t len = n << kPageShift;
    err = sys::uffd::register_range(fd, at, len, UFFDIO_REGISTER_MODE_WP);
    if (!err) err = sys::uffd::write_protect(fd, at, len, true);
    if (!err) ++protected_runs;
    else sys::uffd::unregister_range(fd, at, len);
  });
  if (!err) {
    // Writing the file allocates its pages and copies in one pass (a full
    // filesystem is an error here, never a SIGBUS later).
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
      if (!err)
        err = copy_to_slot(pm.fd, reinterpret_cast<const char *>(ubase + (first << kPageShift)), n << kPageShift,
                           slot_off + static_cast<off_t>(first << kPageShift));
    });
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
      if (!err)
        err = pm.ops->map(&pm, reinterpret_cast<void *>(ubase + (first << kPageShift)), n << kPageShift,
                          PROT_READ | PROT_WRITE, slot, first << kPageShift);
      if (!err) ++mapped_runs;
    });
    if (err) MMTIER_DEBUG("demotion of unit %zu failed (error %ld); it stays on DRAM", idx, -err);
  }
  // Wake every writer held off (after a failure too: they retry on
  // whatever is mapped), and drop the protection of runs not swapped.
  size_t run = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    const size_t k = run++;
    if (k >= protected_runs) return;
    void *at = reinterpret_cast<void *>(ubase + (first << kPageShift));
    if (k >= mapped_runs) {  // still the anonymous run: unprotect it
      sys::uffd::write_protect(fd, at, n << kPageShift, false);
      sys::uffd::unregister_range(fd, at, n << kPageShift);
    }
    sys::uffd::wake(fd, at, n << kPageShift);
  });
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

bool heap_unit_movable(size_t idx) {
  if (idx >= g_heap.nunits) return false;
  const unit &u = g_heap.units[idx];
  return unit_tier(u) >= 0 && u.by_policy && !u.frozen && !u.spilled && !u.custom_prot && u.live > 0 &&
         u.owner != kOwnerFree;
}

long heap_migrate(size_t idx, int to) {
  if (to != kTierDram && to != kTierPmem) return -EINVAL;
  if (!faults_start()) return -EOPNOTSUPP;
  lock_guard g;
  if (!heap_unit_movable(idx)) return -EBUSY;
  sample_settle_unit_locked(idx);
  const int from = unit_tier(g_heap.units[idx]);
  if (from == to) return 0;
  // The tiers' limits hold for migration as for placement.
  if (S.counters.limit_units[to] != SIZE_MAX && S.counters.units[to] >= S.counters.limit_units[to]) return -ENOSPC;
  return to == kTierDram ? promote(idx) : demote(idx);
}

void heap_run_start_hook() {
  if (g_start_due.exchange(false, std::memory_order_acq_rel) && g_start_hook) g_start_hook();
}

void heap_set_start_hook(void (*hook)(), size_t min_units) {
  lock_guard g;
  g_start_hook = hook;
  g_start_units = min_units;
  g_start_armed = hook != nullptr;
  if (hook) check_start_hook();
}

void heap_lock() { pthread_mutex_lock(&S.lock); }
void heap_unlock() { unlock_heap(); }

void heap_set_change_hook(void (*hook)(const heap_counters &)) {
  lock_guard g;
  g_change_hook = hook;
}

size_t heap_movable_units(uint32_t *units, uint8_t *tiers, size_t cap) {
  lock_guard g;
  size_t n = 0;
  for (size_t w = 0; w < (g_heap.nunits + 63) / 64 && n < cap; ++w) {
    uint64_t bits = S.va_bits[w];
    while (bits && n < cap) {
      const size_t idx = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (!heap_unit_movable(idx)) continue;
      units[n] = static_cast<uint32_t>(idx);
      tiers[n] = static_cast<uint8_t>(unit_tier(g_heap.units[idx]));
      ++n;
    }
  }
  return n;
}

// ---- fork --------------------------------------------------------------------
//
// A unit on a file-backed tier is a MAP_SHARED mapping: a child inheriting it
// would share every later write with its parent.  Before fork the heap remaps
// every shared mapping inside the reservation MAP_PRIVATE over the same file
// range (no copy: the pages stay in the file), so parent and child both see
// the file as it was at the fork instant and their later writes go to private
// copy-on-write pages, exactly as for anonymous memory.  The file ranges of
// such units are then frozen: never written, punched or reused by either
// process.  The child opens a file of its own for new units.

namespace {

struct maps_cursor {
  int fd;
  char buf[4096];
  size_t have = 0, pos = 0;
  // Returns a NUL-terminated line or nullptr at end of file.
  char *next() {
    for (;;) {
      for (size_t i = pos; i < have; ++i) {
        if (buf[i] == '\n') {
          buf[i] = '\0';
          char *line = buf + pos;
          pos = i + 1;
          return line;
        }
      }
      if (pos > 0) {
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        pos = 0;
      }
      if (have == sizeof buf) return nullptr;
      long n = sys::read(fd, buf + have, sizeof buf - have);
      if (n <= 0) return nullptr;
      have += static_cast<size_t>(n);
    }
  }
};

uint64_t parse_hex(const char *&p) {
  uint64_t v = 0;
  for (;; ++p) {
    int d;
    if (*p >= '0' && *p <= '9') d = *p - '0';
    else if (*p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
    else return v;
    v = v * 16 + static_cast<uint64_t>(d);
  }
}

uint64_t parse_dec(const char *&p) {
  uint64_t v = 0;
  while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
  return v;
}

void freeze_shared_mappings() {
  tier &pm = S.tiers[kTierPmem];
  if (pm.fd < 0) return;
  struct stat st;
  if (sys::raw(SYS_fstat, pm.fd, reinterpret_cast<long>(&st)) < 0) return;
  long fd = sys::openat(AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    MMTIER_ERROR("fork: cannot read /proc/self/maps (error %ld); file-backed units stay shared", -fd);
    return;
  }
  maps_cursor mc{static_cast<int>(fd)};
  const uintptr_t lo_heap = g_heap.base, hi_heap = g_heap.base + g_heap.size;
  // Remapping changes the maps file under us; collect first, then remap.
  struct range {
    uintptr_t lo, hi;
    uint64_t off;
    int prot;
  };
  static range todo[4096];
  size_t count = 0;
  bool overflow = false;
  while (char *line = mc.next()) {
    const char *p = line;
    uintptr_t lo = parse_hex(p);
    ++p;
    uintptr_t hi = parse_hex(p);
    ++p;
    if (hi <= lo_heap || lo >= hi_heap) continue;
    const char *perm = p;
    if (perm[3] != 's') continue;
    p += 5;
    uint64_t off = parse_hex(p);
    ++p;
    uint64_t maj = parse_hex(p);
    ++p;
    uint64_t min = parse_hex(p);
    ++p;
    uint64_t ino = parse_dec(p);
    if (ino != st.st_ino || maj != major(st.st_dev) || min != minor(st.st_dev)) continue;
    if (count == sizeof todo / sizeof todo[0]) {
      overflow = true;
      break;
    }
    todo[count++] = {lo, hi, off,
                     (perm[0] == 'r' ? PROT_READ : 0) | (perm[1] == 'w' ? PROT_WRITE : 0) |
                         (perm[2] == 'x' ? PROT_EXEC : 0)};
  }
  sys::close(static_cast<int>(fd));
  for (size_t i = 0; i < count; ++i) {
    long r = sys::mmap(reinterpret_cast<void *>(todo[i].lo), todo[i].hi - todo[i].lo, todo[i].prot,
                       MAP_PRIVATE | MAP_FIXED, pm.fd, static_cast<off_t>(todo[i].off));
    if (sys::failed(r))
      MMTIER_ERROR("fork: cannot make %p private (error %ld)", reinterpret_cast<void *>(todo[i].lo), -r);
  }
  if (overflow) {
    // More mappings than one pass holds: go again over what is left.
    freeze_shared_mappings();
    return;
  }
  for (size_t idx = 0; idx < g_heap.nunits; idx += 64) {
    uint64_t w = S.va_bits[idx >> 6];
    while (w) {
      size_t i = idx + static_cast<size_t>(__builtin_ctzll(w));
      w &= w - 1;
      unit &u = g_heap.units[i];
      if (unit_tier(u) == kTierPmem) u.frozen = 1;
    }
  }
}

}  // namespace

void heap_fork_prepare() {
  pthread_mutex_lock(&S.lock);
  if (!g_heap.size) return;
  // A hidden page of an anonymous unit would read as zero in the child.
  sample_settle_all_locked();
  freeze_shared_mappings();
  ++S.counters.forks;
  S.counters_changed = true;
}

void heap_fork_parent() { unlock_heap(); }

void heap_fork_child() {
  pthread_mutex_init(&S.lock, nullptr);
  // The parent demotes through the same pipe: the child makes its own.
  pipe_drop();
  // The fork counted is the parent's; the child's statistics start with its
  // own first change.
  S.counters_changed = false;
  faults_fork_child();
  sample_fork_child();
  if (g_start_hook) {
    // The child gets its own mover only once it has placed as much memory
    // of its own as a fresh process needs: most children exec (or exit)
    // soon, and should not pay for two threads first.
    g_start_units += S.counters.units[kTierDram] + S.counters.units[kTierPmem];
    g_start_armed = true;
    g_start_due.store(false, std::memory_order_relaxed);
    check_start_hook();
  }
  if (!g_heap.size) return;
  tier &pm = S.tiers[kTierPmem];
  if (pm.fd >= 0) {
    // The parent's file holds only frozen ranges now; new units go to a file
    // of our own.
    fd_unguard(pm.fd);
    sys::close(pm.fd);
    pm.fd = -1;
    pm.usable = false;
    pm.file_slots = pm.slot_high = pm.free_count = 0;
    pm.warm_count = 0;
    if (pm.ops->open(&pm, config_get()) < 0) pm.usable = false;
  }
}

// ---- statistics --------------------------------------------------------------

void heap_counters_get(heap_counters *out) {
  lock_guard g;
  *out = S.counters;
}

size_t heap_tier_limit(int t) {
  if (t < 0 || t >= kTierCount) return 0;
  const config &cfg = config_get();
  return t == kTierDram ? cfg.dram_limit : cfg.pmem_limit;
}

namespace {

// Adds the pages present in units [lo, hi) (lo a multiple of 64, hi - lo
// at most 64) to pages[].  Runs of placed, unmixed units share one mincore
// call: on the measuring VM a system call costs tens of microseconds,
// which for a pass over a large heap matters more than the page walk.
void resident_range_locked(size_t lo, size_t hi, size_t pages[kTierCount]) {
  static unsigned char vec[64 * kPagesPerUnit];  // the heap lock guards them
  static sys::page_info info[kPagesPerUnit];
  size_t run = lo, run_len = 0;  // units [run, run + run_len) wait for one call
  const auto flush = [&]() {
    if (!run_len) return;
    const bool whole = sys::raw(SYS_mincore, static_cast<long>(unit_addr(run)), static_cast<long>(run_len * kUnitSize),
                                reinterpret_cast<long>(vec)) == 0;
    for (size_t k = 0; k < run_len; ++k) {
      const unit &u = g_heap.units[run + k];
      const int ut = bit_get(S.va_bits, run + k) ? unit_tier(u) : -1;
      if (ut < 0 || unit_mixed(u)) continue;  // a hole in the run, or counted apart
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
    const int ut = bit_get(S.va_bits, i) ? unit_tier(u) : -1;
    if (ut < 0) continue;
    if (unit_mixed(u)) {
      if (sys::pagemap_read(unit_addr(i), kPagesPerUnit, info))
        for (size_t p = 0; p < kPagesPerUnit; ++p)
          if (info[p].present) ++pages[info[p].file ? ut : kTierDram];
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

}  // namespace

void heap_resident_split_locked(size_t out[kTierCount]) {
  size_t pages[kTierCount] = {};
  for (size_t lo = 0; lo < g_heap.nunits; lo += 64) resident_range_locked(lo, std::min(lo + 64, g_heap.nunits), pages);
  for (int t = 0; t < kTierCount; ++t) out[t] = pages[t] << kPageShift;
}

void heap_resident_split(size_t out[kTierCount]) {
  // 64 units at a time, so that a large heap's allocations do not wait for
  // the whole pass (about 1.5 ms per GiB).
  size_t pages[kTierCount] = {};
  for (size_t lo = 0; lo < g_heap.nunits; lo += 64) {
    lock_guard g;
    resident_range_locked(lo, std::min(lo + 64, g_heap.nunits), pages);
  }
  for (int t = 0; t < kTierCount; ++t) out[t] = pages[t] << kPageShift;
}

size_t heap_resident_bytes(int t) {
  if (t < 0 || t >= kTierCount) return 0;
  size_t r[kTierCount];
  heap_resident_split(r);
  return r[t];
}

}  // namespace mmtier::detail
