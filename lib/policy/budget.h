// The DRAM budget the mover works to, from the heap's counters and the
// configuration: the tighter of the ratio's share of the units placed by
// policy (heap/placement.h, ratio_share: the same arithmetic placement
// uses) and MMTIER_DRAM_LIMIT, no lower than PMem's room allows.  Units
// with a forced tier count against the limit but not in the ratio.
#pragma once

#include "config/config.h"
#include "heap/heap.h"

#include <cstddef>

namespace mmtier::detail {

struct dram_budget {
  size_t budget;    // DRAM units allowed now (SIZE_MAX: no budget)
  size_t dram_now;  // DRAM units now, forced ones included
  // Units PMem can take now (SIZE_MAX: no limit known): its limit's room,
  // 0 after a placement found it full.  The budget never asks for more
  // demotions than that, and the mover skips a demotion PMem has no room for.
  size_t pmem_room = SIZE_MAX;
  // Units DRAM's memory is short of what it keeps (a NUMA node below its
  // zones' watermarks): demotions the policy makes before a promotion.
  size_t dram_short = 0;
};

dram_budget dram_budget_of(const heap_counters &c, const config &cfg);

}  // namespace mmtier::detail
