// Taking a snapshot of this process (docs/SNAPSHOTS.md §3): every thread
// stopped together outside mmtier's critical sections, each thread's
// registers captured where it stopped, then a writer child forked from the
// stopped process writes the capsule from its copy-on-write image while the
// program runs on.  The capsule holds the memory as of the stop: writes the
// program makes after it never reach the capsule, and every write made
// before it is there.
#pragma once

#include "snapshot/capsule_format.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

struct snap_request {
  const char *name;  // capsule name ([A-Za-z0-9._-], at most 64); nullptr: <comm>-<pid>-<time>
  const char *dir;   // capsule directory; nullptr: the configured one (MMTIER_SNAPSHOT_DIR)
  int own_fd = -1;   // a descriptor of mmtier's that is not the program's (the control connection)
  bool full = false; // write every page, not only those changed since the last capsule (MMTIER_SNAPSHOT_CHAIN)
  // Keep every other thread stopped once the capsule is durable (0
  // returned): the program does nothing after the instant the capsule
  // holds until the caller ends the hold (snapshot_hold_end), resuming it
  // or ending the process (a migration).  Every mmtier lock stays held by
  // the caller meanwhile.  On failure the threads go on as usual.
  bool hold = false;
  // Copy the PMem units' pages into the capsule like any others (hashed,
  // so that the next capsule refers to those unchanged), instead of
  // linking the PMem files (ZeroIO): a migration's rounds, where a linked
  // file handed over would be copied again whole by the next re-share.
  bool copy_pmem = false;
};

struct snap_result {
  uint64_t paused_ns;   // every thread stopped, from the stop's start to the resume
  uint32_t threads;     // threads captured, the caller's included
  uint64_t mem_bytes;   // bytes of memory written to the capsule
  uint64_t shared;      // bytes of memory unchanged since earlier capsules, referred to (incremental)
  uint64_t pmem_linked; // bytes of PMem units the capsule links instead of copying (ZeroIO)
  uint64_t reshared_before;  // bytes copied to re-share PMem units frozen by the program's fork, before the stop
  uint64_t frozen_before;  // bytes of PMem-unit mappings made private before the stop, beside the program
  uint64_t frozen_in_stop; // the same in the stop (shared since the pre-freeze)
  char pmem_note[160];  // why PMem units were copied rather than linked, or ""
  char path[4096];      // the capsule's path
  char line[256];       // on failure: why, one line
};

// Takes a snapshot; returns when the capsule is complete (published under
// its final name, data and manifest written and synced to stable storage).
// 0, or -errno with result->line saying why and nothing left behind: -EBUSY
// (another snapshot of this process is under way), -EEXIST (a capsule of
// that name exists), -EINVAL (a bad name), -ENOENT (no capsule directory
// configured), -EAGAIN (a thread could not be stopped: result->line names
// it), -EOPNOTSUPP (a mapping a capsule cannot hold: MADV_DONTFORK), or the
// errno of the file system or of the writer.  Not async-signal-safe; the
// caller must not hold a lock any other thread needs to reach a point
// where it can stop.
//
// In a process restored from the capsule, the call returns again, with 1
// (result as it was at the snapshot): the thread resumes where it took
// the snapshot, after every layer was put right for the restored process
// (quiesce_restored) and the other threads were let go.
long snapshot_take(const snap_request &req, snap_result *result);

// In the pause: the process's POSIX timers into timers[0, *count) (at most
// max).  0, or -EOPNOTSUPP with line saying why (timers_capture.cc).
long capture_timers(capsule::timer_record *timers, uint32_t max, uint32_t *count, char *line, size_t line_cap);

// What this process's snapshots did so far (stats/live_format.h has the
// meaning of each; a restored process goes on from its original's).
struct snapshot_counters {
  uint64_t taken, failed, last_ns, last_pause_ns, last_written, last_shared, last_linked;
  uint64_t pause_max_ns, pause_total_ns, written;
};
void snapshot_counters_get(snapshot_counters *out);
// Ends the hold of a snapshot taken with snap_request::hold: every thread
// goes on (resume), or nothing is done and the caller ends the process
// (the snapshot is then not counted: nobody would read it).
void snapshot_hold_end(bool resume);
// Registers the counters' lock in the quiesce sequence; once, at start-up.
void snapshot_counters_register();
// Counts a snapshot that ended with r (snapshot_take's value) and res.
void snapshot_count(long r, const snap_result &res);
// Called (no lock held) each time a snapshot ends, for the statistics page.
extern void (*g_snapshot_done_hook)();

// Where the statistics page is (a layer above publishes it): read in the
// pause; its region is recorded as kind stats, which a restore leaves out.
extern uintptr_t (*g_snapshot_stats_page)();

}  // namespace mmtier::detail
