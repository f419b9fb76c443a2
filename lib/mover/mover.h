// The background mover: the thread ("mmtier-bg") that keeps hot memory in
// DRAM.  Every MMTIER_SCAN_INTERVAL it ends the sampling window of the last
// scan (heap/sample.h), feeds what was touched to the policy
// (policy/policy.h), carries out the migrations the policy decides
// (heap_migrate) within the DRAM budget and at most MMTIER_MIGRATE_MBPS, and
// opens the next window on a rotating choice of units.  MMTIER_PROMOTE=0
// keeps it off.
#pragma once

#include "support/errors.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// Arranges for the thread to start once the process has
// mover_start_units() units of managed memory (MMTIER_BACKGROUND_AT, 32 MiB
// by default: small processes never get a thread), and in a child after
// fork once it has placed that much of its own.  No thread with
// MMTIER_PROMOTE=0.  companion, if given, is called at the same moment
// (with or without the mover): the layers above start their own threads
// with it.  Once; later calls do nothing.
void mover_enable(void (*companion)() = nullptr);
// MMTIER_BACKGROUND_AT in units, rounded up (0: at the first allocation).
size_t mover_start_units();
// Starts the thread now (tests, and the heap's start hook).  False if
// disabled or impossible (logged once).
bool mover_start();

inline constexpr size_t kHeatBuckets = 8;

struct mover_stats {
  bool running;
  uint64_t scans;
  uint64_t promotions;
  uint64_t demotions;
  uint64_t migrations_failed;
  failure_tally failures;    // migrations_failed by errno
  uint64_t map_count_holds;  // scans whose migrations waited for mappings (map_guard.h)
  uint64_t bytes_migrated;
  uint64_t samples;          // pages watched
  uint64_t samples_touched;  // of which touched within their window
  uint64_t tracking_faults;  // faults the fault service answered
  uint64_t cpu_ns;           // CPU time of the mover and the fault service
  uint64_t scan_interval_ns;
  uint64_t dram_budget_units;  // as of the last scan (SIZE_MAX: none)
  uint64_t heat_histogram[kHeatBuckets];  // units by heat, [i/8, (i+1)/8)
  // The software tracker's sampling window for the next scan (ns), its
  // pages per PMem sample, and its background: the smoothed share of
  // screening samples touched, permille.
  uint64_t window_ns;
  uint32_t pmem_span;
  uint32_t background_permille;
  // Re-sharing after fork (heap_reshare): units given a shared PMem
  // mapping again, of them on their own slot, bytes copied; the world
  // stops it made, their longest and total pause; stops refused (a thread
  // did not park in time); other failures.
  uint64_t reshares, reshares_in_place, reshare_bytes;
  uint64_t reshare_stops, reshare_pause_max_ns, reshare_pause_total_ns;
  uint64_t reshare_stop_refusals, reshare_failed;
  // Huge pages rebuilt (heap_rehuge): DRAM units collapsed into one huge
  // page again, and collapses the kernel refused.
  uint64_t rehuged, rehuge_failed;
};
void mover_stats_get(mover_stats *out);
// Called by the mover thread after each scan, with no lock held (statistics
// publishing, stats/live_stats.h).  Set once, before the thread starts.
void mover_set_scan_hook(void (*hook)());

}  // namespace mmtier::detail
