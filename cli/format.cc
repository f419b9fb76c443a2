// The formats of `mmtier stat`: a detailed view of one process, one table
// row per process, JSON (keys documented in `mmtier stat --help`) and the
// Prometheus text exposition format for a node exporter's textfile
// collector.
#include "format.h"

#include "support/errors.h"

#include "cli.h"

#include <ctime>

namespace mmtier::cli {

namespace {

constexpr const char *kTierKey[pub::kTiers] = {"dram", "pmem"};

std::string u64(uint64_t v) { return strf("%llu", static_cast<unsigned long long>(v)); }

// "ENOSPC", as the library names it.
std::string errno_text(int err) {
  char buf[24];
  return mmtier::detail::errno_name(err, buf);
}

// A byte figure that may be unknown / unlimited: JSON null then.
std::string json_opt(uint64_t v) { return v == pub::kNone ? "null" : u64(v); }

std::string bytes_or(uint64_t v, const char *none) { return v == pub::kNone ? none : human_bytes(v); }

std::string ago(uint64_t now_ns, uint64_t then_ns) {
  if (then_ns == 0) return "never";
  if (then_ns > now_ns) return "just now";
  double s = static_cast<double>(now_ns - then_ns) / 1e9;
  if (s < 120) return strf("%.1f s ago", s);
  if (s < 7200) return strf("%.0f min ago", s / 60);
  return strf("%.1f h ago", s / 3600);
}

std::string local_time(uint64_t unix_ns) {
  time_t t = static_cast<time_t>(unix_ns / 1000000000ull);
  tm tmv;
  localtime_r(&t, &tmv);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tmv);
  return buf;
}

std::string duration_text(uint64_t ns) {
  if (ns % 1000000000ull == 0) return strf("%llu s", static_cast<unsigned long long>(ns / 1000000000ull));
  if (ns % 1000000ull == 0) return strf("%llu ms", static_cast<unsigned long long>(ns / 1000000ull));
  return strf("%llu us", static_cast<unsigned long long>(ns / 1000ull));
}

// DRAM budget as shown: the configured limit, else the mover's budget.
uint64_t dram_budget_shown(const pub::stats_page &p) {
  return p.tiers[0].limit_bytes != pub::kNone ? p.tiers[0].limit_bytes : p.dram_budget_bytes;
}

std::string heat_list(const pub::stats_page &p) {
  std::string out;
  for (int i = 0; i < pub::kHeatBuckets; ++i) {
    if (i) out += ',';
    out += u64(p.heat_histogram[i]);
  }
  return out;
}

}  // namespace

// The word for a kernel_lacks bit (JSON and Prometheus).
const char *lack_name(uint32_t bit) {
  switch (bit) {
    case mmtier::detail::kLackUserfaultfd: return "userfaultfd";
    case mmtier::detail::kLackWriteProtect: return "write-protect";
    case mmtier::detail::kLackWpUnpopulated: return "wp-unpopulated";
    case mmtier::detail::kLackMove: return "move";
    default: return "unknown";
  }
}

const char *policy_name(uint32_t policy) {
  switch (policy) {
    case pub::kPolicyRatio: return "ratio";
    case pub::kPolicyDramFirst: return "dram-first";
    case pub::kPolicyBandwidth: return "bandwidth";
  }
  return "unknown";
}

std::string heat_bucket_label(int i) { return strf("%g", static_cast<double>(i + 1) / pub::kHeatBuckets); }

// --- human-readable

std::string format_detail(const snapshot &s) {
  const pub::stats_page &p = s.page;
  std::string o;
  auto line = [&o](const char *key, const std::string &value) { o += strf("%-17s %s\n", key, value.c_str()); };
  line("process", strf("%d (%s), uid %u", p.pid, s.comm.c_str(), p.uid));
  line("started", strf("%s (%s), updated %s", local_time(p.started_ns).c_str(), ago(s.real_ns, p.started_ns).c_str(),
                       ago(s.real_ns, p.updated_ns).c_str()));
  std::string policy = policy_name(p.policy);
  if (p.policy == pub::kPolicyRatio || p.policy == pub::kPolicyBandwidth) policy += strf(" %u:%u (DRAM:PMem)", p.ratio_dram, p.ratio_pmem);
  line("policy", policy);
  line("promotion", p.promote ? strf("on, scan every %s, at most %s/s moved", duration_text(p.scan_interval_ns).c_str(),
                                     p.migrate_limit_bps ? human_bytes(p.migrate_limit_bps).c_str() : "unlimited")
                              : std::string("off (MMTIER_PROMOTE=0)"));
  line("unit size", human_bytes(p.unit_size));
  line("PMem tier in", s.pmem_path);
  o += "\n";
  o += strf("%-17s %14s %14s\n", "", "DRAM", "PMem");
  auto row = [&](const char *key, auto get) {
    o += strf("%-17s %14s %14s\n", key, get(p.tiers[0]).c_str(), get(p.tiers[1]).c_str());
  };
  row("resident", [](const pub::tier_figures &t) { return bytes_or(t.resident_bytes, "-"); });
  row("placed", [](const pub::tier_figures &t) { return human_bytes(t.placed_bytes); });
  row("  by policy", [](const pub::tier_figures &t) { return human_bytes(t.policy_bytes); });
  row("  start-up, explicit", [](const pub::tier_figures &t) { return human_bytes(t.placed_bytes - t.policy_bytes); });
  row("peak placed", [](const pub::tier_figures &t) { return human_bytes(t.peak_bytes); });
  row("limit", [](const pub::tier_figures &t) { return bytes_or(t.limit_bytes, "none"); });
  line("resident as of", ago(s.real_ns, p.resident_ns));
  line("DRAM budget", bytes_or(p.dram_budget_bytes, "none"));
  o += "\n";
  line("mover", strf("%s, %llu scans", p.mover_running ? "running" : "not running",
                     static_cast<unsigned long long>(p.scans)));
  for (uint32_t b = 1; b < (1u << mmtier::detail::kLackBits); b <<= 1)
    if (p.kernel_lacks & b) line("kernel", mmtier::detail::kernel_lack_meaning(b));
  line("promotions", u64(p.promotions));
  line("demotions", u64(p.demotions));
  line("failed moves", u64(p.migrations_failed));
  for (const pub::stats_page::failure &f : p.failures)
    if (f.err) line(("  " + errno_text(f.err)).c_str(), strf("%s: %s", u64(f.count).c_str(), mmtier::detail::migration_failure_meaning(f.err)));
  if (p.failed_other) line("  other", u64(p.failed_other));
  if (p.map_count_holds) line("held (mappings)", strf("%llu scans near vm.max_map_count", static_cast<unsigned long long>(p.map_count_holds)));
  line("migrated", human_bytes(p.bytes_migrated));
  line("migrate rate", human_bytes(p.migrate_rate_bps) + "/s");
  line("samples", strf("%llu watched, %llu touched", static_cast<unsigned long long>(p.samples),
                       static_cast<unsigned long long>(p.samples_touched)));
  line("tracking faults", u64(p.tracking_faults));
  line("mover CPU", strf("%.3f s", static_cast<double>(p.cpu_ns) / 1e9));
  line("fallbacks", u64(p.fallbacks));
  line("managed mmap", human_bytes(p.mmap_bytes));
  line("forks", u64(p.forks));
  if (p.frozen_bytes || p.frozen_copied_bytes || p.reshares) {
    line("  frozen now", strf("%s of PMem units, %s of their pages copied to DRAM (in DRAM's resident)",
                              human_bytes(p.frozen_bytes).c_str(), human_bytes(p.frozen_copied_bytes).c_str()));
    line("  re-shared", strf("%llu units, %s copied, in %llu stops (longest %.3f ms, %.3f ms in all)",
                             static_cast<unsigned long long>(p.reshares), human_bytes(p.reshare_bytes).c_str(),
                             static_cast<unsigned long long>(p.reshare_stops),
                             static_cast<double>(p.reshare_pause_max_ns) / 1e6,
                             static_cast<double>(p.reshare_pause_total_ns) / 1e6));
    if (p.reshare_stop_refusals || p.reshare_failed)
      line("  gave up", strf("%llu stops (a thread would not stop), %llu failures",
                             static_cast<unsigned long long>(p.reshare_stop_refusals),
                             static_cast<unsigned long long>(p.reshare_failed)));
  }
  if (p.snapshots || p.snapshots_failed) {
    line("snapshots", strf("%llu taken, %llu failed, %s written in all, pauses %.3f ms longest, %.3f ms in all",
                           static_cast<unsigned long long>(p.snapshots),
                           static_cast<unsigned long long>(p.snapshots_failed),
                           human_bytes(p.snapshot_written_bytes).c_str(),
                           static_cast<double>(p.snapshot_pause_max_ns) / 1e6,
                           static_cast<double>(p.snapshot_pause_total_ns) / 1e6));
    if (p.snapshot_last_ns) {
      const time_t t = static_cast<time_t>(p.snapshot_last_ns / 1000000000);
      struct tm tm;
      char when[32];
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
      line("  last", strf("%s, paused %.3f ms, %s written, %s shared, %s of PMem linked", when,
                          static_cast<double>(p.snapshot_last_pause_ns) / 1e6,
                          human_bytes(p.snapshot_last_written_bytes).c_str(),
                          human_bytes(p.snapshot_last_shared_bytes).c_str(),
                          human_bytes(p.snapshot_last_linked_bytes).c_str()));
    }
  }
  o += "\nheat histogram (units by heat, 0 = cold, 1 = hot)\n";
  uint64_t most = 0;
  for (uint64_t v : p.heat_histogram) most = v > most ? v : most;
  for (int i = 0; i < pub::kHeatBuckets; ++i) {
    uint64_t v = p.heat_histogram[i];
    int width = most == 0 ? 0 : static_cast<int>((v * 40 + most - 1) / most);
    std::string bar = width > 0 ? " " + std::string(static_cast<size_t>(width), '#') : std::string();
    o += strf("  [%.3f, %.3f%c %10llu%s\n", static_cast<double>(i) / pub::kHeatBuckets,
              static_cast<double>(i + 1) / pub::kHeatBuckets, i + 1 == pub::kHeatBuckets ? ']' : ')',
              static_cast<unsigned long long>(v), bar.c_str());
  }
  return o;
}

std::string format_table(const std::vector<snapshot> &all) {
  static const char *const kFmt = "%7s  %-15s %8s %8s %8s %8s %8s %10s %10s %8s %8s %5s %8s  %s\n";
  std::string o = strf(kFmt, "PID", "COMMAND", "DRAM-RES", "DRAM-PLC", "DRAM-BGT", "PMEM-RES", "PMEM-PLC",
                       "PROMOTIONS", "DEMOTIONS", "MIGRATED", "RATE/S", "MOVER", "SCANS", "HEAT(cold..hot)");
  for (const snapshot &s : all) {
    const pub::stats_page &p = s.page;
    auto res = [](uint64_t v) { return v == pub::kNone ? std::string("-") : short_bytes(v); };
    uint64_t budget = dram_budget_shown(p);
    o += strf(kFmt, strf("%d", p.pid).c_str(), s.comm.c_str(), res(p.tiers[0].resident_bytes).c_str(),
              short_bytes(p.tiers[0].placed_bytes).c_str(),
              budget == pub::kNone ? "none" : short_bytes(budget).c_str(), res(p.tiers[1].resident_bytes).c_str(),
              short_bytes(p.tiers[1].placed_bytes).c_str(), u64(p.promotions).c_str(), u64(p.demotions).c_str(),
              short_bytes(p.bytes_migrated).c_str(), short_bytes(p.migrate_rate_bps).c_str(),
              p.mover_running ? "yes" : "no", u64(p.scans).c_str(), heat_list(p).c_str());
  }
  return o;
}

// --- JSON

std::string json_string(std::string_view s) {
  std::string o = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) o += strf("\\u%04x", c);
        else o += ch;
    }
  }
  o += '"';
  return o;
}

std::string format_json(const snapshot &s) {
  const pub::stats_page &p = s.page;
  std::string o = "{";
  bool first = true;
  auto field = [&](const char *key, const std::string &value) {
    if (!first) o += ",";
    first = false;
    o += strf("\"%s\":", key);
    o += value;
  };
  field("pid", strf("%d", p.pid));
  field("comm", json_string(s.comm));
  field("uid", strf("%u", p.uid));
  field("started_unix_ns", u64(p.started_ns));
  field("updated_unix_ns", u64(p.updated_ns));
  field("sampled_unix_ns", u64(s.real_ns));
  field("policy", json_string(policy_name(p.policy)));
  field("ratio_dram", strf("%u", p.ratio_dram));
  field("ratio_pmem", strf("%u", p.ratio_pmem));
  field("promote", p.promote ? "true" : "false");
  field("unit_size_bytes", u64(p.unit_size));
  field("scan_interval_ns", u64(p.scan_interval_ns));
  field("migrate_limit_bytes_per_second", p.migrate_limit_bps == 0 ? "null" : u64(p.migrate_limit_bps));
  field("pmem_path", json_string(s.pmem_path));
  std::string tiers = "{";
  for (int t = 0; t < pub::kTiers; ++t) {
    const pub::tier_figures &f = p.tiers[t];
    tiers += strf("%s\"%s\":{\"placed_bytes\":%s,\"policy_placed_bytes\":%s,\"peak_placed_bytes\":%s,"
                  "\"resident_bytes\":%s,\"limit_bytes\":%s}",
                  t ? "," : "", kTierKey[t], u64(f.placed_bytes).c_str(), u64(f.policy_bytes).c_str(),
                  u64(f.peak_bytes).c_str(), json_opt(f.resident_bytes).c_str(), json_opt(f.limit_bytes).c_str());
  }
  tiers += "}";
  field("tiers", tiers);
  field("resident_unix_ns", p.resident_ns == 0 ? "null" : u64(p.resident_ns));
  field("dram_budget_bytes", json_opt(p.dram_budget_bytes));
  field("fallbacks", u64(p.fallbacks));
  field("mmap_bytes", u64(p.mmap_bytes));
  field("forks", u64(p.forks));
  field("frozen_bytes", u64(p.frozen_bytes));
  field("frozen_copied_bytes", u64(p.frozen_copied_bytes));
  field("reshares", u64(p.reshares));
  field("reshare_bytes", u64(p.reshare_bytes));
  field("reshare_stops", u64(p.reshare_stops));
  field("reshare_pause_max_ns", u64(p.reshare_pause_max_ns));
  field("reshare_pause_total_ns", u64(p.reshare_pause_total_ns));
  field("reshare_stop_refusals", u64(p.reshare_stop_refusals));
  field("reshare_failed", u64(p.reshare_failed));
  field("snapshots", u64(p.snapshots));
  field("snapshots_failed", u64(p.snapshots_failed));
  field("snapshot_last_unix_ns", p.snapshot_last_ns ? u64(p.snapshot_last_ns) : "null");
  field("snapshot_last_pause_ns", u64(p.snapshot_last_pause_ns));
  field("snapshot_last_written_bytes", u64(p.snapshot_last_written_bytes));
  field("snapshot_last_shared_bytes", u64(p.snapshot_last_shared_bytes));
  field("snapshot_last_linked_bytes", u64(p.snapshot_last_linked_bytes));
  field("snapshot_pause_max_ns", u64(p.snapshot_pause_max_ns));
  field("snapshot_pause_total_ns", u64(p.snapshot_pause_total_ns));
  field("snapshot_written_bytes", u64(p.snapshot_written_bytes));
  field("mover_running", p.mover_running ? "true" : "false");
  {
    std::string lacks = "[";
    for (uint32_t b = 1; b < (1u << mmtier::detail::kLackBits); b <<= 1)
      if (p.kernel_lacks & b) lacks += strf("%s\"%s\"", lacks.size() > 1 ? "," : "", lack_name(b));
    field("kernel_lacks", lacks + "]");
  }
  field("scans", u64(p.scans));
  field("promotions", u64(p.promotions));
  field("demotions", u64(p.demotions));
  field("migrations_failed", u64(p.migrations_failed));
  {
    std::string reasons = "{";
    for (const pub::stats_page::failure &f : p.failures)
      if (f.err) reasons += strf("%s\"%s\":%s", reasons.size() > 1 ? "," : "", errno_text(f.err).c_str(), u64(f.count).c_str());
    if (p.failed_other) reasons += strf("%s\"other\":%s", reasons.size() > 1 ? "," : "", u64(p.failed_other).c_str());
    field("migrations_failed_by_reason", reasons + "}");
  }
  field("map_count_holds", u64(p.map_count_holds));
  field("migrated_bytes", u64(p.bytes_migrated));
  field("migrate_rate_bytes_per_second", u64(p.migrate_rate_bps));
  field("samples", u64(p.samples));
  field("samples_touched", u64(p.samples_touched));
  field("tracking_faults", u64(p.tracking_faults));
  field("mover_cpu_ns", u64(p.cpu_ns));
  field("heat_histogram", "[" + heat_list(p) + "]");
  o += "}";
  return o;
}

std::string format_json_all(const std::vector<snapshot> &all) {
  std::string o = "{\"processes\":[";
  for (size_t i = 0; i < all.size(); ++i) {
    if (i) o += ",";
    o += format_json(all[i]);
  }
  o += "]}";
  return o;
}

// --- Prometheus

std::string prometheus_label_value(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string format_prometheus(const std::vector<snapshot> &all, const std::function<std::string(int pid)> &extra_labels) {
  if (all.empty()) return {};
  std::string o;
  auto labels = [&](const snapshot &s) {
    std::string l = strf("pid=\"%d\",comm=\"%s\"", s.page.pid, prometheus_label_value(s.comm).c_str());
    if (extra_labels) {
      const std::string more = extra_labels(s.page.pid);
      if (!more.empty()) l += "," + more;
    }
    return l;
  };
  // One family: HELP, TYPE, then one sample per process (and label set).
  auto family = [&](const char *name, const char *type, const char *help, auto samples) {
    std::string body;
    for (const snapshot &s : all) samples(s, labels(s), &body);
    if (body.empty()) return;
    o += strf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    o += body;
  };
  auto simple = [&](const char *name, const char *type, const char *help, auto get) {
    family(name, type, help, [&](const snapshot &s, const std::string &l, std::string *body) {
      *body += strf("%s{%s} %s\n", name, l.c_str(), get(s.page).c_str());
    });
  };
  auto per_tier = [&](const char *name, const char *help, auto get) {
    family(name, "gauge", help, [&](const snapshot &s, const std::string &l, std::string *body) {
      for (int t = 0; t < pub::kTiers; ++t) {
        uint64_t v = get(s.page.tiers[t]);
        if (v == pub::kNone) continue;
        *body += strf("%s{%s,tier=\"%s\"} %s\n", name, l.c_str(), kTierKey[t], u64(v).c_str());
      }
    });
  };
  using page = pub::stats_page;
  using tf = pub::tier_figures;

  family("mmtier_info", "gauge", "Configuration of a process under libmmtier; the value is always 1.",
         [](const snapshot &s, const std::string &l, std::string *body) {
           const page &p = s.page;
           *body += strf("mmtier_info{%s,uid=\"%u\",policy=\"%s\",ratio=\"%u:%u\",promote=\"%u\",pmem_path=\"%s\"} 1\n",
                         l.c_str(), p.uid, policy_name(p.policy), p.ratio_dram, p.ratio_pmem, p.promote ? 1u : 0u,
                         prometheus_label_value(s.pmem_path).c_str());
         });
  simple("mmtier_start_time_seconds", "gauge", "When the process began publishing, in seconds since the epoch.",
         [](const page &p) { return strf("%.3f", static_cast<double>(p.started_ns) / 1e9); });
  per_tier("mmtier_resident_bytes", "Managed bytes resident in memory on a tier (pages present), as last measured.",
           [](const tf &t) { return t.resident_bytes; });
  per_tier("mmtier_placed_bytes", "Bytes of the units placed on a tier.", [](const tf &t) { return t.placed_bytes; });
  per_tier("mmtier_policy_placed_bytes",
           "Of the placed bytes, those placed by the ratio or budget (the rest: start-up blocks, explicit placement).",
           [](const tf &t) { return t.policy_bytes; });
  per_tier("mmtier_peak_placed_bytes", "Most bytes placed on a tier at once.", [](const tf &t) { return t.peak_bytes; });
  per_tier("mmtier_limit_bytes", "Configured limit of a tier (MMTIER_DRAM_LIMIT, MMTIER_PMEM_LIMIT); absent if none.",
           [](const tf &t) { return t.limit_bytes; });
  family("mmtier_dram_budget_bytes", "gauge", "DRAM budget of the mover's last scan; absent if none.",
         [](const snapshot &s, const std::string &l, std::string *body) {
           if (s.page.dram_budget_bytes != pub::kNone)
             *body += strf("mmtier_dram_budget_bytes{%s} %s\n", l.c_str(), u64(s.page.dram_budget_bytes).c_str());
         });
  family("mmtier_kernel_lacks", "gauge",
         "1 for each kernel feature the process lacks (feature: userfaultfd, write-protect, wp-unpopulated, move); "
         "absent when it lacks none.",
         [](const snapshot &s, const std::string &l, std::string *body) {
           for (uint32_t b = 1; b < (1u << mmtier::detail::kLackBits); b <<= 1)
             if (s.page.kernel_lacks & b)
               *body += strf("mmtier_kernel_lacks{%s,feature=\"%s\"} 1\n", l.c_str(), lack_name(b));
         });
  simple("mmtier_mover_running", "gauge", "1 while the background mover thread runs, else 0.",
         [](const page &p) { return std::string(p.mover_running ? "1" : "0"); });
  simple("mmtier_scans_total", "counter", "Access scans done by the mover.", [](const page &p) { return u64(p.scans); });
  simple("mmtier_promotions_total", "counter", "Units moved from PMem to DRAM.",
         [](const page &p) { return u64(p.promotions); });
  simple("mmtier_demotions_total", "counter", "Units moved from DRAM to PMem.",
         [](const page &p) { return u64(p.demotions); });
  simple("mmtier_migrations_failed_total", "counter", "Moves attempted that left the unit where it was.",
         [](const page &p) { return u64(p.migrations_failed); });
  family("mmtier_migrations_failed_by_reason_total", "counter",
         "Failed moves by reason: the errno name (reason=\"other\": reasons past the first four).",
         [](const snapshot &s, const std::string &l, std::string *body) {
           for (const pub::stats_page::failure &f : s.page.failures)
             if (f.err)
               *body += strf("mmtier_migrations_failed_by_reason_total{%s,reason=\"%s\"} %s\n", l.c_str(),
                             errno_text(f.err).c_str(), u64(f.count).c_str());
           if (s.page.failed_other)
             *body += strf("mmtier_migrations_failed_by_reason_total{%s,reason=\"other\"} %s\n", l.c_str(),
                           u64(s.page.failed_other).c_str());
         });
  simple("mmtier_map_count_holds_total", "counter",
         "Scans whose migrations were held back: the process was near vm.max_map_count.",
         [](const page &p) { return u64(p.map_count_holds); });
  simple("mmtier_migrated_bytes_total", "counter", "Bytes copied by promotions and demotions.",
         [](const page &p) { return u64(p.bytes_migrated); });
  simple("mmtier_migrate_rate_bytes_per_second", "gauge", "Bytes moved between the tiers per second, over the last second.",
         [](const page &p) { return u64(p.migrate_rate_bps); });
  simple("mmtier_samples_total", "counter", "Pages watched for an access.", [](const page &p) { return u64(p.samples); });
  simple("mmtier_samples_touched_total", "counter", "Watched pages found touched within their window.",
         [](const page &p) { return u64(p.samples_touched); });
  simple("mmtier_tracking_faults_total", "counter", "Page faults answered by the fault service.",
         [](const page &p) { return u64(p.tracking_faults); });
  simple("mmtier_mover_cpu_seconds_total", "counter", "CPU time of the mover and the fault service.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.cpu_ns) / 1e9); });
  simple("mmtier_fallbacks_total", "counter", "Placements that went to the other tier than the policy chose.",
         [](const page &p) { return u64(p.fallbacks); });
  simple("mmtier_mmap_bytes", "gauge", "Bytes of managed anonymous mmaps.", [](const page &p) { return u64(p.mmap_bytes); });
  simple("mmtier_forks_total", "counter", "fork()s that froze file-backed units.", [](const page &p) { return u64(p.forks); });
  simple("mmtier_frozen_bytes", "gauge", "PMem units frozen by fork now (their pages written since are DRAM copies).",
         [](const page &p) { return u64(p.frozen_bytes); });
  simple("mmtier_frozen_copied_bytes", "gauge",
         "Pages of frozen units copied to DRAM by writes since the fork (part of the DRAM resident bytes).",
         [](const page &p) { return u64(p.frozen_copied_bytes); });
  simple("mmtier_reshares_total", "counter", "Units frozen by fork given a shared PMem mapping again.",
         [](const page &p) { return u64(p.reshares); });
  simple("mmtier_reshare_bytes_total", "counter", "Bytes copied to re-share units frozen by fork.",
         [](const page &p) { return u64(p.reshare_bytes); });
  simple("mmtier_reshare_pause_seconds_total", "counter",
         "Time the program's threads were stopped to re-share units.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.reshare_pause_total_ns) / 1e9); });
  simple("mmtier_reshare_pause_max_seconds", "gauge", "The longest stop for a re-share.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.reshare_pause_max_ns) / 1e9); });
  simple("mmtier_snapshots_total", "counter", "Durable snapshots (capsules) taken of the process.",
         [](const page &p) { return u64(p.snapshots); });
  simple("mmtier_snapshots_failed_total", "counter", "Snapshots of the process that failed.",
         [](const page &p) { return u64(p.snapshots_failed); });
  simple("mmtier_snapshot_last_success_timestamp_seconds", "gauge",
         "When the last durable snapshot was taken (Unix time; 0: never).",
         [](const page &p) { return strf("%.3f", static_cast<double>(p.snapshot_last_ns) / 1e9); });
  simple("mmtier_snapshot_last_pause_seconds", "gauge", "How long the last snapshot stopped the program's threads.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.snapshot_last_pause_ns) / 1e9); });
  simple("mmtier_snapshot_pause_max_seconds", "gauge", "The longest snapshot pause.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.snapshot_pause_max_ns) / 1e9); });
  simple("mmtier_snapshot_pause_seconds_total", "counter", "Time snapshots stopped the program's threads.",
         [](const page &p) { return strf("%.9f", static_cast<double>(p.snapshot_pause_total_ns) / 1e9); });
  simple("mmtier_snapshot_last_written_bytes", "gauge", "Memory bytes the last snapshot wrote.",
         [](const page &p) { return u64(p.snapshot_last_written_bytes); });
  simple("mmtier_snapshot_last_shared_bytes", "gauge",
         "Memory bytes the last snapshot referred to in earlier capsules instead of writing (incremental).",
         [](const page &p) { return u64(p.snapshot_last_shared_bytes); });
  simple("mmtier_snapshot_last_linked_bytes", "gauge", "PMem bytes the last snapshot linked instead of copying.",
         [](const page &p) { return u64(p.snapshot_last_linked_bytes); });
  simple("mmtier_snapshot_written_bytes_total", "counter", "Memory bytes written by every snapshot.",
         [](const page &p) { return u64(p.snapshot_written_bytes); });
  family("mmtier_unit_heat", "gauge",
         "Units by heat (the decayed share of a unit's sampled pages found touched per scan, 0 cold to 1 hot); "
         "bucket is the upper bound of a heat range of width 0.125.",
         [](const snapshot &s, const std::string &l, std::string *body) {
           for (int i = 0; i < pub::kHeatBuckets; ++i)
             *body += strf("mmtier_unit_heat{%s,bucket=\"%s\"} %s\n", l.c_str(), heat_bucket_label(i).c_str(),
                           u64(s.page.heat_histogram[i]).c_str());
         });
  return o;
}

}  // namespace mmtier::cli
