// Configuration: every MMTIER_* option in one table, read once from the
// environment (by walking envp, so it works before libc is fully ready).
// Nothing else in mmtier reads the environment.
#pragma once

#include "support/log.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// ratio: MMTIER_DRAM_RATIO, in runs of units, the mover moving hot units
// to DRAM within the budget (the latency policy); dram_first: DRAM up to
// its limit; bandwidth: MMTIER_DRAM_RATIO unit by unit, which the mover
// leaves as placed (it only demotes down to a budget).
enum class policy_kind : uint8_t { ratio, dram_first, bandwidth };

// Whether the policy splits memory by MMTIER_DRAM_RATIO.
inline bool policy_splits(policy_kind p) { return p != policy_kind::dram_first; }

inline constexpr size_t kPathMax = 4096;
inline constexpr int kSlowNodeAuto = -1, kSlowNodeOff = -2;
inline constexpr int kMaxNodes = 1024;  // NUMA nodes mmtier addresses (node numbers below it)

struct config {
  // MMTIER_DRAM_RATIO=D:P  (default 1:4)
  uint32_t ratio_dram = 1;
  uint32_t ratio_pmem = 4;
  // MMTIER_DRAM_LIMIT / MMTIER_PMEM_LIMIT: bytes, SIZE_MAX when unset.
  size_t dram_limit = SIZE_MAX;
  size_t pmem_limit = SIZE_MAX;
  // MMTIER_PMEM_PATH: directory for the PMem tier's files.  When unset the
  // default is /dev/shm, or /tmp when /dev/shm is not a writable directory;
  // pmem_path_set tells which.
  char pmem_path[kPathMax] = {};
  bool pmem_path_set = false;
  // MMTIER_PMEM_RESERVE=touch|place: a PMem unit's file storage is
  // allocated at its first access (true) or when it is placed.
  bool pmem_reserve_at_touch = true;
  // MMTIER_SLOW_NODE: the slow tier is this NUMA node's memory instead of a
  // file (>= 0); kSlowNodeAuto: a node without CPUs when there is one and
  // MMTIER_PMEM_PATH is unset; kSlowNodeOff: never.
  int slow_node = -1;
  policy_kind policy = policy_kind::ratio;  // MMTIER_POLICY=ratio|dram-first|bandwidth
  bool promote = true;                      // MMTIER_PROMOTE=0|1
  // MMTIER_BACKGROUND_AT: bytes placed before mmtier's threads (the mover,
  // the control socket) start; 0: at the first allocation.
  size_t background_at = size_t{32} << 20;
  // MMTIER_MIGRATE_MBPS: most MiB per second moved between tiers; 0 means
  // no limit.
  uint32_t migrate_mbps = 256;
  // MMTIER_SCAN_INTERVAL: time between two access scans of the background
  // thread, in nanoseconds (given as 100ms, 1s, 500us; 1 ms .. 60 s).
  uint64_t scan_interval_ns = 100'000'000;
  // MMTIER_HUGE_PAGES=units|kernel: DRAM units mapped whole are advised
  // for a transparent huge page (true), or left to the system's setting.
  bool huge_units = true;
  log_level log = log_level::warn;          // MMTIER_LOG=error|warn|info|debug
  // MMTIER_REPORT: "" (off), "stderr", or a file path; "%p" in the path is
  // replaced by the pid.  A report of where memory went is written at exit.
  char report[kPathMax] = {};
  // MMTIER_STATS_DIR: where live statistics are published (stats/live_stats.h);
  // empty: the default /dev/shm/mmtier-<euid>.  "off" sets stats_off.
  char stats_dir[kPathMax] = {};
  bool stats_off = false;
  // MMTIER_MMAP_THRESHOLD: anonymous mmaps of at least this many bytes are
  // managed (placed on tiers); smaller ones pass through.  Default 64K.
  size_t mmap_threshold = 64 * 1024;
  // MMTIER_SNAPSHOT_DIR: where capsules are written; when unset,
  // $XDG_STATE_HOME/mmtier/capsules, else $HOME/.local/state/mmtier/capsules,
  // /var/lib/mmtier/capsules for root; empty when none applies.
  char snapshot_dir[kPathMax] = {};
  // MMTIER_SNAPSHOT_SIGNAL: a signal that takes a snapshot before it does
  // what the program set it to do (0: none).  HUP, INT, QUIT, USR1, USR2,
  // ALRM, TERM, PWR or a real-time signal below the one mmtier stops with.
  int snapshot_signal = 0;
  // MMTIER_SNAPSHOT_CHAIN: how many capsules' data files (the capsule's own
  // mem and earlier ones' it refers to) an incremental snapshot may refer
  // to before a full one is written; 1: every snapshot is full.
  uint32_t snapshot_chain = 8;
  // MMTIER_SNAPSHOT_EVERY: the interval of periodic snapshots (0: off);
  // MMTIER_SNAPSHOT_KEEP: how many of them the process keeps.
  uint64_t snapshot_every_ns = 0;
  uint32_t snapshot_keep = 10;
  // MMTIER_AGENT_SOCKET: the node agent's socket (stats/agent_format.h);
  // empty: "off", no agent is asked.
  char agent_socket[108] = "/run/mmtier/agent.sock";
  // MMTIER_QOS_CLASS: 0 guaranteed, 1 burstable, 2 best-effort
  // (agent_format::qos_class); MMTIER_QOS_DRAM: the guarantee (bytes,
  // SIZE_MAX: none); MMTIER_QOS_WEIGHT: the burstable weight.
  uint32_t qos_class = 1;
  size_t qos_dram = SIZE_MAX;
  uint32_t qos_weight = 100;
  // MMTIER_HIDE_FEATURES: kernel features mmtier acts as if it lacked, so
  // that tests run the paths of older kernels on a new one (kHide* bits).
  uint32_t hide_features = 0;
  // MMTIER_CHECK_MOVES (tests): each demotion compares what it wrote into
  // PMem with the unit's pages before it maps it.
  bool check_moves = false;
};

// Bits of config::hide_features.
enum : uint32_t {
  kHideWpUnpopulated = 1u << 0,  // userfaultfd write-protection of unpopulated pages (6.4)
  kHideMove = 1u << 1,           // UFFDIO_MOVE (6.8)
  kHideWriteProtect = 1u << 2,   // userfaultfd write-protection of anonymous pages (5.7)
};

// One row of the option table (also used to check the README's table).
struct option_info {
  const char *name;          // "MMTIER_DRAM_RATIO"
  const char *default_text;  // "1:4"
  const char *accepted;      // "D:P, integers 0..1000000, not both 0"
  const char *doc;           // one sentence
};

struct config_error {
  char line[1024];  // the full one-line message, without "mmtier: " prefix
};

// Parses the MMTIER_* entries of envp into *out (starting from defaults).
// secure: the process runs in secure-execution mode (AT_SECURE); every
// MMTIER_* variable is then ignored and defaults are used.
// Returns true on success; on an invalid value returns false and fills *err.
// Unknown MMTIER_* names are reported through warn_unknown (one call each,
// with the closest known name, or nullptr when nothing is close).
[[nodiscard]] bool config_parse(char *const *envp, bool secure, config *out, config_error *err,
                                void (*warn_unknown)(const char *name, const char *suggestion));

// Parses the process environment once, sets the log level, and on an invalid
// value prints the one-line error and exits with status 1.  Idempotent.
void config_load();

// The loaded configuration (config_load() must have run).
const config &config_get();

// The option table.
const option_info *config_options(size_t *count);

// Parsers, exposed for tests.  Return false on invalid input.
[[nodiscard]] bool parse_size(const char *text, size_t *out);        // "512M", "2G", "4096", "1.5G" not accepted
[[nodiscard]] bool parse_ratio(const char *text, uint32_t *d, uint32_t *p);
[[nodiscard]] bool parse_duration(const char *text, uint64_t *ns);  // "100ms", "2s", "500us"; unit required
const char *closest_option(const char *name);  // nullptr if none within distance 3

}  // namespace mmtier::detail
