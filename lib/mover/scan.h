// The mover's scan, in four steps, each a function that can be tested
// alone (the mover thread, mover.cc, runs them in this order every scan):
//
//   1. choose   which units to watch: the heap's movable units, listed
//               every kRelistScans scans and after any scan that moved a
//               unit, and the tracker's pick of them for this window
//               (track/software_tracker.h);
//   2. observe  what was touched, as access observations
//               (track/observation.h): the software tracker's sampling
//               window, or the PMU's samples of every listed unit;
//   3. decide   the policy takes the observations and, against the DRAM
//               budget (policy/budget.h), answers with migrations;
//   4. apply    the migrations in order, within the budget and clear of
//               vm.max_map_count (map_guard.h), each outcome reported back
//               to the policy.
#pragma once

#include "heap/sample.h"
#include "mover/map_guard.h"
#include "policy/budget.h"
#include "policy/policy.h"
#include "support/errors.h"
#include "track/observation.h"
#include "track/software_tracker.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// Units considered per scan at most (2 TiB of movable memory).
inline constexpr size_t kMaxListed = size_t{1} << 20;
// The list of movable units is refreshed every kRelistScans scans, and
// after any scan that moved a unit (the heap changes slowly; listing walks
// the whole address bitmap).
inline constexpr uint64_t kRelistScans = 8;

// Step 1's list, kept between scans.
struct unit_listing {
  uint32_t *units = nullptr;  // kMaxListed each
  uint8_t *tiers = nullptr;
  size_t n = 0;
  bool stale = true;
  unit_list view() const { return {units, tiers, n}; }
};

// Lists the movable units when due (stale, or every kRelistScans scans).
void list_units(unit_listing &l, uint64_t scan_number, size_t (*lister)(uint32_t *, uint8_t *, size_t));

// Step 3: feeds the observations to the policy and has it decide against
// the budget; returns the migrations written to out (<= kPolicyMaxBatch).
size_t decide(migration_policy &policy, uint64_t now_ns, const access_observation *obs, size_t n,
              const dram_budget &b, policy_migration *out);

// Step 4.
struct apply_outcome {
  uint64_t promoted = 0, demoted = 0, failed = 0, bytes = 0;
  uint64_t deferred = 0;  // left for the next scan: the batch's time was up, or a promotion found no room
  failure_tally failures;  // the failed ones by errno
  bool held = false;  // the map guard held every migration back
  uint64_t moved() const { return promoted + demoted; }
};
// migrate(unit, to): the bytes moved (>= 0) or -errno (heap_migrate, or a
// test's fake).  A promotion that would take DRAM past the budget (an
// earlier demotion of the batch failed) is skipped, not attempted, and so is
// a demotion PMem has no room for (b.pmem_room); a promotion the heap
// refuses at the DRAM limit (ENOSPC: allocations took the room since the
// budget was read, or a fast node has none) is skipped too, with the rest
// of the batch (deferred), demotions included.  The
// first failure of each errno in the process is said once, with what it
// means (support/errors.h, migration_failure_meaning); the rest are counted.
// With a clock, once the batch's migrations have taken time_ns (a node short
// of memory makes the kernel reclaim and compact for each page it moves in)
// the rest are skipped for the next scan, which decides again with fresh
// figures; the first migration is always attempted.
apply_outcome apply(migration_policy &policy, map_guard &guard, const policy_migration *migs, size_t n,
                    uint64_t now_ns, dram_budget b, long (*migrate)(size_t unit, int to), uint64_t time_ns = 0,
                    uint64_t (*clock)() = nullptr);

}  // namespace mmtier::detail
