// `mmtier restore CAPSULE`: brings a process back from a capsule
// (docs/SNAPSHOTS.md §6).  The command checks the capsule (owner, status,
// kernel, every mapped file, every CRC), makes a user (when not root), PID
// and mount namespace so the process gets its own PID and TIDs, and starts
// in it a small init (PID 1) whose child takes the capsule's PID.  That
// child puts back the descriptors, working directory and umask, then jumps
// into the restorer (restorer/blob.cc), which replaces its memory with the
// capsule's and resumes every thread where it was stopped.  The command
// reports "ok" or the restorer's one line, then waits for the process (or,
// with --detach, leaves it running).
#include "capsule_read.h"
#include "cli.h"
#include "format.h"
#include "restore_fds.h"
#include "restore_lazy.h"

#include "restorer/plan.h"
#include "snapshot/capsule_dir.h"
#include "snapshot/capsule_format.h"
#include "snapshot/file_identity.h"
#include "support/crc32c.h"

#include <dirent.h>
#include <limits.h>
#include <poll.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

extern "C" {
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
}
extern "C" const char mmtier_restorer_blob[];
extern "C" const char mmtier_restorer_blob_end[];

namespace mmtier::cli {
namespace {

namespace cap = mmtier::capsule;
namespace rs = mmtier::restorer;
namespace snap = mmtier::snapshot;
static_assert(std::string_view(rs::kAttemptMarker) == std::string_view(cap::kAttemptMarker),
              "the restorer removes the marker the capsule knows");

constexpr uint64_t kPage = 4096;

struct options {
  std::string capsule, dir;
  bool dir_set = false, detach = false, verify = true, verify_set = false, lazy = false;
  bool pid_namespace = false;  // always a new PID namespace, even where the PIDs are free
  bool latest = false;         // the newest durable capsule (named as the argument starts)
  bool keep_stdio = false;     // --detach, but the standard streams stay this command's
  std::string pid_file;        // --detach: the host pid goes there, not to stdout
  std::string status_file;     // --detach: how the program ended goes there when it does
  int replace = 0;             // a running process (host pid) the restore kills first (rollback)
  bool clone = false;          // a thin clone: beside the original, the heap's pages shared with the capsule
  bool migrated = false;       // mmtier receive: the original is held stopped by mmtier migrate, which ends it
  bool stopped = false;        // --detach: the process stops before it runs, until SIGCONT
  std::string netns;           // a network namespace (a path, or a name under /run/netns) to restore into
  port_map ports;              // listening ports moved (FROM:TO)
  uint64_t fill_rate = 0;  // bytes per second, 0: no limit
  args or_run;             // --or-run: the program run afresh when there is no capsule to restore
  uint32_t program_crc = 0;  // its command line's CRC (as the capsule's header has it)
};

// A table the view keeps raw (threads, procstate, fds).
const cap::table_entry *table(const cap::manifest_view &m, cap::table_kind k) {
  for (uint32_t i = 0; i < m.ntables; ++i)
    if (m.dir[i].kind == static_cast<uint32_t>(k)) return &m.dir[i];
  return nullptr;
}
template <class T>
const T *records(const cap::manifest_view &m, cap::table_kind k, uint64_t *n) {
  const cap::table_entry *e = table(m, k);
  *n = 0;
  if (!e || e->record_size != sizeof(T)) return nullptr;
  *n = e->count;
  return reinterpret_cast<const T *>(reinterpret_cast<const char *>(m.status) + e->offset);
}

struct vdso_info {
  uint64_t vdso_lo = 0, vdso_hi = 0;
  uint64_t vvar_lo[2] = {}, vvar_hi[2] = {};
  int nvvar = 0;
  uint32_t crc = 0;
};

// This process's vDSO and vvar mappings, and the vDSO's CRC.
vdso_info own_vdso() {
  vdso_info v;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
    if (line.find("[vdso]") != std::string::npos) {
      v.vdso_lo = lo;
      v.vdso_hi = hi;
    } else if (line.find("[vvar") != std::string::npos && v.nvvar < 2) {
      v.vvar_lo[v.nvvar] = lo;
      v.vvar_hi[v.nvvar++] = hi;
    }
  }
  if (v.vdso_hi) v.crc = detail::crc32c(0, reinterpret_cast<const void *>(v.vdso_lo), v.vdso_hi - v.vdso_lo);
  return v;
}

// Field 22 of /proc/PID/stat (start time in clock ticks since boot), 0 if
// there is no such process or it has ended (a zombie its parent has not
// reaped yet: killed, it runs no more).
uint64_t start_ticks(long pid) {
  const std::string s = read_text(strf("/proc/%ld/stat", pid).c_str());
  const size_t paren = s.rfind(')');
  if (paren == std::string::npos || paren + 2 >= s.size() || s[paren + 2] == 'Z' || s[paren + 2] == 'X') return 0;
  std::istringstream in(s.substr(paren + 2));
  std::string f;
  for (int i = 3; i <= 22 && in >> f; ++i) {
  }
  return strtoull(f.c_str(), nullptr, 10);
}

// Whether process pid has SIGKILL pending (it is ending).
bool killed(long pid) {
  const std::string status = read_text(strf("/proc/%ld/status", pid).c_str());
  for (const char *key : {"\nShdPnd:", "\nSigPnd:"}) {
    const size_t at = status.find(key);
    if (at != std::string::npos && (strtoull(status.c_str() + at + 8, nullptr, 16) >> (SIGKILL - 1)) & 1) return true;
  }
  return false;
}

// The process the capsule was taken of, if it still runs: the one with its
// start time, command and PID as it saw it, whatever PID namespace it is in
// (a restored process's PID differs outside its own); its PID here, or 0.
// The start time alone is not enough: it counts clock ticks (10 ms), and
// processes started together share it.
long still_running(const cap::header &h) {
  if (start_ticks(h.pid) == h.starttime) return h.pid;
  DIR *d = opendir("/proc");
  if (!d) return 0;
  long found = 0;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const long pid = strtol(e->d_name, nullptr, 10);
    if (start_ticks(pid) == h.starttime && read_text(strf("/proc/%ld/comm", pid).c_str()) == h.comm &&
        own_pid(static_cast<int>(pid)) == h.pid) {
      found = pid;
      break;
    }
  }
  closedir(d);
  return found;
}

// A mapped file as the capsule saw it: the same file (device, inode, size,
// modification time) or a refusal naming it.
// Whether fd, opened at path, holds what f records of the file mapped at
// the snapshot: the same inode, size and modification time, or (another
// mount of the same image, another host, a package reinstalled from the
// same build) the same size and content identity: the ELF build id, else
// the modification time and the CRC of both ends.  "" when it does, else
// why not.
std::string file_differs(int fd, const cap::file &f, const char *path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return strf("cannot read %s: %s", path, strerror(errno));
  const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  const uint64_t dev = (uint64_t{major(st.st_dev)} << 32) | minor(st.st_dev);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != f.size)
    return strf("%s changed since the snapshot (its size)", path);
  if (st.st_ino == f.ino && dev == f.dev && mtime == f.mtime_ns) return "";
  auto read = [fd](void *buf, uint64_t n, uint64_t off) {
    return static_cast<long>(pread(fd, buf, n, static_cast<off_t>(off)));
  };
  std::vector<char> scratch(snap::kIdentityEnds);
  switch (static_cast<cap::file_identity>(f.identity)) {
    case cap::file_identity::build_id: {
      uint8_t id[20];
      uint32_t len = 0;
      if (snap::elf_build_id(read, f.size, scratch.data(), scratch.size(), id, &len) && len == f.build_id_len &&
          memcmp(id, f.build_id, len) == 0)
        return "";
      return strf("%s is another build than the one mapped at the snapshot (its build id differs)", path);
    }
    case cap::file_identity::ends: {
      uint32_t crc = 0;
      if (mtime == f.mtime_ns && snap::ends_crc(read, f.size, scratch.data(), scratch.size(), &crc) && crc == f.crc)
        return "";
      return strf("%s changed since the snapshot (its %s)", path, mtime != f.mtime_ns ? "modification time" : "content");
    }
    default:
      return strf("%s changed since the snapshot (another file or modification time; its content was not recorded)",
                  path);
  }
}

// A file the program writes through a shared mapping: its pages are the
// file's (as for a file it writes with write(), nothing is rolled back),
// so only the very file will do: the same device and inode, opened for
// reading and writing.  Its descriptor, or -1 with *why set.
int open_written_shared(const cap::file &f, const char *path, std::string *why) {
  const int fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    *why = strf("%s, which the program writes through a shared mapping, cannot be opened for writing: %s", path,
                strerror(errno));
    return -1;
  }
  struct stat st;
  const bool same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == f.ino &&
                    ((uint64_t{major(st.st_dev)} << 32) | minor(st.st_dev)) == f.dev;
  if (!same) {
    close(fd);
    *why = strf("%s is another file than the one the program wrote through a shared mapping at the snapshot "
                "(its writes there are the file's: only that very file will do)",
                path);
    return -1;
  }
  return fd;
}

// Shared anonymous memory (/dev/zero, System V's), which the restore makes
// again with its bytes: not a file.
bool shared_anonymous_path(const char *path) { return !strncmp(path, "/dev/zero", 9) || !strncmp(path, "/SYSV", 5); }

// Whether region g maps a file shared and writable.
bool written_shared(const cap::manifest_view &m, const cap::region &g) {
  return (g.flags & cap::kRegionShared) && (g.prot & PROT_WRITE) && g.file < m.nfiles &&
         !shared_anonymous_path(cap::string_at(m, m.files[g.file].path));
}

// Everything the command checks and prepares before any process changes.
struct image {
  located where;
  int dirfd = -1;
  manifest_file file;
  cap::manifest_view m{};
  const cap::procstate_record *proc = nullptr;
  const cap::thread_record *threads = nullptr;
  uint64_t nthreads = 0;
  bool leader_gone = false;  // no thread has the process's id (see check)
  const cap::fd_record *fds = nullptr;
  uint64_t nfds = 0;
  const unsigned char *fd_data = nullptr;
  uint64_t fd_data_len = 0;
  vdso_info vdso;
  uint64_t vdso_lo = 0, vvar_lo = 0, vvar_hi = 0;  // the capsule's
  bool clone = false;                              // options::clone
  bool stopped = false;                            // options::stopped
  bool in_order = false;  // no clone3 set_tid here: ids come from the kernel in order (pid_plan)
  bool in_place = false;  // this command becomes the process: its PID is the capsule's
  std::string ids_why;    // why the process cannot have its ids here (pid_plan returned false)
  const port_map *ports = nullptr;                 // options::ports
};

fd_image fd_view(const image &im) {
  fd_image v;
  v.m = &im.m;
  v.fds = im.fds;
  v.nfds = im.nfds;
  v.data = im.fd_data;
  v.data_len = im.fd_data_len;
  v.ports = im.ports;
  return v;
}

[[noreturn]] void refuse(const image &im, const std::string &why) {
  throw failure(strf("restore of %s refused: %s", im.where.path.c_str(), why.c_str()));
}

// _MMTIER_RESTORE_TIMERS_IN_ORDER=1: the restorer makes POSIX timers the
// way kernels before 6.16 need (ids used up in order) even where the kernel
// could make them at their ids, so that path runs on any kernel.
bool timers_in_order() {
  const char *v = getenv("_MMTIER_RESTORE_TIMERS_IN_ORDER");
  return v && !strcmp(v, "1");
}

void check(image &im, const options &o) {
  const int parent = open(im.where.parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent < 0) refuse(im, strf("cannot open %s: %s", im.where.parent.c_str(), strerror(errno)));
  const char *why = nullptr;
  const int r = cap::open_checked(parent, im.where.entry.c_str(), &im.dirfd, &why);
  close(parent);
  if (r < 0) refuse(im, open_error(r, why));
  if (int e = read_manifest(im.dirfd, &im.file); e < 0) refuse(im, strf("cannot read the manifest: %s", strerror(-e)));
  const cap::parse_error pe = cap::manifest_parse(im.file.data(), im.file.len, &im.m);
  if (pe != cap::parse_error::ok) refuse(im, strf("the manifest is unusable: %s", cap::parse_error_text(pe)));
  const cap::manifest_view &m = im.m;
  const cap::header &h = *m.hdr;
  const auto state = static_cast<cap::status>(m.status->state);
  if (state == cap::status::failed) refuse(im, strf("the snapshot failed: %s", m.status->line));
  if (state == cap::status::incomplete) refuse(im, "the capsule is incomplete (its writer did not finish)");
  if (state == cap::status::complete && read_text("/proc/sys/kernel/random/boot_id") != h.boot_id)
    refuse(im, "the capsule was never synced to stable storage and the machine rebooted since");
  if (geteuid() != 0 && h.euid != geteuid()) refuse(im, strf("the capsule is of user %u", h.euid));
  // --or-run: the capsule must be of the program asked for, with the same
  // arguments (a pod whose command changed starts afresh, not as before).
  if (!o.or_run.empty() && h.cmdline_crc && h.cmdline_crc != o.program_crc)
    refuse(im, "its process was started with another command line than the one given to run");
  uint64_t n = 0;
  im.proc = records<cap::procstate_record>(m, cap::table_kind::procstate, &n);
  if (!im.proc || n != 1) refuse(im, "the capsule has no process state");
  if (im.proc->flags & cap::kProcUnrestorable)
    refuse(im, "the snapshot was taken under a sanitizer, whose memory is not in the capsule");
  im.threads = records<cap::thread_record>(m, cap::table_kind::threads, &im.nthreads);
  if (!im.threads || !im.nthreads) refuse(im, "the capsule has no threads");
  im.fds = records<cap::fd_record>(m, cap::table_kind::fds, &im.nfds);
  im.fd_data = records<unsigned char>(m, cap::table_kind::fd_data, &im.fd_data_len);
  if (const cap::table_entry *e = table(m, cap::table_kind::fds); e && !im.fds)
    refuse(im, strf("the descriptor table's records are %u bytes, not %zu", e->record_size, sizeof(cap::fd_record)));
  if (const std::string e = fd_check(fd_view(im)); !e.empty()) refuse(im, e);
  bool leader = false;
  for (uint64_t i = 0; i < im.nthreads; ++i) {
    if (im.threads[i].tid == h.pid) leader = true;
    if (!im.threads[i].resume[7]) refuse(im, strf("thread %d has no resume point", im.threads[i].tid));
  }
  // No thread has the process's id: its leader thread had exited (the exit
  // system call, pthread_exit from main) and the others ran on.  The
  // restorer's own thread, which has that id, does the leader's part and
  // exits again.
  im.leader_gone = !leader;
  // POSIX timers: before Linux 6.16 a timer's id is reached by using up
  // every id below it (restorer make_timers), a few microseconds each.
  uint64_t ntimers = 0;
  if (const auto *tm = records<cap::timer_record>(m, cap::table_kind::timers, &ntimers)) {
    if (ntimers > rs::kMaxTimers)
      refuse(im, strf("the capsule holds %llu POSIX timers, more than %u", static_cast<unsigned long long>(ntimers),
                      rs::kMaxTimers));
    int32_t highest = -1;
    for (uint64_t i = 0; i < ntimers; ++i) highest = std::max(highest, tm[i].id);
    constexpr int32_t kInOrderMost = 1 << 20;
    if (highest >= kInOrderMost) {
      // (Arguments 3-5 zero: the kernel refuses the option otherwise.)
      const bool by_id = !timers_in_order() && prctl(77 /* PR_TIMER_CREATE_RESTORE_IDS */, 1, 0, 0, 0) == 0;
      if (by_id) prctl(77, 0, 0, 0, 0);
      else
        refuse(im, strf("its POSIX timer id %d is beyond what this kernel lets a restore reach (before Linux 6.16 "
                        "the %d ids below it would be made first)", highest, highest));
    }
  }
  if (h.pid < 1) refuse(im, strf("the process's id %d is not a process id", h.pid));
  // The init of its PID namespace comes back only in place, as the first
  // process of a new one (refused here, before a --replace ends anything).
  if (h.pid == 1 && (o.replace || o.detach || o.clone || o.migrated || o.pid_namespace || getpid() != 1))
    refuse(im, "the process was the init of its PID namespace: restore it as the first process of a new one (the "
               "container's command, or unshare --pid --fork mmtier restore)");
  // The same kernel: the program's C library holds addresses in the vDSO.
  const std::string release = read_text("/proc/sys/kernel/osrelease");
  const std::string version = read_text("/proc/sys/kernel/version");
  if (release != h.kernel_release || detail::crc32c(0, version.data(), version.size()) != h.kernel_version_crc)
    refuse(im, release == h.kernel_release
                   ? strf("the capsule was taken on another build of kernel %s", h.kernel_release)
                   : strf("the capsule was taken on kernel %s, this is %s", h.kernel_release, release.c_str()));
  im.vdso = own_vdso();
  if (im.vdso.vdso_hi - im.vdso.vdso_lo != h.vdso_len || im.vdso.crc != h.vdso_crc)
    refuse(im, "the vDSO of this kernel differs from the capsule's");
  for (uint64_t i = 0; i < m.nregions; ++i) {
    const cap::region &g = m.regions[i];
    const auto kind = static_cast<cap::region_kind>(g.kind);
    if (kind == cap::region_kind::vdso) im.vdso_lo = g.start;
    if (kind == cap::region_kind::vvar) {
      if (!im.vvar_lo) im.vvar_lo = g.start;
      im.vvar_hi = g.end;
    }
  }
  uint64_t own_vvar = 0;
  for (int k = 0; k < im.vdso.nvvar; ++k) own_vvar += im.vdso.vvar_hi[k] - im.vdso.vvar_lo[k];
  if (!im.vdso_lo || own_vvar != h.vvar_len || (im.vvar_lo && im.vvar_hi - im.vvar_lo != own_vvar))
    refuse(im, "the capsule's vDSO and vvar layout differs from this kernel's");
  // Every mapped file as it was.
  for (uint64_t i = 0; i < m.nfiles; ++i) {
    bool used = false, written = false;
    for (uint64_t k = 0; k < m.nregions; ++k) {
      const cap::region &g = m.regions[k];
      const bool maps_it = g.file == i && static_cast<cap::region_kind>(g.kind) == cap::region_kind::file &&
                           !((g.flags & cap::kRegionShared) && shared_anonymous_path(cap::string_at(m, m.files[i].path)));
      used = used || maps_it;
      written = written || (maps_it && written_shared(m, g));
    }
    if (!used) continue;
    const char *path = cap::string_at(m, m.files[i].path);
    if (written) {
      std::string why;
      const int wfd = open_written_shared(m.files[i], path, &why);
      if (wfd < 0) refuse(im, why);
      close(wfd);
      continue;
    }
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);  // whatever the path now names
    if (fd < 0) refuse(im, strf("%s is gone (%s)", path, strerror(errno)));
    const std::string why = file_differs(fd, m.files[i], path);
    close(fd);
    if (!why.empty()) refuse(im, why);
  }
  // ZeroIO: every PMem run lies in a region mapped on a PMem file of the
  // capsule's own, which is there.
  try {
    std::vector<uint64_t> need(m.nfiles, 0);  // bytes of each linked file the regions map
    for (uint64_t i = 0; i < m.nregions; ++i) {
      const cap::region &g = m.regions[i];
      const bool linked =
          g.file < m.nfiles && m.files[g.file].identity == static_cast<uint32_t>(cap::file_identity::capsule);
      for (uint64_t k = 0; k < g.nruns; ++k) {
        const cap::run &r = m.runs[g.first_run + k];
        if (r.source == static_cast<uint32_t>(cap::run_source::base)) {
          // Incremental: bytes an earlier capsule wrote, in its mem linked here.
          if (!is_base_file(m, r.file))
            refuse(im, strf("the manifest's region %#llx-%#llx refers to data in a file that is not an earlier "
                            "capsule's mem",
                            static_cast<unsigned long long>(g.start), static_cast<unsigned long long>(g.end)));
          need[r.file] = std::max(need[r.file], r.offset + r.npages * h.page_size);
          continue;
        }
        if (r.source != static_cast<uint32_t>(cap::run_source::pmem)) continue;
        // Mapped from the file at the region's offset: a run's bytes are
        // where the mapping puts them (its CRCs are of those).
        if (!linked || r.offset != g.file_offset + r.page * h.page_size)
          refuse(im, strf("the manifest's region %#llx-%#llx refers to PMem data it does not map",
                          static_cast<unsigned long long>(g.start), static_cast<unsigned long long>(g.end)));
      }
      if (linked) need[g.file] = std::max(need[g.file], g.file_offset + (g.end - g.start));
    }
    for (uint64_t i = 0; i < m.nfiles; ++i) {
      if (m.files[i].identity != static_cast<uint32_t>(cap::file_identity::capsule)) continue;
      const int fd = open_linked(im.dirfd, m, static_cast<uint32_t>(i));
      struct stat st;
      const bool others = fstat(fd, &st) != 0 || st.st_uid != geteuid();
      const bool short_file = !others && static_cast<uint64_t>(st.st_size) < need[i];
      close(fd);
      // Past its end a mapping of it reads as SIGBUS.
      if (short_file)
        refuse(im, strf(is_base_file(m, static_cast<uint32_t>(i))
                            ? "its earlier capsule's mem %s is shorter than the runs that refer to it"
                            : "its PMem file %s is shorter than the regions that map it",
                        cap::string_at(m, m.files[i].path)));
      // Mapped into this user's process (root restoring another user's
      // capsule), the file's owner could change its memory by writing it.
      if (others)
        refuse(im, strf("its PMem file %s belongs to user %u, whose writes to it would reach the restored process; "
                        "restore it as that user",
                        cap::string_at(m, m.files[i].path), static_cast<unsigned>(st.st_uid)));
    }
  } catch (const failure &e) {
    if (!strncmp(e.what(), "restore of ", 11)) throw;
    refuse(im, e.what());
  }
  // The original must be gone: two processes would own the same state (a
  // thin clone is a process of its own, beside it; a migrated one's
  // original is held stopped until this restore succeeded, then ended).
  if (!o.clone && !o.migrated && read_text("/proc/sys/kernel/random/boot_id") == h.boot_id && h.starttime) {
    long running = still_running(h);
    // Killed a moment ago (`kill -9 PID; mmtier restore`): a process with
    // SIGKILL pending is ending; it is waited for, up to 5 s.
    for (int i = 0; running && running != o.replace && i < 500 && killed(running); ++i) {
      usleep(10000);
      running = still_running(h);
    }
    if (running && running != o.replace)
      refuse(im, running == h.pid
                     ? strf("process %d, which the snapshot was taken of, is still running: stop it first", h.pid)
                     : strf("process %d, which the snapshot was taken of, is still running (host pid %ld): stop it "
                            "first",
                            h.pid, running));
  }
  if (o.verify) {
    try {
      // A lazy restore checks the chunks it leaves to the fill as it
      // serves them; the rest here, as an eager one does.
      std::vector<uint8_t> eager;
      if (o.lazy && !o.verify_set) eager = eager_chunks(m);
      verify_mem(im.dirfd, m, o.lazy && !o.verify_set ? &eager : nullptr);
      verify_linked(im.dirfd, m);
    } catch (const failure &e) {
      refuse(im, e.what());
    }
  }
}

// ---- in the restored process, before the jump

struct interval {
  uint64_t lo, hi;
};

// The mappings of this process (raw reads: called when nothing may
// allocate any more), excluding the kernel's own ([vdso], [vvar], [vsyscall]).
size_t read_own_maps(interval *out, size_t cap, size_t nkernel_cap, interval *kernel_out, size_t *nkernel) {
  const int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  static char buf[1 << 20];
  size_t have = 0;
  for (ssize_t r; (r = read(fd, buf + have, sizeof buf - 1 - have)) > 0;) have += static_cast<size_t>(r);
  close(fd);
  buf[have] = 0;
  size_t n = 0;
  *nkernel = 0;
  for (char *line = buf; *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    unsigned long lo = 0, hi = 0;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
      const bool special = strstr(line, "[vdso]") || strstr(line, "[vvar") || strstr(line, "[vsyscall]");
      if (special) {
        if (!strstr(line, "[vsyscall]") && *nkernel < nkernel_cap) kernel_out[(*nkernel)++] = {lo, hi};
      } else if (n < cap) {
        out[n++] = {lo, hi};
      }
    }
    if (!nl) break;
    line = nl + 1;
  }
  return n;
}

// A gap of len bytes that overlaps neither a mapping of the capsule nor one
// of this process.
uint64_t find_gap(const image &im, uint64_t len) {
  std::vector<interval> busy;
  for (uint64_t i = 0; i < im.m.nregions; ++i) busy.push_back({im.m.regions[i].start, im.m.regions[i].end});
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) busy.push_back({lo, hi});
  }
  std::sort(busy.begin(), busy.end(), [](const interval &a, const interval &b) { return a.lo < b.lo; });
  // Below the usual places of libraries and stacks, above the low 4 GiB.
  uint64_t at = uint64_t{1} << 32;
  const uint64_t guard = uint64_t{1} << 20;
  for (const interval &b : busy) {
    if (b.hi + guard <= at) continue;
    if (b.lo >= at + len + guard) return at;
    at = std::max(at, (b.hi + guard + 0x1fffff) & ~uint64_t{0x1fffff});
  }
  return at + len < (uint64_t{1} << 47) ? at : 0;
}

// --or-run restoring in place: the program to run afresh when the restore
// gives up before the restorer runs, and copies of the command's standard
// streams (once the program's descriptors took 0-2).
const args *g_fallback = nullptr;
int g_fallback_stdio[3] = {-1, -1, -1};
int g_marker_dirfd = -1;  // the capsule whose attempt marker this restore left (removed when it gives up)

// Writes the one line and exits: a failure before the restorer runs.  In
// place with --or-run, the program starts afresh instead (nothing of the
// restore has run; its descriptors go).
[[noreturn]] void die(int err_fd, const std::string &line) {
  std::string l = line + "\n";
  if (g_fallback) l = "mmtier restore: " + line + "; starting " + (*g_fallback)[0] + " afresh\n";
  if (write(err_fd, l.data(), l.size()) < 0) {
  }
  if (g_marker_dirfd >= 0) unlinkat(g_marker_dirfd, rs::kAttemptMarker, 0);
  if (g_fallback) {
    for (int k = 0; k < 3; ++k)
      if (g_fallback_stdio[k] >= 0) dup2(g_fallback_stdio[k], k);
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {  // a seccomp profile may refuse it
      struct rlimit nofile;
      const rlim_t most = getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024;
      for (rlim_t fd = 3; fd < most && fd < (1u << 20); ++fd) close(static_cast<int>(fd));
    }
    signal(SIGPIPE, SIG_DFL);
    std::vector<char *> argv;
    for (const std::string &w : *g_fallback) argv.push_back(const_cast<char *>(w.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    const std::string e = strf("mmtier: cannot run %s: %s\n", argv[0], strerror(errno));
    if (write(2, e.data(), e.size()) < 0) {
    }
    _exit(127);
  }
  _exit(1);
}

// A descriptor moved to at least `floor`, close-on-exec; the old one closed.
int move_high(int fd, int floor) {
  if (fd < 0) return fd;
  const int n = fcntl(fd, F_DUPFD_CLOEXEC, floor);
  close(fd);
  return n;
}

[[noreturn]] void become(const image &im, int err_fd, int host_pid, bool detach, int lazy_fd) {
  const cap::manifest_view &m = im.m;
  const cap::header &h = *m.hdr;
  const cap::procstate_record &ps = *im.proc;
  // Every descriptor of this command but the capsule's and the error pipe
  // goes first; the program's come back at their numbers.
  // The restore's own descriptors sit above every number of the program's,
  // within this process's limit (the restorer sets the capsule's last).
  struct rlimit nofile;
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  getrlimit(RLIMIT_NOFILE, &nofile);
  int highest = 0;
  for (uint64_t i = 0; i < im.nfds; ++i) highest = std::max(highest, static_cast<int>(im.fds[i].fd));
  const rlim_t room = nofile.rlim_cur > 128 ? nofile.rlim_cur - 64 : 64;
  const int floor = static_cast<int>(std::min<rlim_t>(std::max<rlim_t>(1024, static_cast<rlim_t>(highest) + 1), room));
  if (highest >= floor) die(err_fd, strf("descriptor %d is above what this process may open", highest));
  err_fd = move_high(err_fd, floor);
  if (err_fd < 0) _exit(1);
  if (lazy_fd >= 0 && (lazy_fd = move_high(lazy_fd, floor)) < 0) die(err_fd, "cannot keep the lazy restore's socket");
  const int dirfd = move_high(dup(im.dirfd), floor);
  // The standard streams: this command's, or /dev/null for a detached
  // process (nobody reads this command's output after it exits).
  const int null_fd = detach ? open("/dev/null", O_RDWR | O_CLOEXEC) : -1;
  const int stdio_copy[3] = {move_high(dup(detach ? null_fd : 0), floor), move_high(dup(detach ? null_fd : 1), floor),
                             move_high(dup(detach ? null_fd : 2), floor)};
  // In place with --or-run: the command's streams for the program run
  // afresh if anything below fails (closed by the restorer otherwise).
  if (g_fallback)
    for (int k = 0; k < 3; ++k) g_fallback_stdio[k] = stdio_copy[k];
  if (dirfd < 0) die(err_fd, strf("cannot keep the capsule open: %s", strerror(errno)));
  for (int fd = 0; fd < floor; ++fd) close(fd);
  std::vector<fd_cut> cuts;
  if (const std::string e = fd_restore(fd_view(im), stdio_copy, floor, &cuts); !e.empty()) die(err_fd, e);
  if (!g_fallback)
    for (int k = 0; k < 3; ++k) close(stdio_copy[k]);
  const int mem_fd = openat(dirfd, cap::kMem, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (mem_fd < 0) die(err_fd, strf("cannot open the capsule's mem: %s", strerror(errno)));
  if (chdir(cap::string_at(m, ps.cwd)) != 0)
    die(err_fd, strf("cannot enter the working directory %s: %s", cap::string_at(m, ps.cwd), strerror(errno)));
  umask(ps.umask);
  // The mapped files, each opened once.
  std::vector<int> file_fd(m.nfiles, -1);
  std::vector<int> to_close = {mem_fd, dirfd};
  for (int fd : g_fallback_stdio)
    if (fd >= 0) to_close.push_back(fd);
  int last_pid_fd = -1;
  if (im.in_order) {
    last_pid_fd = move_high(open("/proc/sys/kernel/ns_last_pid", O_RDONLY | O_CLOEXEC), floor);
    if (last_pid_fd < 0) die(err_fd, strf("cannot read /proc/sys/kernel/ns_last_pid: %s", strerror(errno)));
    to_close.push_back(last_pid_fd);
  }
  std::vector<int> pmem_keep;  // the capsule's PMem files the library keeps
  for (uint64_t i = 0; i < m.nregions; ++i) {
    const cap::region &g = m.regions[i];
    if (static_cast<cap::region_kind>(g.kind) != cap::region_kind::file || g.file == cap::kNoFile ||
        file_fd[g.file] >= 0)
      continue;
    const char *path = cap::string_at(m, m.files[g.file].path);
    if ((g.flags & cap::kRegionShared) && shared_anonymous_path(path)) continue;  // made again, not opened
    // A file written through a shared mapping anywhere is opened for
    // writing (the same open serves its other mappings).
    bool written = false;
    for (uint64_t k = 0; k < m.nregions && !written; ++k)
      written = m.regions[k].file == g.file && static_cast<cap::region_kind>(m.regions[k].kind) ==
                                                   cap::region_kind::file && written_shared(m, m.regions[k]);
    std::string why;
    const int fd = written ? open_written_shared(m.files[g.file], path, &why)
                           : open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) die(err_fd, written ? why : strf("cannot open %s: %s", path, strerror(errno)));
    if (!written) why = file_differs(fd, m.files[g.file], path);
    if (!why.empty()) die(err_fd, why);
    file_fd[g.file] = fd;
    to_close.push_back(fd);
  }
  int exe_fd = -1;
  if (ps.exe) {
    exe_fd = open(cap::string_at(m, ps.exe), O_RDONLY | O_CLOEXEC);
    if (exe_fd >= 0) to_close.push_back(exe_fd);
  }
  // Earlier capsules' mem files an incremental capsule links, opened once
  // each (above the program's numbers).
  std::vector<int> base_fds(m.nfiles, -1);
  auto base_fd = [&](uint32_t file) {
    if (file >= m.nfiles) die(err_fd, "the manifest refers to a file it does not have");
    if (base_fds[file] < 0) {
      try {
        base_fds[file] = move_high(open_linked(dirfd, m, file), floor);
      } catch (const failure &e) {
        die(err_fd, e.what());
      }
      if (base_fds[file] < 0) die(err_fd, strf("cannot keep an earlier capsule's mem open: %s", strerror(errno)));
      to_close.push_back(base_fds[file]);
    }
    return base_fds[file];
  };
  // The plan's map and copy operations.
  std::vector<rs::map_op> maps;
  std::vector<rs::copy_op> copies;
  // A thin clone maps the heap's runs from the capsule (each a mapping of
  // its own) within an eighth of what the kernel allows a process (the
  // program and the heap's own splits need the rest), and runs of at least
  // kShareMin: a shorter one is read, its few pages private.
  constexpr uint64_t kShareMin = 64 << 10;
  uint64_t share_left = 0;
  if (im.clone) {
    const long most = atol(read_text("/proc/sys/vm/max_map_count").c_str());
    share_left = most > 8 * static_cast<long>(m.nregions) ? static_cast<uint64_t>(most) / 8 - m.nregions : 0;
  }
  for (uint64_t i = 0; i < m.nregions; ++i) {
    const cap::region &g = m.regions[i];
    const auto kind = static_cast<cap::region_kind>(g.kind);
    if (kind == cap::region_kind::vdso || kind == cap::region_kind::vvar) continue;
    rs::map_op op{};
    op.start = g.start;
    op.end = g.end;
    op.prot = g.prot;
    op.madv = g.madv;
    op.fd = -1;
    const bool shared = g.flags & cap::kRegionShared;
    const char *path = g.file != cap::kNoFile ? cap::string_at(m, m.files[g.file].path) : "";
    switch (kind) {
      case cap::region_kind::reserve:
        op.kind = static_cast<uint32_t>(rs::map_kind::reserve);
        break;
      case cap::region_kind::stack:
        op.kind = static_cast<uint32_t>(rs::map_kind::stack);
        break;
      case cap::region_kind::file:
        if (!shared) {
          op.kind = static_cast<uint32_t>(rs::map_kind::file);
          op.fd = file_fd[g.file];
          op.file_offset = g.file_offset;
        } else if (shared_anonymous_path(path)) {
          op.kind = static_cast<uint32_t>(rs::map_kind::anon_shared);
        } else if (file_fd[g.file] >= 0) {
          // The file's pages, as before: read-only (its identity was
          // checked), or written through the mapping (the very file, its
          // writes since the snapshot its own): never the capsule's copies.
          op.kind = static_cast<uint32_t>(rs::map_kind::file_shared);
          op.fd = file_fd[g.file];
          op.file_offset = g.file_offset;
          maps.push_back(op);
          continue;
        } else {
          die(err_fd, strf("mapping %#llx-%#llx is a shared mapping of %s, which is not open",
                           static_cast<unsigned long long>(g.start), static_cast<unsigned long long>(g.end), path));
        }
        break;
      case cap::region_kind::stats:
        // mmtier's statistics page: not restored.  The restored library
        // forgets it before anything reads it (its restore handler runs
        // first) and publishes a page of its own.
        continue;
      default:  // unit, anon, brk: private memory of the process's own
        op.kind = static_cast<uint32_t>(rs::map_kind::anon);
        if (g.file != cap::kNoFile && g.file < m.nfiles &&
            m.files[g.file].identity == static_cast<uint32_t>(cap::file_identity::capsule)) {
          // A PMem unit whose data the capsule links (ZeroIO): the file
          // mapped privately, as the frozen unit was, its copies on top.
          if (file_fd[g.file] < 0) {
            try {
              // Above the program's numbers, as the restore's own are.
              file_fd[g.file] = move_high(open_linked(dirfd, m, g.file), floor);
            } catch (const failure &e) {
              die(err_fd, e.what());
            }
            if (file_fd[g.file] < 0) die(err_fd, strf("cannot keep the capsule's PMem file open: %s", strerror(errno)));
            // Left open for the library to hold (restore_note) when it
            // knows of them.
            if (h.restore_note_size >= rs::kNoteWithPmemFds && pmem_keep.size() < 8)
              pmem_keep.push_back(file_fd[g.file]);
            else
              to_close.push_back(file_fd[g.file]);
          }
          op.kind = static_cast<uint32_t>(rs::map_kind::file);
          op.fd = file_fd[g.file];
          op.file_offset = g.file_offset;
        }
        break;
    }
    op.first_copy = copies.size();
    for (uint64_t k = 0; k < g.nruns; ++k) {
      const cap::run &r = m.runs[g.first_run + k];
      int fd = mem_fd;
      if (r.source == static_cast<uint32_t>(cap::run_source::base))
        fd = base_fd(r.file);
      else if (r.source != static_cast<uint32_t>(cap::run_source::mem))
        continue;
      const uint64_t addr = g.start + r.page * h.page_size, len = r.npages * h.page_size;
      if (copies.size() > op.first_copy && copies.back().addr + copies.back().len == addr &&
          copies.back().fd == fd && copies.back().mem_off + copies.back().len == r.offset)
        copies.back().len += len;
      else
        copies.push_back({addr, len, r.offset, fd, 0});
    }
    op.ncopies = copies.size() - op.first_copy;
    for (uint64_t k = op.first_copy; kind == cap::region_kind::unit && k < copies.size() && share_left; ++k)
      if (copies[k].len >= kShareMin && copies[k].mem_off % kPage == 0) {
        copies[k].map = 1;
        op.no_huge = 1;
        --share_left;
      }
    // Huge pages fill a large region at a fault per 2 MiB, but one where
    // the copies cover less than half would grow by up to 2 MiB per 4 KiB
    // copied; and a page that maps the capsule is no anonymous one.
    uint64_t copied = 0;
    for (uint64_t k = op.first_copy; k < copies.size(); ++k) copied += copies[k].len;
    if (copied * 2 < g.end - g.start) op.no_huge = 1;
    if (op.kind == static_cast<uint32_t>(rs::map_kind::reserve) && op.ncopies)
      op.kind = static_cast<uint32_t>(rs::map_kind::anon);
    // Left to init's fill (restore_lazy.cc decides the same for the same
    // region): mapped empty, registered for missing pages.
    op.lazy = lazy_fd >= 0 && op.kind == static_cast<uint32_t>(rs::map_kind::anon) && lazy_region(m, g);
    maps.push_back(op);
  }
  // B: the restorer's code, the plan and its tables, a stack per thread.
  const uint64_t code_len = static_cast<uint64_t>(mmtier_restorer_blob_end - mmtier_restorer_blob);
  const uint64_t code_bytes = (code_len + kPage - 1) & ~(kPage - 1);
  uint64_t data_bytes = sizeof(rs::plan) + maps.size() * sizeof(rs::map_op) + copies.size() * sizeof(rs::copy_op) +
                        (im.nthreads + 1) * sizeof(rs::thread_op) + 4096 * 16 + kPage;
  data_bytes = (data_bytes + kPage - 1) & ~(kPage - 1);
  const uint64_t stacks = (im.nthreads + 1) * rs::kThreadStack;
  const uint64_t b_len = code_bytes + data_bytes + stacks;
  const uint64_t b = find_gap(im, b_len);
  if (!b) die(err_fd, "no room for the restorer in the capsule's address space");
  void *bp = mmap(reinterpret_cast<void *>(b), b_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (bp != reinterpret_cast<void *>(b)) die(err_fd, strf("cannot map the restorer: %s", strerror(errno)));
  memcpy(bp, mmtier_restorer_blob, code_len);
  if (mprotect(bp, code_bytes, PROT_READ | PROT_EXEC) != 0)
    die(err_fd, strf("cannot make the restorer executable: %s", strerror(errno)));
  char *data = static_cast<char *>(bp) + code_bytes;
  auto *p = new (data) rs::plan{};
  char *next = data + sizeof(rs::plan);
  auto place = [&](size_t bytes) {
    char *at = next;
    next += (bytes + 15) & ~size_t{15};
    return at;
  };
  p->magic = rs::kPlanMagic;
  p->b_lo = b;
  p->b_len = b_len;
  p->mem_fd = mem_fd;
  p->err_fd = err_fd;
  p->pid = h.pid;
  p->host_pid = host_pid;
  p->drop_caps = geteuid() != 0;
  p->last_pid_fd = last_pid_fd;
  p->say_ok = !im.in_place;
  p->maps = reinterpret_cast<rs::map_op *>(place(maps.size() * sizeof(rs::map_op)));
  memcpy(p->maps, maps.data(), maps.size() * sizeof(rs::map_op));
  p->nmaps = static_cast<uint32_t>(maps.size());
  p->copies = reinterpret_cast<rs::copy_op *>(place(copies.size() * sizeof(rs::copy_op)));
  memcpy(p->copies, copies.data(), copies.size() * sizeof(rs::copy_op));
  p->ncopies = static_cast<uint32_t>(copies.size());
  p->threads = reinterpret_cast<rs::thread_op *>(place((im.nthreads + im.leader_gone) * sizeof(rs::thread_op)));
  p->nthreads = static_cast<uint32_t>(im.nthreads + im.leader_gone);
  p->nusers = static_cast<uint32_t>(im.nthreads);  // every thread leaves the restorer's range before it goes
  const uint64_t stack_base = b + code_bytes + data_bytes;
  for (uint64_t i = 0; i < im.nthreads; ++i) {
    const cap::thread_record &t = im.threads[i];
    rs::thread_op &op = p->threads[i];
    op = {};
    op.tid = t.tid;
    op.leader = t.tid == h.pid;
    op.fs_base = t.fs_base;
    memcpy(op.resume, t.resume, sizeof op.resume);
    cap::copy_thread_state(op, t);
    op.stack_top = stack_base + (i + 2) * rs::kThreadStack;  // the first stack is the leader's
  }
  if (im.leader_gone) {  // on the restorer's own stack, as a leader is
    rs::thread_op &op = p->threads[im.nthreads];
    op = {};
    op.tid = h.pid;
    op.leader = 1;
    op.gone = 1;
    static_assert(sizeof op.name <= sizeof h.comm);
    memcpy(op.name, h.comm, sizeof op.name - 1);  // what ps shows of the process
  }
  for (uint32_t s = 0; s < 64; ++s) {
    const cap::sigaction_record &a = ps.sigactions[s];
    p->sigactions[s] = {a.handler, a.flags, a.restorer, a.mask};
  }
  for (uint32_t r = 0; r < 16; ++r) {
    p->rlimits[r][0] = ps.rlimits[r].cur;
    p->rlimits[r][1] = ps.rlimits[r].max;
  }
  for (int w = 0; w < 3; ++w) {
    p->itimers[w][0] = ps.itimers[w].interval_us;
    p->itimers[w][1] = ps.itimers[w].value_us;
  }
  memcpy(p->mm, ps.mm, sizeof p->mm);
  memcpy(p->auxv, ps.auxv, sizeof p->auxv);
  p->auxv_words = ps.auxv_words;
  p->exe_fd = exe_fd;
  p->lazy_fd = lazy_fd;
  p->note_size = h.restore_note_size;
  p->npmem_fds = static_cast<uint32_t>(pmem_keep.size());
  p->note_flags = im.clone ? rs::kNoteThinClone : 0;
  p->timers_in_order = timers_in_order();
  p->start_stopped = im.stopped;
  for (size_t i = 0; i < pmem_keep.size(); ++i) p->pmem_fds[i] = pmem_keep[i];
  // In the guard find_gap leaves after B: free in the capsule's layout.
  p->sentinel = lazy_fd >= 0 ? b + b_len : 0;
  p->note_addr = h.restore_note_addr;
  uint64_t nsig = 0;
  if (const auto *sig = records<cap::signal_record>(m, cap::table_kind::signals, &nsig)) {
    p->nsignals = static_cast<uint32_t>(std::min<uint64_t>(nsig, 32));
    for (uint32_t i = 0; i < p->nsignals; ++i) memcpy(p->signals[i], sig[i].info, sizeof p->signals[i]);
  }
  uint64_t ntsig = 0;
  if (const auto *ts = records<cap::thread_signal_record>(m, cap::table_kind::thread_signals, &ntsig)) {
    p->nthread_signals = static_cast<uint32_t>(std::min<uint64_t>(ntsig, 32));
    for (uint32_t i = 0; i < p->nthread_signals; ++i) {
      p->thread_signals[i].tid = ts[i].tid;
      memcpy(p->thread_signals[i].info, ts[i].info, sizeof p->thread_signals[i].info);
    }
  }
  uint64_t ntimers = 0;
  if (const auto *tm = records<cap::timer_record>(m, cap::table_kind::timers, &ntimers)) {
    std::vector<cap::timer_record> sorted(tm, tm + ntimers);
    std::sort(sorted.begin(), sorted.end(), [](const auto &a, const auto &b) { return a.id < b.id; });
    for (const cap::timer_record &t : sorted)
      p->timers[p->ntimers++] = {t.id, t.clock, t.notify, t.signo, t.tid, 0, t.value, t.interval_ns, t.value_ns};
  }
  p->nclose = 0;
  for (int fd : to_close)
    if (fd >= 0 && p->nclose < rs::kMaxClose - 2) p->close_fds[p->nclose++] = fd;  // room for err_fd and lazy_fd
  p->close_fds[p->nclose++] = err_fd;
  if (lazy_fd >= 0) p->close_fds[p->nclose++] = lazy_fd;
  // The kernel's mappings, moved by one offset to where the capsule had them.
  interval kernel[4];
  size_t nkernel = 0;
  static interval own[1 << 14];
  const size_t nown = read_own_maps(own, sizeof own / sizeof *own, 4, kernel, &nkernel);
  const int64_t delta = static_cast<int64_t>(im.vvar_lo ? im.vvar_lo : im.vdso_lo) -
                        static_cast<int64_t>(im.vdso.nvvar ? im.vdso.vvar_lo[0] : im.vdso.vdso_lo);
  for (size_t k = 0; k < nkernel && k < 4; ++k)
    p->moves[p->nmoves++] = {kernel[k].lo, kernel[k].hi, static_cast<uint64_t>(static_cast<int64_t>(kernel[k].lo) + delta)};
  // A move onto an overlapping range is refused by the kernel: those go
  // through a free range first (after B).
  bool overlap = false;
  for (size_t k = 0; k < nkernel; ++k)
    for (size_t j = 0; j < nkernel; ++j)
      if (p->moves[k].to < kernel[j].hi && p->moves[k].to + (kernel[k].hi - kernel[k].lo) > kernel[j].lo &&
          delta != 0)
        overlap = true;
  if (overlap) die(err_fd, "the vDSO must move onto itself (not supported)");
  auto *unmap = reinterpret_cast<uint64_t(*)[2]>(place(nown * 16));
  p->unmap = unmap;
  for (size_t k = 0; k < nown; ++k) {
    if (own[k].lo >= b && own[k].hi <= b + b_len) continue;
    unmap[p->nunmap][0] = own[k].lo;
    unmap[p->nunmap][1] = own[k].hi;
    ++p->nunmap;
  }
  if (next > data + data_bytes) die(err_fd, "the restorer's plan does not fit");
  // The files the program writes are cut back to their size at the
  // snapshot by the restorer, last (a restore that gives up before leaves
  // them as the original did).
  if (cuts.size() > rs::kMaxCuts)
    die(err_fd, strf("%zu files the program writes grew since the snapshot, more than %u cut back at restore",
                     cuts.size(), rs::kMaxCuts));
  p->ncuts = static_cast<uint32_t>(cuts.size());
  for (size_t k = 0; k < cuts.size(); ++k) {
    p->cuts[k].fd = cuts[k].fd;
    p->cuts[k].size = cuts[k].size;
  }
  // In place, nothing falls back once the restorer runs: a marker in the
  // capsule says the attempt began, and the restorer removes it when the
  // program is ready.  Found at the next start (the restorer failed, the
  // container restarted), the capsule is passed over instead of failing
  // the same way again.
  p->marker_dirfd = -1;
  if (im.in_place) {
    const int mk = openat(dirfd, rs::kAttemptMarker, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (mk >= 0) {
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      const std::string text =
          strf("restore in place began at %lld (host pid %d)\n", static_cast<long long>(now.tv_sec), host_pid);
      const bool ok = write(mk, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      close(mk);
      if (!ok) unlinkat(dirfd, rs::kAttemptMarker, 0);  // half-written: never left for the next start to trust
      if (ok) {
        g_marker_dirfd = dirfd;
        p->marker_dirfd = dirfd;
        memcpy(p->marker_name, rs::kAttemptMarker, sizeof rs::kAttemptMarker);
      }
    }
    if (p->marker_dirfd < 0) {
      const std::string l = strf("mmtier restore: cannot mark the attempt in %s (%s): if it fails, the next start "
                                 "tries the same capsule again\n", im.where.path.c_str(), strerror(errno));
      if (write(err_fd, l.data(), l.size()) < 0) {
      }
    }
  }
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  // The kernel would write this thread's rseq area (in the command's TLS,
  // about to be unmapped) at the next preemption and kill it for the fault.
  if (&__rseq_size && &__rseq_offset && __rseq_size) {
    char *area = static_cast<char *>(__builtin_thread_pointer()) + __rseq_offset;
    for (unsigned len : {32u, __rseq_size})
      if (syscall(SYS_rseq, area, len, 1 /* RSEQ_FLAG_UNREGISTER */, 0x53053053) == 0) break;
  }
  const uint64_t top = stack_base + rs::kThreadStack - 8;  // as after a call
  asm volatile(
      "movq %0, %%rsp\n\t"
      "xorl %%ebp, %%ebp\n\t"
      "jmpq *%1\n\t" ::"a"(top),  // fixed registers: neither may be rbp, which is cleared
      "c"(b), "D"(p)
      : "memory");
  __builtin_unreachable();
}

// ---- the namespaces and the init

std::string g_status_file;  // options::status_file, for init

// The last id the kernel gave in this PID namespace, -1 if unknown.
long ns_last_pid() {
  try {
    return std::stol(read_text("/proc/sys/kernel/ns_last_pid"));
  } catch (...) {
    return -1;
  }
}

// A child process whose PID is tid, made without clone3 set_tid: the ids
// below it used up by children that end at once, until the kernel's next
// is tid (fork's result then says whether another process took it).
long fork_at_next(int tid) {
  for (;;) {
    const long last = ns_last_pid();
    if (last < 0 || last >= tid) {
      errno = EEXIST;
      return -1;
    }
    if (last == tid - 1) return fork();
    const pid_t b = fork();
    if (b < 0) return -1;
    if (b == 0) _exit(0);
    while (waitpid(b, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

long clone3_with_tid(int tid) {
  struct clone_args ca;
  memset(&ca, 0, sizeof ca);
  ca.exit_signal = SIGCHLD;
  pid_t want = tid;
  ca.set_tid = reinterpret_cast<uint64_t>(&want);
  ca.set_tid_size = 1;
  return syscall(SYS_clone3, &ca, sizeof ca);
}

volatile pid_t g_child = 0;
void forward(int sig) {
  if (g_child > 0) kill(g_child, sig);
}

// PID 1 of the new namespace: its own /proc, the program's process with
// the capsule's PID, then a reaper that ends with it.
// This process's ID in the outermost PID namespace of host_proc (a /proc
// of the host's, opened before the namespace's own was mounted), 0 if
// unknown: "NSpid:" lists it first.
long host_pid_of_self(int host_proc) {
  const int fd = openat(host_proc, "self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[4096];
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *ns = strstr(buf, "\nNSpid:");
  return ns ? strtol(ns + 8, nullptr, 10) : 0;
}

// Init's part of a lazy restore: the restorer's userfaultfd, then the fill
// (restore_lazy.cc) until the memory is all there.  A damaged chunk ends
// init, and with it every process of the namespace, before the program
// sees a byte of it.
void serve_lazily(const image &im, int sock, bool detach, uint64_t fill_rate) {
  uint64_t sentinel = 0;
  iovec iov = {&sentinel, sizeof sentinel};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  close(sock);
  const cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
  if (!c || c->cmsg_type != SCM_RIGHTS || n != sizeof sentinel) return;  // the restore failed before: the command says why
  int uffd;
  memcpy(&uffd, CMSG_DATA(c), sizeof uffd);
  lazy_result r;
  try {
    data_files files = open_data(im.dirfd, im.m, layout_of(im.m));
    r = lazy_serve(im.m, files, uffd, sentinel, fill_rate);
    files.close_all();
  } catch (const failure &e) {
    r.error = e.what();
  }
  if (!r.error.empty()) {
    const std::string line = strf("mmtier restore: %s: %s; the restored processes are killed before they see it", im.where.path.c_str(),
                                  r.error.c_str());
    if (detach)
      syslog(LOG_ERR, "%s", line.c_str());
    else
      fprintf(stderr, "%s\n", line.c_str());
    _exit(1);  // the namespace's init: every process in it ends
  }
  if (!detach)
    fprintf(stderr, "mmtier restore: lazy fill %s in %.2f s: %s copied, %llu faults served, %llu zero pages, %llu "
                    "forked children filled\n",
            r.processes_gone ? "ended with the processes" : "done", r.seconds, human_bytes(r.bytes).c_str(),
            static_cast<unsigned long long>(r.faults), static_cast<unsigned long long>(r.zero_pages),
            static_cast<unsigned long long>(r.forks));
}

// The restored process's parent: PID 1 of its new PID namespace, or (in
// the host's, host_ns) a plain supervisor.  Either way it makes the
// process, serves a lazy restore, forwards signals and reaps.
[[noreturn]] void init_main(const image &im, int err_fd, bool detach, bool lazy, uint64_t fill_rate, bool host_ns) {
  // The host's /proc, kept open across the mount below: the restored
  // process reads its host PID there (its statistics and control socket
  // are named by it).
  const int host_proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!host_ns && (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
                   mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0))
    die(err_fd, strf("cannot mount /proc for the restored process: %s", strerror(errno)));
  // In the host's namespace the process's orphans come back here, as they
  // would to a namespace's init: a damaged lazy chunk must end them all.
  if (host_ns && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    die(err_fd, strf("cannot become the restored process's subreaper: %s", strerror(errno)));
  int sock[2] = {-1, -1};
  if (lazy && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) != 0)
    die(err_fd, strf("cannot make a socket for the lazy restore: %s", strerror(errno)));
  long pid = im.in_order ? fork_at_next(im.m.hdr->pid) : clone3_with_tid(im.m.hdr->pid);
  // A PID found free a moment ago may still be on its way out (a process
  // just killed and reaped: `rollback`, `kill -9; mmtier restore`).
  for (int i = 0; !im.in_order && pid < 0 && errno == EEXIST && i < 300; ++i) {
    usleep(10000);
    pid = clone3_with_tid(im.m.hdr->pid);
  }
  if (pid < 0) die(err_fd, strf("cannot give the process its PID %d: %s", im.m.hdr->pid, strerror(errno)));
  if (pid == 0 && getpid() != im.m.hdr->pid)
    die(err_fd, strf("cannot give the process its PID %d: another process took it meanwhile", im.m.hdr->pid));
  if (pid == 0) {
    const long host = host_proc >= 0 ? host_pid_of_self(host_proc) : 0;
    if (host_proc >= 0) close(host_proc);
    become(im, err_fd, static_cast<int>(host), detach, sock[1]);
  }
  if (host_proc >= 0) close(host_proc);
  close(err_fd);
  g_child = static_cast<pid_t>(pid);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) signal(sig, forward);
  if (detach) {
    const int null_fd = open("/dev/null", O_RDWR);
    for (int k = 0; k < 3; ++k) dup2(null_fd, k);
    if (null_fd > 2) close(null_fd);
  }
  if (lazy) {
    close(sock[1]);
    serve_lazily(im, sock[0], detach, fill_rate);
  }
  int status = 0;
  for (;;) {
    int st = 0;
    const pid_t w = wait(&st);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) break;
    if (w == g_child) status = st;
  }
  // Said plainly where asked: an exit status of 129 is not a signal.
  if (!g_status_file.empty()) {
    try {
      write_file_atomically(g_status_file, WIFSIGNALED(status) ? strf("signal %d\n", WTERMSIG(status))
                                                               : strf("exit %d\n", WEXITSTATUS(status)));
    } catch (const failure &) {
    }
  }
  if (WIFSIGNALED(status)) _exit(128 + WTERMSIG(status));
  _exit(WEXITSTATUS(status));
}

void write_file(const char *path, const std::string &text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int e = errno;
    if (fd >= 0) close(fd);
    throw failure(strf("cannot write %s: %s", path, strerror(e)));
  }
  close(fd);
}

// A user namespace (unless root) where this user is itself, then a PID
// namespace for the children to come (init makes the mount namespace).
void enter_namespaces() {
  const uid_t uid = geteuid();
  const gid_t gid = getegid();
  if (uid != 0) {
    if (unshare(CLONE_NEWUSER) != 0)
      throw failure(strf("cannot give the restored process its PIDs: a user namespace is needed (%s)",
                         strerror(errno)));
    write_file("/proc/self/setgroups", "deny");
    write_file("/proc/self/uid_map", strf("%u %u 1", uid, uid));
    write_file("/proc/self/gid_map", strf("%u %u 1", gid, gid));
  }
  if (unshare(CLONE_NEWPID) != 0)
    throw failure(strf("cannot make a PID namespace for the restored process: %s", strerror(errno)));
}

// --netns: a path (/proc/PID/ns/net, a bind mount) or a name `ip netns`
// made (/run/netns/NAME); the restored process's sockets are made there.
void enter_netns(const std::string &name) {
  const std::string path = name.find('/') == std::string::npos ? "/run/netns/" + name : name;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw failure(strf("cannot open the network namespace %s: %s", path.c_str(), strerror(errno)));
  const int r = setns(fd, CLONE_NEWNET);
  const int e = errno;
  close(fd);
  if (r != 0)
    throw failure(strf("cannot enter the network namespace %s: %s", path.c_str(),
                       e == EPERM ? "only its owner may (run as root)" : e == EINVAL ? "not a network namespace" : strerror(e)));
}

// Whether this process may choose the ids of the processes it makes in its
// PID namespace (clone3 set_tid): CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
bool can_set_tid() {
  const std::string status = read_text("/proc/self/status");
  const size_t at = status.find("\nCapEff:");
  if (at == std::string::npos) return false;
  const unsigned long long eff = strtoull(status.c_str() + at + 8, nullptr, 16);
  return (eff >> 21 /* CAP_SYS_ADMIN */ & 1) || (eff >> 40 /* CAP_CHECKPOINT_RESTORE */ & 1);
}

// Whether clone3 reaches the kernel: a seccomp filter may answer ENOSYS
// for it (container runtimes' profiles do, to make the C library fall
// back to clone) or EPERM (a profile's default), and a capability alone
// would then promise ids the restorer cannot set.  With no arguments the
// kernel itself says EINVAL.
bool clone3_usable() {
  return syscall(SYS_clone3, nullptr, 0) < 0 && errno == EINVAL;
}

// Whether this PID namespace is not the host's (a container's): the
// initial one's inode number is fixed (PROC_PID_INIT_INO).
bool nested_pid_namespace() {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 && st.st_ino != 0xEFFFFFFCu;
}

// Where the process gets its PID and TIDs, in this PID namespace when each
// is free there (no process, thread, process group or session has it; the
// capsule's PID may be this command's own: it then becomes the process in
// place, as a container's first process whose program was the first):
// - with clone3 set_tid (root, CAP_CHECKPOINT_RESTORE), anywhere;
// - without it, in a container's namespace when every id is past the
//   kernel's last one: the ids come in order (the ones between used up);
// returns false for a new PID namespace.
bool pid_plan(image &im, const options &o) {
  if (o.pid_namespace || o.clone) return false;
  auto is_free = [](int id) {
    return kill(id, 0) != 0 && errno == ESRCH && kill(-id, 0) != 0 && errno == ESRCH && getsid(id) < 0;
  };
  const int pid = im.m.hdr->pid;
  const bool self = pid == getpid() && !o.detach && !o.replace && !o.migrated;
  if (!self && !is_free(pid)) {
    im.ids_why = strf("its PID %d is taken", pid);
    return false;
  }
  for (uint64_t i = 0; i < im.nthreads; ++i)
    if (im.threads[i].tid != pid && !is_free(im.threads[i].tid)) {
      im.ids_why = strf("its thread id %d is taken", im.threads[i].tid);
      return false;
    }
  if (can_set_tid() && clone3_usable()) {
    im.in_place = self;
    return true;
  }
  if (!nested_pid_namespace()) {
    im.ids_why = "no clone3 set_tid here (CAP_CHECKPOINT_RESTORE, clone3 allowed) and this is the host's PID namespace";
    return false;
  }
  // In order: every id the kernel is still to give (the supervisor made
  // before the process takes one).
  const long last = ns_last_pid() + (self ? 0 : 1);
  if (last < 0) {
    im.ids_why = "cannot read /proc/sys/kernel/ns_last_pid";
    return false;
  }
  if (!self && pid <= last) {
    im.ids_why = strf("no clone3 set_tid here, and the namespace gave ids up to %ld already, its PID %d among them",
                      last, pid);
    return false;
  }
  for (uint64_t i = 0; i < im.nthreads; ++i)
    if (im.threads[i].tid != pid && im.threads[i].tid <= last) {
      im.ids_why = strf("no clone3 set_tid here, and the namespace gave ids up to %ld already, its thread id %d "
                        "among them (a process started in it meanwhile)",
                        last, im.threads[i].tid);
      return false;
    }
  im.in_order = true;
  im.in_place = self;
  return true;
}

// --replace: the process to end must be the capsule's program: the PID it
// sees itself as, its command, its executable and its user, all as the
// capsule has them (a PID reused by another program is never taken for
// it).  Returns a pidfd of it, opened before those checks: what is ended is
// the process checked, even if its PID is reused meanwhile.
int check_replaced(const image &im, int host) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, host, 0));
  if (fd < 0) throw failure(strf("process %d is not running", host));
  try {
    const long pid = own_pid(host);
    if (pid != im.m.hdr->pid)
      refuse(im, strf("it was taken of process %d, not of process %d (which is %ld to itself)", im.m.hdr->pid, host,
                      pid));
    const std::string comm = read_text(strf("/proc/%d/comm", host).c_str());
    if (comm != im.m.hdr->comm)
      refuse(im, strf("process %d runs %s, the capsule's process ran %s", host, comm.c_str(), im.m.hdr->comm));
    char exe[PATH_MAX];
    const ssize_t n = readlink(strf("/proc/%d/exe", host).c_str(), exe, sizeof exe - 1);
    const std::string want = im.proc && im.proc->exe ? cap::string_at(im.m, im.proc->exe) : "";
    if (n > 0 && !want.empty() && std::string(exe, static_cast<size_t>(n)) != want)
      refuse(im, strf("process %d runs %.*s, the capsule's process ran %s", host, static_cast<int>(n), exe,
                      want.c_str()));
    const std::string status = read_text(strf("/proc/%d/status", host).c_str());
    const size_t uid_at = status.find("\nUid:");
    unsigned real = 0, effective = ~0u;
    if (uid_at == std::string::npos || sscanf(status.c_str() + uid_at + 5, "%u %u", &real, &effective) != 2 ||
        effective != im.m.hdr->euid)
      refuse(im, strf("process %d is not of the capsule's user", host));
    if (syscall(SYS_pidfd_send_signal, fd, 0, nullptr, 0) != 0)
      throw failure(strf("cannot end process %d: %s", host, strerror(errno)));
  } catch (...) {
    close(fd);
    throw;
  }
  return fd;
}

// --replace: ends the process (SIGKILL through its pidfd) once the capsule
// passed every check, waits for its end, then until it is reaped by its
// parent, its PID free again (at most 3 s; else the restore takes a PID
// namespace of its own).
void end_replaced(int fd, int host) {
  if (syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0) != 0) {
    const int e = errno;
    close(fd);
    throw failure(strf("cannot end process %d: %s", host, strerror(e)));
  }
  pollfd p = {fd, POLLIN, 0};
  while (poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
  close(fd);
  for (int i = 0; i < 300 && kill(host, 0) == 0; ++i) usleep(10000);
}

// The host PID of init's child (the restored process), 0 if unknown.
long child_of(pid_t init) {
  const std::string s = read_text(strf("/proc/%d/task/%d/children", init, init).c_str());
  return strtol(s.c_str(), nullptr, 10);
}

}  // namespace

int restore_capsule(options &o);

int restore_main(const args &a) {
  options o;
  // The options that only set a flag.
  const std::pair<const char *, bool *> flags[] = {{"--detach", &o.detach},         {"--lazy", &o.lazy},
                                                   {"--pid-namespace", &o.pid_namespace}, {"--latest", &o.latest},
                                                   {"--keep-stdio", &o.keep_stdio}, {"--clone", &o.clone},
                                                   {"--migrated", &o.migrated}, {"--stopped", &o.stopped}};
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    bool *flag = nullptr;
    for (const auto &[name, member] : flags)
      if (a[i] == name) flag = member;
    if (flag) {
      *flag = true;
    } else if (a[i] == "--or-run") {
      o.or_run.assign(a.begin() + static_cast<std::ptrdiff_t>(i) + 1, a.end());
      if (o.or_run.empty()) throw usage_error("restore", "--or-run takes the program to run and its arguments");
      break;
    } else if (take_option("restore", a, &i, "--dir", &v)) {
      o.dir = v;
      o.dir_set = true;
    } else if (take_option("restore", a, &i, "--fill-rate", &v)) {
      char *end = nullptr;
      errno = 0;
      const unsigned long long mib = strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end || errno || !mib || mib > (1ull << 30))
        throw usage_error("restore", "--fill-rate takes MiB per second, a whole number from 1");
      o.fill_rate = mib << 20;
    } else if (take_option("restore", a, &i, "--pid-file", &v)) {
      o.pid_file = v;
    } else if (take_option("restore", a, &i, "--status-file", &v)) {
      o.status_file = v;
    } else if (take_option("restore", a, &i, "--port-map", &v)) {
      if (!parse_port_map(v, &o.ports))
        throw usage_error("restore", strf("--port-map takes FROM:TO[,FROM:TO...], not \"%s\"", v.c_str()));
    } else if (take_option("restore", a, &i, "--netns", &v)) {
      if (v.empty()) throw usage_error("restore", "--netns takes a network namespace's name or path");
      o.netns = v;
    } else if (take_option("restore", a, &i, "--replace", &v)) {
      if (!parse_pid(v, &o.replace)) throw usage_error("restore", strf("--replace takes a PID, not \"%s\"", v.c_str()));
    } else if (take_option("restore", a, &i, "--verify", &v)) {
      if (v != "full" && v != "meta") throw usage_error("restore", "--verify takes full or meta");
      o.verify = v == "full";
      o.verify_set = true;
    } else if (a[i] == "-h" || a[i] == "--help") {
      fputs(std::string(help_text("restore")).c_str(), stdout);
      return 0;
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error("restore", strf("unknown option %s", a[i].c_str()));
    } else if (o.capsule.empty()) {
      o.capsule = a[i];
    } else {
      throw usage_error("restore", "give one capsule");
    }
  }
  if (o.or_run.empty()) return restore_capsule(o);
  // A container's command: its program comes back from the newest capsule,
  // or, when there is none or it cannot be restored, starts afresh (said in
  // one line: a new image, another kernel).  Nothing of a restore is left
  // running when it gives up before the program runs.
  if (!o.latest) throw usage_error("restore", "--or-run goes with --latest");
  if (o.detach || o.replace || o.clone || o.migrated)
    throw usage_error("restore", "--or-run runs the program here: not with --detach, --replace, --clone or --migrated");
  // A container's LD_PRELOAD names libmmtier for the program: the command
  // itself runs without it (its threads would outlive an in-place restore),
  // and hands the value back to the program it runs afresh.
  constexpr const char *kKept = "_MMTIER_RESTORE_LD_PRELOAD";
  if (const char *pre = getenv("LD_PRELOAD"); pre && strstr(pre, "libmmtier") && !getenv(kKept)) {
    setenv(kKept, pre, 1);
    unsetenv("LD_PRELOAD");
    std::vector<std::string> words = {"mmtier", "restore"};
    words.insert(words.end(), a.begin(), a.end());
    std::vector<char *> argv;
    for (std::string &w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    setenv("LD_PRELOAD", pre, 1);  // could not: go on as it is
    unsetenv(kKept);
  }
  if (const char *kept = getenv(kKept)) {
    setenv("LD_PRELOAD", kept, 1);  // for the program run afresh; an in-place restore has its own environment
    unsetenv(kKept);
  }
  try {
    return restore_capsule(o);
  } catch (const failure &e) {
    fprintf(stderr, "mmtier restore: %s; starting %s afresh\n", e.what(), o.or_run[0].c_str());
  }
  fflush(nullptr);
  signal(SIGPIPE, SIG_DFL);  // the command ignores it; the program must not inherit that
  std::vector<char *> argv;
  for (std::string &w : o.or_run) argv.push_back(w.data());
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  throw failure(strf("cannot run %s: %s", o.or_run[0].c_str(), strerror(errno)), 127);
}

int restore_capsule(options &o) {
  o.program_crc = 0;
  for (const std::string &w : o.or_run) o.program_crc = detail::crc32c(o.program_crc, w.c_str(), w.size() + 1);
  if (o.latest) {
    // After a reboot: the newest complete capsule (whose name starts with
    // the argument, when one is given), as `mmtier run --autosave` picks.
    // A container's command (--or-run) takes the newest of its own command
    // line, passing over one whose last restore in place did not complete.
    const std::string dir = capsule_dir(o.dir_set, o.dir);
    const std::string named = o.capsule.empty() ? "" : strf(" named %s...", o.capsule.c_str());
    std::string path;
    unsigned other = 0, unfinished = 0;
    for (const durable_capsule &c : durable_capsules(dir, o.capsule, 0)) {
      if (!o.or_run.empty() && c.cmdline_crc && c.cmdline_crc != o.program_crc) {
        ++other;
        continue;
      }
      if (!o.or_run.empty() && faccessat(AT_FDCWD, (c.path + "/" + rs::kAttemptMarker).c_str(), F_OK, 0) == 0) {
        ++unfinished;
        fprintf(stderr,
                "mmtier restore: %s: its last restore in place did not complete (%s/%s says when): passed over\n",
                c.path.c_str(), c.path.c_str(), rs::kAttemptMarker);
        continue;
      }
      path = c.path;
      break;
    }
    if (path.empty()) {
      std::string why = strf("no durable capsule%s in %s", named.c_str(), dir.c_str());
      if (other || unfinished)
        why = strf("no durable capsule%s in %s to restore (%u of another command line, %u whose restore did not "
                   "complete)",
                   named.c_str(), dir.c_str(), other, unfinished);
      throw failure(why);
    }
    o.capsule = path;
  }
  if (o.capsule.empty()) throw usage_error("restore", "give the capsule to restore");
  image im;
  im.where = locate(o.capsule, o.dir_set, o.dir);
  if (o.fill_rate && !o.lazy) throw usage_error("restore", "--fill-rate paces a --lazy restore");
  if ((o.keep_stdio || !o.pid_file.empty() || !o.status_file.empty() || o.stopped) && !o.detach)
    throw usage_error("restore", "--keep-stdio, --pid-file, --status-file and --stopped go with --detach");
  im.stopped = o.stopped;
  g_status_file = o.status_file;
  if (o.clone && o.lazy) throw usage_error("restore", "a --clone maps its memory: it is never --lazy");
  if (o.clone && o.replace) throw usage_error("restore", "a --clone ends no process: not with --replace");
  im.clone = o.clone;
  im.ports = o.ports.empty() ? nullptr : &o.ports;
  if (o.lazy) {
    if (const std::string why = lazy_unavailable(); !why.empty()) {
      fprintf(stderr, "mmtier restore: restoring eagerly: %s\n", why.c_str());
      o.lazy = false;
    }
  }
  check(im, o);
  if (o.clone && im.m.hdr->restore_note_size < rs::kNoteWithFlags)
    refuse(im, "its library is older than thin clones (a clone's heap would not know its pages are the capsule's)");
  const int replaced_fd = o.replace ? check_replaced(im, o.replace) : -1;
  if (o.lazy && im.m.hdr->restore_note_size < rs::kNoteWithLazySentinel) {
    // Its library could not tell a snapshot of its own from a fill still
    // under way (it would save missing pages as never touched).
    fprintf(stderr, "mmtier restore: restoring eagerly: the capsule's library is older than lazy restore\n");
    o.lazy = false;
    if (!o.verify_set) verify_mem(im.dirfd, im.m);
  }
  // Rollback: every check passed; only now the running process ends.
  if (replaced_fd >= 0) end_replaced(replaced_fd, o.replace);
  int err[2];
  if (pipe2(err, O_CLOEXEC) != 0) throw failure(strf("cannot make a pipe: %s", strerror(errno)));
  fflush(nullptr);
  // As root, at the original numbers in this PID namespace when they are
  // free; else (or with --pid-namespace) in a new one.
  // A clone takes its PID in a namespace of its own: the original or
  // another clone may have it.
  const bool host_ns = pid_plan(im, o);
  // The init of its PID namespace is only ever restored as the init of
  // one: by this command as a new namespace's first process.
  if (im.m.hdr->pid == 1 && !im.in_place)
    refuse(im, getpid() == 1 && !im.ids_why.empty()
                   ? "the process was the init of its PID namespace and cannot be restored in place: " + im.ids_why
                   : "the process was the init of its PID namespace: restore it as the first process of a new one "
                     "(the container's command, or unshare --pid --fork mmtier restore)");
  // Before a user namespace of its own: the network namespace is the
  // host user's.
  if (!o.netns.empty()) enter_netns(o.netns);
  if (im.in_place) {
    // This command is the process (its PID is the capsule's): no
    // supervisor, nothing to serve a lazy fill, no one to say "ok" to.
    if (o.lazy) {
      fprintf(stderr, "mmtier restore: restoring eagerly: the process is restored in place (PID %d)\n", getpid());
      if (!o.verify_set) verify_mem(im.dirfd, im.m);  // the lazy check left the lazy chunks to the fill
    }
    // The restorer replaces this process's memory: no other thread of it
    // may run on (a library preloaded into the command would have them).
    if (const std::string st = read_text("/proc/self/status"); st.find("\nThreads:\t1\n") == std::string::npos)
      refuse(im, "this command runs more than one thread and cannot become the process in place");
    const int host_proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const long host = host_proc >= 0 ? host_pid_of_self(host_proc) : 0;
    if (host_proc >= 0) close(host_proc);
    uint64_t program_threads = 0;
    for (uint64_t i = 0; i < im.nthreads; ++i) program_threads += !(im.threads[i].flags & cap::kThreadService);
    fprintf(stderr, "mmtier restore: %s: restoring process %d in place (this command becomes it), %llu threads\n",
            im.where.path.c_str(), im.m.hdr->pid, static_cast<unsigned long long>(program_threads));
    if (!o.or_run.empty()) g_fallback = &o.or_run;
    fflush(nullptr);
    close(err[0]);
    close(err[1]);
    const int err_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (err_fd < 0) throw failure(strf("cannot keep the error stream: %s", strerror(errno)));
    become(im, err_fd, static_cast<int>(host), false, -1);
  }
  if (!host_ns) enter_namespaces();
  const pid_t init = fork();
  if (init < 0) throw failure(strf("cannot start the restored process: %s", strerror(errno)));
  if (init == 0) {
    close(err[0]);
    // Detached, the streams go to /dev/null unless kept.
    init_main(im, err[1], o.detach && !o.keep_stdio, o.lazy, o.fill_rate, host_ns);
  }
  close(err[1]);
  std::string line;
  char c;
  while (read(err[0], &c, 1) == 1 && c != '\n') line += c;
  close(err[0]);
  if (line != "ok") {
    int st = 0;
    waitpid(init, &st, 0);
    throw failure(strf("restore of %s failed: %s", im.where.path.c_str(),
                       line.empty() ? "the restored process died before it was ready" : line.c_str()));
  }
  const long host = child_of(init);
  uint64_t program_threads = 0;
  for (uint64_t i = 0; i < im.nthreads; ++i) program_threads += !(im.threads[i].flags & cap::kThreadService);
  fprintf(stderr, "mmtier restore: %s: process %d restored (host pid %ld), %llu threads\n", im.where.path.c_str(),
          im.m.hdr->pid, host, static_cast<unsigned long long>(program_threads));
  if (o.detach) {
    if (o.pid_file.empty())
      printf("%ld\n", host);
    else
      write_file_atomically(o.pid_file, strf("%ld\n", host));
    return 0;
  }
  // A terminal's signals reach the process itself; as the first process of
  // a container (PID 1), the runtime's reach only this command: passed on.
  g_child = getpid() == 1 ? init : 0;
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) signal(sig, getpid() == 1 ? forward : SIG_IGN);
  int st = 0;
  while (waitpid(init, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace mmtier::cli
