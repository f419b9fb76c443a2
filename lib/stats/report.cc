// Statistics and the exit report (see report.h).
#include "stats/report.h"

#include "stats/agent_client.h"

#include "mover/mover.h"
#include "stats/live_stats.h"

#include "config/config.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "platform/sys.h"
#include "support/errors.h"
#include "support/log.h"

#include <cstring>

namespace mmtier::detail {

void stats_fill(mmtier_stats *out, bool with_resident, resident_split *split) {
  heap_counters c;
  heap_counters_get(&c);
  memset(out, 0, sizeof *out);
  out->unit_size = kUnitSize;
  resident_split res;
  if (with_resident) {
    res = heap_resident_split();
    live_stats_resident(res);
  }
  if (split) *split = res;
  const size_t *resident = res.bytes;
  for (int t = 0; t < kTierCount; ++t) {
    out->units[t] = c.units[t];
    out->peak_units[t] = c.peak_units[t];
    out->resident_bytes[t] = resident[t];
    out->limit_bytes[t] = heap_tier_limit(t);
  }
  out->fallbacks = c.fallbacks;
  out->mapped_mmap_bytes = c.mmap_bytes;
  out->forks = c.forks;
}

namespace {

// Bytes as a short human string ("12.5 MiB").
void human(char *buf, size_t cap, size_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t u = 0;
  size_t whole = bytes, tenth = 0;
  while (whole >= 1024 && u < 4) {
    tenth = (whole % 1024) * 10 / 1024;
    whole /= 1024;
    ++u;
  }
  if (u == 0) format(buf, cap, "%zu B", bytes);
  else format(buf, cap, "%zu.%zu %s", whole, tenth, units[u]);
}

// After a fork: PMem units whose view the fork froze (placed on PMem,
// counted there) and their pages written since, copies counted in DRAM's
// resident figure; the mover re-shares them.  Nothing without a fork.
size_t fork_lines(char *out, size_t cap, const heap_counters &hc, const resident_split &res, const mover_stats &ms) {
  size_t o = 0;
  const size_t frozen = hc.frozen_own + hc.frozen_inherited;
  if (!frozen && !res.frozen_copied && !ms.reshares) return 0;
  char a[32], b[32], c[32];
  human(a, sizeof a, frozen * kUnitSize);
  human(b, sizeof b, res.frozen_copied);
  human(c, sizeof c, ms.reshare_bytes);
  o += format(out + o, cap - o,
              "  fork: %s of PMem units frozen now, %s of their pages copied to DRAM (in DRAM's resident); "
              "%llu units re-shared (%s copied) in %llu stops, longest %llu us\n",
              a, b, static_cast<unsigned long long>(ms.reshares), c, static_cast<unsigned long long>(ms.reshare_stops),
              static_cast<unsigned long long>(ms.reshare_pause_max_ns / 1000));
  if (ms.reshare_stop_refusals || ms.reshare_failed)
    o += format(out + o, cap - o,
                "  fork: re-sharing gave up %llu times (a thread would not stop) and failed %llu times\n",
                static_cast<unsigned long long>(ms.reshare_stop_refusals),
                static_cast<unsigned long long>(ms.reshare_failed));
  return o;
}

// The node agent's budget, when the process had one (agent_client.h).
size_t agent_line(char *out, size_t cap) {
  agent_client_state ag;
  agent_client_get(&ag);
  if (!ag.budgets) return 0;
  static const char *const kClass[] = {"guaranteed", "burstable", "best-effort"};
  char a[32];
  human(a, sizeof a, ag.budget_bytes);
  return format(out, cap, "  node agent: %s, class %s, %llu budgets received%s\n", ag.has_budget ? a : "no budget",
                kClass[ag.granted_class < 3 ? ag.granted_class : 1], static_cast<unsigned long long>(ag.budgets),
                ag.connected ? "" : " (not connected at exit)");
}

// The mover's lines: its work, its window, why moves failed or waited,
// and the huge pages it rebuilt.  Nothing before its first scan.
size_t mover_lines(char *out, size_t cap, const mover_stats &ms) {
  if (!ms.scans) return 0;
  size_t o = 0;
  char a[32];
  human(a, sizeof a, ms.bytes_migrated);
  o += format(out + o, cap - o,
              "  mover: %llu scans, %llu promotions, %llu demotions, %llu failed, %s moved, "
              "%llu of %llu samples touched, %llu.%03llu s CPU\n",
              static_cast<unsigned long long>(ms.scans), static_cast<unsigned long long>(ms.promotions),
              static_cast<unsigned long long>(ms.demotions), static_cast<unsigned long long>(ms.migrations_failed),
              a, static_cast<unsigned long long>(ms.samples_touched), static_cast<unsigned long long>(ms.samples),
              static_cast<unsigned long long>(ms.cpu_ns / 1000000000u),
              static_cast<unsigned long long>(ms.cpu_ns / 1000000u % 1000u));
  if (ms.window_ns)
    o += format(out + o, cap - o,
                "  mover: sampling window %llu.%01llu ms, %u page(s) a PMem sample, %u.%01u%% of screened samples "
                "touched by chance\n",
                static_cast<unsigned long long>(ms.window_ns / 1000000u),
                static_cast<unsigned long long>(ms.window_ns / 100000u % 10u), ms.pmem_span ? ms.pmem_span : 1,
                ms.background_permille / 10, ms.background_permille % 10);
  if (ms.migrations_failed) {
    o += format(out + o, cap - o, "  mover: failed moves by reason:");
    char ebuf[24];
    for (int i = 0; i < failure_tally::kMax; ++i)
      if (ms.failures.err[i])
        o += format(out + o, cap - o, " %llu %s (%s);", static_cast<unsigned long long>(ms.failures.count[i]),
                    errno_name(ms.failures.err[i], ebuf), migration_failure_meaning(ms.failures.err[i]));
    if (ms.failures.other)
      o += format(out + o, cap - o, " %llu other;", static_cast<unsigned long long>(ms.failures.other));
    if (o > 0 && out[o - 1] == ';') --o;
    o += format(out + o, cap - o, "\n");
  }
  if (ms.rehuged || ms.rehuge_failed) {
    human(a, sizeof a, ms.rehuged * kUnitSize);
    o += format(out + o, cap - o,
                "  mover: %llu units (%s) made one huge page again after forks and promotions, %llu refused\n",
                static_cast<unsigned long long>(ms.rehuged), a, static_cast<unsigned long long>(ms.rehuge_failed));
  }
  if (ms.map_count_holds)
    o += format(out + o, cap - o,
                "  mover: migrations held back in %llu scans: the process was near vm.max_map_count\n",
                static_cast<unsigned long long>(ms.map_count_holds));
  return o;
}

}  // namespace

int write_report(int fd) {
  mmtier_stats st;
  resident_split res;
  stats_fill(&st, true, &res);
  const config &cfg = config_get();
  char out[4096];
  size_t o = 0;
  char a[32], b[32], c[32], d[32];
  const char *policy = cfg.policy == policy_kind::ratio       ? "ratio"
                       : cfg.policy == policy_kind::bandwidth ? "bandwidth"
                                                              : "dram-first";
  o += format(out + o, sizeof out - o,
              "mmtier report (pid %ld): policy %s, DRAM:PMem ratio %u:%u, unit %zu KiB\n",
              sys::getpid(), policy, cfg.ratio_dram, cfg.ratio_pmem, st.unit_size >> 10);
  o += format(out + o, sizeof out - o, "  %-5s %12s %12s %12s %12s\n", "tier", "placed-now",
              "placed-peak", "resident-now", "limit");
  const char *names[] = {"DRAM", "PMem"};
  for (int t = 0; t < kTierCount; ++t) {
    human(a, sizeof a, st.units[t] * st.unit_size);
    human(b, sizeof b, st.peak_units[t] * st.unit_size);
    human(c, sizeof c, st.resident_bytes[t]);
    if (st.limit_bytes[t] == SIZE_MAX) format(d, sizeof d, "none");
    else human(d, sizeof d, st.limit_bytes[t]);
    o += format(out + o, sizeof out - o, "  %-5s %12s %12s %12s %12s\n", names[t], a, b, c, d);
  }
  // Units placed by policy follow the ratio; the engine's start-up blocks
  // and explicit placement (mmtier_malloc_on) are forced to a tier and said
  // apart, so that a small process's start-up DRAM does not read as the
  // policy's share.
  heap_counters hc;
  heap_counters_get(&hc);
  human(a, sizeof a, hc.policy_units[0] * st.unit_size);
  human(b, sizeof b, hc.policy_units[1] * st.unit_size);
  human(c, sizeof c, (hc.units[0] - hc.policy_units[0]) * st.unit_size);
  human(d, sizeof d, (hc.units[1] - hc.policy_units[1]) * st.unit_size);
  o += format(out + o, sizeof out - o, "  placed by policy now: DRAM %s, PMem %s; start-up and explicit: DRAM %s, PMem %s\n",
              a, b, c, d);
  const size_t policy_peak = hc.policy_peak_units[0] + hc.policy_peak_units[1];
  const size_t res_total = st.resident_bytes[0] + st.resident_bytes[1];
  if (policy_peak)
    o += format(out + o, sizeof out - o, "  DRAM share: %zu%% of units placed by policy at peak, %zu%% of resident now\n",
                hc.policy_peak_units[0] * 100 / policy_peak, res_total ? st.resident_bytes[0] * 100 / res_total : 0);
  else
    o += format(out + o, sizeof out - o, "  DRAM share: nothing placed by policy; %zu%% of resident now\n",
                res_total ? st.resident_bytes[0] * 100 / res_total : 0);
  human(a, sizeof a, st.mapped_mmap_bytes);
  o += format(out + o, sizeof out - o,
              "  managed mmap now: %s, fallbacks to the other tier: %zu, forks: %zu\n", a,
              st.fallbacks, st.forks);
  mover_stats ms;
  mover_stats_get(&ms);
  o += fork_lines(out + o, sizeof out - o, hc, res, ms);
  o += mover_lines(out + o, sizeof out - o, ms);
  o += agent_line(out + o, sizeof out - o);
  const uint32_t lacks = faults_kernel_lacks();
  for (uint32_t b = 1; b < (1u << kLackBits); b <<= 1)
    if (lacks & b) o += format(out + o, sizeof out - o, "  kernel: %s\n", kernel_lack_meaning(b));
  size_t done = 0;
  while (done < o) {
    long n = sys::write(fd, out + done, o - done);
    if (n == -EINTR) continue;
    if (n < 0) return static_cast<int>(n);
    done += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace mmtier::detail
