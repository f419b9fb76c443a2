// The live statistics a process under libmmtier publishes for readers in
// other processes (the mmtier command, monitoring).  This header is the
// format both sides compile against.
//
// Who: a process publishes once it has placed 16 MiB by policy; smaller
// ones (most processes of a host) publish nothing.
//
// Where: one file per process, <dir>/<pid>.stats, where <dir> is
// MMTIER_STATS_DIR or /dev/shm/mmtier-<euid> (on tmpfs; created mode 0700,
// refused unless owned by the process's user and closed to others' writes,
// the default one to group and others entirely).  The file is mode 0600
// and holds one struct stats_page, mapped shared by its process, which
// keeps no descriptor of it open.
//
// Liveness: the process maps its file for as long as it runs (exec drops
// the mapping).  A file is stale when no process of its pid exists, or that
// process's mappings (/proc/<pid>/maps) are readable and none is the file
// (it died and the pid was reused, or it exec'd).  A reader that cannot
// read them takes the file as live.  Files are put into the directory
// (written under a temporary name, then renamed over the name) and removed
// from it only under an exclusive flock of the directory itself, so a
// reader removing a stale file never removes a live one put there
// meanwhile.  A process removes its own file at exit.
//
// Consistency: a sequence lock.  The writer makes `seq` odd, writes, makes
// it even again; a reader copies the page and retries when `seq` was odd or
// changed during the copy (read_stats_fd below; readers use pread, never a
// mapping: the owner may truncate the file, and a mapping would fault).
//
// Freshness: the counters of placement (units, limits, forks, mmap bytes)
// are written whenever they change; the mover's counters after each scan;
// resident bytes are measured by an API call asking for them
// (mmtier_get_stats), by the mover every 10 s, or every second while a
// reader asked within the last 10 s (less often on a heap so large that a
// measurement every second would take more than 1 % of the mover's time) (a reader asks by adding 1 to
// `refresh_requests`, which needs the file open for writing), and by
// allocation slow paths of small processes without a mover, at most once a
// second.  `resident_ns` says when.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace mmtier::live_format {

inline constexpr uint64_t kMagic = 0x31747473746d6d23ull;  // "#mmtstt1"
inline constexpr uint32_t kVersion = 5;
inline constexpr int kTiers = 2;  // index 0 DRAM, 1 PMem
inline constexpr int kHeatBuckets = 8;
inline constexpr int kFailReasons = 4;  // distinct errno values of failed moves kept
inline constexpr uint64_t kNone = UINT64_MAX;  // no limit / not known

enum : uint32_t { kPolicyRatio = 0, kPolicyDramFirst = 1, kPolicyBandwidth = 2 };

struct tier_figures {
  uint64_t placed_bytes;    // units placed on the tier now x unit size
  uint64_t peak_bytes;      // most placed at once
  uint64_t policy_bytes;    // of placed_bytes, placed by policy (the rest: start-up
                            // blocks and explicit placement, forced to the tier)
  uint64_t resident_bytes;  // pages present, as of resident_ns (kNone: not measured yet)
  uint64_t limit_bytes;     // MMTIER_DRAM_LIMIT / MMTIER_PMEM_LIMIT, kNone if unset
};

struct stats_page {
  uint64_t magic;
  uint32_t version;
  uint32_t size;  // sizeof(stats_page) of the writer
  uint64_t seq;   // sequence lock, odd while being written

  // Identity and configuration, written once.
  int32_t pid;
  uint32_t uid;
  uint64_t started_ns;  // CLOCK_REALTIME when publishing began
  char comm[16];        // the program's name, NUL-terminated
  uint32_t policy;      // kPolicy*
  uint32_t ratio_dram, ratio_pmem;
  uint32_t promote;     // MMTIER_PROMOTE
  uint64_t unit_size;
  uint64_t scan_interval_ns;
  uint64_t migrate_limit_bps;  // MMTIER_MIGRATE_MBPS in bytes/s, 0: none
  char pmem_path[256];         // directory of the PMem tier's files

  // Placement (written when it changes).
  uint64_t updated_ns;   // CLOCK_REALTIME of the last write of anything
  tier_figures tiers[kTiers];
  uint64_t resident_ns;  // CLOCK_REALTIME of the resident figures, 0: never
  uint64_t fallbacks;
  uint64_t mmap_bytes;
  uint64_t forks;

  // The background mover (written after each scan).
  uint32_t mover_running;
  uint32_t kernel_lacks;  // what the kernel lacks (support/errors.h kLack* bits); 0: all there or not known
  uint64_t scans;
  uint64_t promotions;
  uint64_t demotions;
  uint64_t migrations_failed;
  uint64_t bytes_migrated;
  uint64_t migrate_rate_bps;  // bytes moved per second over the last ~1 s
  uint64_t samples;
  uint64_t samples_touched;
  uint64_t tracking_faults;
  uint64_t cpu_ns;             // CPU time of the mover and fault service
  uint64_t dram_budget_bytes;  // kNone: none
  uint64_t heat_histogram[kHeatBuckets];  // units by heat, bucket i: [i/8, (i+1)/8)
  uint64_t map_count_holds;  // scans whose migrations waited for room under vm.max_map_count
  // Failed moves by reason: the errno of the first kFailReasons distinct
  // reasons, each with its count (errno 0: unused); failed_other counts
  // the rest.  migrations_failed is their sum.
  struct failure {
    int32_t err;
    uint32_t pad;
    uint64_t count;
  } failures[kFailReasons];
  uint64_t failed_other;

  // Fork.  A fork freezes the process's PMem units (their file view made
  // private); the pages written since are anonymous copies, DRAM, until the
  // mover re-shares the unit.  frozen_bytes (with placement): units frozen
  // now x unit size, counted in tiers[1].placed_bytes; frozen_copied_bytes
  // (with the resident figures): the copies, counted in
  // tiers[0].resident_bytes.  The re-sharing (with the mover's counters):
  // units re-shared, bytes copied, the world stops made and their longest
  // and total pause, stops refused (a thread did not park in time), other
  // failures.
  uint64_t frozen_bytes;
  uint64_t frozen_copied_bytes;
  uint64_t reshares;
  uint64_t reshare_bytes;
  uint64_t reshare_stops;
  uint64_t reshare_pause_max_ns;
  uint64_t reshare_pause_total_ns;
  uint64_t reshare_stop_refusals;
  uint64_t reshare_failed;

  // Written by readers (atomically): see "Freshness" above.
  uint64_t refresh_requests;

  // Snapshots of the process (mmtier snapshot, periodic ones, the API),
  // written as each ends: durable capsules written; attempts that failed
  // (one refused because another was under way is not counted); when the
  // last durable one was taken (CLOCK_REALTIME, 0: never), its pause, its
  // memory bytes written, shared with earlier capsules and PMem linked;
  // the longest and total pause, the bytes written in all.
  uint64_t snapshots;
  uint64_t snapshots_failed;
  uint64_t snapshot_last_ns;
  uint64_t snapshot_last_pause_ns;
  uint64_t snapshot_last_written_bytes;
  uint64_t snapshot_last_shared_bytes;
  uint64_t snapshot_last_linked_bytes;
  uint64_t snapshot_pause_max_ns;
  uint64_t snapshot_pause_total_ns;
  uint64_t snapshot_written_bytes;
};

// Copies a consistent snapshot of the page in the stats file open on fd,
// with pread: a reader that maps a file another process can truncate would
// die of SIGBUS.  Returns 1 with *out a
// consistent copy, 0 when the writer stayed mid-write for `tries`
// attempts, -1 when the file is too short or not a page of this format
// (magic 0: created but not yet written).
inline int read_stats_fd(int fd, stats_page *out, int tries = 1000) {
  constexpr long kSeq = static_cast<long>(__builtin_offsetof(stats_page, seq));
  for (int i = 0; i < tries; ++i) {
    uint64_t s1 = 0, s2 = 0;
    if (::pread(fd, &s1, sizeof s1, kSeq) != static_cast<long>(sizeof s1)) return -1;
    if (s1 & 1) continue;
    if (::pread(fd, out, sizeof *out, 0) != static_cast<long>(sizeof *out)) return -1;
    if (::pread(fd, &s2, sizeof s2, kSeq) != static_cast<long>(sizeof s2)) return -1;
    if (s1 != s2 || out->seq != s1) continue;
    return out->magic == kMagic && out->version == kVersion && out->size >= sizeof *out ? 1 : -1;
  }
  return 0;
}

}  // namespace mmtier::live_format
