// mmtierd: the node agent.  Owns the node's DRAM budget and shares it among
// the processes under libmmtier that register on its socket (protocol:
// lib/stats/agent_format.h; sharing: qos.h), and serves the metrics of every
// mmtier process on the node over HTTP (/metrics, Prometheus text format;
// /status, JSON; /healthz), and takes the periodic snapshots of the
// processes that offer them, one at a time across the node (through each
// one's control socket).  One thread, one epoll loop; it never runs
// anything a client sends.
//
//   mmtierd --node-dram 64G [--socket PATH] [--listen ADDR:PORT|off]
//           [--guaranteed-max PCT] [--guaranteed-uids UID,...]
#include "qos.h"

#include "api/control_format.h"
#include "config/config.h"
#include "format.h"
#include "stats/agent_format.h"
#include "stats_reader.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace af = mmtier::agent_format;
namespace qa = mmtier::agent;

volatile sig_atomic_t g_stop = 0;

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("mmtierd: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

struct options {
  uint64_t node_dram = 0;
  std::string socket = af::kDefaultSocket;
  std::string listen = "127.0.0.1:9464";
  uint32_t guaranteed_max_pct = 90;
  std::vector<uint32_t> guaranteed_uids;
  size_t max_per_user = 4096;  // registrations one user may hold
};

// Where a process runs, from /proc/PID/cgroup: a container's id (docker,
// containerd, CRI-O, podman) and a Kubernetes pod's uid, where the cgroup
// path names them.
struct place {
  std::string container, pod;
};

bool hex_id(const std::string &s) {
  if (s.size() < 12) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

place place_of(int pid) {
  place p;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line, path;
  while (std::getline(in, line)) {
    // cgroup v2: "0::/path"; v1: the memory controller's line.
    const size_t c = line.find(':', line.find(':') + 1);
    if (c == std::string::npos) continue;
    if (line.compare(0, 3, "0::") == 0 || line.find(":memory:") != std::string::npos) path = line.substr(c + 1);
  }
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string seg = path.substr(start, end - start);
    start = end + 1;
    if (seg.size() > 6 && seg.compare(seg.size() - 6, 6, ".slice") == 0) seg.resize(seg.size() - 6);
    if (seg.size() > 6 && seg.compare(seg.size() - 6, 6, ".scope") == 0) seg.resize(seg.size() - 6);
    const size_t pod = seg.rfind("pod");
    if (pod != std::string::npos && (pod == 0 || seg[pod - 1] == '-') && seg.size() - pod > 10) {
      p.pod = seg.substr(pod + 3);
      for (char &ch : p.pod)
        if (ch == '_') ch = '-';  // the systemd driver writes the uid's dashes as underscores
      continue;
    }
    for (const char *prefix : {"docker-", "cri-containerd-", "crio-", "libpod-", ""}) {
      const size_t n = strlen(prefix);
      if (seg.compare(0, n, prefix) == 0 && hex_id(seg.substr(n))) {
        p.container = seg.substr(n, 12);
        break;
      }
    }
  }
  return p;
}

// A registered process.
struct member {
  int fd = -1;
  bool hello = false;
  int pid = 0;
  uint32_t uid = 0;
  std::string comm;
  place where;
  qa::claim claim;
  uint64_t dram = 0, pmem = 0;
  uint64_t held_budget = af::kNone;
  qa::grant grant;
  bool sent = false;       // a budget was sent
  uint64_t sent_budget = 0;
  uint32_t sent_qos = 0;
  uint32_t sent_flags = 0;
  std::string sent_note;
  // Periodic snapshots the agent takes for it (through its control socket).
  uint64_t snapshot_every_ns = 0;
  std::string control_path;  // checked: <dir>/<pid>.ctl, a socket of the process's user
  uint64_t next_due_ns = 0;
  uint64_t snapshots = 0, snapshot_failures = 0;
  uint64_t last_snapshot_real_ns = 0;
  std::string last_error;
};

// A periodic snapshot under way: the connection to the process's control
// socket, whose reply says when the capsule is durable.
struct snapshot_call {
  int fd = -1;
  int member_fd = -1;  // the registration it is for (-1 once that ended)
  int pid = 0;
  uint64_t started_ns = 0;
};

// An HTTP connection: the request read so far.
struct http_conn {
  int fd = -1;
  std::string in;
  uint64_t since_ns = 0;
};

class agent {
 public:
  explicit agent(const options &o) : opt_(o) {}
  int run();

 private:
  bool open_socket();
  bool open_http();
  int accept_or_shed(int listen_fd);
  void accept_members();
  void accept_http();
  void on_member(int fd);
  void on_http(int fd);
  void drop_member(int fd, const char *why);
  void rebalance();
  std::string metrics() const;
  std::string status() const;
  void serve_http(http_conn &c);
  void note_offer(member &m, uint64_t every, const char *path);
  void start_snapshot(uint64_t now);
  void end_snapshot(bool timed_out);

  options opt_;
  int ep_ = -1, unix_ = -1, tcp_ = -1;
  std::map<int, member> members_;
  std::map<int, http_conn> http_;
  bool dirty_ = false;   // claims changed since the last rebalance
  bool urgent_ = false;  // a process came or went: rebalance now
  uint64_t generation_ = 0;
  uint64_t rebalances_ = 0;
  uint64_t rejected_ = 0;
  snapshot_call snap_;  // one at a time across the node
  static constexpr size_t kMaxMembers = 16384;
  bool unseen_said_ = false;  // said once: a process registered from an unseen PID namespace
  bool refused_said_ = false;
  int spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);  // given up to refuse a connection when out of descriptors
  uint64_t snapshots_ok_ = 0, snapshots_failed_ = 0;
};

uint64_t real_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A process's control socket, as it says: taken only when it is
// <dir>/<its pid>.ctl, a socket owned by its user, so that no process can
// make the agent ask another for snapshots.  The path and the pid are the
// process's own: in a container, the pid it sees, and the path looked up
// in its root (every link resolved inside it).
// The socket file at path, as process pid sees it, if it is a socket of
// user uid: an O_PATH descriptor, else -1.
int open_control_socket(int pid, const std::string &path, uint32_t uid) {
  return mmtier::cli::open_socket_in_root(pid, path, static_cast<uid_t>(uid));
}

bool control_path_ok(const std::string &path, int pid, uint32_t uid) {
  const int inner = mmtier::cli::pid_inside(pid);
  const std::string tail = "/" + std::to_string(inner > 0 ? inner : pid) + mmtier::control::kSuffix;
  if (path.size() <= tail.size() || path[0] != '/' || path.compare(path.size() - tail.size(), tail.size(), tail) != 0)
    return false;
  const int fd = open_control_socket(pid, path, uid);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

void agent::note_offer(member &m, uint64_t every, const char *path) {
  std::string p(path, strnlen(path, sizeof(af::message::control_path)));
  if (every < 1000000000ull || !control_path_ok(p, m.pid, m.uid)) {
    every = 0;
    p.clear();
  }
  if (every == m.snapshot_every_ns && p == m.control_path) return;
  m.snapshot_every_ns = every;
  m.control_path = p;
  m.next_due_ns = every ? mono_ns() + every : 0;
  dirty_ = urgent_ = true;  // the budget's flag changes
}

void agent::start_snapshot(uint64_t now) {
  member *due = nullptr;
  for (auto &[fd, m] : members_)
    if (m.hello && m.snapshot_every_ns && m.next_due_ns <= now && (!due || m.next_due_ns < due->next_due_ns)) due = &m;
  if (!due) return;
  member &m = *due;
  m.next_due_ns = now + m.snapshot_every_ns;
  // Reached as the process sees it (in a container: in its root), by the
  // descriptor of the socket file.
  // Checked again: the file at the path may have been replaced since the
  // offer.
  const int at = open_control_socket(m.pid, m.control_path, m.uid);
  const int s = at < 0 ? -1 : socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", at);
  mmtier::control::request req{};
  req.magic = mmtier::control::kMagic;
  req.version = mmtier::control::kVersion;
  req.cmd = static_cast<uint32_t>(mmtier::control::command::snapshot);
  req.flags = mmtier::control::kPeriodic;
  if (s < 0 || connect(s, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
      send(s, &req, sizeof req, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req)) {
    ++m.snapshot_failures;
    ++snapshots_failed_;
    m.last_error = std::string("cannot reach its control socket: ") + strerror(errno);
    if (s >= 0) close(s);
    if (at >= 0) close(at);
    return;
  }
  close(at);
  snap_ = snapshot_call{s, m.fd, m.pid, now};
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = s;
  epoll_ctl(ep_, EPOLL_CTL_ADD, s, &ev);
}

void agent::end_snapshot(bool timed_out) {
  mmtier::control::reply rep{};
  const ssize_t n = timed_out ? -1 : recv(snap_.fd, &rep, sizeof rep, MSG_DONTWAIT);
  if (n < 0 && !timed_out && (errno == EAGAIN || errno == EINTR)) return;
  auto it = members_.find(snap_.member_fd);
  member *m = it != members_.end() && it->second.pid == snap_.pid ? &it->second : nullptr;
  const bool ok = n >= static_cast<ssize_t>(offsetof(mmtier::control::reply, line)) && rep.magic == mmtier::control::kMagic &&
                  rep.error == 0;
  if (ok) ++snapshots_ok_;
  else ++snapshots_failed_;
  if (m) {
    if (ok) {
      ++m->snapshots;
      m->last_snapshot_real_ns = real_ns();
      m->last_error.clear();
    } else {
      ++m->snapshot_failures;
      rep.line[sizeof rep.line - 1] = 0;
      m->last_error = timed_out ? "no reply within 15 min"
                      : n <= 0  ? "the process closed its control socket"
                                : (rep.line[0] ? rep.line : strerror(rep.error));
    }
  }
  epoll_ctl(ep_, EPOLL_CTL_DEL, snap_.fd, nullptr);
  close(snap_.fd);
  snap_ = snapshot_call{};
}

bool agent::open_socket() {
  const std::string &path = opt_.socket;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    say("socket path %s is empty or too long", path.c_str());
    return false;
  }
  memcpy(addr.sun_path, path.c_str(), path.size());
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    const std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      say("cannot make %s: %s", dir.c_str(), strerror(errno));
      return false;
    }
  }
  unix_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (unix_ < 0) return false;
  // A socket file left by an agent that died is removed; one that answers
  // is another agent's.
  const int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (probe >= 0 && connect(probe, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0) {
    close(probe);
    say("another mmtierd serves %s", path.c_str());
    return false;
  }
  if (probe >= 0) close(probe);
  unlink(path.c_str());
  // Any user's process may register (SO_PEERCRED says who it is); only
  // this agent may have made the file.
  if (bind(unix_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || chmod(path.c_str(), 0666) != 0 ||
      listen(unix_, 64) != 0) {
    say("cannot serve %s: %s", path.c_str(), strerror(errno));
    return false;
  }
  return true;
}

bool agent::open_http() {
  if (opt_.listen == "off") return true;
  const size_t colon = opt_.listen.rfind(':');
  if (colon == std::string::npos) {
    say("--listen %s: expected ADDRESS:PORT or off", opt_.listen.c_str());
    return false;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  const std::string host = opt_.listen.substr(0, colon);
  const int port = atoi(opt_.listen.c_str() + colon + 1);
  if (port < 0 || port > 65535 || inet_pton(AF_INET, host.empty() ? "0.0.0.0" : host.c_str(), &a.sin_addr) != 1) {
    say("--listen %s: expected an IPv4 ADDRESS:PORT or off", opt_.listen.c_str());
    return false;
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  tcp_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  const int one = 1;
  setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (tcp_ < 0 || bind(tcp_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(tcp_, 16) != 0) {
    say("cannot listen on %s: %s", opt_.listen.c_str(), strerror(errno));
    return false;
  }
  if (port == 0) {  // tests: the port the kernel chose, on stdout
    socklen_t len = sizeof a;
    getsockname(tcp_, reinterpret_cast<sockaddr *>(&a), &len);
    printf("listening on port %d\n", ntohs(a.sin_port));
    fflush(stdout);
  }
  return true;
}

// The next connection waiting on listen_fd, or -1 when none is.  Out of
// descriptors (accept says so whether or not a connection waits), one that
// waits is taken with the spare descriptor and closed: left pending, it
// would wake the loop for ever.
int agent::accept_or_shed(int listen_fd) {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || spare_ < 0) return fd;
    close(spare_);
    const int shed = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (shed >= 0) close(shed);
    spare_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (shed < 0) return -1;
    ++rejected_;
  }
}

void agent::accept_members() {
  for (;;) {
    const int fd = accept_or_shed(unix_);
    if (fd < 0) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) {
      // pid 0: the process is in a PID namespace this agent cannot see
      // into (a container's, with the agent outside the host's).
      if (cred.pid == 0 && !unseen_said_)
        say("a process this agent cannot see registered (its PID namespace is not within the agent's): run mmtierd "
            "in the host's PID namespace (hostPID: true, podman run --pid=host); refused");
      unseen_said_ = unseen_said_ || cred.pid == 0;
      ++rejected_;
      close(fd);
      continue;
    }
    // No user holds more than a share of the agent's descriptors: one that
    // opens connections in a loop is refused, the others are served.
    size_t of_uid = 0;
    for (const auto &[other, mm] : members_) of_uid += mm.uid == cred.uid;
    if (members_.size() >= kMaxMembers || of_uid >= opt_.max_per_user) {
      ++rejected_;
      if (!refused_said_) say("uid %u: too many registrations (%zu); refused", cred.uid, of_uid);
      refused_said_ = true;
      close(fd);
      continue;
    }
    member m;
    m.fd = fd;
    m.pid = cred.pid;
    m.uid = cred.uid;
    members_[fd] = m;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void agent::accept_http() {
  for (;;) {
    const int fd = accept_or_shed(tcp_);
    if (fd < 0) return;
    http_conn c;
    c.fd = fd;
    c.since_ns = mono_ns();
    http_[fd] = c;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void agent::drop_member(int fd, const char *why) {
  auto it = members_.find(fd);
  if (it == members_.end()) return;
  if (why) say("pid %d: %s; connection closed", it->second.pid, why);
  if (it->second.hello) dirty_ = urgent_ = true;
  epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  members_.erase(it);
}

void agent::on_member(int fd) {
  auto it = members_.find(fd);
  if (it == members_.end()) return;
  member &m = it->second;
  for (;;) {
    af::message msg;
    const ssize_t n = recv(fd, &msg, sizeof msg, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      drop_member(fd, nullptr);  // the process is gone (or closed it)
      return;
    }
    // Anything but a well-formed record of this version ends the
    // conversation: a client that does not speak the protocol gets nothing.
    const bool ok = n == static_cast<ssize_t>(sizeof msg) && msg.magic == af::kMagic && msg.version == af::kVersion &&
                    (msg.type == af::kHello ? !m.hello : msg.type == af::kReport && m.hello) && msg.qos <= af::kBestEffort;
    if (!ok) {
      ++rejected_;
      drop_member(fd, "malformed or unexpected message");
      return;
    }
    if (msg.type == af::kHello) {
      m.hello = true;
      m.claim.qos = msg.qos;
      m.claim.guarantee = msg.qos == af::kGuaranteed ? msg.guarantee_bytes : 0;
      m.claim.weight = msg.weight < 1 ? 1 : msg.weight > 10000 ? 10000 : msg.weight;
      m.claim.start_time = msg.start_time;
      m.claim.pid = m.pid;
      m.claim.uid = m.uid;
      m.held_budget = msg.held_budget_bytes;
      // The name /proc gives (the process's, not a thread's), else its own word.
      std::ifstream comm("/proc/" + std::to_string(m.pid) + "/comm");
      if (!std::getline(comm, m.comm) || m.comm.empty()) {
        msg.comm[sizeof msg.comm - 1] = 0;
        m.comm = msg.comm;
      }
      m.where = place_of(m.pid);
    }
    msg.control_path[sizeof msg.control_path - 1] = 0;
    note_offer(m, msg.snapshot_every_ns, msg.control_path);
    // A demand above what the process has placed in all is not believed:
    // it could not use that DRAM.
    const uint64_t placed = msg.dram_bytes + msg.pmem_bytes;
    const uint64_t demand = msg.demand_bytes > placed ? placed : msg.demand_bytes;
    if (demand != m.claim.demand) dirty_ = true;
    if (msg.type == af::kHello) dirty_ = urgent_ = true;
    m.claim.demand = demand;
    m.dram = msg.dram_bytes;
    m.pmem = msg.pmem_bytes;
  }
}

void agent::rebalance() {
  dirty_ = urgent_ = false;
  std::vector<qa::claim> claims;
  std::vector<member *> who;
  for (auto &[fd, m] : members_)
    if (m.hello) {
      claims.push_back(m.claim);
      who.push_back(&m);
    }
  qa::node_policy pol;
  pol.node_dram = opt_.node_dram;
  pol.guaranteed_max_pct = opt_.guaranteed_max_pct;
  pol.guaranteed_uids = opt_.guaranteed_uids;
  const std::vector<qa::grant> grants = qa::allocate(pol, claims);
  ++generation_;
  ++rebalances_;
  for (size_t i = 0; i < who.size(); ++i) {
    member &m = *who[i];
    m.grant = grants[i];
    const uint32_t flags = m.snapshot_every_ns ? uint32_t{af::kSchedulesSnapshots} : 0u;
    if (m.sent && m.sent_budget == m.grant.budget && m.sent_qos == m.grant.qos && m.sent_note == m.grant.note &&
        m.sent_flags == flags)
      continue;
    af::message b{};
    b.magic = af::kMagic;
    b.version = af::kVersion;
    b.type = af::kBudget;
    b.qos = m.grant.qos;
    b.budget_bytes = m.grant.budget;
    b.generation = generation_;
    b.flags = flags;
    snprintf(b.note, sizeof b.note, "%s", m.grant.note.c_str());
    if (send(m.fd, &b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof b)) {
      m.sent = true;
      m.sent_budget = m.grant.budget;
      m.sent_qos = m.grant.qos;
      m.sent_note = m.grant.note;
      m.sent_flags = flags;
    }
  }
}

std::string agent::metrics() const {
  namespace cli = mmtier::cli;
  // Every process's own statistics (the pages they publish), labelled with
  // its container and pod where known.
  std::vector<cli::snapshot> snaps;
  std::vector<cli::stats_source> sources = cli::open_all(cli::stats_dirs_for_all(cli::stats_location_from_env()));
  // The registered processes in containers: their pages are in their own
  // /dev/shm, under the pids they see (only these are looked for there,
  // not every process on the host).
  std::set<int> found;
  for (const cli::stats_source &src : sources) found.insert(src.pid());
  for (const auto &[fd, m] : members_) {
    if (!m.hello || found.count(m.pid)) continue;
    cli::open_result r = cli::open_stats_contained(m.pid);
    if (r.status == cli::open_status::ok) {
      found.insert(m.pid);
      sources.push_back(std::move(r.source));
    }
  }
  for (cli::stats_source &src : sources) {
    cli::snapshot s;
    if (src.read(&s) == cli::stats_source::read_status::ok) snaps.push_back(std::move(s));
  }
  std::sort(snaps.begin(), snaps.end(), [](const cli::snapshot &a, const cli::snapshot &b) { return a.pid() < b.pid(); });
  auto labels_of = [](const place &p) {
    std::string l;
    if (!p.container.empty()) l += "container=\"" + cli::prometheus_label_value(p.container) + "\"";
    if (!p.pod.empty()) l += std::string(l.empty() ? "" : ",") + "pod_uid=\"" + cli::prometheus_label_value(p.pod) + "\"";
    return l;
  };
  std::map<int, std::string> extra;
  for (const auto &[fd, m] : members_) extra[m.pid] = labels_of(m.where);
  std::string o = cli::format_prometheus(snaps, [&](int pid) {
    auto it = extra.find(pid);
    return it != extra.end() ? it->second : labels_of(place_of(pid));
  });
  // The node's ledger.
  uint64_t granted = 0, guaranteed = 0;
  size_t count[3] = {};
  for (const auto &[fd, m] : members_) {
    if (!m.hello) continue;
    granted += m.grant.budget;
    if (m.grant.qos == qa::kGuaranteed) guaranteed += m.grant.budget;
    ++count[m.grant.qos < 3 ? m.grant.qos : 1];
  }
  // One family: HELP and TYPE, then its samples ("{labels} value" each).
  auto family = [&](const char *name, const char *type, const char *help,
                    std::initializer_list<std::pair<std::string, uint64_t>> samples) {
    o += strf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (const auto &[labels, v] : samples)
      o += strf("%s%s %llu\n", name, labels.c_str(), static_cast<unsigned long long>(v));
  };
  family("mmtier_node_dram_budget_bytes", "gauge", "DRAM the node agent shares among the registered processes.",
         {{"", opt_.node_dram}});
  family("mmtier_node_dram_granted_bytes", "gauge", "DRAM budgets granted now, all classes.", {{"", granted}});
  family("mmtier_node_dram_guaranteed_bytes", "gauge", "DRAM guaranteed now.", {{"", guaranteed}});
  family("mmtier_node_processes", "gauge", "Registered processes by the class they are served in.",
         {{"{class=\"guaranteed\"}", count[0]}, {"{class=\"burstable\"}", count[1]}, {"{class=\"best-effort\"}", count[2]}});
  family("mmtier_agent_rebalances_total", "counter", "Times the agent shared the node's DRAM anew.", {{"", rebalances_}});
  family("mmtier_agent_rejected_messages_total", "counter",
         "Malformed or unexpected messages (their connections closed).", {{"", rejected_}});
  family("mmtier_agent_snapshots_total", "counter", "Periodic snapshots the agent asked processes for, by result.",
         {{"{result=\"ok\"}", snapshots_ok_}, {"{result=\"failed\"}", snapshots_failed_}});
  auto per_process = [&](const char *name, const char *help, auto get) {
    o += strf("# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (const auto &[fd, m] : members_) {
      if (!m.hello) continue;
      std::string l = strf("pid=\"%d\",comm=\"%s\",uid=\"%u\",class=\"%s\"", m.pid,
                           cli::prometheus_label_value(m.comm).c_str(), m.uid, qa::class_name(m.grant.qos));
      const std::string more = labels_of(m.where);
      if (!more.empty()) l += "," + more;
      o += strf("%s{%s} %llu\n", name, l.c_str(), static_cast<unsigned long long>(get(m)));
    }
  };
  per_process("mmtier_qos_dram_budget_bytes", "DRAM the node agent grants the process.",
              [](const member &m) { return m.grant.budget; });
  per_process("mmtier_qos_demand_bytes", "DRAM the process's own policy would give it (as it reports, capped by what it placed).",
              [](const member &m) { return m.claim.demand; });
  per_process("mmtier_qos_dram_bytes", "DRAM units the process holds (as it reports).", [](const member &m) { return m.dram; });
  per_process("mmtier_qos_pmem_bytes", "PMem units the process holds (as it reports).", [](const member &m) { return m.pmem; });
  per_process("mmtier_qos_guarantee_bytes", "DRAM guarantee the process asked for (0: none).",
              [](const member &m) { return m.claim.guarantee; });
  per_process("mmtier_qos_weight", "Burstable weight of the process.", [](const member &m) { return uint64_t{m.claim.weight}; });
  return o;
}

std::string agent::status() const {
  namespace cli = mmtier::cli;
  std::string o = strf("{\"node_dram\":%llu,\"generation\":%llu,\"processes\":[",
                       static_cast<unsigned long long>(opt_.node_dram), static_cast<unsigned long long>(generation_));
  bool first = true;
  for (const auto &[fd, m] : members_) {
    if (!m.hello) continue;
    o += first ? "" : ",";
    first = false;
    o += strf("{\"pid\":%d,\"uid\":%u,\"comm\":%s,\"asked_class\":\"%s\",\"class\":\"%s\",\"guarantee\":%llu,"
              "\"weight\":%u,\"demand\":%llu,\"dram\":%llu,\"pmem\":%llu,\"budget\":%llu,\"container\":%s,\"pod_uid\":%s,"
              "\"note\":%s,\"snapshot_every_s\":%.3f,\"snapshots\":%llu,\"snapshot_failures\":%llu,"
              "\"last_snapshot\":%.3f,\"snapshot_error\":%s}",
              m.pid, m.uid, cli::json_string(m.comm).c_str(), qa::class_name(m.claim.qos), qa::class_name(m.grant.qos),
              static_cast<unsigned long long>(m.claim.guarantee), m.claim.weight,
              static_cast<unsigned long long>(m.claim.demand), static_cast<unsigned long long>(m.dram),
              static_cast<unsigned long long>(m.pmem), static_cast<unsigned long long>(m.grant.budget),
              cli::json_string(m.where.container).c_str(), cli::json_string(m.where.pod).c_str(),
              cli::json_string(m.grant.note).c_str(), static_cast<double>(m.snapshot_every_ns) / 1e9,
              static_cast<unsigned long long>(m.snapshots), static_cast<unsigned long long>(m.snapshot_failures),
              static_cast<double>(m.last_snapshot_real_ns) / 1e9, cli::json_string(m.last_error).c_str());
  }
  o += "]}\n";
  return o;
}

void agent::serve_http(http_conn &c) {
  // "GET /path HTTP/1.x"; nothing else is served.
  const size_t sp1 = c.in.find(' '), sp2 = c.in.find(' ', sp1 + 1);
  std::string code = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  const std::string method = c.in.substr(0, sp1);
  std::string path = sp1 != std::string::npos && sp2 != std::string::npos ? c.in.substr(sp1 + 1, sp2 - sp1 - 1) : "";
  path = path.substr(0, path.find('?'));
  if (method != "GET") {
    code = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (path == "/metrics") {
    body = metrics();
  } else if (path == "/status") {
    type = "application/json";
    body = status();
  } else if (path == "/healthz") {
    body = "ok\n";
  } else {
    code = "404 Not Found";
    body = "/metrics, /status, /healthz\n";
  }
  const std::string head = "HTTP/1.0 " + code + "\r\nContent-Type: " + type +
                           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  const std::string all = head + body;
  // Blocking for the reply (a few KiB per process): a reader that does not
  // read gets 2 s.
  const int flags = fcntl(c.fd, F_GETFL);
  fcntl(c.fd, F_SETFL, flags & ~O_NONBLOCK);
  const timeval limit = {2, 0};
  setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  size_t off = 0;
  while (off < all.size()) {
    const ssize_t w = send(c.fd, all.data() + off, all.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
}

void agent::on_http(int fd) {
  auto it = http_.find(fd);
  if (it == http_.end()) return;
  http_conn &c = it->second;
  char buf[2048];
  const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  bool done = n <= 0;
  if (n > 0) {
    c.in.append(buf, static_cast<size_t>(n));
    if (c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos) {
      serve_http(c);
      done = true;
    } else if (c.in.size() > 8192) {
      done = true;  // not a request this agent serves
    }
  }
  if (done) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    http_.erase(it);
  }
}

int agent::run() {
  if (!open_socket() || !open_http()) return 1;
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  for (int fd : {unix_, tcp_}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  say("sharing %llu MiB of DRAM; processes register at %s%s%s", static_cast<unsigned long long>(opt_.node_dram >> 20),
      opt_.socket.c_str(), tcp_ >= 0 ? "; metrics on http://" : "", tcp_ >= 0 ? (opt_.listen + "/metrics").c_str() : "");
  uint64_t last_rebalance = 0;
  while (!g_stop) {
    epoll_event evs[64];
    const int n = epoll_wait(ep_, evs, 64, 200);
    int http_ready[64];
    int n_http = 0;
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == unix_) accept_members();
      else if (fd == tcp_) accept_http();
      else if (fd == snap_.fd) end_snapshot(false);
      else if (members_.count(fd)) on_member(fd);
      else http_ready[n_http++] = fd;
    }
    // A process that came or went is shared in before a status request of
    // the same wake-up is answered: the ledger never shows a registered
    // process without its grant.
    if (urgent_) {
      rebalance();
      last_rebalance = mono_ns();
    }
    for (int i = 0; i < n_http; ++i) on_http(http_ready[i]);
    // Slow HTTP clients are cut off.
    const uint64_t now = mono_ns();
    for (auto it = http_.begin(); it != http_.end();) {
      if (now - it->second.since_ns > 5'000'000'000ull) {
        epoll_ctl(ep_, EPOLL_CTL_DEL, it->first, nullptr);
        close(it->first);
        it = http_.erase(it);
      } else {
        ++it;
      }
    }
    // Periodic snapshots, one at a time across the node (their pauses and
    // their writing never coincide).
    if (snap_.fd >= 0 && now - snap_.started_ns > 900'000'000'000ull) end_snapshot(true);
    if (snap_.fd < 0) start_snapshot(now);
    // A process that starts or exits is answered at once; demand changes
    // at most five times a second.
    if (dirty_ && (urgent_ || now - last_rebalance >= 200'000'000ull)) {
      rebalance();
      last_rebalance = now;
    }
  }
  unlink(opt_.socket.c_str());
  say("stopped");
  return 0;
}

void usage(FILE *f) {
  fputs("usage: mmtierd --node-dram SIZE [--socket PATH] [--listen ADDRESS:PORT|off]\n"
        "               [--guaranteed-max PCT] [--guaranteed-uids UID,...] [--max-per-user N]\n"
        "  --node-dram SIZE      DRAM shared by the processes under libmmtier (e.g. 64G); or MMTIER_NODE_DRAM\n"
        "  --socket PATH         where processes register (default /run/mmtier/agent.sock; MMTIER_AGENT_SOCKET)\n"
        "  --listen ADDR:PORT    HTTP: /metrics, /status, /healthz (default 127.0.0.1:9464; off; MMTIERD_LISTEN)\n"
        "  --guaranteed-max PCT  at most this share of the node's DRAM is guaranteed (default 90;\n"
        "                        MMTIERD_GUARANTEED_MAX)\n"
        "  --guaranteed-uids L   only these users' processes may hold a guarantee (default: every user;\n"
        "                        MMTIERD_GUARANTEED_UIDS)\n"
        "  --max-per-user N      registrations one user may hold at once (default 4096; MMTIERD_MAX_PER_USER)\n"
        "The command line wins over the environment.\n",
        f);
}

// A whole decimal number in [lo, hi], or false ("90x", "$(VAR)", "" are
// not numbers: a setting that did not expand must not become 0).
bool parse_count(const char *text, long lo, long hi, long *out) {
  if (text == nullptr || *text < '0' || *text > '9') return false;
  char *end = nullptr;
  errno = 0;
  const long v = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool set_guaranteed_max(options &o, const char *text, const char *from) {
  long v = 0;
  if (!parse_count(text, 0, 100, &v)) {
    say("%s: expected 0..100, not \"%s\"", from, text);
    return false;
  }
  o.guaranteed_max_pct = static_cast<uint32_t>(v);
  return true;
}

bool set_max_per_user(options &o, const char *text, const char *from) {
  long v = 0;
  if (!parse_count(text, 1, 1L << 30, &v)) {
    say("%s: expected a positive number, not \"%s\"", from, text);
    return false;
  }
  o.max_per_user = static_cast<size_t>(v);
  return true;
}

bool set_guaranteed_uids(options &o, const std::string &list, const char *from) {
  o.guaranteed_uids.clear();
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = list.find(',', start);
    const std::string item = list.substr(start, end == std::string::npos ? std::string::npos : end - start);
    long uid = 0;
    if (!parse_count(item.c_str(), 0, 0xfffffffeL, &uid)) {
      say("%s: %s is not a uid", from, item.c_str());
      return false;
    }
    o.guaranteed_uids.push_back(static_cast<uint32_t>(uid));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  options o;
  // Every option can come from the environment too (a container's
  // settings from a ConfigMap); the command line wins.
  if (const char *e = getenv("MMTIER_AGENT_SOCKET"); e && *e) o.socket = e;
  if (const char *e = getenv("MMTIERD_LISTEN"); e && *e) o.listen = e;
  if (const char *e = getenv("MMTIERD_GUARANTEED_MAX"); e && *e && !set_guaranteed_max(o, e, "MMTIERD_GUARANTEED_MAX"))
    return 2;
  if (const char *e = getenv("MMTIERD_MAX_PER_USER"); e && *e && !set_max_per_user(o, e, "MMTIERD_MAX_PER_USER"))
    return 2;
  if (const char *e = getenv("MMTIERD_GUARANTEED_UIDS"); e && *e && !set_guaranteed_uids(o, e, "MMTIERD_GUARANTEED_UIDS"))
    return 2;
  const char *node = getenv("MMTIER_NODE_DRAM");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) {
        say("%s needs a value", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--node-dram") node = value();
    else if (a == "--socket") o.socket = value();
    else if (a == "--listen") o.listen = value();
    else if (a == "--guaranteed-max") {
      if (!set_guaranteed_max(o, value(), "--guaranteed-max")) return 2;
    } else if (a == "--max-per-user") {
      if (!set_max_per_user(o, value(), "--max-per-user")) return 2;
    } else if (a == "--guaranteed-uids") {
      if (!set_guaranteed_uids(o, value(), "--guaranteed-uids")) return 2;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      say("unknown option %s", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  size_t bytes = 0;
  if (!node || !mmtier::detail::parse_size(node, &bytes) || bytes == 0) {
    say("the node's DRAM budget is needed: --node-dram SIZE or MMTIER_NODE_DRAM (e.g. 64G)%s%s", node ? ", not " : "",
        node ? node : "");
    return 2;
  }
  o.node_dram = bytes;
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A descriptor per registered process: as many as the hard limit allows.
  rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  agent a(o);
  return a.run();
}
