// Configuration: the table of every MMTIER_* option (name, default, what is
// accepted, one-line doc), the parsers for their values, and the one-time
// load from the process environment.  The environment is read by walking
// `environ`, not getenv, and nothing here allocates, so this runs safely on
// the first malloc call.  This file only parses; what the values mean is up
// to the policy, tier and report code.
#include "config/config.h"

#include <atomic>
#include <cerrno>
#include <cstdint>

#include <sched.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

namespace mmtier::detail {
namespace {

// ---------------------------------------------------------------------------
// The option table: the only place the options are named.  README.md's
// configuration table is checked against it by tests/unit/readme_options_test.

constexpr option_info kOptions[] = {
    {"MMTIER_DRAM_RATIO", "1:4", "D:P, integers 0..1000000, not both 0",
     "Of every D+P bytes placed, D go to DRAM and P to PMem (ratio policy)."},
    {"MMTIER_DRAM_LIMIT", "none", "a size (e.g. 512M, 2G; K/M/G/T, optional B or iB), 0, or none",
     "Most bytes placed in DRAM; beyond it allocations go to PMem, and 0 gives DRAM nothing."},
    {"MMTIER_PMEM_LIMIT", "none", "a size (e.g. 512M, 2G; K/M/G/T, optional B or iB), 0, or none",
     "Most bytes placed in PMem; beyond it allocations go to DRAM, and 0 gives PMem nothing."},
    {"MMTIER_PMEM_PATH", "/dev/shm, else /tmp", "an existing writable directory",
     "Directory holding the PMem tier's files (a DAX mount on real hardware)."},
    {"MMTIER_PMEM_RESERVE", "touch", "touch | place",
     "When a PMem unit's file storage is allocated: touch, at the first access to the unit (memory allocated "
     "and never used costs nothing, as anonymous memory); place, when the unit is placed (all of an "
     "allocation's PMem share at once, so a full file system is seen at allocation)."},
    {"MMTIER_SLOW_NODE", "auto", "auto, off, or a NUMA node number",
     "The slow tier as a NUMA node's memory (CXL memory, KMEM DAX) instead of a file: auto takes a node "
     "without CPUs (the farthest) when MMTIER_PMEM_PATH is unset; off always uses the file."},
    {"MMTIER_POLICY", "ratio", "ratio | dram-first | bandwidth",
     "ratio splits memory by MMTIER_DRAM_RATIO and the mover keeps hot memory in DRAM; dram-first fills DRAM up "
     "to its limit, then PMem; bandwidth interleaves units by MMTIER_DRAM_RATIO and the mover leaves them there."},
    {"MMTIER_PROMOTE", "1", "0 | 1",
     "1: a background thread moves hot units to DRAM and cold ones to PMem; 0: memory stays where "
     "placement put it."},
    {"MMTIER_BACKGROUND_AT", "32M", "a size (e.g. 32M, 1G; K/M/G/T), or 0",
     "How much memory the process places before mmtier starts its threads: the mover, and the control socket that "
     "mmtier snapshot and periodic snapshots use (0: at once, so that a small process can be snapshotted too)."},
    {"MMTIER_MIGRATE_MBPS", "256", "an integer 0..1000000 (MiB per second; 0: no limit)",
     "Most data moved between the tiers per second by promotion and demotion."},
    {"MMTIER_SCAN_INTERVAL", "100ms", "a duration from 1ms to 60s (us, ms or s suffix)",
     "Time between two access scans of the background thread."},
    {"MMTIER_HUGE_PAGES", "units", "units | kernel",
     "units: a DRAM unit mapped whole (an allocation of 2 MiB or more) is advised for a transparent huge page "
     "(MADV_HUGEPAGE), unless the system's setting is never, and the mover collapses units in full use split "
     "by a fork or a promotion into one again (MADV_COLLAPSE); kernel: nothing advised, the system's setting "
     "decides."},
    {"MMTIER_LOG", "warn", "error | warn | info | debug",
     "Least severe level of message written to stderr."},
    {"MMTIER_REPORT", "off", "off, stderr, or a file path (%p becomes the pid)",
     "Where to write a report of where memory went when the program exits."},
    {"MMTIER_STATS_DIR", "/dev/shm/mmtier-UID", "off, or a directory on tmpfs (created 0700 if missing)",
     "Where the process publishes its live statistics for the mmtier command; off: not published."},
    {"MMTIER_MMAP_THRESHOLD", "64K", "a size of at least 4096 (e.g. 64K, 1M)",
     "Anonymous mmaps at least this large are placed on tiers; smaller ones pass through."},
    {"MMTIER_SNAPSHOT_DIR", "$XDG_STATE_HOME/mmtier/capsules, else ~/.local/state/mmtier/capsules; "
     "/var/lib/mmtier/capsules for root",
     "an absolute directory path (created 0700 if missing)",
     "Where snapshots of the process are written (mmtier_snapshot); the PMem tier's file system keeps "
     "them cheapest."},
    {"MMTIER_SNAPSHOT_SIGNAL", "none",
     "none, or HUP, INT, QUIT, USR1, USR2, ALRM, TERM, PWR (SIG prefix allowed), or a number: those, or 34..63",
     "A signal that takes a snapshot (in MMTIER_SNAPSHOT_DIR) before it does what the program set it to do: "
     "with TERM, a snapshot and then the exit."},
    {"MMTIER_SNAPSHOT_EVERY", "off", "off, or a duration from 1s to 24h with an s, m or h suffix (e.g. 30s, 10m)",
     "Takes a snapshot at this interval (named auto-PID-UTCTIME, in MMTIER_SNAPSHOT_DIR) once the process has placed "
     "32 MiB, keeping the newest MMTIER_SNAPSHOT_KEEP."},
    {"MMTIER_SNAPSHOT_KEEP", "10", "an integer from 1 to 10000",
     "How many of its periodic snapshots a process keeps: after each, its older ones are deleted."},
    {"MMTIER_SNAPSHOT_CHAIN", "8", "an integer from 1 to 16",
     "How many data files a capsule's memory may be in, its own counted: a snapshot writes only the pages changed "
     "since the last one the process took in the same directory, until that would make more than N, then a full "
     "one; 1: always full."},
    {"MMTIER_AGENT_SOCKET", "/run/mmtier/agent.sock", "off, or an absolute socket path shorter than 108 bytes",
     "The node agent (mmtierd) to take a DRAM budget from: a process whose mover runs registers there when the "
     "socket exists, and works alone when it does not."},
    {"MMTIER_QOS_CLASS", "burstable", "guaranteed | burstable | best-effort",
     "The process's class in the node's DRAM: guaranteed keeps MMTIER_QOS_DRAM, burstable shares what the "
     "guarantees leave by MMTIER_QOS_WEIGHT, best-effort gets DRAM nobody else wants."},
    {"MMTIER_QOS_DRAM", "none", "a size (e.g. 512M, 4G), or none",
     "The DRAM guaranteed to a process of class guaranteed (required there; ignored in the other classes)."},
    {"MMTIER_QOS_WEIGHT", "100", "an integer from 1 to 10000",
     "A burstable process's weight: the DRAM the guarantees leave is shared in proportion to it."},
    {"MMTIER_HIDE_FEATURES", "none", "none, or a comma-separated list of wp-unpopulated, move, write-protect",
     "For tests: act as if the kernel lacked these features, to run the paths of older kernels."},
    {"MMTIER_CHECK_MOVES", "0", "0 | 1",
     "For tests: each demotion reads back what it wrote into PMem and compares it with the unit's pages, "
     "writers still held off, before it maps it; a page that differs is an error in the log (slow)."},
};
constexpr size_t kOptionCount = sizeof kOptions / sizeof kOptions[0];

constexpr char kPrefix[] = "MMTIER_";
constexpr size_t kPrefixLen = sizeof kPrefix - 1;
constexpr size_t kMinMmapThreshold = 4096;
constexpr uint32_t kRatioMax = 1000000;

// ---------------------------------------------------------------------------
// Small string helpers (no libc string functions needed, none allocate).

size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}

bool str_eq(const char *a, const char *b) {
  while (*a != '\0' && *a == *b) a++, b++;
  return *a == *b;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Copies s into dst (capacity cap, cap > 0), always NUL-terminated.
void copy_str(char *dst, size_t cap, const char *s) {
  size_t i = 0;
  for (; i + 1 < cap && s[i] != '\0'; i++) dst[i] = s[i];
  dst[i] = '\0';
}

// ---------------------------------------------------------------------------
// Error reporting: `invalid NAME="value": why`, value shortened if huge.

constexpr size_t kShownValueMax = 200;

void set_error(config_error *err, const char *name, const char *value, const char *why) {
  char shown[kShownValueMax + 4];
  size_t n = str_len(value);
  copy_str(shown, kShownValueMax + 1, value);
  if (n > kShownValueMax) copy_str(shown + kShownValueMax, 4, "...");
  format(err->line, sizeof err->line, "invalid %s=\"%s\": %s", name, shown, why);
}

// ---------------------------------------------------------------------------
// Per-option parsers, in table order.  Each stores into *out or describes
// the problem in *err; `name` comes from the table.

using option_parser = bool (*)(const char *name, const char *value, config *out, config_error *err);

bool parse_ratio_opt(const char *name, const char *value, config *out, config_error *err) {
  if (!parse_ratio(value, &out->ratio_dram, &out->ratio_pmem)) {
    set_error(err, name, value, "expected D:P with integers 0..1000000, not both 0 (e.g. 1:4)");
    return false;
  }
  return true;
}

bool parse_limit(const char *name, const char *value, size_t *out, config_error *err) {
  if (str_eq(value, "none")) {
    *out = SIZE_MAX;
    return true;
  }
  if (!parse_size(value, out)) {
    set_error(err, name, value,
              "expected a size in bytes with optional K/M/G/T suffix (e.g. 512M, 2G), 0, or none");
    return false;
  }
  return true;
}

bool parse_dram_limit_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_limit(name, value, &out->dram_limit, err);
}

bool parse_pmem_limit_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_limit(name, value, &out->pmem_limit, err);
}

bool writable_dir(const char *path) {
  struct stat st;
  return ::stat(path, &st) == 0 && S_ISDIR(st.st_mode) && ::access(path, W_OK | X_OK) == 0;
}

bool parse_pmem_path_opt(const char *name, const char *value, config *out, config_error *err) {
  if (value[0] == '\0') {
    set_error(err, name, value, "expected the path of an existing writable directory");
    return false;
  }
  if (str_len(value) >= kPathMax) {
    set_error(err, name, value, "path is too long (at most 4095 bytes)");
    return false;
  }
  struct stat st;
  if (::stat(value, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      set_error(err, name, value, "does not exist; expected an existing writable directory");
    } else {
      char why[96];
      format(why, sizeof why, "cannot be examined (errno %d); expected an existing writable directory",
             errno);
      set_error(err, name, value, why);
    }
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    set_error(err, name, value, "is not a directory; expected an existing writable directory");
    return false;
  }
  if (::access(value, W_OK | X_OK) != 0) {
    set_error(err, name, value, "is not writable; expected an existing writable directory");
    return false;
  }
  copy_str(out->pmem_path, sizeof out->pmem_path, value);
  out->pmem_path_set = true;
  return true;
}

bool parse_slow_node_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "auto")) {
    out->slow_node = kSlowNodeAuto;
    return true;
  }
  if (str_eq(value, "off")) {
    out->slow_node = kSlowNodeOff;
    return true;
  }
  long n = 0;
  const char *p = value;
  while (*p >= '0' && *p <= '9' && n < kMaxNodes) n = n * 10 + (*p++ - '0');
  if (p == value || *p || n >= kMaxNodes) {
    set_error(err, name, value, "expected auto, off, or a NUMA node number below 1024");
    return false;
  }
  out->slow_node = static_cast<int>(n);
  return true;
}

bool parse_policy_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "ratio")) {
    out->policy = policy_kind::ratio;
  } else if (str_eq(value, "dram-first")) {
    out->policy = policy_kind::dram_first;
  } else if (str_eq(value, "bandwidth")) {
    out->policy = policy_kind::bandwidth;
  } else {
    set_error(err, name, value, "expected ratio, dram-first or bandwidth");
    return false;
  }
  return true;
}

bool parse_pmem_reserve_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "touch")) {
    out->pmem_reserve_at_touch = true;
  } else if (str_eq(value, "place")) {
    out->pmem_reserve_at_touch = false;
  } else {
    set_error(err, name, value, "expected touch or place");
    return false;
  }
  return true;
}

bool parse_huge_pages_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "units")) {
    out->huge_units = true;
  } else if (str_eq(value, "kernel")) {
    out->huge_units = false;
  } else {
    set_error(err, name, value, "expected units or kernel");
    return false;
  }
  return true;
}

// "0" or "1" into *out.
bool parse_flag(const char *name, const char *value, bool *out, config_error *err) {
  if (!str_eq(value, "0") && !str_eq(value, "1")) {
    set_error(err, name, value, "expected 0 or 1");
    return false;
  }
  *out = str_eq(value, "1");
  return true;
}

bool parse_promote_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_flag(name, value, &out->promote, err);
}

bool parse_check_moves_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_flag(name, value, &out->check_moves, err);
}

bool parse_migrate_mbps_opt(const char *name, const char *value, config *out, config_error *err) {
  uint64_t v = 0;
  size_t i = 0;
  for (; value[i] >= '0' && value[i] <= '9' && v <= kRatioMax; ++i) v = v * 10 + static_cast<uint64_t>(value[i] - '0');
  if (i == 0 || value[i] != '\0' || v > kRatioMax) {
    set_error(err, name, value, "expected an integer from 0 to 1000000 (MiB per second; 0 means no limit)");
    return false;
  }
  out->migrate_mbps = static_cast<uint32_t>(v);
  return true;
}

bool parse_snapshot_every_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "off")) {
    out->snapshot_every_ns = 0;
    return true;
  }
  uint64_t v = 0, unit = 0;
  size_t i = 0;
  for (; value[i] >= '0' && value[i] <= '9' && v <= 86400; ++i) v = v * 10 + static_cast<uint64_t>(value[i] - '0');
  if (str_eq(value + i, "s")) unit = 1;
  if (str_eq(value + i, "m")) unit = 60;
  if (str_eq(value + i, "h")) unit = 3600;
  if (i == 0 || !unit || v * unit < 1 || v * unit > 86400) {
    set_error(err, name, value, "expected off, or a duration from 1s to 24h with an s, m or h suffix (e.g. 30s, 10m)");
    return false;
  }
  out->snapshot_every_ns = v * unit * 1000000000ull;
  return true;
}

// A whole number from lo to hi into *out; else why, with the option's
// error.
bool parse_count(const char *name, const char *value, uint32_t lo, uint32_t hi, const char *why, uint32_t *out,
                 config_error *err) {
  uint32_t v = 0;
  size_t i = 0;
  for (; value[i] >= '0' && value[i] <= '9' && v <= hi; ++i) v = v * 10 + static_cast<uint32_t>(value[i] - '0');
  if (i == 0 || value[i] != '\0' || v < lo || v > hi) {
    set_error(err, name, value, why);
    return false;
  }
  *out = v;
  return true;
}

bool parse_snapshot_keep_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_count(name, value, 1, 10000, "expected an integer from 1 to 10000", &out->snapshot_keep, err);
}

bool parse_snapshot_chain_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_count(name, value, 1, 16, "expected an integer from 1 to 16", &out->snapshot_chain, err);
}

bool parse_scan_interval_opt(const char *name, const char *value, config *out, config_error *err) {
  uint64_t ns = 0;
  if (!parse_duration(value, &ns) || ns < 1'000'000 || ns > 60'000'000'000) {
    set_error(err, name, value, "expected a duration from 1ms to 60s with a us, ms or s suffix (e.g. 100ms)");
    return false;
  }
  out->scan_interval_ns = ns;
  return true;
}

bool parse_log_opt(const char *name, const char *value, config *out, config_error *err) {
  static constexpr struct {
    const char *word;
    log_level level;
  } kLevels[] = {{"error", log_level::error},
                 {"warn", log_level::warn},
                 {"info", log_level::info},
                 {"debug", log_level::debug}};
  for (const auto &l : kLevels) {
    if (str_eq(value, l.word)) {
      out->log = l.level;
      return true;
    }
  }
  set_error(err, name, value, "expected error, warn, info or debug");
  return false;
}

bool parse_report_opt(const char *name, const char *value, config *out, config_error *err) {
  if (value[0] == '\0' || str_eq(value, "off")) {
    out->report[0] = '\0';
    return true;
  }
  if (str_len(value) >= kPathMax) {
    set_error(err, name, value, "expected off, stderr, or a file path shorter than 4096 bytes");
    return false;
  }
  copy_str(out->report, sizeof out->report, value);
  return true;
}

bool parse_background_at_opt(const char *name, const char *value, config *out, config_error *err) {
  size_t v;
  if (!parse_size(value, &v)) {
    set_error(err, name, value, "expected a size with optional K/M/G/T suffix (e.g. 32M), or 0");
    return false;
  }
  out->background_at = v;
  return true;
}

bool parse_mmap_threshold_opt(const char *name, const char *value, config *out, config_error *err) {
  size_t v;
  if (!parse_size(value, &v) || v < kMinMmapThreshold) {
    set_error(err, name, value,
              "expected a size of at least 4096 bytes with optional K/M/G/T suffix (e.g. 64K)");
    return false;
  }
  out->mmap_threshold = v;
  return true;
}

bool parse_stats_dir_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "off")) {
    out->stats_off = true;
    out->stats_dir[0] = '\0';
    return true;
  }
  // A file name "<pid>.stats" goes after it.
  if (value[0] != '/' || str_len(value) + 32 >= kPathMax) {
    set_error(err, name, value, "expected off, or an absolute directory path shorter than 4064 bytes");
    return false;
  }
  out->stats_off = false;
  copy_str(out->stats_dir, sizeof out->stats_dir, value);
  return true;
}

bool parse_agent_socket_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "off")) {
    out->agent_socket[0] = '\0';
    return true;
  }
  if (value[0] != '/' || str_len(value) >= sizeof out->agent_socket) {
    set_error(err, name, value, "expected off, or an absolute socket path shorter than 108 bytes");
    return false;
  }
  copy_str(out->agent_socket, sizeof out->agent_socket, value);
  return true;
}

bool parse_qos_class_opt(const char *name, const char *value, config *out, config_error *err) {
  if (str_eq(value, "guaranteed")) {
    out->qos_class = 0;
  } else if (str_eq(value, "burstable")) {
    out->qos_class = 1;
  } else if (str_eq(value, "best-effort") || str_eq(value, "besteffort")) {
    out->qos_class = 2;
  } else {
    set_error(err, name, value, "expected guaranteed, burstable or best-effort");
    return false;
  }
  return true;
}

bool parse_qos_dram_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_limit(name, value, &out->qos_dram, err);
}

bool parse_qos_weight_opt(const char *name, const char *value, config *out, config_error *err) {
  return parse_count(name, value, 1, 10000, "expected an integer from 1 to 10000", &out->qos_weight, err);
}

bool parse_hide_features_opt(const char *name, const char *value, config *out, config_error *err) {
  static constexpr struct {
    const char *word;
    uint32_t bit;
  } kFeatures[] = {
      {"wp-unpopulated", kHideWpUnpopulated}, {"move", kHideMove}, {"write-protect", kHideWriteProtect}};
  uint32_t bits = 0;
  if (!str_eq(value, "none") && value[0] != '\0') {
    for (const char *p = value;;) {
      const char *end = p;
      while (*end && *end != ',') ++end;
      bool known = false;
      for (const auto &f : kFeatures) {
        const size_t n = str_len(f.word);
        if (static_cast<size_t>(end - p) == n && __builtin_memcmp(p, f.word, n) == 0) {
          bits |= f.bit;
          known = true;
        }
      }
      if (!known) {
        set_error(err, name, value, "expected none, or a comma-separated list of wp-unpopulated, move, write-protect");
        return false;
      }
      if (!*end) break;
      p = end + 1;
    }
  }
  out->hide_features = bits;
  return true;
}

bool parse_snapshot_dir_opt(const char *name, const char *value, config *out, config_error *err) {
  if (value[0] != '/') {
    set_error(err, name, value, "expected an absolute directory path");
    return false;
  }
  if (str_len(value) >= kPathMax) {
    set_error(err, name, value, "path is too long (at most 4095 bytes)");
    return false;
  }
  copy_str(out->snapshot_dir, sizeof out->snapshot_dir, value);
  return true;
}

bool parse_snapshot_signal_opt(const char *name, const char *value, config *out, config_error *err) {
  static constexpr struct {
    const char *word;
    int sig;
  } kNames[] = {{"HUP", 1}, {"INT", 2}, {"QUIT", 3}, {"USR1", 10}, {"USR2", 12}, {"ALRM", 14}, {"TERM", 15},
                {"PWR", 30}};
  if (str_eq(value, "none")) {
    out->snapshot_signal = 0;
    return true;
  }
  const char *word = value;
  if (word[0] == 'S' && word[1] == 'I' && word[2] == 'G') word += 3;
  for (const auto &n : kNames) {
    if (str_eq(word, n.word)) {
      out->snapshot_signal = n.sig;
      return true;
    }
  }
  int sig = 0;
  const char *p = value;
  for (; *p >= '0' && *p <= '9' && sig < 1000; ++p) sig = sig * 10 + (*p - '0');
  bool ok = *p == 0 && p != value && ((sig >= 34 && sig <= 63));
  for (const auto &n : kNames) ok |= *p == 0 && p != value && sig == n.sig;
  if (!ok) {
    set_error(err, name, value,
              "expected none, HUP, INT, QUIT, USR1, USR2, ALRM, TERM, PWR, or a number: those, or 34..63");
    return false;
  }
  out->snapshot_signal = sig;
  return true;
}

constexpr option_parser kParsers[] = {
    parse_ratio_opt,  parse_dram_limit_opt, parse_pmem_limit_opt,
    parse_pmem_path_opt, parse_pmem_reserve_opt, parse_slow_node_opt, parse_policy_opt,  parse_promote_opt,
    parse_background_at_opt, parse_migrate_mbps_opt, parse_scan_interval_opt, parse_huge_pages_opt,
    parse_log_opt,    parse_report_opt,     parse_stats_dir_opt, parse_mmap_threshold_opt,
    parse_snapshot_dir_opt, parse_snapshot_signal_opt, parse_snapshot_every_opt, parse_snapshot_keep_opt,
    parse_snapshot_chain_opt, parse_agent_socket_opt, parse_qos_class_opt, parse_qos_dram_opt,
    parse_qos_weight_opt, parse_hide_features_opt, parse_check_moves_opt,
};
static_assert(sizeof kParsers / sizeof kParsers[0] == kOptionCount,
              "one parser per option, in table order");

// ---------------------------------------------------------------------------
// Walking envp.

// If `entry` is "MMTIER_...=value", returns the name length and sets *value.
bool split_entry(const char *entry, size_t *name_len, const char **value) {
  for (size_t i = 0; i < kPrefixLen; i++)
    if (entry[i] != kPrefix[i]) return false;
  size_t n = kPrefixLen;
  while (entry[n] != '\0' && entry[n] != '=') n++;
  if (entry[n] != '=') return false;  // not NAME=VALUE; getenv would not see it either
  *name_len = n;
  *value = entry + n + 1;
  return true;
}

// Index of the option named by the first `len` bytes of `name`, or -1.
int find_option(const char *name, size_t len) {
  for (size_t i = 0; i < kOptionCount; i++) {
    const char *o = kOptions[i].name;
    size_t j = 0;
    while (j < len && o[j] != '\0' && o[j] == name[j]) j++;
    if (j == len && o[j] == '\0') return static_cast<int>(i);
  }
  return -1;
}

void resolve_default_pmem_path(config *out) {
  if (out->pmem_path_set) return;
  copy_str(out->pmem_path, sizeof out->pmem_path, writable_dir("/dev/shm") ? "/dev/shm" : "/tmp");
}

// The value of the environment entry NAME=..., or nullptr.
const char *env_value(char *const *envp, const char *name) {
  const size_t n = str_len(name);
  for (char *const *e = envp; e && *e; e++) {
    size_t i = 0;
    while (i < n && (*e)[i] == name[i]) i++;
    if (i == n && (*e)[n] == '=') return *e + n + 1;
  }
  return nullptr;
}

// The capsule directory when MMTIER_SNAPSHOT_DIR is unset: the user's
// state directory (XDG), /var/lib for root; empty when there is none (a
// secure-execution process, no HOME): a snapshot then needs the option.
void resolve_default_snapshot_dir(char *const *envp, bool secure, config *out) {
  if (out->snapshot_dir[0]) return;
  const char *base = nullptr, *tail = nullptr;
  if (::geteuid() == 0) {
    base = "/var/lib";
    tail = "/mmtier/capsules";
  } else if (!secure) {
    const char *xdg = env_value(envp, "XDG_STATE_HOME");
    const char *home = env_value(envp, "HOME");
    if (xdg && xdg[0] == '/') {
      base = xdg;
      tail = "/mmtier/capsules";
    } else if (home && home[0] == '/') {
      base = home;
      tail = "/.local/state/mmtier/capsules";
    }
  }
  if (!base || str_len(base) + str_len(tail) >= sizeof out->snapshot_dir) return;
  copy_str(out->snapshot_dir, sizeof out->snapshot_dir, base);
  copy_str(out->snapshot_dir + str_len(base), sizeof out->snapshot_dir - str_len(base), tail);
}

// Reports each MMTIER_* entry whose name is not in the table.
void report_unknown(char *const *envp, void (*warn_unknown)(const char *, const char *)) {
  if (envp == nullptr || warn_unknown == nullptr) return;
  for (char *const *e = envp; *e != nullptr; e++) {
    size_t len;
    const char *value;
    if (!split_entry(*e, &len, &value) || find_option(*e, len) >= 0) continue;
    char name[128];
    copy_str(name, len + 1 < sizeof name ? len + 1 : sizeof name, *e);
    warn_unknown(name, closest_option(name));
  }
}

// ---------------------------------------------------------------------------
// The loaded configuration.

constinit config g_config;
// 0: not loaded, 1: being loaded by one thread, 2: loaded.
constinit std::atomic<int> g_state{0};

void log_unknown(const char *name, const char *suggestion) {
  if (suggestion != nullptr)
    MMTIER_WARN("unknown variable %s ignored; did you mean %s?", name, suggestion);
  else
    MMTIER_WARN("unknown variable %s ignored", name);
}

}  // namespace

const option_info *config_options(size_t *count) {
  if (count != nullptr) *count = kOptionCount;
  return kOptions;
}

bool parse_duration(const char *text, uint64_t *ns) {
  uint64_t v = 0;
  size_t i = 0;
  for (; text[i] >= '0' && text[i] <= '9'; ++i) {
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (i == 0) return false;
  uint64_t unit;
  if (str_eq(text + i, "us")) unit = 1000;
  else if (str_eq(text + i, "ms")) unit = 1000 * 1000;
  else if (str_eq(text + i, "s")) unit = 1000 * 1000 * 1000;
  else return false;
  if (v > UINT64_MAX / unit) return false;
  *ns = v * unit;
  return true;
}

bool parse_size(const char *text, size_t *out) {
  const char *p = text;
  if (*p < '0' || *p > '9') return false;  // empty, sign, space, or junk
  size_t v = 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    size_t d = static_cast<size_t>(*p - '0');
    if (v > (SIZE_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  unsigned shift = 0;
  switch (lower(*p)) {
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    case 't': shift = 40; break;
    default: break;
  }
  if (shift != 0) p++;
  if (shift != 0 && lower(p[0]) == 'i' && lower(p[1]) == 'b')
    p += 2;  // 512MiB
  else if (lower(*p) == 'b')
    p++;  // 512MB, 4096B
  if (*p != '\0') return false;
  if (shift != 0 && v > (SIZE_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

bool parse_ratio(const char *text, uint32_t *d, uint32_t *p) {
  uint32_t part[2];
  const char *s = text;
  for (int i = 0; i < 2; i++) {
    if (*s < '0' || *s > '9') return false;
    uint32_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
      v = v * 10 + static_cast<uint32_t>(*s - '0');
      if (v > kRatioMax) return false;
    }
    part[i] = v;
    if (i == 0) {
      if (*s != ':') return false;
      s++;
    }
  }
  if (*s != '\0' || (part[0] == 0 && part[1] == 0)) return false;
  *d = part[0];
  *p = part[1];
  return true;
}

bool config_parse(char *const *envp, bool secure, config *out, config_error *err,
                  void (*warn_unknown)(const char *name, const char *suggestion)) {
  *out = config{};
  if (!secure && envp != nullptr) {
    // Like getenv, the first of duplicate entries wins.
    bool seen[kOptionCount] = {};
    for (char *const *e = envp; *e != nullptr; e++) {
      size_t len;
      const char *value;
      if (!split_entry(*e, &len, &value)) continue;
      int idx = find_option(*e, len);
      if (idx < 0 || seen[idx]) continue;
      seen[idx] = true;
      if (!kParsers[idx](kOptions[idx].name, value, out, err)) return false;
    }
    report_unknown(envp, warn_unknown);
  }
  resolve_default_pmem_path(out);
  resolve_default_snapshot_dir(envp, secure, out);
  if (out->qos_class == 0 && out->qos_dram == SIZE_MAX) {
    set_error(err, "MMTIER_QOS_CLASS", "guaranteed", "a guaranteed process needs MMTIER_QOS_DRAM (the DRAM guaranteed)");
    return false;
  }
  return true;
}

void config_load() {
  int state = g_state.load(std::memory_order_acquire);
  if (state == 2) return;
  if (state == 0 && g_state.compare_exchange_strong(state, 1, std::memory_order_acquire)) {
    bool secure = ::getauxval(AT_SECURE) != 0;
    config_error err;
    // Parse without warnings first so the unknown-name warnings obey MMTIER_LOG.
    if (!config_parse(environ, secure, &g_config, &err, nullptr)) fatal_config("%s", err.line);
    log_set_level(g_config.log);
    if (!secure) report_unknown(environ, log_unknown);
    g_state.store(2, std::memory_order_release);
    return;
  }
  // Another thread is loading; it never allocates or blocks, so this is short.
  while (g_state.load(std::memory_order_acquire) != 2) ::sched_yield();
}

const config &config_get() { return g_config; }

}  // namespace mmtier::detail
