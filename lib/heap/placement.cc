// Placement policy (see placement.h).
//
// ratio: a unit goes to DRAM when that keeps DRAM's share of the units placed
// by policy at or under D/(D+P); units are placed in the order they are first
// needed, so the resident share follows the ratio at unit granularity.  Units
// with a forced tier (engine metadata, explicit placement) count against the
// budgets but not in the ratio, so they do not skew it.
// Runs: a unit takes the tier of the unit just below it in address when that
// keeps DRAM's count within a tolerance of its exact share (1/64 of the
// units, at least 4), so that neighbouring units form long runs of one tier:
// fewer kernel mappings (vm.max_map_count) and fewer to remap at fork, while
// the share stays within about 1.6 percentage points of the ratio.
// bandwidth: the ratio's rule unit by unit, without runs: the tiers
// interleave at 2 MiB (each unit a mapping of its own).
// dram-first: DRAM until its budget, then PMem.
// Both honour MMTIER_DRAM_LIMIT (the smaller DRAM budget wins); memory beyond
// the DRAM budget goes to PMem; when PMem cannot take it, DRAM does.
#include "heap/placement.h"

namespace mmtier::detail {

size_t ratio_share(const config &cfg, size_t units) {
  const unsigned __int128 sum = uint64_t{cfg.ratio_dram} + cfg.ratio_pmem;
  if (sum == 0) return 0;
  return static_cast<size_t>(static_cast<unsigned __int128>(units) * cfg.ratio_dram / sum);
}

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
    // With this unit placed: DRAM's count would be dram + 1 of total + 1.
    const size_t total = in.policy_units[kTierDram] + in.policy_units[kTierPmem] + 1;
    want = in.policy_units[kTierDram] + 1 <= ratio_share(cfg, total) ? kTierDram : kTierPmem;
    const unsigned __int128 d = cfg.ratio_dram, sum = cfg.ratio_dram + cfg.ratio_pmem;
    // bandwidth: unit by unit, so that a range streamed through draws on
    // both tiers at once.
    if (cfg.policy != policy_kind::bandwidth && in.neighbour >= 0 && in.neighbour != want && d != 0 && d != sum) {
      const unsigned __int128 tol = total / 64 > 4 ? total / 64 : 4;
      const unsigned __int128 dram_after = in.policy_units[kTierDram] + (in.neighbour == kTierDram);
      // |dram_after - total * d / sum| <= tol, in integers.
      const unsigned __int128 lhs = dram_after * sum, rhs = total * d;
      const unsigned __int128 diff = lhs > rhs ? lhs - rhs : rhs - lhs;
      if (diff <= tol * sum) want = in.neighbour;
    }
  }
  if (has_room(in, want)) return {want, false};
  const int other = want == kTierDram ? kTierPmem : kTierDram;
  if (forced < 0 && want == kTierDram && has_room(in, other)) return {other, false};
  if (has_room(in, other)) return {other, true};
  // Nothing has room: DRAM always can take it (never fail where memory exists).
  return {kTierDram, true};
}

}  // namespace mmtier::detail
