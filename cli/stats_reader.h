// Finding and reading the statistics processes under libmmtier publish
// (lib/stats/live_format.h): where the files are, which are live (their
// process holds an exclusive flock) and which are stale (removed when
// found), and consistent snapshots of a live page.
#pragma once

#include "stats/live_format.h"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mmtier::cli {

namespace pub = mmtier::live_format;

// One consistent copy of a process's page and when it was taken.
struct snapshot {
  pub::stats_page page;
  std::string comm;       // page.comm, as valid UTF-8 without control characters
  std::string pmem_path;  // page.pmem_path, likewise
  uint64_t mono_ns = 0;   // CLOCK_MONOTONIC when copied
  uint64_t real_ns = 0;   // CLOCK_REALTIME when copied

  int pid() const { return page.pid; }
  // Resident bytes of a tier, or placed bytes when resident is not known.
  uint64_t dram_bytes() const { return shown_bytes(0); }
  uint64_t pmem_bytes() const { return shown_bytes(1); }
  bool resident_known() const {
    return page.tiers[0].resident_bytes != pub::kNone && page.tiers[1].resident_bytes != pub::kNone;
  }

 private:
  uint64_t shown_bytes(int t) const {
    uint64_t r = page.tiers[t].resident_bytes;
    return r != pub::kNone ? r : page.tiers[t].placed_bytes;
  }
};

// Where the reader looks, from MMTIER_STATS_DIR (the variable the library
// reads too): unset -> /dev/shm/mmtier-<euid>; "off" -> nowhere; else that
// directory.
struct stats_location {
  bool off = false;
  bool overridden = false;
  std::string dir;  // when overridden
};
stats_location stats_location_from_env();
inline constexpr const char *kDefaultStatsRoot = "/dev/shm";
std::string default_stats_dir(uid_t uid);

// The directories `stat --all` and `top` look at: the MMTIER_STATS_DIR one;
// else, as root, every /dev/shm/mmtier-<uid>; else the caller's own.
std::vector<std::string> stats_dirs_for_all(const stats_location &loc);

// A live, open statistics file.
class stats_source {
 public:
  stats_source() = default;
  stats_source(stats_source &&o) noexcept;
  stats_source &operator=(stats_source &&o) noexcept;
  stats_source(const stats_source &) = delete;
  stats_source &operator=(const stats_source &) = delete;
  ~stats_source();

  int pid() const { return pid_; }
  const std::string &path() const { return path_; }

  enum class read_status { ok, busy, foreign };
  // Copies a consistent snapshot.  busy: the writer was mid-write every
  // time (it is stopped); foreign: not a page of this format version.
  read_status read(snapshot *out) const;
  // Whether the process still holds its lock (false once it exited or
  // exec'd).
  bool alive() const;
  // Asks the process to measure its resident bytes about once a second
  // for the next 10 s (live_format.h, "Freshness"); only possible when the
  // file could be opened for writing (the process's own user, or root).
  // False when it could not ask.
  bool request_refresh() const;

 private:
  friend struct stats_opener;
  int fd_ = -1;  // read with pread, never mapped (the owner can truncate it)
  bool writable_ = false;
  int pid_ = 0;       // as this reader sees it
  int page_pid_ = 0;  // as the process sees itself (another PID namespace)
  std::string path_;
};

enum class open_status {
  ok,         // live: *source is set
  missing,    // no file for that pid
  stale,      // a file no process holds (removed if we were allowed to)
  denied,     // permission denied
  invalid,    // not a regular file, too small, wrong magic/version, other pid
  not_ready,  // live, but the page is not written yet
};
const char *open_status_name(open_status s);

struct open_result {
  open_status status = open_status::missing;
  int error = 0;  // errno for denied/invalid
  stats_source source;
};

// Opens <dir>/<pid>.stats; removes it when stale.  writable: open it for
// writing too when allowed, for request_refresh() (readers that sample
// repeatedly: top, plot); `stat` only reads.
open_result open_stats_file(const std::string &dir, int pid, bool writable = false);

// The page of a process (pid as this reader sees it) that lives in PID or
// mount namespaces of its own (a container): found through /proc/PID/root
// in its statistics directory (its MMTIER_STATS_DIR, else
// /dev/shm/mmtier-<its uid>) under the pid it sees itself as, every link
// resolved inside its root.  missing when it shares this reader's
// namespaces.  The source's pid is this reader's.
open_result open_stats_contained(int pid, bool writable = false);
// The pid a process sees itself as (the last of NSpid in its status; its
// pid here when it shares this PID namespace); 0 when gone.
int pid_inside(int pid);
// Opens path as process pid sees it (its mount namespace and root),
// every link resolved inside that root (openat2 RESOLVE_IN_ROOT): what a
// container's files name cannot lead out of it.  -1 with errno.
int open_in_process_root(int pid, const std::string &path, int flags);
// The control socket <its statistics directory>/<its pid><suffix> of a
// process in a container, found as open_stats_contained finds its page: an
// O_PATH descriptor of it when it is a socket of the process's user (to
// connect through /proc/self/fd/N), else -1 with errno (ENOENT when the
// process shares this reader's namespaces).
int open_control_contained(int pid, const char *suffix);
// The socket file at path as process pid sees it, if it is a socket owned
// by uid: an O_PATH descriptor, else -1 (errno EPERM when it is not).
int open_socket_in_root(int pid, const std::string &path, uid_t uid);
// Every live page in dirs (ascending pid); stale files are removed.
std::vector<stats_source> open_all(const std::vector<std::string> &dirs, bool writable = false);

// What /proc says about a process.
struct proc_info {
  bool exists = false;
  uid_t euid = 0;
  std::string comm;
};
proc_info read_proc(int pid);

// For `stat PID` and `plot PID`: the live page of pid, or a failure with
// the message the user sees (no such process, not running under libmmtier,
// permission denied, ...).
stats_source open_process(int pid, bool writable = false);

// Reads a snapshot of source for a command about one process, retrying a
// writer that is mid-write for a while; throws failure if it cannot.
snapshot read_or_fail(const stats_source &source);

}  // namespace mmtier::cli
