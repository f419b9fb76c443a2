// DRAM tier: anonymous private memory.  fork() gives the child a
// copy-on-write view for free, and the kernel zeroes discarded pages.
#include "tier/tier.h"

#include "platform/sys.h"
#include "support/layout.h"

#include <sys/mman.h>

namespace mmtier::detail {
namespace {

bool g_huge_units = true;  // MMTIER_HUGE_PAGES=units

long dram_open(tier *t, const config &cfg) {
  t->usable = true;
  g_huge_units = cfg.huge_units;
  return 0;
}
long dram_slot_alloc(tier *) { return 0; }
void dram_slot_free(tier *, uint32_t) {}
long dram_reserve(tier *, uint32_t, size_t, size_t) { return 0; }

long dram_map(tier *, void *addr, size_t len, int prot, uint32_t, size_t) {
  long r = sys::mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (sys::failed(r)) return r;
  // Whole units (a large allocation's) on one huge page each, where the
  // kernel has one free: 512 times fewer page-table entries for a fork (a
  // snapshot's pause) and for the TLB.  The sampler moves or protects such
  // a unit whole, never splitting it (heap/sample.cc); a unit in use in
  // parts stays on small pages (a huge page would commit all of it).
  if (g_huge_units && len >= kUnitSize && !(reinterpret_cast<uintptr_t>(addr) & (kUnitSize - 1)))
    sys::madvise(addr, len & ~(kUnitSize - 1), MADV_HUGEPAGE);
  return 0;
}

long dram_discard(tier *, void *addr, size_t len, uint32_t, size_t) {
  return sys::madvise(addr, len, MADV_DONTNEED);
}

}  // namespace

// Nothing optional: DRAM units need no slots, copies or fork work (the
// kernel's copy-on-write covers them).
const tier_ops dram_tier_ops = {"dram", dram_open, dram_slot_alloc, dram_slot_free, dram_reserve, dram_map, dram_discard};

}  // namespace mmtier::detail
