// Placement policy: which tier a newly placed unit goes to.  A pure function
// of the counters and the configuration, so it can be tested exhaustively.
#pragma once

#include "config/config.h"
#include "tier/tier.h"

#include <cstddef>

namespace mmtier::detail {

struct placement_input {
  size_t units[kTierCount];        // units placed on each tier now
  size_t policy_units[kTierCount]; // of which placed by policy (the ratio counts only these)
  size_t limit_units[kTierCount];  // budget in units, SIZE_MAX when none
  bool usable[kTierCount];         // the tier can take a unit now
  int neighbour = -1;              // tier of the unit just below in address (-1: none)
};

struct placement_result {
  int tier;
  bool fallback;  // the preferred tier could not take it
};

placement_result choose_tier(const placement_input &in, const config &cfg, int forced);

// DRAM's share under the ratio policy of `units` units placed by policy:
// floor(units * D / (D + P)).  The one place the ratio is turned into a
// number of units: placement asks whether one more DRAM unit fits it, the
// mover's budget (policy/budget.h) is built on it.
size_t ratio_share(const config &cfg, size_t units);

}  // namespace mmtier::detail
