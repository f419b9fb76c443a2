// Reading the published statistics of other processes: locating the
// directory, telling live files from stale ones (the process of that pid
// still maps the file), and copying consistent snapshots through the
// page's sequence lock.  See lib/stats/live_format.h for the writer's side.
#include "stats_reader.h"

#include "cli.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <sstream>
#include <string_view>
#include <thread>

namespace mmtier::cli {

stats_location stats_location_from_env() {
  stats_location loc;
  const char *v = getenv("MMTIER_STATS_DIR");
  if (v == nullptr || v[0] == '\0') return loc;
  if (strcmp(v, "off") == 0) {
    loc.off = true;
    return loc;
  }
  loc.overridden = true;
  loc.dir = v;
  return loc;
}

std::string default_stats_dir(uid_t uid) {
  return strf("%s/mmtier-%u", kDefaultStatsRoot, static_cast<unsigned>(uid));
}

namespace {

bool all_digits(const char *s, size_t n) {
  if (n == 0) return false;
  for (size_t i = 0; i < n; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// "<pid>.stats" -> pid, or 0.
int pid_of_name(const char *name) {
  size_t n = strlen(name);
  constexpr size_t kSuffix = 6;  // ".stats"
  if (n <= kSuffix || strcmp(name + n - kSuffix, ".stats") != 0) return 0;
  std::string digits(name, n - kSuffix);
  int pid;
  if (!all_digits(digits.data(), digits.size()) || !parse_pid(digits, &pid)) return 0;
  return pid;
}

}  // namespace

std::vector<std::string> stats_dirs_for_all(const stats_location &loc) {
  if (loc.off) return {};
  if (loc.overridden) return {loc.dir};
  if (geteuid() != 0) return {default_stats_dir(geteuid())};
  std::vector<std::string> dirs;
  DIR *d = opendir(kDefaultStatsRoot);
  if (d == nullptr) return dirs;
  while (dirent *e = readdir(d)) {
    const char *n = e->d_name;
    if (strncmp(n, "mmtier-", 7) != 0 || !all_digits(n + 7, strlen(n + 7))) continue;
    dirs.push_back(strf("%s/%s", kDefaultStatsRoot, n));
  }
  closedir(d);
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// --- stats_source

stats_source::stats_source(stats_source &&o) noexcept
    : fd_(o.fd_), writable_(o.writable_), pid_(o.pid_), page_pid_(o.page_pid_), path_(std::move(o.path_)) {
  o.fd_ = -1;
}

stats_source &stats_source::operator=(stats_source &&o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    writable_ = o.writable_;
    pid_ = o.pid_;
    page_pid_ = o.page_pid_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

stats_source::~stats_source() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

stats_source::read_status stats_source::read(snapshot *out) const {
  if (fd_ < 0) return read_status::foreign;
  const int r = pub::read_stats_fd(fd_, &out->page);
  if (r < 0) return read_status::foreign;
  if (r == 0) return read_status::busy;
  out->mono_ns = monotonic_ns();
  out->real_ns = realtime_ns();
  // A process in a PID namespace of its own writes the pid it sees there;
  // readers show the pid they see.
  if (page_pid_ != pid_ && out->page.pid == page_pid_) out->page.pid = pid_;
  const pub::stats_page &p = out->page;
  out->comm = sanitize_text(std::string_view(p.comm, strnlen(p.comm, sizeof p.comm)));
  out->pmem_path = sanitize_text(std::string_view(p.pmem_path, strnlen(p.pmem_path, sizeof p.pmem_path)));
  return read_status::ok;
}

namespace {

// Whether process pid may still own the file with device dev and inode ino:
// the owner maps its page for as long as it runs (exec drops the mapping),
// and keeps no descriptor.  False when pid is gone or, its mappings
// readable, none of them is the file; true when they cannot be read (a
// process of another user, or one that made itself non-dumpable): a live
// file is never taken for stale, a stale one of such a pid waits for it to
// exit.
bool may_own(int pid, dev_t dev, ino_t ino) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  const std::string path = strf("/proc/%d/maps", pid);
  // Not readable by us (the kernel's check is at open, not in the mode).
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  close(fd);
  std::istringstream maps(read_text(path.c_str()));
  const std::string want = strf(" %02x:%02x %llu", major(dev), minor(dev), static_cast<unsigned long long>(ino));
  for (std::string line; std::getline(maps, line);) {
    // "lo-hi perm offset maj:min inode [path]"
    size_t at = 0;
    for (int field = 0; field < 3 && at != std::string::npos; ++field) at = line.find(' ', at + 1);
    if (at == std::string::npos) continue;
    if (line.compare(at, want.size(), want) == 0 &&
        (line.size() == at + want.size() || line[at + want.size()] == ' '))
      return true;
  }
  return false;  // (a zombie maps nothing)
}

}  // namespace

bool stats_source::alive() const {
  if (fd_ < 0) return false;
  struct stat st;
  return fstat(fd_, &st) == 0 && may_own(pid_, st.st_dev, st.st_ino);
}

bool stats_source::request_refresh() const {
  if (!writable_ || fd_ < 0) return false;
  // Any change of the counter is a request: two readers writing the same
  // value lose nothing that matters.
  constexpr off_t kAt = static_cast<off_t>(offsetof(pub::stats_page, refresh_requests));
  uint64_t n = 0;
  if (pread(fd_, &n, sizeof n, kAt) != static_cast<ssize_t>(sizeof n)) return false;
  ++n;
  return pwrite(fd_, &n, sizeof n, kAt) == static_cast<ssize_t>(sizeof n);
}

const char *open_status_name(open_status s) {
  switch (s) {
    case open_status::ok: return "ok";
    case open_status::missing: return "missing";
    case open_status::stale: return "stale";
    case open_status::denied: return "denied";
    case open_status::invalid: return "invalid";
    case open_status::not_ready: return "not_ready";
  }
  return "?";
}

struct stats_opener {
  // Opens name (a "<pid>.stats") in the directory dirfd (path dir, for
  // messages).  page_pid: the pid the page says, when the process sees
  // itself under another (a PID namespace of its own); 0: pid.
  // may_remove: a stale file is removed (never in a directory a container
  // chose: the agent, running as root, would remove files for it).
  static open_result open_at(int dirfd, const std::string &dir, const char *name, int pid, bool writable,
                             int page_pid = 0, bool may_remove = true) {
    open_result r;
    constexpr int kFlags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int fd = writable ? openat(dirfd, name, O_RDWR | kFlags) : -1;
    if (fd < 0) writable = false, fd = openat(dirfd, name, O_RDONLY | kFlags);
    if (fd < 0) {
      r.error = errno;
      if (errno == ENOENT) r.status = open_status::missing;
      else if (errno == EACCES || errno == EPERM) r.status = open_status::denied;
      else r.status = open_status::invalid;  // ELOOP: a symlink, and the like
      return r;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      r.error = errno;
      close(fd);
      r.status = open_status::invalid;
      return r;
    }
    if (!may_own(pid, st.st_dev, st.st_ino)) {
      // No process maps it: stale.  Removed under the directory's lock (the
      // writers rename into the directory under it), if the name still
      // refers to this file; not waited for: whoever holds the lock for
      // long (a writer stopped, or one holding it on purpose) must not hold
      // a reader, and the file is only left for a later look.
      int locked = -1;
      while (may_remove && (locked = flock(dirfd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
      }
      struct stat now;
      if (locked == 0 && fstatat(dirfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st.st_dev &&
          now.st_ino == st.st_ino && !may_own(pid, st.st_dev, st.st_ino))
        unlinkat(dirfd, name, 0);  // may fail (not ours to remove): then it just stays ignored
      if (locked == 0) flock(dirfd, LOCK_UN);
      close(fd);
      r.status = open_status::stale;
      return r;
    }
    if (static_cast<uint64_t>(st.st_size) < sizeof(pub::stats_page)) {
      close(fd);
      r.status = open_status::not_ready;
      return r;
    }
    r.source.fd_ = fd;
    r.source.writable_ = writable;
    r.source.pid_ = pid;
    r.source.page_pid_ = page_pid ? page_pid : pid;
    r.source.path_ = dir + "/" + name;
    // Check the content: the format, and that it is the page of that pid.
    snapshot s;
    switch (r.source.read(&s)) {
      case stats_source::read_status::ok:
        if (s.page.pid != pid) {  // read() shows page_pid as pid
          r.source = stats_source();
          r.status = open_status::invalid;
          return r;
        }
        break;
      case stats_source::read_status::busy:
        break;  // a live page being written; the caller retries its reads
      case stats_source::read_status::foreign: {
        // A page mapped but not yet written has magic 0; anything else is
        // not ours.
        uint64_t magic = 1;
        const bool unwritten = pread(fd, &magic, sizeof magic, 0) == static_cast<ssize_t>(sizeof magic) && magic == 0;
        r.source = stats_source();
        r.status = unwritten ? open_status::not_ready : open_status::invalid;
        return r;
      }
    }
    r.status = open_status::ok;
    return r;
  }
};

namespace {

// Opens a statistics directory.  One of the default layout,
// /dev/shm/mmtier-<uid>, must be a real directory owned by that uid and
// closed to group and others (the library refuses any other), so that
// nobody can steer a reader running as root elsewhere; it counts as absent
// otherwise.
int open_stats_dir(const std::string &dir) {
  std::string prefix = strf("%s/mmtier-", kDefaultStatsRoot);
  bool strict = dir.compare(0, prefix.size(), prefix) == 0 &&
                all_digits(dir.data() + prefix.size(), dir.size() - prefix.size());
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (strict ? O_NOFOLLOW : 0));
  if (fd < 0 || !strict) return fd;
  struct stat st;
  unsigned long uid = strtoul(dir.c_str() + prefix.size(), nullptr, 10);
  if (fstat(fd, &st) != 0 || st.st_uid != uid || (st.st_mode & 077) != 0) {
    close(fd);
    errno = ENOENT;
    return -1;
  }
  return fd;
}

}  // namespace

open_result open_stats_file(const std::string &dir, int pid, bool writable) {
  open_result r;
  int dirfd = open_stats_dir(dir);
  if (dirfd < 0) {
    r.error = errno;
    r.status = errno == EACCES || errno == EPERM ? open_status::denied
               : errno == ENOENT                 ? open_status::missing
                                                 : open_status::invalid;
    return r;
  }
  std::string name = strf("%d.stats", pid);
  r = stats_opener::open_at(dirfd, dir, name.c_str(), pid, writable);
  close(dirfd);
  return r;
}

namespace {

ino_t ns_inode(const std::string &link) {
  struct stat st;
  return stat(link.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Where a process in namespaces of its own keeps its page, as it sees it.
struct contained_view {
  int inner_pid = 0;     // its pid in its own PID namespace
  uid_t host_uid = 0;    // its effective uid, as this reader sees it
  uid_t inner_uid = 0;   // the same in its user namespace
  std::string dir;       // its statistics directory, in its mount namespace
  bool overridden = false;
};

bool contained(int pid, contained_view *v) {
  const std::string base = strf("/proc/%d", pid);
  const ino_t its_pid = ns_inode(base + "/ns/pid"), its_mnt = ns_inode(base + "/ns/mnt");
  if (its_pid == 0 || its_mnt == 0) return false;
  if (its_pid == ns_inode("/proc/self/ns/pid") && its_mnt == ns_inode("/proc/self/ns/mnt")) return false;
  const proc_info info = read_proc(pid);
  v->inner_pid = pid_inside(pid);
  if (!info.exists || v->inner_pid <= 0) return false;
  v->host_uid = info.euid;
  // Its uid in its user namespace ("inside outside count" lines).
  v->inner_uid = v->host_uid;
  std::istringstream map(read_text((base + "/uid_map").c_str()));
  for (unsigned long in = 0, out = 0, count = 0; map >> in >> out >> count;)
    if (v->host_uid >= out && v->host_uid - out < count) v->inner_uid = static_cast<uid_t>(in + (v->host_uid - out));
  // Its MMTIER_STATS_DIR, as its environment began (a program that
  // rewrites that area for its title loses it: then the default).
  const std::string text = read_text((base + "/environ").c_str());
  constexpr std::string_view kVar = "MMTIER_STATS_DIR=";
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\0', at);
    if (end == std::string::npos) end = text.size();
    const std::string_view entry(text.data() + at, end - at);
    if (entry.substr(0, kVar.size()) == kVar) {
      const std::string_view value = entry.substr(kVar.size());
      if (value == "off") return false;
      if (!value.empty() && value[0] == '/') {
        v->dir = std::string(value);
        v->overridden = true;
      }
      break;  // the first, as getenv() finds it
    }
    at = end + 1;
  }
  if (!v->overridden) v->dir = default_stats_dir(v->inner_uid);
  return true;
}

// Opens path (absolute, in the process's mount namespace) under its root
// directory rootfd, every symbolic link resolved inside that root: what a
// container's files name can never lead out of it.
int open_in_root(int rootfd, const std::string &path, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const size_t first = path.find_first_not_of('/');
  const std::string rel = first == std::string::npos ? "." : path.substr(first);  // "/" is the root itself
  const long fd = syscall(SYS_openat2, rootfd, rel.c_str(), &how, sizeof how);
  return fd < 0 ? -1 : static_cast<int>(fd);
}

}  // namespace

int pid_inside(int pid) { return static_cast<int>(own_pid(pid)); }

int open_in_process_root(int pid, const std::string &path, int flags) {
  if (path.empty() || path[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  const int rootfd = open(strf("/proc/%d/root", pid).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return -1;
  const int fd = open_in_root(rootfd, path, flags);
  const int err = errno;
  close(rootfd);
  errno = err;
  return fd;
}

open_result open_stats_contained(int pid, bool writable) {
  open_result r;
  contained_view v;
  if (!contained(pid, &v)) return r;  // missing
  const int dirfd = open_in_process_root(pid, v.dir, O_RDONLY | O_DIRECTORY);
  if (dirfd < 0) {
    r.error = errno;
    r.status = errno == EACCES || errno == EPERM ? open_status::denied : open_status::missing;
    return r;
  }
  // The library's rule for a statistics directory (live_stats.cc): the
  // process's user's; the default one closed to everyone else, a chosen
  // one at least to their writes.
  struct stat st;
  if (fstat(dirfd, &st) != 0 || st.st_uid != v.host_uid || (st.st_mode & (v.overridden ? 022 : 077)) != 0) {
    close(dirfd);
    return r;  // missing
  }
  const std::string name = strf("%d.stats", v.inner_pid);
  r = stats_opener::open_at(dirfd, strf("/proc/%d/root", pid) + v.dir, name.c_str(), pid, writable, v.inner_pid, false);
  close(dirfd);
  return r;
}

int open_control_contained(int pid, const char *suffix) {
  contained_view v;
  if (!contained(pid, &v)) {
    errno = ENOENT;
    return -1;
  }
  return open_socket_in_root(pid, strf("%s/%d%s", v.dir.c_str(), v.inner_pid, suffix), v.host_uid);
}

int open_socket_in_root(int pid, const std::string &path, uid_t uid) {
  const int fd = open_in_process_root(pid, path, O_PATH | O_NOFOLLOW);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != uid)) {
    close(fd);
    errno = EPERM;
    return -1;
  }
  return fd;
}

std::vector<stats_source> open_all(const std::vector<std::string> &dirs, bool writable) {
  std::vector<stats_source> out;
  for (const std::string &dir : dirs) {
    int dirfd = open_stats_dir(dir);
    if (dirfd < 0) continue;
    int scanfd = dup(dirfd);
    DIR *d = scanfd >= 0 ? fdopendir(scanfd) : nullptr;
    if (d == nullptr) {
      if (scanfd >= 0) close(scanfd);
      close(dirfd);
      continue;
    }
    while (dirent *e = readdir(d)) {
      int pid = pid_of_name(e->d_name);
      if (pid == 0) continue;
      open_result r = stats_opener::open_at(dirfd, dir, e->d_name, pid, writable);
      if (r.status == open_status::ok) out.push_back(std::move(r.source));
    }
    closedir(d);
    close(dirfd);
  }
  std::sort(out.begin(), out.end(), [](const stats_source &a, const stats_source &b) { return a.pid() < b.pid(); });
  // The same pid in two directories (MMTIER_STATS_DIR overrides of
  // different processes) cannot happen with the default layout; keep the
  // first.
  out.erase(std::unique(out.begin(), out.end(),
                        [](const stats_source &a, const stats_source &b) { return a.pid() == b.pid(); }),
            out.end());
  return out;
}

proc_info read_proc(int pid) {
  proc_info info;
  std::string base = strf("/proc/%d", pid);
  struct stat st;
  if (stat(base.c_str(), &st) != 0) return info;
  info.exists = true;
  info.euid = st.st_uid;
  std::istringstream status(read_text((base + "/status").c_str()));
  std::string line;
  while (std::getline(status, line)) {
    if (line.compare(0, 4, "Uid:") == 0) {
      unsigned real = 0, eff = 0;
      if (sscanf(line.c_str() + 4, "%u %u", &real, &eff) == 2) info.euid = eff;
      break;
    }
  }
  info.comm = read_text((base + "/comm").c_str());
  info.comm = sanitize_text(info.comm);
  return info;
}

namespace {

// Seconds since the process started, from /proc (a large value if unknown).
double process_age(int pid) {
  const std::string text = read_text(strf("/proc/%d/stat", pid).c_str());
  size_t paren = text.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos || paren + 2 > text.size()) return 1e9;
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  unsigned long long start = 0;
  for (int i = 3; i <= 22 && fields >> f; ++i)
    if (i == 22) start = std::strtoull(f.c_str(), nullptr, 10);
  std::istringstream up(read_text("/proc/uptime"));
  double uptime = 0;
  if (!(up >> uptime) || start == 0) return 1e9;
  return uptime - static_cast<double>(start) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// How long after its start a process may take to publish (its library
// starts publishing once it is initialised, and `mmtier run CMD &` followed
// by `mmtier plot $!` asks right away).
constexpr double kStartupGrace = 2.0;

// Whether the process maps libmmtier (readable maps only).
bool maps_libmmtier(int pid) {
  return read_text(strf("/proc/%d/maps", pid).c_str()).find("/libmmtier.so") != std::string::npos;
}

[[noreturn]] void not_mmtier(int pid, const proc_info &info, const char *extra = "") {
  // A small process under libmmtier publishes nothing (lib/stats/live_stats.cc).
  if (!*extra && maps_libmmtier(pid))
    throw failure(strf("process %d (%s) runs under libmmtier but publishes no statistics: it has placed less "
                       "than 16 MiB of memory so far",
                       pid, info.comm.c_str()));
  throw failure(strf("process %d (%s) is not running under libmmtier%s", pid, info.comm.c_str(), extra));
}

}  // namespace

stats_source open_process(int pid, bool writable) {
  stats_location loc = stats_location_from_env();
  proc_info info = read_proc(pid);
  if (!info.exists) {
    // Clean up what the dead process may have left.
    if (!loc.off) (void)open_stats_file(loc.overridden ? loc.dir : default_stats_dir(geteuid()), pid);
    throw failure(strf("no process with pid %d", pid));
  }
  if (loc.off)
    not_mmtier(pid, info, " (or its statistics cannot be found: publishing is off, MMTIER_STATS_DIR=off)");
  std::string dir = loc.overridden ? loc.dir : default_stats_dir(info.euid);
  // A process that has just started may not have written its page yet.
  const uint64_t deadline = monotonic_ns() + 1000000000ull;
  const uint64_t grace_end = monotonic_ns() + static_cast<uint64_t>(kStartupGrace * 1e9) + 100000000ull;
  for (;;) {
    open_result r = open_stats_file(dir, pid, writable);
    switch (r.status) {
      case open_status::ok:
        return std::move(r.source);
      case open_status::missing:
      case open_status::stale: {
        if (!read_proc(pid).exists) throw failure(strf("no process with pid %d", pid));
        // A process in a container: its page is in its own /dev/shm (or
        // MMTIER_STATS_DIR), under its own pid.
        open_result c = open_stats_contained(pid, writable);
        if (c.status == open_status::ok) return std::move(c.source);
        if (c.status == open_status::denied)
          throw failure(strf("permission denied: cannot read the statistics of process %d, in a container "
                             "(its root directory /proc/%d/root needs the process's user or root)",
                             pid, pid));
        // A process that changed its user after it started publishing (a
        // daemon dropping privileges) has its file in its first user's
        // directory: root may look in every one.
        if (!loc.overridden && geteuid() == 0) {
          for (const std::string &other : stats_dirs_for_all(loc)) {
            if (other == dir) continue;
            open_result o = open_stats_file(other, pid, writable);
            if (o.status == open_status::ok) return std::move(o.source);
          }
        }
        // The age comes from /proc (it can be wrong, e.g. under LXCFS):
        // the wait is bounded on our own clock as well.
        if (process_age(pid) < kStartupGrace && monotonic_ns() < grace_end) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          info = read_proc(pid);  // it may have exec'd meanwhile
          break;
        }
        not_mmtier(pid, info);
      }
      case open_status::denied:
        throw failure(strf("permission denied: cannot read the statistics of process %d (owned by uid %u)", pid,
                           static_cast<unsigned>(info.euid)));
      case open_status::invalid:
        throw failure(strf("process %d (%s): %s/%d.stats is not a statistics file of this mmtier version%s%s", pid,
                           info.comm.c_str(), dir.c_str(), pid, r.error != 0 ? ": " : "",
                           r.error != 0 ? strerror(r.error) : ""));
      case open_status::not_ready:
        if (monotonic_ns() >= deadline)
          throw failure(strf("process %d (%s) has not published its statistics yet", pid, info.comm.c_str()));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        break;
    }
  }
}

snapshot read_or_fail(const stats_source &source) {
  snapshot s;
  const uint64_t deadline = monotonic_ns() + 500000000ull;
  for (;;) {
    switch (source.read(&s)) {
      case stats_source::read_status::ok:
        return s;
      case stats_source::read_status::foreign:
        throw failure(strf("%s is not a statistics file of this mmtier version", source.path().c_str()));
      case stats_source::read_status::busy:
        if (monotonic_ns() >= deadline)
          throw failure(strf("the statistics of process %d stay mid-update (is the process stopped?)", source.pid()));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        break;
    }
  }
}

}  // namespace mmtier::cli
