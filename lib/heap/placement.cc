// Placement policy (see placement.h).
//
// ratio: a unit goes to DRAM when that keeps DRAM's share of the units placed
// by policy at or under D/(D+P); units are placed in the order they are first
// needed, so the resident share follows the ratio at unit granularity.  Units
// with a forced tier (engine metadata, explicit placement) count against the
// budgets but not in the ratio, so they do not skew it.
// dram-first: DRAM until its budget, then PMem.
// Both honour MMTIER_DRAM_LIMIT (the smaller DRAM budget wins); memory beyond
// the DRAM budget goes to PMem; when PMem cannot take it, DRAM does.
#include "heap/placement.h"

namespace mmtier::detail {

static bool has_room(const placement_input &in, int t) {
  return in.usable[t] && in.units[t] < in.limit_units[t];
}

placement_result choose_tier(const placement_input &in, const config &cfg, int forced) {
  int want;
  if (forced >= 0) {
    want = forced;
  } else if (cfg.policy == policy_kind::dram_first) {
    want = kTierDram;
  } else {
    const unsigned __int128 total = in.policy_units[kTierDram] + in.policy_units[kTierPmem] + 1;
    const unsigned __int128 dram = in.policy_units[kTierDram] + 1;
    const unsigned __int128 d = cfg.ratio_dram, sum = cfg.ratio_dram + cfg.ratio_pmem;
    want = dram * sum <= total * d ? kTierDram : kTierPmem;
  }
  if (has_room(in, want)) return {want, false};
  const int other = want == kTierDram ? kTierPmem : kTierDram;
  if (forced < 0 && want == kTierDram && has_room(in, other)) return {other, false};
  if (has_room(in, other)) return {other, true};
  // Nothing has room: DRAM always can take it (never fail where memory exists).
  return {kTierDram, true};
}

}  // namespace mmtier::detail
