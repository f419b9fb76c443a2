// `mmtier clone CAPSULE [--count N]`: thin clones.  Each clone is a restore
// of the capsule beside whatever else runs (`mmtier restore --clone
// --detach`): a PID namespace of its own, where it has the capsule's PID,
// its descriptors made again (listening ports moved by --port-map, or its
// sockets made in another network namespace by --netns), and its heap's
// pages mapped privately from the capsule instead of copied, so that every
// clone shares them with the others until it writes one (docs/
// ARCHITECTURE.md, "Thin clones").  The first clone checks every CRC of
// the capsule; the others only its manifest.  All or nothing: if one clone
// cannot start, the ones this command started are ended and it fails with
// that clone's reason.
#include "cli.h"
#include "restore_fds.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace mmtier::cli {

namespace {

constexpr int kMaxClones = 1000;

struct clone_options {
  std::string capsule, dir;
  bool dir_set = false, json = false;
  int count = 0;  // 0: not given
  port_map ports;
  std::vector<std::string> netns;
};

struct started {
  int pid = 0;
  double seconds = 0;
  port_map ports;
  std::string netns;
};

// Runs this binary with argv, its standard output and error read whole.
// Its exit status (128 + signal if it was killed), or -1 if it could not
// be run.
int run_self(const std::vector<std::string> &argv, std::string *out, std::string *err) {
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) != 0) return -1;
  if (pipe2(pe, O_CLOEXEC) != 0) {
    close(po[0]);
    close(po[1]);
    return -1;
  }
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    std::vector<char *> v;
    for (const std::string &s : argv) v.push_back(const_cast<char *>(s.c_str()));
    v.push_back(nullptr);
    execv("/proc/self/exe", v.data());
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  if (pid < 0) {
    close(po[0]);
    close(pe[0]);
    return -1;
  }
  pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  std::string *to[2] = {out, err};
  for (int open = 2; open > 0;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || !fds[k].revents) continue;
      char buf[4096];
      const ssize_t n = read(fds[k].fd, buf, sizeof buf);
      if (n > 0) {
        to[k]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[k].fd);
        fds[k].fd = -1;
        --open;
      }
    }
  }
  for (pollfd &p : fds)
    if (p.fd >= 0) close(p.fd);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::vector<std::string> split(const std::string &text) {
  std::vector<std::string> out;
  for (size_t at = 0; at <= text.size();) {
    const size_t comma = std::min(text.find(',', at), text.size());
    out.push_back(text.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

std::string ports_text(const port_map &ports, bool json) {
  std::string s;
  for (const auto &[from, to] : ports) {
    if (!s.empty()) s += json ? "," : ", ";
    s += json ? strf("[%u,%u]", from, to) : strf("%u->%u", from, to);
  }
  return s;
}

std::string json_string(const std::string &s) {
  std::string out = "\"";
  for (char c : sanitize_text(s)) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

clone_options parse(const args &a) {
  clone_options o;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string v;
    if (take_option("clone", a, &i, "--count", &v)) {
      if (!parse_pid(v, &o.count) || o.count > kMaxClones)
        throw usage_error("clone", strf("--count takes a number of clones from 1 to %d", kMaxClones));
    } else if (take_option("clone", a, &i, "--port-map", &v)) {
      if (!parse_port_map(v, &o.ports))
        throw usage_error("clone", strf("--port-map takes FROM:TO[,FROM:TO...], not \"%s\"", v.c_str()));
    } else if (take_option("clone", a, &i, "--netns", &v)) {
      o.netns = split(v);
      for (const std::string &n : o.netns)
        if (n.empty()) throw usage_error("clone", "--netns takes NAME[,NAME...]: network namespaces or their paths");
    } else if (take_option("clone", a, &i, "--dir", &v)) {
      o.dir = v;
      o.dir_set = true;
    } else if (a[i] == "--json") {
      o.json = true;
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error("clone", strf("unknown option %s", a[i].c_str()));
    } else if (o.capsule.empty()) {
      o.capsule = a[i];
    } else {
      throw usage_error("clone", "give one capsule");
    }
  }
  if (o.capsule.empty()) throw usage_error("clone", "give the capsule to clone");
  if (!o.count) o.count = o.netns.size() > 1 ? static_cast<int>(o.netns.size()) : 1;
  if (o.netns.size() > 1 && static_cast<int>(o.netns.size()) != o.count)
    throw usage_error("clone", strf("--netns names %zu namespaces for %d clones: give one, or one per clone",
                                    o.netns.size(), o.count));
  for (const auto &[from, to] : o.ports)
    if (to + o.count - 1 > 65535)
      throw usage_error("clone", strf("--port-map %u:%u leaves no port for clone %d (clone K listens on TO+K-1)",
                                      from, to, o.count));
  return o;
}

}  // namespace

int clone_main(const args &a) {
  if (asked_for_help(a, "clone")) return 0;
  const clone_options o = parse(a);
  std::vector<started> clones;
  for (int k = 0; k < o.count; ++k) {
    started c;
    std::vector<std::string> argv = {"mmtier", "restore", o.capsule, "--clone", "--detach"};
    if (o.dir_set) argv.insert(argv.end(), {"--dir", o.dir});
    // The first checks the capsule's every byte; the rest trust it.
    if (k > 0) argv.insert(argv.end(), {"--verify", "meta"});
    for (const auto &[from, to] : o.ports) c.ports.emplace_back(from, static_cast<uint16_t>(to + k));
    if (!c.ports.empty()) {
      std::string spec;
      for (const auto &[from, to] : c.ports) spec += strf("%s%u:%u", spec.empty() ? "" : ",", from, to);
      argv.insert(argv.end(), {"--port-map", spec});
    }
    if (!o.netns.empty()) {
      c.netns = o.netns[o.netns.size() > 1 ? static_cast<size_t>(k) : 0];
      argv.insert(argv.end(), {"--netns", c.netns});
    }
    std::string out, err;
    const uint64_t t0 = monotonic_ns();
    const int st = run_self(argv, &out, &err);
    c.seconds = static_cast<double>(monotonic_ns() - t0) / 1e9;
    if (st != 0 || !parse_pid(out.substr(0, out.find('\n')), &c.pid)) {
      // All or nothing: the clones started so far end.
      for (const started &s : clones) kill(s.pid, SIGKILL);
      std::string why = err;
      while (!why.empty() && why.back() == '\n') why.pop_back();
      if (why.rfind("mmtier: ", 0) == 0) why.erase(0, 8);
      throw failure(strf("clone %d of %d did not start%s: %s", k + 1, o.count,
                         clones.empty() ? "" : strf(" (the %zu started were ended)", clones.size()).c_str(),
                         why.empty() ? strf("mmtier restore ended with status %d", st).c_str() : why.c_str()));
    }
    clones.push_back(c);
    if (!o.json) {
      printf("clone %d: pid %d", k + 1, c.pid);
      if (!c.ports.empty()) printf(", ports %s", ports_text(c.ports, false).c_str());
      if (!c.netns.empty()) printf(", network namespace %s", c.netns.c_str());
      printf(", started in %.2f s\n", c.seconds);
      fflush(stdout);
    }
  }
  if (o.json) {
    printf("[");
    for (size_t k = 0; k < clones.size(); ++k) {
      const started &c = clones[k];
      printf("%s\n  {\"clone\": %zu, \"pid\": %d, \"ports\": [%s], \"netns\": %s, \"start_seconds\": %.3f}",
             k ? "," : "", k + 1, c.pid, ports_text(c.ports, true).c_str(),
             c.netns.empty() ? "null" : json_string(c.netns).c_str(), c.seconds);
    }
    printf("\n]\n");
  } else {
    fprintf(stderr, "mmtier clone: %d clone%s of %s running, sharing its memory until each writes it\n", o.count,
            o.count == 1 ? "" : "s", o.capsule.c_str());
  }
  return 0;
}

}  // namespace mmtier::cli
