// What tracking tells the policy: one observation type for every tracker.
// The software tracker (software_tracker.h: sampling windows of hidden
// pages) and the PMU tracker (pmu_counts.h: hardware samples of data
// addresses) both turn what they saw of a unit into an access_observation;
// the policy (policy/policy.h) takes nothing else.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// One unit in one scan.
struct access_observation {
  uint32_t unit;     // unit index in the heap
  uint8_t tier;      // kTierDram or kTierPmem: where the unit is now
  bool movable;      // false: the unit has a forced tier and never moves
  uint16_t sampled;  // pages sampled in this scan (0: no access information)
  uint16_t touched;  // of those, pages found read or written
  uint16_t written;  // of those, pages found written
  // The share of a unit's sampled pages a cold unit shows touched by
  // chance (the tracker's background, smoothed over recent windows); the
  // policy counts only what was touched above it.  0: every touch counts.
  // A one-page sample scores 1 or 0 whatever it is, so a cold DRAM unit
  // still averages about this share while a cold PMem unit confirmed on
  // four pages scores about 0.
  float chance = 0;
  // A unit sampled whole that nothing touched at any time in the window
  // (sample_result::idle): not thin evidence of a cold unit, as one
  // untouched page or an access too late to count are.
  bool idle = false;
};

// The units a scan can watch: ascending unit indices with their tiers (the
// heap's movable units, heap_movable_units).
struct unit_list {
  const uint32_t *units = nullptr;
  const uint8_t *tiers = nullptr;
  size_t n = 0;
};

}  // namespace mmtier::detail
