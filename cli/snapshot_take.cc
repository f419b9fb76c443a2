// mmtier snapshot PID: asks a process under libmmtier for a snapshot
// through its control socket (lib/api/control_format.h) and prints the
// capsule's path once the capsule is complete.
#include "cli.h"
#include "control_client.h"
#include "stats_reader.h"

#include "api/control_format.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>

namespace mmtier::cli {
namespace {

namespace ctl = mmtier::control;

// Exit statuses beyond the usual 1 (failed) and 2 (usage).
constexpr int kUnreachable = 3;  // not under libmmtier, gone, or another user's

std::string socket_dir(int pid) {
  struct stat st;
  if (stat(strf("/proc/%d", pid).c_str(), &st) != 0) throw failure(strf("no process %d", pid), kUnreachable);
  const stats_location loc = stats_location_from_env();
  if (loc.off) throw failure("MMTIER_STATS_DIR=off: no control socket to reach a process through", kUnreachable);
  if (loc.overridden) return loc.dir;
  return default_stats_dir(st.st_uid);
}

// Whether process pid maps libmmtier: 1 yes, 0 no, -1 cannot tell (its
// maps unreadable).
int maps_libmmtier(int pid) {
  FILE *f = fopen(strf("/proc/%d/maps", pid).c_str(), "re");
  if (!f) return -1;
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    const char *name = strrchr(line, '/');
    found = name && !strncmp(name, "/libmmtier.so", 13);
  }
  fclose(f);
  return found;
}

int connect_to(int pid, const std::string &path) {
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) throw failure(strf("socket: %s", strerror(errno)));
  sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw failure(strf("%s: path too long", path.c_str()));
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
    const int e = errno;
    close(fd);
    if (e == EACCES || e == EPERM)
      throw failure(strf("process %d belongs to another user: only its user or root may snapshot it", pid),
                    kUnreachable);
    if (e == ENOENT || e == ECONNREFUSED) {
      const int mapped = maps_libmmtier(pid);
      if (mapped > 0)
        throw failure(strf("process %d runs under libmmtier but has no control socket (%s): it opens one once it "
                           "has placed 32 MiB (MMTIER_BACKGROUND_AT; never with MMTIER_STATS_DIR=off); start a "
                           "smaller process with MMTIER_BACKGROUND_AT=0, or with MMTIER_SNAPSHOT_SIGNAL=USR1 (or "
                           "another free signal) and send it that signal",
                           pid, path.c_str()),
                      kUnreachable);
      throw failure(strf(mapped == 0 ? "process %d is not running under libmmtier (no control socket %s)"
                                     : "process %d is not running under libmmtier, or has not placed 32 MiB yet "
                                       "(no control socket %s)",
                         pid, path.c_str()),
                    kUnreachable);
    }
    throw failure(strf("cannot connect to %s: %s", path.c_str(), strerror(e)), kUnreachable);
  }
  // The socket is the process's own, not a stale one of a reused pid.
  ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != pid) {
    close(fd);
    throw failure(strf("%s does not belong to process %d", path.c_str(), pid), kUnreachable);
  }
  return fd;
}

std::string absolute(const std::string &dir) {
  if (dir.empty() || dir[0] == '/') return dir;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) throw failure(strf("getcwd: %s", strerror(errno)));
  return std::string(cwd) + "/" + dir;
}

std::string json_string(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += strf("\\u%04x", c);
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace

int ask_snapshot(int pid, const std::string &name, const std::string &dir_in, uint32_t flags, control::reply *rep) {
  const std::string cmd = "snapshot";
  ctl::request req;
  memset(&req, 0, sizeof req);
  if (name.size() >= sizeof req.name) throw usage_error(cmd, "the name is too long (at most 64 characters)");
  const std::string dir = absolute(dir_in);
  if (dir.size() >= sizeof req.dir) throw usage_error(cmd, "the directory path is too long");
  req.magic = ctl::kMagic;
  // The version that has the flags asked for: a library older than them
  // refuses the request instead of ignoring them.
  req.version = (flags & ctl::kHold) ? ctl::kVersionHold : ctl::kVersion;
  req.cmd = static_cast<uint32_t>(ctl::command::snapshot);
  req.flags = flags;
  memcpy(req.name, name.c_str(), name.size());
  const std::string path = strf("%s/%d%s", socket_dir(pid).c_str(), pid, ctl::kSuffix);
  int fd = -1;
  try {
    fd = connect_to(pid, path);
  } catch (const failure &) {
    // A process in a container: its socket in its own statistics
    // directory, under the pid it sees itself as, found through its root
    // (where a socket left by an earlier process of that pid is refused by
    // the peer check).
    const std::exception_ptr first = std::current_exception();
    const int contained = open_control_contained(pid, ctl::kSuffix);
    if (contained < 0) std::rethrow_exception(first);
    try {
      fd = connect_to(pid, strf("/proc/self/fd/%d", contained));
    } catch (const failure &) {
      close(contained);
      std::rethrow_exception(first);
    }
    close(contained);
    // The process writes where it sees the directory: a path of its own
    // mount namespace, which a directory relative to this command's is not.
    if (!dir_in.empty() && dir_in[0] != '/') {
      close(fd);
      throw usage_error(cmd, strf("process %d runs in a container: give --dir as an absolute path as the process sees "
                                  "it (in its mount namespace)", pid));
    }
  }
  memcpy(req.dir, dir.c_str(), dir.size());
  if (send(fd, &req, sizeof req, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req)) {
    const int e = errno;
    close(fd);
    throw failure(strf("cannot send the request to process %d: %s", pid, strerror(e)));
  }
  const ssize_t n = recv(fd, rep, sizeof *rep, 0);
  if (n != static_cast<ssize_t>(sizeof *rep) || rep->magic != ctl::kMagic) {
    close(fd);
    throw failure(strf("process %d did not answer (it exited, or its libmmtier is another version)", pid));
  }
  rep->line[sizeof rep->line - 1] = 0;
  rep->path[sizeof rep->path - 1] = 0;
  rep->pmem_note[sizeof rep->pmem_note - 1] = 0;
  if (rep->error) {
    close(fd);
    throw failure(strf("snapshot of process %d failed: %s", pid, sanitize_text(rep->line).c_str()));
  }
  return fd;
}

int snapshot_take_main(const std::string &pid_text, const args &a) {
  const std::string cmd = "snapshot";
  int pid = 0;
  if (!parse_pid(pid_text, &pid)) throw usage_error(cmd, strf("invalid pid \"%s\"", pid_text.c_str()));
  std::string name, dir;
  bool json = false, full = false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (take_option(cmd, a, &i, "--name", &name) || take_option(cmd, a, &i, "--dir", &dir)) continue;
    if (a[i] == "--json" || a[i] == "--full") {
      (a[i] == "--json" ? json : full) = true;
      continue;
    }
    throw usage_error(cmd, strf("unknown argument \"%s\"", a[i].c_str()));
  }
  static ctl::reply rep;
  close(ask_snapshot(pid, name, dir, full ? uint32_t{ctl::kFull} : 0u, &rep));
  if (json) {
    std::cout << strf("{\"pid\": %d, \"path\": %s, \"paused_ms\": %.3f, \"threads\": %u, \"memory_bytes\": %llu, "
                      "\"shared_bytes\": %llu, \"pmem_linked_bytes\": %llu, \"pmem_note\": %s}\n",
                      pid, json_string(rep.path).c_str(), rep.paused_ns / 1e6, rep.threads,
                      static_cast<unsigned long long>(rep.mem_bytes), static_cast<unsigned long long>(rep.shared),
                      static_cast<unsigned long long>(rep.pmem_linked),
                      rep.pmem_note[0] ? json_string(sanitize_text(rep.pmem_note)).c_str() : "null");
  } else {
    std::cout << rep.path << "\n";
    std::string linked;
    if (rep.shared) linked = strf(", %s unchanged since earlier capsules", human_bytes(rep.shared).c_str());
    if (rep.pmem_linked) linked += strf(", %s of PMem linked, not copied", human_bytes(rep.pmem_linked).c_str());
    std::cerr << strf("mmtier snapshot: process %d: %u threads stopped for %.1f ms; %s of memory written%s\n", pid,
                      rep.threads, rep.paused_ns / 1e6, human_bytes(rep.mem_bytes).c_str(), linked.c_str());
    if (rep.pmem_note[0]) std::cerr << "mmtier snapshot: " << sanitize_text(rep.pmem_note) << "\n";
  }
  return 0;
}

}  // namespace mmtier::cli
