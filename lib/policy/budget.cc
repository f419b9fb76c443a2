// The mover's DRAM budget (see budget.h).
#include "policy/budget.h"

#include "heap/placement.h"

#include <algorithm>
#include <climits>

namespace mmtier::detail {

dram_budget dram_budget_of(const heap_counters &c, const config &cfg) {
  dram_budget b{SIZE_MAX, c.units[kTierDram]};
  // How many more DRAM units each rule allows (negative: over it).
  long long slack = LLONG_MAX;
  if (policy_splits(cfg.policy)) {
    const size_t share = ratio_share(cfg, c.policy_units[kTierDram] + c.policy_units[kTierPmem]);
    slack = static_cast<long long>(share) - static_cast<long long>(c.policy_units[kTierDram]);
  }
  if (c.limit_units[kTierDram] != SIZE_MAX)
    slack = std::min(slack, static_cast<long long>(c.limit_units[kTierDram]) - static_cast<long long>(c.units[kTierDram]));
  if (slack != LLONG_MAX) b.budget = static_cast<size_t>(std::max(0LL, static_cast<long long>(b.dram_now) + slack));
  if (c.pmem_full) b.pmem_room = 0;
  else if (c.limit_units[kTierPmem] != SIZE_MAX)
    b.pmem_room = c.limit_units[kTierPmem] > c.units[kTierPmem] ? c.limit_units[kTierPmem] - c.units[kTierPmem] : 0;
  // Demoting more than PMem can take would only fail.
  if (b.pmem_room < b.dram_now && b.budget < b.dram_now - b.pmem_room) b.budget = b.dram_now - b.pmem_room;
  return b;
}

}  // namespace mmtier::detail
