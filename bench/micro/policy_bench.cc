// Microbenchmarks of the mover's per-scan work that may grow with the
// heap, for bench/scale_model.py's inputs: the policy's decide() (its
// promotion candidates, and the DRAM units when something may go down),
// the heat histogram every listed unit every kRelistScans scans, and the
// software tracker's choose() steps through
// the rotation until it has its PMem units.  Heaps of 1 Ki to 512 Ki units
// (2 GiB to 1 TiB of 2 MiB units), 10 % of them on DRAM, every unit
// tracked; no heap, no threads, no system calls (the mover's real scans
// add cache misses on a large policy table, so these are lower bounds).
// items_per_second counts units visited: 1e9 / it is ns per unit.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mover/scan.h"
#include "policy/policy.h"
#include "tier/tier.h"
#include "track/observation.h"
#include "track/software_tracker.h"

namespace {

using namespace mmtier::detail;

constexpr uint64_t kInterval = 100'000'000;  // MMTIER_SCAN_INTERVAL

// A policy tracking n units, one in ten on DRAM; busy: a seventh of them
// seen touched once (a worst case: thousands of PMem units warm enough to
// promote, DRAM at its budget), else none (the steady state: the hot set
// already on DRAM, the PMem units cold).
struct TrackedHeap {
  migration_policy *policy = new migration_policy();  // large; never freed
  std::vector<access_observation> obs;
  uint64_t now = 1'000'000'000;

  explicit TrackedHeap(size_t n, bool busy = true) : obs(n) {
    policy_params p;
    p.sparse_sampling = true;  // as the mover sets it
    if (!policy->init(p, n, now)) abort();
    for (size_t i = 0; i < n; ++i)
      obs[i] = {static_cast<uint32_t>(i), static_cast<uint8_t>(i % 10 == 0 ? kTierDram : kTierPmem), true, 1,
                static_cast<uint16_t>(busy && i % 7 == 0), 0};
    for (size_t i = 0; i < n; i += 4096) policy->observe(now, obs.data() + i, std::min<size_t>(4096, n - i));
  }
};

// One scan's decide(): 16 new observations, then the choice (the
// promotion candidates, and the DRAM units when something may go down).
void decide_scans(benchmark::State &state, bool busy) {
  const size_t n = static_cast<size_t>(state.range(0));
  TrackedHeap h(n, busy);
  policy_migration out[kPolicyMaxBatch];
  size_t k = 0, at = 0;
  for (auto _ : state) {
    h.now += kInterval;
    h.policy->observe(h.now, h.obs.data() + at, 16);
    at = (at + 16) % (n - 16);
    const size_t m = h.policy->decide(h.now, n / 10, n / 10, out, kPolicyMaxBatch);
    for (size_t i = 0; i < m; ++i) h.policy->report(h.now, out[i], migration_result::skipped);
    k += m;
  }
  benchmark::DoNotOptimize(k);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

void policy_decide(benchmark::State &state) { decide_scans(state, true); }
void policy_decide_steady(benchmark::State &state) { decide_scans(state, false); }

// The heat histogram's pass (mover.cc, heat_histogram): heat() per unit.
void policy_heat_pass(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  TrackedHeap h(n);
  double sum = 0;
  for (auto _ : state) {
    h.now += kInterval;
    for (size_t i = 0; i < n; ++i) sum += h.policy->heat(static_cast<uint32_t>(i), h.now);
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

// The tracker's choice of one window's units from a list of n (its cost
// grows with the units it takes, not with n): items are windows.
void tracker_choose(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint32_t> units(n);
  std::vector<uint8_t> tiers(n);
  for (size_t i = 0; i < n; ++i) {
    units[i] = static_cast<uint32_t>(i);
    tiers[i] = i % 10 == 0 ? kTierDram : kTierPmem;
  }
  const unit_list listed{units.data(), tiers.data(), n};
  software_tracker t;
  std::vector<uint32_t> chosen(software_tracker::kChosenMax);
  std::vector<uint8_t> pages(software_tracker::kChosenMax);
  size_t m = 0;
  for (auto _ : state) m += t.choose(listed, chosen.data(), pages.data(), chosen.size());
  benchmark::DoNotOptimize(m);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["units_per_window"] = static_cast<double>(m) / static_cast<double>(state.iterations());
}

void heaps(benchmark::internal::Benchmark *b) {
  for (int64_t n : {1 << 10, 1 << 13, 1 << 17, 1 << 19}) b->Arg(n);
}

BENCHMARK(policy_decide)->Apply(heaps);
BENCHMARK(policy_decide_steady)->Apply(heaps);
BENCHMARK(policy_heat_pass)->Apply(heaps);
BENCHMARK(tracker_choose)->Apply(heaps);

}  // namespace

BENCHMARK_MAIN();
