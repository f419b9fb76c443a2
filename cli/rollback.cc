// `mmtier rollback PID --to CAPSULE|-N`: the running process goes back to
// one of its snapshots.  The capsule is checked as `mmtier restore` checks
// it, then the process is ended and the capsule restored in its place
// (`mmtier restore --replace PID --detach`): as root at the same PID in
// this PID namespace, else in a PID namespace of its own where it is the
// same PID to itself.
#include "capsule_read.h"
#include "cli.h"

#include "snapshot/capsule_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace mmtier::cli {

int rollback_main(const args &a) {
  const std::string cmd = "rollback";
  std::string pid_text, to, dir, port_map, netns;
  bool dir_set = false, lazy = false, as_new = false;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if (a[i] == "-h" || a[i] == "--help") {
      std::cout << help_text(cmd);
      return 0;
    } else if (take_option(cmd, a, &i, "--to", &to)) {
    } else if (take_option(cmd, a, &i, "--dir", &dir)) {
      dir_set = true;
    } else if (a[i] == "--lazy") {
      lazy = true;
    } else if (a[i] == "--as-new") {
      as_new = true;
    } else if (take_option(cmd, a, &i, "--port-map", &port_map) || take_option(cmd, a, &i, "--netns", &netns)) {
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", a[i].c_str()));
    } else if (pid_text.empty()) {
      pid_text = a[i];
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", a[i].c_str()));
    }
  }
  int pid = 0;
  if (!parse_pid(pid_text, &pid)) throw usage_error(cmd, "give the PID of the process to roll back");
  if (to.empty()) throw usage_error(cmd, "give --to CAPSULE, or --to -N for its N-th newest snapshot");
  if (!as_new && (!port_map.empty() || !netns.empty()))
    throw usage_error(cmd, "--port-map and --netns go with --as-new");
  if (as_new && lazy) throw usage_error(cmd, "--as-new maps the snapshot's memory: it is never --lazy");
  const long self = own_pid(pid);
  if (!self) throw failure(strf("process %d is not running", pid));
  // An autosave supervisor would restore it again behind our back.
  if (const int sup = as_new ? 0 : autosave_supervisor(pid))
    throw failure(strf("process %d is supervised by mmtier run --autosave (process %d), which would restore it "
                       "again: end the supervision first",
                       pid, sup));
  if (!dir_set) dir = snapshot_dir_of(pid);
  dir = capsule_dir(!dir.empty(), dir);
  std::string capsule;
  if (to.size() > 1 && to[0] == '-') {
    int n = 0;
    if (!parse_pid(to.substr(1), &n)) throw usage_error(cmd, strf("--to -N takes N from 1, not \"%s\"", to.c_str()));
    const std::vector<durable_capsule> all = durable_capsules(dir, "", static_cast<int>(self));
    if (static_cast<size_t>(n) > all.size())
      throw failure(strf("process %d has %zu durable capsule%s in %s, not %d", pid, all.size(),
                         all.size() == 1 ? "" : "s", dir.c_str(), n));
    capsule = all[static_cast<size_t>(n) - 1].path;
  } else {
    const located l = locate(to, true, dir);
    capsule = l.path;
    // Whose it is, before anything else is said of it.
    int fd = -1;
    manifest_file m;
    capsule::manifest_view v;
    if (capsule::open_checked(AT_FDCWD, l.path.c_str(), &fd) == 0) {
      fd_holder holder(fd);
      if (read_manifest(fd, &m) == 0 && capsule::manifest_parse(m.data(), m.len, &v) == capsule::parse_error::ok &&
          v.hdr->pid != self)
        throw failure(strf("refused: %s was taken of process %d, not of process %d (which is %ld to itself)",
                           l.path.c_str(), v.hdr->pid, pid, self));
    }
  }
  if (as_new) {
    // Beside it: a thin clone, PID left running.
    args c = {capsule};
    if (!port_map.empty()) c.insert(c.end(), {"--port-map", port_map});
    if (!netns.empty()) c.insert(c.end(), {"--netns", netns});
    return clone_main(c);
  }
  args r = {capsule, "--replace", std::to_string(pid), "--detach"};
  if (lazy) r.push_back("--lazy");
  // Stopped while the capsule is checked: it takes no snapshot and prunes
  // none meanwhile (its periodic ones could delete the chosen capsule); if
  // the checks refuse, it goes on.
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0 || syscall(SYS_pidfd_send_signal, fd, SIGSTOP, nullptr, 0) != 0) {
    const int e = errno;
    if (fd >= 0) close(fd);
    throw failure(strf("cannot stop process %d: %s", pid, strerror(e)));
  }
  try {
    const int status = restore_main(r);
    close(fd);
    return status;
  } catch (...) {
    syscall(SYS_pidfd_send_signal, fd, SIGCONT, nullptr, 0);
    close(fd);
    throw;
  }
}

}  // namespace mmtier::cli
