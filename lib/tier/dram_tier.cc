// DRAM tier: anonymous private memory.  fork() gives the child a
// copy-on-write view for free, and the kernel zeroes discarded pages.
#include "tier/tier.h"

#include "platform/sys.h"
#include "support/layout.h"

#include <sys/mman.h>

namespace mmtier::detail {
namespace {

long dram_open(tier *t, const config &) {
  t->usable = true;
  return 0;
}
long dram_slot_alloc(tier *) { return 0; }
void dram_slot_free(tier *, uint32_t) {}
long dram_reserve(tier *, uint32_t, size_t, size_t) { return 0; }

long dram_map(tier *, void *addr, size_t len, int prot, uint32_t, size_t) {
  long r = sys::mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  return sys::failed(r) ? r : 0;
}

long dram_discard(tier *, void *addr, size_t len, uint32_t, size_t) {
  return sys::madvise(addr, len, MADV_DONTNEED);
}

}  // namespace

// Nothing optional: DRAM units need no slots, copies or fork work (the
// kernel's copy-on-write covers them).
const tier_ops dram_tier_ops = {"dram", dram_open, dram_slot_alloc, dram_slot_free, dram_reserve, dram_map, dram_discard};

}  // namespace mmtier::detail
