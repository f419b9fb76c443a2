// Per-unit access counts for the policy: the samples a tracker delivers
// (through the sink of pmu_unit_counts) are added up as reads and writes
// per unit of the managed range, and each touched unit's counts over an
// interval become an access observation (track/observation.h, scaled by
// pmu_scale), the type every tracker gives the policy.  Nothing here allocates: the counts live in storage the
// caller gives or in metadata memory.
#pragma once

#include "support/layout.h"
#include "track/observation.h"
#include "track/pmu_ring.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

struct pmu_unit_count {
  uint32_t reads;
  uint32_t writes;
};

// One unit's access information in the policy's terms (the fields of
// access_observation, whose tier and movable observe_listed adds): sampled is
// the scale, touched/sampled the unit's sample rate as a fraction of
// full_scale_per_sec (capped at 1), written/sampled the same for stores
// (written <= touched).  A unit with no samples is observed as idle
// (touched 0), not as "no information"; interval 0 gives sampled 0.
struct pmu_unit_observation {
  uint32_t unit;
  uint16_t sampled;
  uint16_t touched;
  uint16_t written;
};

struct pmu_scale {
  // Samples per second in one unit that count as "every page touched"
  // (score 1).  Roughly: the rate a unit of the hot set gets with the
  // default periods on a memory-bound thread.
  uint32_t full_scale_per_sec = 64;
  uint16_t sampled = static_cast<uint16_t>(kPagesPerUnit);
};

class pmu_unit_counts {
 public:
  static constexpr size_t storage_bytes(size_t max_units) {
    return max_units * (sizeof(pmu_unit_count) + sizeof(uint32_t));
  }
  // Counts for units [0, max_units) of the range starting at base (unit =
  // (addr - base) >> kUnitShift).  storage: storage_bytes(max_units) zeroed
  // bytes, 4-aligned, or nullptr to take them from meta_map.
  [[nodiscard]] bool init(uintptr_t base, size_t max_units, void *storage = nullptr);
  // The same for the heap's range (g_heap.base, g_heap.nunits units).
  [[nodiscard]] bool init_for_heap(void *storage = nullptr);

  void add(uint64_t addr, bool is_store);
  // A sink that adds every sample here (ctx = this).
  pmu_sink sink();

  pmu_unit_count count(uint32_t unit) const;
  size_t touched() const { return ntouched_; }  // units with samples since clear()
  uint32_t touched_unit(size_t i) const { return touched_[i]; }
  uint64_t outside() const { return outside_; }  // samples beyond max_units

  // The unit's observation for counts gathered over interval_ns.
  pmu_unit_observation observe(uint32_t unit, uint64_t interval_ns, const pmu_scale &sc = {}) const;
  // Observations of every touched unit, in first-touch order; returns how
  // many were written (at most max).
  size_t emit(uint64_t interval_ns, pmu_unit_observation *out, size_t max,
              const pmu_scale &sc = {}) const;
  // Step "observe" with the PMU: an observation of every listed unit (one
  // without samples is idle, not unknown), written to out (<= cap);
  // *touched: units with samples.  Then the counts start again.
  size_t observe_listed(const unit_list &listed, uint64_t interval_ns, access_observation *out, size_t cap,
                        size_t *touched, const pmu_scale &sc = {});
  // Zeroes the touched units' counts (cost: the touched units).
  void clear();

 private:
  uintptr_t base_ = 0;
  size_t max_units_ = 0;
  pmu_unit_count *counts_ = nullptr;
  uint32_t *touched_ = nullptr;
  size_t ntouched_ = 0;
  uint64_t outside_ = 0;
};

}  // namespace mmtier::detail
