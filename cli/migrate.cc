// `mmtier migrate PID --to HOST:PORT` and `mmtier receive --listen PORT`:
// a process moved to another host with its state (docs/ARCHITECTURE.md,
// "App Migration").
//
// The source sends capsules over one TCP connection while the program
// runs: a first snapshot, then incremental ones (each writes what changed
// since the one before), each round's files sent once: a file already sent
// (the same inode: an earlier capsule's mem an incremental one links, a
// PMem file) is only named again.  When a round changes little, or after
// --rounds rounds, the last snapshot is taken with the program held
// stopped (control::kHold): its changes are sent, the receiver checks the
// capsule and restores it (`mmtier restore --detach --migrated`), and only
// once the program runs there is the source process ended.  Any failure
// before that lets the held program go on (closing the control connection
// does) and makes the receiver remove what it received and end what it
// started.
//
// The stream: "MMTMIG1\n", the token, then messages, each a type byte and
// fields (u32/u64 little-endian, strings as u32 length and bytes):
//   F capsule name id mode size, then extents (u64 offset, u64 length,
//     bytes) until a length of 0: a file of the capsule, holes kept
//   L capsule name id: a file sent before (its id), linked under name
//   C capsule: complete; the receiver checks it (every checksum) and
//     publishes it
//   R capsule lazy: restore it
//   D: done (the source has ended); A: abort
// Each of hello, C, R and D is answered: 'k' (R: and the host PID, u64),
// or 'e' and a line.
#include "capsule_read.h"
#include "cli.h"
#include "control_client.h"

#include "snapshot/capsule_dir.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mmtier::cli {
namespace {

namespace ctl = mmtier::control;
namespace cap = mmtier::capsule;

constexpr char kHello[] = "MMTMIG1\n";
constexpr size_t kBlock = 1 << 20;

// ---- the stream ----------------------------------------------------------

struct stream {
  int fd = -1;
  uint64_t sent = 0;  // bytes of file data sent
  std::vector<char> out;

  void put(const void *p, size_t n) {
    out.insert(out.end(), static_cast<const char *>(p), static_cast<const char *>(p) + n);
    if (out.size() >= kBlock) flush();
  }
  void u8(uint8_t v) { put(&v, 1); }
  void u32(uint32_t v) { put(&v, 4); }
  void u64(uint64_t v) { put(&v, 8); }
  void str(const std::string &s) {
    u32(static_cast<uint32_t>(s.size()));
    put(s.data(), s.size());
  }
  void flush() {
    for (size_t at = 0; at < out.size();) {
      const ssize_t n = send(fd, out.data() + at, out.size() - at, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw failure(strf("the connection broke: %s", n < 0 ? strerror(errno) : "closed"));
      at += static_cast<size_t>(n);
    }
    out.clear();
  }
  void get(void *p, size_t n) {
    flush();
    for (size_t at = 0; at < n;) {
      const ssize_t r = recv(fd, static_cast<char *>(p) + at, n - at, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw failure(r == 0 ? "the other side closed the connection" : strf("the connection broke: %s",
                                                                                       strerror(errno)));
      at += static_cast<size_t>(r);
    }
  }
  uint8_t g8() {
    uint8_t v;
    get(&v, 1);
    return v;
  }
  uint32_t g32() {
    uint32_t v;
    get(&v, 4);
    return v;
  }
  uint64_t g64() {
    uint64_t v;
    get(&v, 8);
    return v;
  }
  std::string gstr(size_t most = 4096) {
    const uint32_t n = g32();
    if (n > most) throw failure("a malformed stream (a string too long)");
    std::string s(n, '\0');
    get(s.data(), n);
    return s;
  }
  // The answer to a step: nothing, or throws with the other side's line.
  void answer(const char *step) {
    const uint8_t a = g8();
    if (a == 'k') return;
    if (a == 'e') throw failure(strf("%s: the receiver says: %s", step, sanitize_text(gstr()).c_str()));
    throw failure(strf("%s: a malformed answer", step));
  }
  void ok() { u8('k'); }
  void error(const std::string &line) {
    u8('e');
    str(line);
    flush();
  }
};

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (getrandom(b.data(), b.size(), 0) != static_cast<ssize_t>(b.size()))
    throw failure(strf("getrandom: %s", strerror(errno)));
  std::string s;
  for (unsigned char c : b) s += strf("%02x", c);
  return s;
}

int remove_entry(const char *path, const struct stat *, int, struct FTW *) { return ::remove(path); }
void remove_tree(const std::string &path) {
  if (!path.empty()) nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// A name in a capsule directory: no path, not "." or "..".
bool plain_name(const std::string &s) {
  return !s.empty() && s.size() < 256 && s.find('/') == std::string::npos && s != "." && s != ".." &&
         s.find('\0') == std::string::npos;
}

// ---- the source ------------------------------------------------------------

constexpr int kMaxRounds = 6;

// The first line of file (a token kept out of the command line, which
// every user of the host can read).
std::string token_from(const std::string &file) {
  std::string t = read_text(file.c_str());
  t = t.substr(0, t.find('\n'));
  if (t.empty()) throw failure(strf("no token in %s", file.c_str()));
  return t;
}

// Equal, in a time that does not tell how much of a is b.
bool same_token(const std::string &a, const std::string &b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

struct migrate_options {
  int pid = 0;
  std::string host, port, token, dir;
  bool dir_set = false, lazy = true, json = false;
  int rounds = 4;  // pre-copy rounds before the held one; 0: stop, copy, start
};

struct round_report {
  uint64_t written = 0, sent = 0;  // memory the snapshot wrote; file bytes sent
  double seconds = 0;
  // Progress on stderr every 2 s of a long round (not with --json).
  bool progress = false;
  int round = 0;
  uint64_t total = 0, last_ns = 0;  // bytes to send in this round (allocated blocks)
  void tick() {
    if (!progress) return;
    const uint64_t now = monotonic_ns();
    if (!last_ns) last_ns = now;
    if (now - last_ns < 2'000'000'000) return;
    last_ns = now;
    fprintf(stderr, "mmtier migrate: round %d: %s of about %s sent\n", round, human_bytes(sent).c_str(),
            human_bytes(std::max(total, sent)).c_str());
  }
};

// A migration's connection: small messages go at once, and a peer gone
// silent (a broken network, a host down) is an error within about a minute
// instead of a wait for ever (the held program's hold is bounded too).
void tune_tcp(int fd) {
  const int one = 1, idle = 10, interval = 5, count = 6;
  const unsigned user_timeout_ms = 60000;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

int connect_tcp(const std::string &host, const std::string &port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  if (const int e = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); e != 0)
    throw failure(strf("cannot resolve %s: %s", host.c_str(), gai_strerror(e)));
  int fd = -1, err = 0;
  for (addrinfo *a = res; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) err = errno;
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) throw failure(strf("cannot connect to %s:%s: %s", host.c_str(), port.c_str(), strerror(err)));
  tune_tcp(fd);
  return fd;
}

// Sends capsule directory path (named name on the other side): each file
// not sent before whole (its data extents), the others by id.
void send_capsule(stream &s, const std::string &path, const std::string &name,
                  std::map<std::pair<dev_t, ino_t>, uint64_t> *sent, round_report *rep) {
  DIR *d = opendir(path.c_str());
  if (!d) throw failure(strf("cannot read %s: %s", path.c_str(), strerror(errno)));
  std::vector<std::string> files;
  while (dirent *e = readdir(d))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) files.push_back(e->d_name);
  closedir(d);
  for (const std::string &f : files) {
    struct stat st;
    if (lstat((path + "/" + f).c_str(), &st) == 0 && !sent->count({st.st_dev, st.st_ino}))
      rep->total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  std::vector<char> buf(kBlock);
  for (const std::string &f : files) {
    const std::string fp = path + "/" + f;
    const fd_holder holder(open(fp.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    const int fd = holder.fd;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
      throw failure(strf("%s: not a regular file of a capsule", fp.c_str()));
    const auto key = std::make_pair(st.st_dev, st.st_ino);
    if (auto it = sent->find(key); it != sent->end()) {
      s.u8('L');
      s.str(name);
      s.str(f);
      s.u64(it->second);
      continue;
    }
    const uint64_t id = sent->size() + 1;
    (*sent)[key] = id;
    s.u8('F');
    s.str(name);
    s.str(f);
    s.u64(id);
    s.u32(st.st_mode & 0777);
    s.u64(static_cast<uint64_t>(st.st_size));
    for (off_t at = 0; at < st.st_size;) {
      const off_t data = lseek(fd, at, SEEK_DATA);
      if (data < 0) break;  // the rest is a hole
      off_t hole = lseek(fd, data, SEEK_HOLE);
      if (hole < 0) hole = st.st_size;
      for (off_t p = data; p < hole;) {
        const ssize_t n = pread(fd, buf.data(), static_cast<size_t>(std::min<off_t>(hole - p, kBlock)), p);
        if (n <= 0) throw failure(strf("cannot read %s: %s", fp.c_str(), n < 0 ? strerror(errno) : "it shrank"));
        s.u64(static_cast<uint64_t>(p));
        s.u64(static_cast<uint64_t>(n));
        s.put(buf.data(), static_cast<size_t>(n));
        s.sent += static_cast<uint64_t>(n);
        rep->sent += static_cast<uint64_t>(n);
        rep->tick();
        p += n;
      }
      at = hole;
    }
    s.u64(0);
    s.u64(0);
  }
  s.u8('C');
  s.str(name);
  s.answer(strf("capsule %s", name.c_str()).c_str());
}

migrate_options parse_migrate(const args &a) {
  const std::string cmd = "migrate";
  migrate_options o;
  std::string pid, to, rounds;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string file;
    if (take_option(cmd, a, &i, "--to", &to) || take_option(cmd, a, &i, "--token", &o.token) ||
        take_option(cmd, a, &i, "--rounds", &rounds))
      continue;
    if (take_option(cmd, a, &i, "--token-file", &file)) {
      o.token = token_from(file);
      continue;
    }
    if (take_option(cmd, a, &i, "--dir", &o.dir)) {
      o.dir_set = true;
    } else if (a[i] == "--eager") {
      o.lazy = false;
    } else if (a[i] == "--json") {
      o.json = true;
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error(cmd, strf("unknown option %s", a[i].c_str()));
    } else if (pid.empty()) {
      pid = a[i];
    } else {
      throw usage_error(cmd, strf("unexpected argument %s", a[i].c_str()));
    }
  }
  if (!parse_pid(pid, &o.pid)) throw usage_error(cmd, "give the PID of the process to migrate");
  const size_t colon = to.rfind(':');
  if (to.empty() || colon == std::string::npos || colon == 0 || colon + 1 == to.size())
    throw usage_error(cmd, "give --to HOST:PORT, where mmtier receive --listen PORT runs");
  o.host = to.substr(0, colon);
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
  o.port = to.substr(colon + 1);
  if (o.token.empty()) throw usage_error(cmd, "give --token-file (or --token), as mmtier receive printed it");
  // Each round builds on the ones before: more than MMTIER_SNAPSHOT_CHAIN
  // (8 by default) would make the held one a full capsule.
  if (!rounds.empty() && (!parse_pid(rounds, &o.rounds) || o.rounds > kMaxRounds) && rounds != "0")
    throw usage_error(cmd, strf("--rounds takes 0 to %d", kMaxRounds));
  if (rounds == "0") o.rounds = 0;
  return o;
}

}  // namespace

int migrate_main(const args &a) {
  if (asked_for_help(a, "migrate")) return 0;
  const migrate_options o = parse_migrate(a);
  const long self = own_pid(o.pid);
  if (!self) throw failure(strf("process %d is not running", o.pid));
  if (const int sup = autosave_supervisor(o.pid))
    throw failure(strf("process %d is supervised by mmtier run --autosave (process %d), which would restore it "
                       "here: end the supervision first",
                       o.pid, sup));
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, o.pid, 0));
  if (pidfd < 0) throw failure(strf("cannot open process %d: %s", o.pid, strerror(errno)));
  const std::string own = o.dir_set ? o.dir : snapshot_dir_of(o.pid);
  const std::string base = capsule_dir(!own.empty(), own);
  const std::string stage = strf("%s/.migrate-%d-%s", base.c_str(), o.pid, random_hex(4).c_str());
  if (const int e = cap::make_dirs(base.c_str()); e < 0)
    throw failure(strf("cannot make the capsule directory %s: %s", base.c_str(), strerror(-e)));
  if (mkdir(stage.c_str(), 0700) != 0) {
    const int e = errno;
    close(pidfd);
    throw failure(strf("cannot make %s: %s", stage.c_str(), strerror(e)));
  }
  // The process writes its capsules there: root migrating another user's
  // process gives it that user's.
  struct stat ps;
  if (geteuid() == 0 && stat(strf("/proc/%d", o.pid).c_str(), &ps) == 0 && ps.st_uid != 0 &&
      chown(stage.c_str(), ps.st_uid, ps.st_gid) != 0) {
    const int e = errno;
    rmdir(stage.c_str());
    close(pidfd);
    throw failure(strf("cannot give %s to the process's user: %s", stage.c_str(), strerror(e)));
  }
  stream s;
  int held = -1;  // the held snapshot's control connection
  bool committed = false;
  std::vector<round_report> rounds;
  auto cleanup = [&] {
    if (held >= 0) close(held);  // a held program goes on
    if (s.fd >= 0) {
      if (!committed) {
        try {
          s.u8('A');
          s.flush();
        } catch (const failure &) {
        }
      }
      close(s.fd);
    }
    close(pidfd);
    remove_tree(stage);
  };
  try {
    s.fd = connect_tcp(o.host, o.port);
    s.put(kHello, 8);
    s.str(o.token);
    s.answer("hello");
    std::map<std::pair<dev_t, ino_t>, uint64_t> sent;
    const uint64_t t_start = monotonic_ns();
    uint64_t t_hold = 0;
    std::string last;
    // Names of this migration's own (the PID may come back to the target
    // later, where its last capsule stays).
    const std::string id = random_hex(3);
    int precopy = o.rounds;
    for (int k = 1;; ++k) {
      const bool final = k > precopy;
      const std::string name = strf("mig-%d-%s-%d", static_cast<int>(self), id.c_str(), k);
      static ctl::reply rep;
      round_report r;
      r.progress = !o.json;
      r.round = k;
      const uint64_t t0 = monotonic_ns();
      if (final) {
        t_hold = t0;
        // From the hold on, an interrupt must not leave the outcome half
        // decided: the usual stop signals wait until it is (they act then).
        sigset_t stops;
        sigemptyset(&stops);
        for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&stops, sig);
        sigprocmask(SIG_BLOCK, &stops, nullptr);
      }
      // PMem units copied, not linked: each round then refers to the pages
      // the one before sent, where a linked file would be re-shared into a
      // new one, sent again whole.
      const int fd = ask_snapshot(o.pid, name, stage, ctl::kCopyPmem | (final ? uint32_t{ctl::kHold} : 0u), &rep);
      if (final)
        held = fd;
      else
        close(fd);
      r.written = rep.mem_bytes;
      send_capsule(s, rep.path, name, &sent, &r);
      r.seconds = static_cast<double>(monotonic_ns() - t0) / 1e9;
      rounds.push_back(r);
      last = name;
      if (!o.json)
        fprintf(stderr, "mmtier migrate: %s %d: %s written, %s sent in %.2f s%s\n", final ? "held round" : "round", k,
                human_bytes(r.written).c_str(), human_bytes(r.sent).c_str(), r.seconds,
                final ? " (the program stopped)" : "");
      if (final) break;
      // Converged (little to send), or not converging: the held round next.
      if (k >= 2 && (r.sent < (16u << 20) || r.sent * 10 > rounds[k - 2].sent * 8)) precopy = k;
    }
    s.u8('R');
    s.str(last);
    s.u8(o.lazy ? 1 : 0);
    s.answer("restore");
    const uint64_t target_pid = s.g64();
    const uint64_t t_run = monotonic_ns();
    // The program runs there: the source ends.  kEnded says the library
    // took the commit and ends the process; the connection's end without
    // it, that its hold had run out (its deadline) and it goes on: then
    // the copy there goes.
    const char commit = ctl::kCommit;
    char ended = 0;
    if (send(held, &commit, 1, MSG_NOSIGNAL) == 1) {
      const timeval limit = {30, 0};
      setsockopt(held, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      if (recv(held, &ended, 1, 0) != 1) ended = 0;
    }
    if (ended != ctl::kEnded)
      throw failure(strf("process %d did not take the commit (its hold had ended)", o.pid));
    committed = true;
    // However long a large process takes to go, it is gone before this
    // command says so (the kill the library sent itself, sent again).
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    pollfd pf = {pidfd, POLLIN, 0};
    while (poll(&pf, 1, -1) < 0 && errno == EINTR) {
    }
    close(held);
    held = -1;
    try {
      s.u8('D');
      s.answer("done");
    } catch (const failure &e) {
      throw failure(strf("%s after the process ended here; pid %llu there did not hear it: if the receiver stopped "
                         "it (it says so), continue it with kill -CONT",
                         e.what(), static_cast<unsigned long long>(target_pid)));
    }
    uint64_t total = 0;
    for (const round_report &r : rounds) total += r.sent;
    const double downtime = static_cast<double>(t_run - t_hold) / 1e9;
    const double elapsed = static_cast<double>(t_run - t_start) / 1e9;
    if (o.json) {
      std::string list;
      for (const round_report &r : rounds)
        list += strf("%s{\"written_bytes\": %llu, \"sent_bytes\": %llu, \"seconds\": %.3f}", list.empty() ? "" : ", ",
                     static_cast<unsigned long long>(r.written), static_cast<unsigned long long>(r.sent), r.seconds);
      printf("{\"pid\": %d, \"to\": \"%s:%s\", \"target_pid\": %llu, \"rounds\": [%s], \"sent_bytes\": %llu, "
             "\"downtime_seconds\": %.3f, \"seconds\": %.3f}\n",
             o.pid, sanitize_text(o.host).c_str(), sanitize_text(o.port).c_str(),
             static_cast<unsigned long long>(target_pid), list.c_str(), static_cast<unsigned long long>(total),
             downtime, elapsed);
    } else {
      printf("%llu\n", static_cast<unsigned long long>(target_pid));
      fprintf(stderr,
              "mmtier migrate: process %d runs on %s:%s as pid %llu; stopped %.2f s (held snapshot, its changes sent, "
              "restore); %s sent in %zu rounds, %.2f s in all\n",
              o.pid, o.host.c_str(), o.port.c_str(), static_cast<unsigned long long>(target_pid), downtime,
              human_bytes(total).c_str(), rounds.size(), elapsed);
    }
    cleanup();
    return 0;
  } catch (const failure &e) {
    cleanup();
    throw failure(strf("migration of process %d failed: %s%s", o.pid, e.what(),
                       committed ? "" : "; it runs on here"));
  }
}

// ---- the target ------------------------------------------------------------

namespace {

struct receive_options {
  std::string addr = "0.0.0.0", port, token, dir;
  bool dir_set = false;
};

struct receiver {
  stream s;
  std::string dir, stage;
  std::map<uint64_t, std::pair<std::string, std::string>> files;  // id -> (capsule, name)
  std::vector<std::string> published;                             // capsule names, in order
  std::map<std::string, std::set<std::string>> fresh;             // capsule -> files received whole
  long restored = 0;                                              // host pid

  std::string where(const std::string &capsule) const {
    for (const std::string &p : published)
      if (p == capsule) return dir + "/" + capsule + ".mmtcap";
    return stage + "/" + capsule + ".mmtcap";
  }

  std::string capsule_name() {
    const std::string c = s.gstr(64);
    if (!plain_name(c) || !cap::valid_name(c.c_str())) throw failure("a malformed stream (a capsule name)");
    for (const std::string &p : published)
      if (p == c) throw failure(strf("capsule %s was sent twice", c.c_str()));
    const std::string d = stage + "/" + c + ".mmtcap";
    if (mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) throw failure(strf("cannot make %s: %s", d.c_str(), strerror(errno)));
    return c;
  }

  void file() {
    const std::string c = capsule_name();
    const std::string name = s.gstr(255);
    const uint64_t id = s.g64();
    const uint32_t mode = s.g32() & 0600;
    const uint64_t size = s.g64();
    if (!plain_name(name) || files.count(id)) throw failure("a malformed stream (a file)");
    const std::string path = where(c) + "/" + name;
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode ? mode : 0600);
    if (fd < 0) throw failure(strf("cannot make %s: %s", path.c_str(), strerror(errno)));
    files[id] = {c, name};
    fresh[c].insert(name);
    std::vector<char> buf(kBlock);
    try {
      if (ftruncate(fd, static_cast<off_t>(size)) != 0) throw failure(strf("%s: %s", path.c_str(), strerror(errno)));
      for (;;) {
        const uint64_t off = s.g64(), len = s.g64();
        if (!len) break;
        if (off > size || len > size - off) throw failure("a malformed stream (an extent beyond its file)");
        for (uint64_t done = 0; done < len;) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, kBlock));
          s.get(buf.data(), n);
          if (pwrite(fd, buf.data(), n, static_cast<off_t>(off + done)) != static_cast<ssize_t>(n))
            throw failure(strf("cannot write %s: %s", path.c_str(), strerror(errno)));
          done += n;
        }
      }
      if (fsync(fd) != 0) throw failure(strf("cannot sync %s: %s", path.c_str(), strerror(errno)));
    } catch (...) {
      close(fd);
      throw;
    }
    close(fd);
  }

  void link() {
    const std::string c = capsule_name();
    const std::string name = s.gstr(255);
    const auto it = files.find(s.g64());
    if (!plain_name(name) || it == files.end()) throw failure("a malformed stream (a link to nothing)");
    const std::string from = where(it->second.first) + "/" + it->second.second, to = where(c) + "/" + name;
    if (::link(from.c_str(), to.c_str()) != 0)
      throw failure(strf("cannot link %s to %s: %s", to.c_str(), from.c_str(), strerror(errno)));
  }

  void complete() {
    const std::string c = s.gstr(64);
    const std::string path = stage + "/" + c + ".mmtcap", target = dir + "/" + c + ".mmtcap";
    try {
      if (!plain_name(c)) throw failure("a malformed stream (a capsule name)");
      check_capsule_at({stage, c + ".mmtcap", path}, false);
      verify_fresh(path, fresh[c]);
      if (renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0)
        throw failure(errno == EEXIST ? strf("%s exists already", target.c_str())
                                      : strf("cannot move the capsule to %s: %s", target.c_str(), strerror(errno)));
    } catch (const failure &e) {
      s.error(e.what());
      throw;
    }
    published.push_back(c);
    s.ok();
    s.flush();
  }

  // Every checksum of the data received whole for this capsule; a file
  // linked again was checked when its own capsule was published, and the
  // held round's check is part of the downtime.
  static void verify_fresh(const std::string &path, const std::set<std::string> &names) {
    const int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw failure(strf("cannot open %s: %s", path.c_str(), strerror(errno)));
    fd_holder holder(fd);
    manifest_file mf;
    cap::manifest_view v;
    if (read_manifest(fd, &mf) != 0 || cap::manifest_parse(mf.data(), mf.len, &v) != cap::parse_error::ok)
      throw failure(strf("%s: its manifest cannot be read", path.c_str()));
    const data_layout l = layout_of(v);
    std::vector<uint8_t> only(l.end / cap::kChunkBytes + 1, 0);
    for (uint64_t i = 0; i < v.nchunks; ++i) {
      const cap::chunk &c = v.chunks[i];
      const uint64_t at = l.of_chunk(c);
      const char *name = c.file == cap::kNoFile ? cap::kMem
                         : c.file < v.nfiles    ? cap::string_at(v, v.files[c.file].path)
                                                : "";
      if (at != data_layout::kNone && names.count(name)) only[at / cap::kChunkBytes] = 1;
    }
    verify_mem(fd, v, &only);
    verify_linked(fd, v);
  }

  void restore() {
    const std::string c = s.gstr(64);
    const bool lazy = s.g8() != 0;
    try {
      bool known = false;
      for (const std::string &p : published) known |= p == c;
      if (!known) throw failure(strf("no capsule %s was received", c.c_str()));
      int out[2];
      if (pipe2(out, O_CLOEXEC) != 0) throw failure(strf("pipe: %s", strerror(errno)));
      const std::string path = dir + "/" + c + ".mmtcap";
      fflush(nullptr);
      const pid_t pid = fork();
      if (pid == 0) {
        dup2(out[1], 1);
        // Every chunk was checked as it was received.
        // Stopped until the source has ended ('D'): never two running copies.
        const char *argv[] = {"mmtier", "restore", path.c_str(), "--detach", "--stopped", "--migrated",
                              "--verify", "meta", lazy ? "--lazy" : nullptr, nullptr};
        execv("/proc/self/exe", const_cast<char *const *>(argv));
        _exit(127);
      }
      close(out[1]);
      std::string text;
      char buf[64];
      for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);)
        if (n > 0) text.append(buf, static_cast<size_t>(n));
      close(out[0]);
      int st = 0;
      while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      int host = 0;
      if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !parse_pid(text.substr(0, text.find('\n')), &host))
        throw failure(strf("the restore of %s failed (its line is above)", path.c_str()));
      restored = host;
    } catch (const failure &e) {
      s.error(e.what());
      throw;
    }
    s.ok();
    s.u64(static_cast<uint64_t>(restored));
    s.flush();
  }

  // Done: the source has ended; the process here goes on, and the capsules
  // before its own go (it links what it needs).
  void done() {
    if (restored <= 0) throw failure("a malformed stream (done before a restore)");
    kill(static_cast<pid_t>(restored), SIGCONT);
    for (size_t i = 0; i + 1 < published.size(); ++i) remove_tree(dir + "/" + published[i] + ".mmtcap");
    s.ok();
    s.flush();
  }

  // A failure or an abort: the process restored here (if any; stopped
  // before it ran) ends, and the capsules go; unless keep: the connection
  // broke after the restore, and the source may have ended: the process
  // here stays stopped, neither lost nor running beside a source that went
  // on.
  void undo(bool keep) {
    if (restored > 0) {
      if (keep) return;
      kill(static_cast<pid_t>(restored), SIGKILL);
      restored = 0;
    }
    if (keep) return;
    for (const std::string &p : published) remove_tree(dir + "/" + p + ".mmtcap");
    published.clear();
  }
};

receive_options parse_receive(const args &a) {
  const std::string cmd = "receive";
  receive_options o;
  std::string listen_on;
  for (size_t i = 0; i < a.size(); ++i) {
    if (take_option(cmd, a, &i, "--listen", &listen_on) || take_option(cmd, a, &i, "--token", &o.token)) continue;
    std::string file;
    if (take_option(cmd, a, &i, "--token-file", &file)) {
      o.token = token_from(file);
      continue;
    }
    if (take_option(cmd, a, &i, "--dir", &o.dir)) {
      o.dir_set = true;
      continue;
    }
    throw usage_error(cmd, strf("unknown argument %s", a[i].c_str()));
  }
  if (listen_on.empty()) throw usage_error(cmd, "give --listen [ADDRESS:]PORT");
  const size_t colon = listen_on.rfind(':');
  if (colon != std::string::npos) {
    o.addr = listen_on.substr(0, colon);
    o.port = listen_on.substr(colon + 1);
  } else {
    o.port = listen_on;
  }
  int port = 0;
  if (!parse_pid(o.port, &port) && o.port != "0") throw usage_error(cmd, "--listen takes a port from 0 to 65535");
  if (port > 65535) throw usage_error(cmd, "--listen takes a port from 0 to 65535");
  if (!o.token.empty() && o.token.size() < 16) throw usage_error(cmd, "--token must have at least 16 characters");
  return o;
}

}  // namespace

int receive_main(const args &a) {
  if (asked_for_help(a, "receive")) return 0;
  receive_options o = parse_receive(a);
  receiver r;
  r.dir = capsule_dir(o.dir_set, o.dir);
  if (o.token.empty()) o.token = random_hex(16);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  addrinfo *res = nullptr;
  if (const int e = getaddrinfo(o.addr.c_str(), o.port.c_str(), &hints, &res); e != 0)
    throw failure(strf("cannot listen on %s: %s", o.addr.c_str(), gai_strerror(e)));
  const int lfd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (lfd >= 0) setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, res->ai_addr, res->ai_addrlen) != 0 || listen(lfd, 4) != 0) {
    const int e = errno;
    freeaddrinfo(res);
    throw failure(strf("cannot listen on %s:%s: %s", o.addr.c_str(), o.port.c_str(), strerror(e)));
  }
  freeaddrinfo(res);
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  getsockname(lfd, reinterpret_cast<sockaddr *>(&bound), &blen);
  const unsigned port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port
                                                          : reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
  fprintf(stderr, "mmtier receive: listening on %s:%u; token %s; capsules into %s\n", o.addr.c_str(), port,
          o.token.c_str(), r.dir.c_str());
  fflush(stderr);
  // One migration: connections without the token are turned away.
  for (;;) {
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    const int fd = accept4(lfd, reinterpret_cast<sockaddr *>(&peer), &plen, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      throw failure(strf("accept: %s", strerror(errno)));
    }
    char host[NI_MAXHOST] = "?";
    getnameinfo(reinterpret_cast<sockaddr *>(&peer), plen, host, sizeof host, nullptr, 0, NI_NUMERICHOST);
    r.s = stream();
    r.s.fd = fd;
    tune_tcp(fd);
    try {
      char hello[8];
      const timeval limit = {30, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      r.s.get(hello, 8);
      const std::string token = r.s.gstr(256);
      if (memcmp(hello, kHello, 8) != 0 || !same_token(token, o.token)) {
        r.s.error("not a migration with this receiver's token");
        close(fd);
        fprintf(stderr, "mmtier receive: turned away %s (no migration with the token)\n", host);
        continue;
      }
    } catch (const failure &) {
      close(fd);
      continue;
    }
    break;
  }
  close(lfd);
  r.stage = strf("%s/.receive-%s", r.dir.c_str(), random_hex(4).c_str());
  if (mkdir(r.stage.c_str(), 0700) != 0) throw failure(strf("cannot make %s: %s", r.stage.c_str(), strerror(errno)));
  bool aborted = false;
  try {
    r.s.ok();
    r.s.flush();
    // The source may take long between rounds (a snapshot of a large heap).
    const timeval none = {0, 0};
    setsockopt(r.s.fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    for (bool finished = false; !finished;) {
      switch (r.s.g8()) {
        case 'F': r.file(); break;
        case 'L': r.link(); break;
        case 'C': r.complete(); break;
        case 'R': r.restore(); break;
        case 'D':
          r.done();
          finished = true;
          break;
        case 'A':
          aborted = true;
          throw failure("the source gave up the migration");
        default: throw failure("a malformed stream");
      }
    }
  } catch (const failure &e) {
    const bool keep = r.restored > 0 && !aborted;
    r.undo(keep);
    close(r.s.fd);
    remove_tree(r.stage);
    if (keep)
      throw failure(strf("migration received: %s after the restore; the process restored here, pid %ld, is stopped "
                         "before it ran: if the source's process has ended, continue it with kill -CONT %ld, else end it",
                         e.what(), r.restored, r.restored));
    throw failure(strf("migration received: %s; nothing of it is left here", e.what()));
  }
  close(r.s.fd);
  remove_tree(r.stage);
  const std::string capsule = r.dir + "/" + r.published.back() + ".mmtcap";
  printf("%ld\n", r.restored);
  fprintf(stderr, "mmtier receive: the process runs here as pid %ld (from %s)\n", r.restored, capsule.c_str());
  return 0;
}

}  // namespace mmtier::cli
