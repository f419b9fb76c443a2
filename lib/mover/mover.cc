// Background mover (see mover.h): the thread, its start and its statistics.
// One scan runs the steps of scan.h: choose, observe, decide, apply.
#include "mover/mover.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/sample.h"
#include "mover/map_guard.h"
#include "mover/scan.h"
#include "platform/clock.h"
#include "platform/sys.h"
#include "policy/budget.h"
#include "policy/policy.h"
#include "support/thread.h"
#include "support/errors.h"
#include "support/log.h"
#include "support/meta.h"
#include "support/quiesce.h"
#include "support/world.h"
#include "track/pmu_counts.h"
#include "track/pmu_tracker.h"
#include "track/software_tracker.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>

namespace mmtier::detail {
namespace {

std::atomic<bool> g_running{false};
pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_stats_lock = PTHREAD_MUTEX_INITIALIZER;
mover_stats g_stats = {};
std::atomic<uint64_t> g_mover_cpu_ns{0};
void (*g_scan_hook)() = nullptr;

// The mover thread's own state.
struct mover_state {
  migration_policy policy;
  map_guard maps;  // holds migrations back near vm.max_map_count
  software_tracker tracker;
  // Where the PMU allows it, hardware samples of data addresses replace the
  // software sampling windows (track/pmu_tracker.h).
  pmu_tracker pmu;
  pmu_unit_counts pmu_counts;
  bool use_pmu = false;
  unit_listing listing;
  uint32_t *chosen = nullptr;  // software_tracker::kChosenMax
  uint8_t *pages = nullptr;
  sample_result *results = nullptr;
  access_observation *obs = nullptr;  // kMaxListed (the PMU observes every listed unit)
  uint64_t scans = 0;
  uint64_t seed = 0x9E3779B97F4A7C15ull;
};
mover_state g_mover;

bool buffers_ready() {
  mover_state &m = g_mover;
  if (m.listing.units) return true;
  m.listing.units = static_cast<uint32_t *>(meta_map(kMaxListed * sizeof(uint32_t)));
  m.listing.tiers = static_cast<uint8_t *>(meta_map(kMaxListed));
  m.chosen = static_cast<uint32_t *>(meta_map(software_tracker::kChosenMax * sizeof(uint32_t)));
  m.pages = static_cast<uint8_t *>(meta_map(software_tracker::kChosenMax));
  m.results = static_cast<sample_result *>(meta_map(software_tracker::kChosenMax * sizeof(sample_result)));
  m.obs = static_cast<access_observation *>(meta_map(kMaxListed * sizeof(access_observation)));
  if (!m.listing.units || !m.listing.tiers || !m.chosen || !m.pages || !m.results || !m.obs) {
    m.listing.units = nullptr;
    return false;
  }
  return true;
}

uint64_t fault_cpu_ns() {
  fault_counters fc;
  faults_counters_get(&fc);
  return fc.cpu_ns;
}

// Step 2 with the PMU: the samples since the last scan, for every listed
// unit.
size_t observe_pmu(uint64_t interval_ns, size_t *touched) {
  mover_state &m = g_mover;
  m.pmu.drain(m.pmu_counts.sink());
  m.pmu.refresh();
  return m.pmu_counts.observe_listed(m.listing.view(), interval_ns, m.obs, kMaxListed, touched);
}

// Steps 1 and 2 with software sampling: opens the window on the tracker's
// choice, waits window_ns and reads it.  *spent_ns gets the CPU time of the
// work outside the wait.
size_t observe_software(uint64_t window_ns, size_t *started, size_t *touched, uint64_t *spent_ns) {
  mover_state &m = g_mover;
  uint64_t cpu0 = sys::thread_cpu_ns();
  m.tracker.allow_spans(heap_slow_node() < 0);
  const size_t n = m.tracker.choose(m.listing.view(), m.chosen, m.pages, software_tracker::kChosenMax);
  *started = heap_sample_begin(m.chosen, m.pages, n, m.seed++, m.tracker.pmem_span());
  *spent_ns = sys::thread_cpu_ns() - cpu0;
  // The window opens when the last page is hidden, so that every sample
  // gets at least window_ns.
  sys::sleep_until_mono(sys::mono_ns() + window_ns);
  cpu0 = sys::thread_cpu_ns();
  const size_t nres = heap_sample_end(m.results, software_tracker::kChosenMax);
  const size_t nobs = m.tracker.observe(m.results, nres, m.listing.view(), m.obs, kMaxListed, touched);
  *spent_ns += sys::thread_cpu_ns() - cpu0;
  return nobs;
}

// The bandwidth policy: no access is tracked (nothing hidden, no fault);
// the units listed are handed to the policy with no access information,
// so that it knows which are on DRAM and demotes down to a budget
// (MMTIER_DRAM_LIMIT, the node agent's), and promotes nothing.
size_t observe_listing() {
  mover_state &m = g_mover;
  const size_t n = std::min(m.listing.n, kMaxListed);
  for (size_t i = 0; i < n; ++i)
    m.obs[i] = access_observation{m.listing.units[i], m.listing.tiers[i], true, 0, 0, 0, 0};
  return n;
}

void heat_histogram(uint64_t now, uint64_t hist[kHeatBuckets]) {
  for (size_t i = 0; i < g_mover.listing.n; ++i) {
    const size_t b = static_cast<size_t>(g_mover.policy.heat(g_mover.listing.units[i], now) * kHeatBuckets);
    hist[b < kHeatBuckets ? b : kHeatBuckets - 1]++;
  }
}

long migrate_unit(size_t unit, int to) { return heap_migrate(unit, to); }
constexpr uint64_t kMoveTimeMinNs = 200'000'000;  // a scan's moves at least (scan(), apply's time_ns)

// Re-sharing after fork, within what is left of the scan's share of the
// migration rate (a stop per unit; at most kReshareMaxUnits per scan keeps
// the program's pauses spread out).
constexpr size_t kReshareMaxUnits = 16;
// How long a fork child's mover waits before its first scan.
constexpr uint64_t kForkChildFirstScanNs = 2'000'000'000;

// A stop that gave up (a thread that blocks every signal, as Redis's
// jemalloc background thread does) is tried again after 1 s, then 2, 4, ...
// up to 64 s: each try costs a unit's copy into a fresh slot and a 50 ms
// wait.  A stop that succeeds starts over.
constexpr uint64_t kStopRetryFirstNs = 1'000'000'000, kStopRetryMaxNs = 64'000'000'000;
struct {
  uint64_t next_ns = 0, wait_ns = 0;
  bool said = false;
} g_stop_retry;

void stop_refused(uint64_t now) {
  auto &b = g_stop_retry;
  b.wait_ns = b.wait_ns ? std::min(b.wait_ns * 2, kStopRetryMaxNs) : kStopRetryFirstNs;
  b.next_ns = now + b.wait_ns;
  if (b.said) return;
  b.said = true;
  char name[32] = "";
  const long tid = world_signal_blocker(name, sizeof name);
  if (tid)
    MMTIER_WARN("fork: re-sharing units frozen by fork needs every thread stopped for a moment, and thread %ld "
                "(%s) blocks the signal that stops it; pages written since the fork stay in DRAM (tried again less "
                "and less often; counted as stop refusals)",
                tid, name);
  else
    MMTIER_INFO("fork: a thread did not stop within 50 ms for re-sharing; tried again later");
}

reshare_outcome reshare(uint64_t interval_ns, uint64_t moved_bytes) {
  const uint64_t rate = uint64_t{config_get().migrate_mbps} << 20;
  uint64_t allowance = rate ? rate * interval_ns / 1000000000u : kReshareMaxUnits * kUnitSize;
  allowance = allowance > moved_bytes ? allowance - moved_bytes : 0;
  const uint64_t now = sys::mono_ns();
  if (!allowance || now < g_stop_retry.next_ns) return {};
  const reshare_outcome r = heap_reshare(kReshareMaxUnits, allowance);
  if (r.err == -EAGAIN) stop_refused(now);
  else if (r.stops) g_stop_retry.wait_ns = 0;
  if (r.err && r.err != -EAGAIN) {
    static bool said = false;
    if (!said) {
      said = true;
      char name[24];
      MMTIER_WARN("fork: re-sharing a unit frozen by fork failed (%s); its pages written since the fork stay "
                  "in DRAM (counted as re-share failures)",
                  errno_name(r.err, name));
    }
  }
  return r;
}

// Huge pages rebuilt (heap_rehuge) with what is left of the scan's share
// of the migration rate after moves and re-sharing.  While a call gets
// nothing done because a fork child still shares the units (a snapshot's
// writer, a Redis BGSAVE) or the kernel has no huge page free, the next
// try waits 0.5 s, then 1, 2, ... up to 8 s; a call that gets on starts
// over.
constexpr uint64_t kRehugeRetryFirstNs = 500'000'000, kRehugeRetryMaxNs = 8'000'000'000;
constexpr size_t kRehugeMaxLooks = 4096;  // units looked at per scan (a pagemap read each)
struct {
  uint64_t next_ns = 0, wait_ns = 0;
} g_rehuge_retry;

rehuge_outcome rehuge(uint64_t interval_ns, uint64_t moved_bytes) {
  const uint64_t rate = uint64_t{config_get().migrate_mbps} << 20;
  uint64_t allowance = rate ? rate * interval_ns / 1000000000u : 16 * kUnitSize;
  allowance = allowance > moved_bytes ? allowance - moved_bytes : 0;
  const uint64_t now = sys::mono_ns();
  auto &b = g_rehuge_retry;
  if (allowance < kUnitSize || now < b.next_ns) return {};
  const rehuge_outcome r = heap_rehuge(allowance, kRehugeMaxLooks);
  if (r.looked)
    MMTIER_DEBUG("huge pages: %zu of %zu units looked at rebuilt, %zu refused, %zu being sampled%s, error %ld",
                 r.units, r.looked, r.failed, r.busy, r.shared ? ", some shared with a fork child" : "", r.err);
  if ((r.shared || r.err) && !r.units) {
    b.wait_ns = b.wait_ns ? std::min(b.wait_ns * 2, kRehugeRetryMaxNs) : kRehugeRetryFirstNs;
    b.next_ns = now + b.wait_ns;
  } else if (r.looked) {
    b.wait_ns = 0;
  }
  return r;
}

// One scan; returns whether it was busy (moved data, or is searching for
// a hot set).
bool scan(uint64_t interval_ns, uint64_t window_ns) {
  mover_state &m = g_mover;
  const uint64_t fault_cpu0 = fault_cpu_ns();
  uint64_t cpu0 = sys::thread_cpu_ns();
  list_units(m.listing, m.scans, heap_movable_units);
  size_t started = 0, touched = 0, nobs;
  uint64_t spent = 0;
  const bool track = config_get().policy != policy_kind::bandwidth;
  if (!track) {
    nobs = observe_listing();
  } else if (m.use_pmu) {
    nobs = observe_pmu(interval_ns, &touched);
  } else {
    spent = sys::thread_cpu_ns() - cpu0;
    nobs = observe_software(m.tracker.window_ns(window_ns), &started, &touched, &spent);
    cpu0 = sys::thread_cpu_ns();
  }
  const uint64_t now = sys::mono_ns();
  // Units the kernel placed on the slow node are counted there first.
  heap_recount_node_units(64);
  heap_counters c;
  heap_counters_get(&c);
  dram_budget b = dram_budget_of(c, config_get());
  // A DRAM tier that is a NUMA node has what other processes leave of it:
  // the budget is no more than what it holds and what still fits, so that
  // the policy exchanges (demotes cold units to make room) instead of
  // asking for promotions the node would refuse; below what its zones
  // keep (the kernel fills a node to its low watermarks before it takes
  // another), an exchange first demotes what it is short of.
  const size_t room = heap_tier_room_units(kTierDram);
  if (room != SIZE_MAX && b.budget > b.dram_now + room) b.budget = b.dram_now + room;
  b.dram_short = heap_tier_short_units(kTierDram);
  policy_migration migs[kPolicyMaxBatch];
  const size_t nm = decide(m.policy, now, m.obs, nobs, b, migs);
  // A batch's moves take at most about two intervals (at least 200 ms):
  // beyond that (a node short of memory, the kernel reclaiming and
  // compacting for each page moved in) the rest wait for the next scan.
  const uint64_t move_time = std::max<uint64_t>(2 * interval_ns, kMoveTimeMinNs);
  const apply_outcome o = apply(m.policy, m.maps, migs, nm, now, b, migrate_unit, move_time, sys::mono_ns);
  // Copies at the migration rate, whose CPU is not tracking's (below).
  const uint64_t copy_cpu0 = sys::thread_cpu_ns();
  const reshare_outcome rs = reshare(interval_ns, o.bytes);
  const rehuge_outcome rh = rehuge(interval_ns, o.bytes + rs.bytes);
  const uint64_t copy_cpu = sys::thread_cpu_ns() - copy_cpu0;
  if (o.moved() || rs.units) m.listing.stale = true;
  m.tracker.promoted(o.promoted);
  uint64_t hist[kHeatBuckets] = {};
  const bool histogram = m.scans++ % kRelistScans == 0;
  if (histogram) heat_histogram(now, hist);
  // Keep tracking cheap (migration time excluded: the rate limit pays for
  // it; scans that moved data say nothing about tracking's cost; nor do
  // re-sharing's and the huge-page rebuild's copies).
  spent += sys::thread_cpu_ns() - cpu0 - copy_cpu;
  if (track && !o.moved() && !m.use_pmu) m.tracker.account(spent + fault_cpu_ns() - fault_cpu0, interval_ns);
  g_mover_cpu_ns.store(sys::thread_cpu_ns(), std::memory_order_relaxed);

  pthread_mutex_lock(&g_stats_lock);
  g_stats.scans++;
  g_stats.promotions += o.promoted;
  g_stats.demotions += o.demoted;
  g_stats.migrations_failed += o.failed;
  g_stats.failures.merge(o.failures);
  g_stats.map_count_holds += o.held;
  g_stats.bytes_migrated += o.bytes;
  g_stats.samples += started;
  g_stats.samples_touched += touched;
  if (!m.use_pmu) {
    g_stats.window_ns = m.tracker.window_ns(window_ns);
    g_stats.pmem_span = m.tracker.pmem_span();
    g_stats.background_permille = static_cast<uint32_t>(m.tracker.background() * 1000);
  }
  g_stats.dram_budget_units = b.budget;
  if (histogram) memcpy(g_stats.heat_histogram, hist, sizeof hist);
  g_stats.reshares += rs.units;
  g_stats.reshares_in_place += rs.in_place;
  g_stats.reshare_bytes += rs.bytes;
  g_stats.reshare_stops += rs.stops;
  g_stats.reshare_pause_total_ns += rs.pause_total_ns;
  g_stats.reshare_pause_max_ns = std::max(g_stats.reshare_pause_max_ns, rs.pause_max_ns);
  g_stats.reshare_stop_refusals += rs.err == -EAGAIN;
  g_stats.reshare_failed += rs.err && rs.err != -EAGAIN;
  g_stats.rehuged += rh.units;
  g_stats.rehuge_failed += rh.failed;
  pthread_mutex_unlock(&g_stats_lock);
  // Only data moved, or a search for a hot set under way, counts as
  // activity: a promotion the budget refuses, scan after scan, must not
  // keep the interval at its shortest.
  return o.moved() != 0 || rs.units != 0 || rh.units != 0 || (track && !m.use_pmu && m.tracker.searching());
}

bool mover_init(const config &cfg) {
  policy_params p;
  p.migrate_bytes_per_sec = uint64_t{cfg.migrate_mbps} << 20;
  p.sparse_sampling = true;  // units are watched in rotation
  // An exchange costs two moves; a few touched pages out of four sampled
  // is not evidence enough for one (units of similar warmth would trade
  // places on sampling noise).
  p.swap_margin = 0.3;
  g_mover.maps.init_default();
  if (!buffers_ready() || !g_mover.policy.init(p, g_heap.nunits, sys::mono_ns())) {
    MMTIER_WARN("background mover: no memory for its tables; memory is not moved between tiers");
    return false;
  }
  if (cfg.policy == policy_kind::bandwidth) {
    MMTIER_INFO("mover: bandwidth policy: units stay where placed, no access tracking");
  } else if (g_mover.pmu.open(pmu_params{}) == pmu_status::ok && g_mover.pmu_counts.init_for_heap()) {
    g_mover.use_pmu = true;
    g_mover.pmu.ignore_tid(static_cast<uint32_t>(sys::raw(SYS_gettid)));
    MMTIER_INFO("mover: hardware sampling of data addresses (%s)", g_mover.pmu.reason());
  } else {
    g_mover.pmu.close();
    MMTIER_INFO("mover: software sampling (%s)", g_mover.pmu.reason());
  }
  return true;
}

void *mover_main(void *) {
  const config &cfg = config_get();
  if (!mover_init(cfg)) {
    g_running.store(false, std::memory_order_release);
    return nullptr;
  }
  const uint64_t interval = cfg.scan_interval_ns;
  // The window is short next to the interval, so that touched-or-not tells
  // hot pages (touched within milliseconds) from merely warm ones; the
  // tracker shortens it, down to 1/8, while cold pages are often touched
  // within it (software_tracker.h).
  const uint64_t window = std::max<uint64_t>(interval / 8, 1000000);
  // A quiet process is scanned less often: after kQuietScans scans that
  // moved nothing and searched for no hot set, the interval doubles, up to four times
  // MMTIER_SCAN_INTERVAL; any work brings it back.  (The sampling budget
  // is set against the configured interval, so a longer interval costs
  // proportionally less.)
  constexpr int kQuietScans = 10;
  uint64_t current = interval;
  int quiet = 0;
  uint64_t next = sys::mono_ns();
  // A fork child mapping its parent's frozen units: most such children
  // (a Redis BGSAVE, a worker given one task) are gone within seconds.
  heap_counters c;
  heap_counters_get(&c);
  if (c.frozen_inherited) next += kForkChildFirstScanNs;
  sys::sleep_until_mono(next);
  for (;;) {
    if (scan(interval, window)) {
      current = interval;
      quiet = 0;
    } else if (++quiet >= kQuietScans) {
      current = std::min(current * 2, interval * 4);
      quiet = 0;
    }
    if (g_scan_hook) g_scan_hook();
    next += current;
    const uint64_t now = sys::mono_ns();
    if (next < now) next = now + current / 2;  // fell behind: do not try to catch up
    sys::sleep_until_mono(next);
  }
  return nullptr;
}

// The quiesce sequence (support/quiesce.h): the start lock at
// kRankMoverStart (starting the thread allocates), the statistics lock at
// kRankMoverStats (a leaf).
void start_lock() { pthread_mutex_lock(&g_start_lock); }
void start_unlock() { pthread_mutex_unlock(&g_start_lock); }
void stats_lock() { pthread_mutex_lock(&g_stats_lock); }
void stats_unlock() { pthread_mutex_unlock(&g_stats_lock); }

// The child has no mover thread; the heap's start hook starts one once the
// child has placed enough memory of its own.
void fork_child() {
  g_running.store(false, std::memory_order_relaxed);
  pthread_mutex_init(&g_start_lock, nullptr);
  // The parent's policy may have been mid-decision at the fork instant.
  g_mover.policy.release();
  g_mover.policy.~migration_policy();
  new (&g_mover.policy) migration_policy();
  g_mover.tracker = software_tracker();
  g_mover.listing.stale = true;
  g_mover_cpu_ns.store(0, std::memory_order_relaxed);
  if (g_mover.use_pmu) g_mover.pmu.forget_after_fork();
  g_mover.use_pmu = false;
}

void stats_fork_child() { pthread_mutex_init(&g_stats_lock, nullptr); }

void (*g_companion)() = nullptr;  // started with the mover (mover_enable)

void start_hook() {
  mover_start();
  if (g_companion) g_companion();
}

}  // namespace

bool mover_start() {
  const config &cfg = config_get();
  if (!cfg.promote || g_running.load(std::memory_order_acquire)) return g_running.load();
  pthread_mutex_lock(&g_start_lock);
  bool ok = g_running.load(std::memory_order_acquire);
  if (!ok && faults_start()) {
    g_running.store(true, std::memory_order_release);
    const int e = start_service_thread(mover_main, "mmtier-bg");
    if (e == 0) {
      ok = true;
      pthread_mutex_lock(&g_stats_lock);
      g_stats.scan_interval_ns = cfg.scan_interval_ns;
      pthread_mutex_unlock(&g_stats_lock);
    } else {
      g_running.store(false, std::memory_order_release);
      MMTIER_WARN("cannot start the background mover (error %d); memory is not moved between tiers", e);
    }
  }
  pthread_mutex_unlock(&g_start_lock);
  return ok;
}

void mover_enable(void (*companion)()) {
  static bool once = false;
  if (once) return;
  once = true;
  g_companion = companion;
  if (config_get().promote) {
    quiesce_register(kRankMoverStart, {start_lock, start_unlock, fork_child, nullptr, nullptr});
    quiesce_register(kRankMoverStats, {stats_lock, stats_unlock, stats_fork_child, nullptr, nullptr});
  }
  if (config_get().promote || companion) heap_set_start_hook(start_hook, mover_start_units());
}

size_t mover_start_units() {
  const size_t at = config_get().background_at;
  return (at >> kUnitShift) + ((at & (kUnitSize - 1)) != 0);
}

void mover_set_scan_hook(void (*hook)()) { g_scan_hook = hook; }

void mover_stats_get(mover_stats *out) {
  pthread_mutex_lock(&g_stats_lock);
  *out = g_stats;
  pthread_mutex_unlock(&g_stats_lock);
  out->running = g_running.load(std::memory_order_acquire);
  fault_counters fc;
  faults_counters_get(&fc);
  out->tracking_faults = fc.faults;
  out->cpu_ns = g_mover_cpu_ns.load(std::memory_order_relaxed) + fc.cpu_ns;
  if (!out->scan_interval_ns) out->scan_interval_ns = config_get().scan_interval_ns;
}

}  // namespace mmtier::detail
