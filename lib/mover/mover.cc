// Background mover (see mover.h).
//
// Sampling budget per scan.  Hiding a page costs the mover a system call or
// two (MADV_DONTNEED or UFFDIO_MOVE, each a TLB shootdown, and a pagemap
// read) and costs the application a refault (PMem, in the kernel) or a
// round trip to the fault service (DRAM, the expensive one) when the page is
// touched.  So each scan watches a rotating subset of units: an adaptive
// number of PMem units and an eighth as many DRAM units.  The number
// shrinks when the scan's tracking work (both threads, migrations excluded)
// took more than kCpuHigh of the interval and grows below kCpuLow.
#include "mover/mover.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/sample.h"
#include "mover/map_guard.h"
#include "platform/sys.h"
#include "policy/policy.h"
#include "support/log.h"
#include "support/meta.h"
#include "track/pmu_counts.h"
#include "track/pmu_tracker.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <new>

namespace mmtier::detail {
namespace {

constexpr size_t kMaxListed = size_t{1} << 20;  // units considered per scan (2 TiB)
constexpr size_t kDramPerScan = 32;  // at most; budget / 8
// PMem units found touched by a one-page screening sample are watched again
// in the next window with kConfirmPages pages before the policy hears of
// them: one page of a cold unit is touched by chance now and then, four
// rarely.
constexpr size_t kMaxSuspects = 64;
constexpr uint8_t kConfirmPages = 4;
// Observations per scan: the sampled units, or with PEBS every listed unit.
constexpr size_t kChosenMax = kMaxListed;
constexpr size_t kPmemMin = 16, kPmemMax = 2048, kPmemStart = 64;
constexpr double kCpuHigh = 0.02, kCpuLow = 0.012;  // of the scan interval

std::atomic<bool> g_running{false};
pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_stats_lock = PTHREAD_MUTEX_INITIALIZER;
mover_stats g_stats = {};
std::atomic<uint64_t> g_mover_cpu_ns{0};

migration_policy g_policy;
map_guard g_maps;  // holds migrations back near vm.max_map_count
void (*g_scan_hook)() = nullptr;

// Where the PMU allows it, hardware samples of data addresses replace the
// software sampling windows (lib/track/pebs.h).
pmu_tracker g_pebs;
pmu_unit_counts g_pebs_counts;
bool g_use_pebs = false;

struct buffers {
  uint32_t *listed;
  uint8_t *tiers;
  uint32_t *chosen;
  uint8_t *pages;
  sample_result *results;
  policy_observation *obs;
};
buffers g_buf = {};

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

bool buffers_ready() {
  if (g_buf.listed) return true;
  g_buf.listed = static_cast<uint32_t *>(meta_map(kMaxListed * sizeof(uint32_t)));
  g_buf.tiers = static_cast<uint8_t *>(meta_map(kMaxListed));
  constexpr size_t kChosen = kChosenMax;
  g_buf.chosen = static_cast<uint32_t *>(meta_map(kChosen * sizeof(uint32_t)));
  g_buf.pages = static_cast<uint8_t *>(meta_map(kChosen));
  g_buf.results = static_cast<sample_result *>(meta_map(kChosen * sizeof(sample_result)));
  g_buf.obs = static_cast<policy_observation *>(meta_map(kChosen * sizeof(policy_observation)));
  if (!g_buf.listed || !g_buf.tiers || !g_buf.chosen || !g_buf.pages || !g_buf.results || !g_buf.obs) {
    g_buf = {};
    return false;
  }
  return true;
}

// The DRAM budget in units and the DRAM units now, as the policy counts
// them (forced units included).  The budget is the tighter of the ratio's
// share of policy-placed units and MMTIER_DRAM_LIMIT.
void budget_now(size_t *budget, size_t *dram_now) {
  heap_counters c;
  heap_counters_get(&c);
  const config &cfg = config_get();
  *dram_now = c.units[kTierDram];
  long long slack = LLONG_MAX;
  if (cfg.policy == policy_kind::ratio) {
    const size_t total = c.policy_units[kTierDram] + c.policy_units[kTierPmem];
    const uint64_t den = uint64_t{cfg.ratio_dram} + cfg.ratio_pmem;
    const size_t share = den ? static_cast<size_t>(total * cfg.ratio_dram / den) : 0;
    slack = static_cast<long long>(share) - static_cast<long long>(c.policy_units[kTierDram]);
  }
  if (c.limit_units[kTierDram] != SIZE_MAX)
    slack = std::min(slack, static_cast<long long>(c.limit_units[kTierDram]) -
                                static_cast<long long>(c.units[kTierDram]));
  if (slack == LLONG_MAX) *budget = SIZE_MAX;
  else *budget = static_cast<size_t>(std::max(0LL, static_cast<long long>(*dram_now) + slack));
}

// The list of movable units is refreshed every kRelistScans scans, and after
// any scan that moved a unit (the heap changes slowly; listing walks the
// whole address bitmap).
constexpr uint64_t kRelistScans = 8;

struct scan_state {
  size_t pmem_per_scan = kPmemStart;
  size_t listed = 0;
  uint64_t scans = 0;
  bool relist = true;
  uint32_t suspects[kMaxSuspects];
  size_t nsuspects = 0;
  size_t cursor_pmem = 0, cursor_dram = 0;
  uint64_t seed = 0x9E3779B97F4A7C15ull;
};

void sleep_until(uint64_t t) {
  timespec ts = {static_cast<time_t>(t / 1000000000u), static_cast<long>(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// One scan: open a window on a rotating choice of units, wait window_ns,
// see what was touched, decide, move.
uint64_t fault_cpu_ns() {
  fault_counters fc;
  faults_counters_get(&fc);
  return fc.cpu_ns;
}

// Returns whether the scan moved anything.
bool scan(scan_state &st, uint64_t interval_ns, uint64_t window_ns) {
  uint64_t cpu0 = thread_cpu_ns();
  const uint64_t fault_cpu0 = fault_cpu_ns();
  uint64_t now = mono_ns();
  // 1. The window: a rotating choice of units on each tier.
  if (st.relist || st.scans % kRelistScans == 0) {
    st.listed = heap_movable_units(g_buf.listed, g_buf.tiers, kMaxListed);
    st.relist = false;
  }
  const size_t listed = st.listed;
  size_t started = 0;
  uint64_t spent = 0;
  if (g_use_pebs) {
    spent = thread_cpu_ns() - cpu0;
  } else {
    size_t m = 0, np = 0, nd = 0;
    for (size_t i = 0; i < st.nsuspects; ++i) g_buf.chosen[m++] = st.suspects[i];
    auto suspected = [&](uint32_t u) { return std::find(st.suspects, st.suspects + st.nsuspects, u) != st.suspects + st.nsuspects; };
    if (listed) {
      for (size_t k = 0; k < listed && np < st.pmem_per_scan; ++k) {
        const size_t i = (st.cursor_pmem + k) % listed;
        if (g_buf.tiers[i] == kTierPmem && !suspected(g_buf.listed[i])) {
          g_buf.chosen[m++] = g_buf.listed[i];
          ++np;
          st.cursor_pmem = i + 1;
        }
      }
      const size_t dram_per_scan = std::clamp<size_t>(st.pmem_per_scan / 8, 2, kDramPerScan);
      for (size_t k = 0; k < listed && nd < dram_per_scan; ++k) {
        const size_t i = (st.cursor_dram + k) % listed;
        if (g_buf.tiers[i] == kTierDram && !suspected(g_buf.listed[i])) {
          g_buf.chosen[m++] = g_buf.listed[i];
          ++nd;
          st.cursor_dram = i + 1;
        }
      }
    }
    // Ascending, each unit once, with its page count (suspects get more).
    for (size_t i = 0; i < m; ++i) g_buf.pages[i] = 0;
    std::sort(g_buf.chosen, g_buf.chosen + m);
    m = static_cast<size_t>(std::unique(g_buf.chosen, g_buf.chosen + m) - g_buf.chosen);
    for (size_t i = 0; i < m; ++i)
      g_buf.pages[i] = std::binary_search(st.suspects, st.suspects + st.nsuspects, g_buf.chosen[i]) ? kConfirmPages : 1;
    started = heap_sample_begin(g_buf.chosen, g_buf.pages, m, st.seed++);
    spent = thread_cpu_ns() - cpu0;
    // The window opens when the last page is hidden, so that every sample
    // gets at least window_ns.
    sleep_until(mono_ns() + window_ns);
    cpu0 = thread_cpu_ns();
    now = mono_ns();
  }
  // 2. What the window saw.
  const size_t cap = kPmemMax + kDramPerScan + kMaxSuspects;
  const size_t nres = g_use_pebs ? 0 : heap_sample_end(g_buf.results, cap);
  size_t touched = 0, nobs = 0;
  st.nsuspects = 0;
  if (g_use_pebs) {
    // Every unit is observed: one without samples is idle, not unknown.
    g_pebs.drain(g_pebs_counts.sink());
    g_pebs.refresh();
    for (size_t i = 0; i < listed && nobs < kChosenMax; ++i) {
      const pmu_unit_observation o = g_pebs_counts.observe(g_buf.listed[i], interval_ns);
      g_buf.obs[nobs++] = {g_buf.listed[i], g_buf.tiers[i], true, o.sampled, o.touched, o.written};
      touched += o.touched != 0;
    }
    g_pebs_counts.clear();
  }
  for (size_t i = 0; i < nres; ++i) {
    const sample_result &r = g_buf.results[i];
    touched += r.touched;
    if (r.tier == kTierPmem && r.sampled == 1 && r.touched) {
      // A screening hit: confirmed (or not) in the next window.
      if (st.nsuspects < kMaxSuspects) st.suspects[st.nsuspects++] = r.unit;
      continue;
    }
    g_buf.obs[nobs++] = {r.unit, r.tier, true, r.sampled, r.touched, r.written};
    // Hot data is usually contiguous: the PMem neighbours of a confirmed
    // hot unit are confirmed next, ahead of the rotation.
    if (r.tier == kTierPmem && r.sampled > 1 && r.touched * 2 >= r.sampled) {
      for (uint32_t nb : {r.unit - 1, r.unit + 1}) {
        const uint32_t *begin = g_buf.listed, *end = g_buf.listed + listed;
        const uint32_t *at = std::lower_bound(begin, end, nb);
        if (at == end || *at != nb || g_buf.tiers[at - g_buf.listed] != kTierPmem) continue;
        if (st.nsuspects < kMaxSuspects && std::find(st.suspects, st.suspects + st.nsuspects, nb) == st.suspects + st.nsuspects)
          st.suspects[st.nsuspects++] = nb;
      }
    }
  }
  std::sort(st.suspects, st.suspects + st.nsuspects);
  g_policy.observe(now, g_buf.obs, nobs);
  // 3. Decide and move.
  size_t budget, dram_now;
  budget_now(&budget, &dram_now);
  policy_migration migs[kPolicyMaxBatch];
  size_t nm = g_policy.decide(now, budget, dram_now, migs, kPolicyMaxBatch);
  uint64_t promoted = 0, demoted = 0, failed = 0, bytes = 0;
  bool held = false;
  if (nm && !g_maps.allow(nm, now)) {
    // Too close to vm.max_map_count: the application's own mappings come
    // first.  Nothing is attempted; the policy hears it as skipped.
    for (size_t i = 0; i < nm; ++i) g_policy.report(now, migs[i], migration_result::skipped);
    nm = 0;
    held = true;
  }
  g_maps.moved(nm);
  for (size_t i = 0; i < nm; ++i) {
    const policy_migration m = migs[i];
    if (m.to_tier == kTierDram && dram_now >= budget) {
      g_policy.report(now, m, migration_result::skipped);
      continue;
    }
    const long r = heap_migrate(m.unit, m.to_tier);
    MMTIER_DEBUG("mover: unit %u heat %d/1000 to %s: %ld", m.unit,
                 static_cast<int>(g_policy.heat(m.unit, now) * 1000),
                 m.to_tier == kTierDram ? "DRAM" : "PMem", r);
    if (r >= 0) {
      g_policy.report(now, m, migration_result::done);
      bytes += static_cast<uint64_t>(r);
      if (m.to_tier == kTierDram) {
        ++promoted;
        ++dram_now;
      } else {
        ++demoted;
        --dram_now;
      }
    } else {
      g_policy.report(now, m, migration_result::failed);
      ++failed;
      MMTIER_DEBUG("mover: unit %u to tier %d failed (error %ld)", m.unit, m.to_tier, -r);
    }
  }
  if (promoted + demoted) st.relist = true;
  uint64_t hist[kHeatBuckets] = {};
  const bool histogram = st.scans++ % kRelistScans == 0;
  if (histogram) {
    for (size_t i = 0; i < listed; ++i) {
      const double h = g_policy.heat(g_buf.listed[i], now);
      size_t b = static_cast<size_t>(h * kHeatBuckets);
      hist[b < kHeatBuckets ? b : kHeatBuckets - 1]++;
    }
  }
  // 4. Keep tracking cheap: scale the PMem sample count to the scan's cost
  // (migration time excluded: it is paid for by the rate limit).
  spent += thread_cpu_ns() - cpu0;
  // Scans that moved data say nothing about tracking's cost: the fault
  // service is busy with the moves then.  (A decision skipped because DRAM
  // is full, or one that failed, moved nothing.)
  const size_t moved = promoted + demoted;
  if (!moved) {
    spent += fault_cpu_ns() - fault_cpu0;
    const double share = static_cast<double>(spent) / static_cast<double>(interval_ns);
    if (share > kCpuHigh) st.pmem_per_scan = std::max(kPmemMin, st.pmem_per_scan * 3 / 4);
    else if (share < kCpuLow) st.pmem_per_scan = std::min(kPmemMax, st.pmem_per_scan * 5 / 4 + 1);
  }
  g_mover_cpu_ns.store(thread_cpu_ns(), std::memory_order_relaxed);
  // Only data moved counts as activity: a promotion the budget refuses,
  // scan after scan, must not keep the interval at its shortest.
  const bool active = moved != 0;

  pthread_mutex_lock(&g_stats_lock);
  g_stats.scans++;
  g_stats.promotions += promoted;
  g_stats.demotions += demoted;
  g_stats.migrations_failed += failed;
  g_stats.map_count_holds += held;
  g_stats.bytes_migrated += bytes;
  g_stats.samples += started;
  g_stats.samples_touched += touched;
  g_stats.dram_budget_units = budget;
  if (histogram) memcpy(g_stats.heat_histogram, hist, sizeof hist);
  pthread_mutex_unlock(&g_stats_lock);
  return active;
}

void *mover_main(void *) {
  const config &cfg = config_get();
  const uint64_t interval = cfg.scan_interval_ns;
  policy_params p;
  p.migrate_bytes_per_sec = uint64_t{cfg.migrate_mbps} << 20;
  p.sparse_sampling = true;  // units are watched in rotation
  // An exchange costs two moves; a few touched pages out of four sampled
  // is not evidence enough for one (units of similar warmth would trade
  // places on sampling noise).
  p.swap_margin = 0.3;
  uint64_t now = mono_ns();
  g_maps.init_default();
  if (!buffers_ready() || !g_policy.init(p, g_heap.nunits, now)) {
    MMTIER_WARN("background mover: no memory for its tables; memory is not moved between tiers");
    g_running.store(false, std::memory_order_release);
    return nullptr;
  }
  if (g_pebs.open(pmu_params{}) == pmu_status::ok && g_pebs_counts.init_for_heap()) {
    g_use_pebs = true;
    g_pebs.ignore_tid(static_cast<uint32_t>(sys::raw(SYS_gettid)));
    MMTIER_INFO("mover: hardware sampling of data addresses (%s)", g_pebs.reason());
  } else {
    g_pebs.close();
    MMTIER_INFO("mover: software sampling (%s)", g_pebs.reason());
  }
  // The window is short next to the interval, so that touched-or-not tells
  // hot pages (touched within milliseconds) from merely warm ones.
  const uint64_t window = std::max<uint64_t>(interval / 8, 1000000);
  // A quiet process is scanned less often: after kQuietScans scans that
  // moved nothing, the interval doubles, up to four
  // times MMTIER_SCAN_INTERVAL; any work brings it back.  (The sampling
  // budget is set against the configured interval, so a longer interval
  // costs proportionally less.)
  constexpr int kQuietScans = 10;
  uint64_t current = interval;
  int quiet = 0;
  scan_state st;
  uint64_t next = now;
  for (;;) {
    if (scan(st, interval, window)) {
      current = interval;
      quiet = 0;
    } else if (++quiet >= kQuietScans) {
      current = std::min(current * 2, interval * 4);
      quiet = 0;
    }
    if (g_scan_hook) g_scan_hook();
    next += current;
    now = mono_ns();
    if (next < now) next = now + current / 2;  // fell behind: do not try to catch up
    sleep_until(next);
  }
  return nullptr;
}

// The child has no mover thread; the heap's start hook starts one on its
// first heap operation.
void mover_fork_child() {
  g_running.store(false, std::memory_order_relaxed);
  pthread_mutex_init(&g_start_lock, nullptr);
  pthread_mutex_init(&g_stats_lock, nullptr);
  // The parent's policy may have been mid-decision at the fork instant.
  g_policy.~migration_policy();
  new (&g_policy) migration_policy();
  g_mover_cpu_ns.store(0, std::memory_order_relaxed);
  if (g_use_pebs) g_pebs.forget_after_fork();
  g_use_pebs = false;
}

void start_hook() { mover_start(); }

}  // namespace

bool mover_start() {
  const config &cfg = config_get();
  if (!cfg.promote || g_running.load(std::memory_order_acquire)) return g_running.load();
  pthread_mutex_lock(&g_start_lock);
  bool ok = g_running.load(std::memory_order_acquire);
  if (!ok && faults_start()) {
    g_running.store(true, std::memory_order_release);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, nullptr, mover_main, nullptr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (e == 0) {
      pthread_setname_np(t, "mmtier-bg");
      pthread_detach(t);
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

void mover_enable() {
  if (!config_get().promote) return;
  static bool once = false;
  if (once) return;
  once = true;
  pthread_atfork(nullptr, nullptr, mover_fork_child);
  heap_set_start_hook(start_hook, kMoverStartUnits);
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
