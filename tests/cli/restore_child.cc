// A program for the restore tests (cli_test.py RestoreTest), run under
// LD_PRELOAD=libmmtier.so and not linked against it.  Two workers run
// malloc storms and count; a third holds a mutex across the snapshot; a
// 32 MiB buffer holds a pattern of the snapshot's generation.
//
//   restore_child self NAME REPORT   takes snapshot NAME itself (mmtier_snapshot);
//                                    the original then rewrites its buffer and
//                                    waits to be killed; the restored process
//                                    checks everything and exits 0
//   restore_child cycles N REPORT    takes snapshots c1..cN, one per restore: each
//                                    restored process takes the next and exits
//   restore_child serve REPORT       runs until killed; SIGUSR1 appends its state
//                                    (pid, tids, generation, buffer check) to REPORT
//   restore_child lazy NAME REPORT   as self, with two more 8 MiB mappings; the
//                                    restored process (restored with --lazy) gives
//                                    half of one back (MADV_DONTNEED), moves the
//                                    other (mremap) and forks a child that checks
//                                    the memory too, while the fill may still run
//                                    (a third mapping, wiped at fork, reads zero
//                                    in the child only; it keeps its advice)
//   restore_child leaderless NAME REPORT
//                                    as self, but the main thread has exited
//                                    (the exit system call) and another one
//                                    takes the snapshot
//   restore_child kernel NAME REPORT as self, with kernel objects across the
//                                    snapshot: a pipe and a socket pair holding
//                                    bytes, an eventfd, a timer, a signalfd, an
//                                    epoll set of all of them, listening TCP and
//                                    bound UDP sockets, a TCP connection, a dup;
//                                    the restored process checks each one
//
// REPORT is appended to (opened, written, closed each time): one line per
// event, so the test reads what both the original and the restored process
// said.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t kBuf = 32u << 20;
const char *g_report = nullptr;
unsigned char *g_buf = nullptr;
std::atomic<int> g_tids[3];
std::atomic<long> g_count[2];
std::atomic<bool> g_stop{false};
std::atomic<bool> g_restored{false};
std::atomic<int> g_generation{0};
std::mutex g_held;
std::atomic<bool> g_holding{false};

void report(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > static_cast<int>(sizeof line) - 2) n = sizeof line - 2;
  line[n++] = '\n';
  const int fd = open(g_report, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  if (write(fd, line, static_cast<size_t>(n)) < 0) {
  }
  close(fd);
}

int gettid_now() { return static_cast<int>(syscall(SYS_gettid)); }

void fill(int generation) {
  for (size_t i = 0; i < kBuf; i += 64) g_buf[i] = static_cast<unsigned char>(generation * 31 + i / 64);
}

// The first offset where the buffer is not generation's pattern, or -1.
long check(int generation) {
  for (size_t i = 0; i < kBuf; i += 64)
    if (g_buf[i] != static_cast<unsigned char>(generation * 31 + i / 64)) return static_cast<long>(i);
  return -1;
}

void *storm(void *arg) {
  const long k = reinterpret_cast<long>(arg);
  g_tids[k] = gettid_now();
  std::vector<void *> live(64, nullptr);
  unsigned x = static_cast<unsigned>(k) * 7919u + 1;
  while (!g_stop.load(std::memory_order_relaxed)) {
    x = x * 1103515245u + 12345u;
    void *&slot = live[x % live.size()];
    free(slot);
    slot = malloc(16 + x % 4000);
    if (slot) memset(slot, static_cast<int>(k), 16);
    g_count[k].fetch_add(1, std::memory_order_relaxed);
  }
  for (void *p : live) free(p);
  // After a restore, this thread must still be itself.
  if (g_restored && gettid_now() != g_tids[k]) report("worker %ld has tid %d, was %d", k, gettid_now(), g_tids[k].load());
  return nullptr;
}

// Holds the mutex until the process was restored (or is told to stop).
std::atomic<int> g_holder_signal{-1};  // the value of a SIGRTMIN+3 pending for the holder, once restored

void *holder(void *) {
  g_tids[2] = gettid_now();
  std::lock_guard<std::mutex> g(g_held);
  g_holding = true;
  while (!g_restored.load() && !g_stop.load()) usleep(1000);
  if (g_restored) {
    // A signal queued to this thread alone before the snapshot (kernel
    // mode) is pending for it again.
    sigset_t rt3;
    sigemptyset(&rt3);
    sigaddset(&rt3, SIGRTMIN + 3);
    const timespec zero = {0, 0};
    siginfo_t si{}, second{};
    // The queued one with its value, then the pthread_kill (SI_TKILL, or
    // SI_USER on newer kernels: a siginfo only the thread itself may queue
    // again).
    if (sigtimedwait(&rt3, &si, &zero) != SIGRTMIN + 3 || si.si_code != SI_QUEUE)
      g_holder_signal = -2;
    else if (sigtimedwait(&rt3, &second, &zero) != SIGRTMIN + 3)
      g_holder_signal = -3;
    else if ((second.si_code != SI_TKILL && second.si_code != SI_USER) || second.si_pid != getpid())
      g_holder_signal = -100 - second.si_code;
    else
      g_holder_signal = si.si_value.sival_int;
  }
  return nullptr;
}

using snapshot_fn = int (*)(const char *);

snapshot_fn find_snapshot() {
  auto fn = reinterpret_cast<snapshot_fn>(dlsym(RTLD_DEFAULT, "mmtier_snapshot"));
  if (!fn) {
    fprintf(stderr, "restore_child: not running under libmmtier\n");
    exit(2);
  }
  return fn;
}

pthread_t g_threads[3];

void start_threads() {
  for (long k = 0; k < 2; ++k) pthread_create(&g_threads[k], nullptr, storm, reinterpret_cast<void *>(k));
  pthread_create(&g_threads[2], nullptr, holder, nullptr);
  while (!g_tids[0] || !g_tids[1] || !g_holding) usleep(1000);
}

// In the restored process: every check, one line; the exit status.
int restored_checks(int generation, const int tids[3]) {
  const long c0 = g_count[0], c1 = g_count[1];
  const long bad = check(generation);
  g_restored = true;
  // The mutex the holder had at the snapshot is released by it now.
  g_held.lock();
  g_held.unlock();
  const long deadline = 2000;
  for (long waited = 0; (g_count[0] == c0 || g_count[1] == c1) && waited < deadline; ++waited) usleep(1000);
  const bool moving = g_count[0] > c0 && g_count[1] > c1;
  g_stop = true;
  for (auto &t : g_threads) pthread_join(t, nullptr);
  void *big = malloc(8u << 20);
  memset(big, 1, 8u << 20);
  free(big);
  const bool same_tids = tids[0] == g_tids[0] && tids[1] == g_tids[1] && tids[2] == g_tids[2];
  report("restored pid=%d generation=%d buffer=%s tids=%s workers=%s", getpid(), generation, bad < 0 ? "ok" : "damaged",
         same_tids ? "same" : "changed", moving ? "running" : "stuck");
  return bad < 0 && same_tids && moving ? 0 : 1;
}

int count_lines(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  int n = 0;
  for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
  fclose(f);
  return n;
}

long rss_kib() {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kib = strtol(line + 6, nullptr, 10);
  fclose(f);
  return kib;
}

int count_fds() {
  int n = 0;
  for (int fd = 0; fd < 1024; ++fd) n += fcntl(fd, F_GETFD) >= 0;
  return n;
}

// The kernel objects of mode kernel, and what the restored process finds.
struct kernel_objects {
  int pipe_rd, pipe_wr, pipe_dup, efd, tfd, sfd, pair[2], listener, client, conn, udp, ep;
  int port, udp_port;
  int only_bound, only_bound_port;  // a TCP socket bound, neither listening nor connected
  timer_t ticking, idle;  // POSIX timers: SIGRTMIN+2 every 20 ms (value 77); SIGEV_NONE, 1000 s
  int memfd, tmpfile, deleted;  // unnamed files: a sealed memfd, an O_TMPFILE file at offset 3, a deleted one (append)
  int memfd_again;              // the memfd opened a second time (another open file of the same memfd)
  // More anonymous-inode files than the capture compares pair by pair:
  // eventfds counting i + 1, one of them held twice (many_dup), and an
  // epoll set (ep2) with two registrations of number many[3]: data 42,
  // an eventfd (count 4) registered under it and since moved to number
  // moved, and data 43, the eventfd (count 100) that holds number many[3]
  // now (the kernel tells them apart by their place among that number's).
  int many[24], many_dup, moved, ep2;
  // An epoll set (ep3) with one registration: data 51, an eventfd (count
  // 5) registered under number lone and since moved to lone_moved; lone
  // holds another eventfd (count 7), not registered, in the original as
  // in the restored process (the capture asks the set about lone).
  int ep3, lone, lone_moved;
  // Two idle timerfds, one held twice with the other's number between
  // (tone[0], tother, tone[1] = dup(tone[0])): among the many anonymous-
  // inode files, the copy stays one file with its first, the other its own.
  int tone[2], tother;
  // Copies of the pipe's read end, close-on-exec (cx_on) and not (cx_off)
  // at the snapshot; the original flips both after it.
  int cx_on, cx_off;
  // More Unix sockets than the capture asks about one by one: 20 stream
  // pairs, "p<i>" queued towards the second end of each.
  int pairs[20][2];
  // A bound Unix datagram socket (abstract name) with three messages
  // queued: "d1" and "d3" from dg_from (bound too), "d2" from an unbound
  // socket since closed.
  int dg, dg_from;
};

// An abstract Unix address of this process's: "@mmtier-test-<what>-<pid>".
sockaddr_un abstract_name(const char *what, socklen_t *len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "mmtier-test-%s-%d", what, getpid());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}

int bound_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  return ntohs(a.sin_port);
}

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

kernel_objects make_objects() {
  kernel_objects k{};
  int p[2];
  if (pipe2(p, O_NONBLOCK) != 0) abort();
  k.pipe_rd = p[0];
  k.pipe_wr = p[1];
  if (write(k.pipe_wr, "hello-pipe", 10) != 10) abort();
  k.pipe_dup = dup(k.pipe_rd);
  k.efd = eventfd(0, EFD_NONBLOCK);
  const uint64_t five = 5;
  if (write(k.efd, &five, 8) != 8) abort();
  k.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  const itimerspec its = {{0, 10'000'000}, {0, 10'000'000}};
  timerfd_settime(k.tfd, 0, &its, nullptr);
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  k.sfd = signalfd(-1, &usr2, SFD_NONBLOCK);
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, k.pair);
  if (write(k.pair[0], "pair-data", 9) != 9) abort();
  k.listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int one = 1;
  setsockopt(k.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(0);
  if (bind(k.listener, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(k.listener, 16) != 0) abort();
  k.port = bound_port(k.listener);
  k.client = socket(AF_INET, SOCK_STREAM, 0);
  a = loopback(k.port);
  if (connect(k.client, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) abort();
  while ((k.conn = accept4(k.listener, nullptr, nullptr, SOCK_NONBLOCK)) < 0) usleep(1000);
  k.udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  a = loopback(0);
  bind(k.udp, reinterpret_cast<sockaddr *>(&a), sizeof a);
  k.udp_port = bound_port(k.udp);
  k.only_bound = socket(AF_INET, SOCK_STREAM, 0);
  a = loopback(0);
  if (bind(k.only_bound, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) abort();
  k.only_bound_port = bound_port(k.only_bound);
  report("bound port=%d", k.only_bound_port);
  // Unnamed files, their bytes only in the capsule.
  k.memfd = memfd_create("restore-child", MFD_ALLOW_SEALING);
  if (k.memfd < 0 || write(k.memfd, "memfd-bytes", 11) != 11 || fcntl(k.memfd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) abort();
  k.memfd_again = open(("/proc/self/fd/" + std::to_string(k.memfd)).c_str(), O_RDWR);
  if (k.memfd_again < 0) abort();
  k.tmpfile = open(getenv("MMTIER_SNAPSHOT_DIR"), O_TMPFILE | O_RDWR, 0600);
  if (k.tmpfile < 0 || write(k.tmpfile, "tmpfile-bytes", 13) != 13 || lseek(k.tmpfile, 3, SEEK_SET) != 3) abort();
  const std::string removed = std::string(getenv("MMTIER_SNAPSHOT_DIR")) + "/deleted-file";
  k.deleted = open(removed.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (k.deleted < 0 || write(k.deleted, "deleted-bytes", 13) != 13 || unlink(removed.c_str()) != 0) abort();
  // POSIX timers, with a gap in their ids (the first one made is gone),
  // after 100 made and deleted: ids past what the restore's older way of
  // reaching them could once hold (a server that makes a timer per job).
  timer_t gone;
  sigevent none{};
  none.sigev_notify = SIGEV_NONE;
  for (int i = 0; i < 100; ++i) {
    if (timer_create(CLOCK_MONOTONIC, &none, &gone) != 0) abort();
    timer_delete(gone);
  }
  if (timer_create(CLOCK_MONOTONIC, &none, &gone) != 0) abort();
  sigevent ev{};
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGRTMIN + 2;
  ev.sigev_value.sival_int = 77;
  if (timer_create(CLOCK_MONOTONIC, &ev, &k.ticking) != 0 || timer_create(CLOCK_REALTIME, &none, &k.idle) != 0)
    abort();
  timer_delete(gone);
  const itimerspec every20 = {{0, 20000000}, {0, 20000000}}, later = {{0, 0}, {1000, 0}};
  if (timer_settime(k.ticking, 0, &every20, nullptr) != 0 || timer_settime(k.idle, 0, &later, nullptr) != 0) abort();
  for (int i = 0; i < 24; ++i)
    if ((k.many[i] = eventfd(static_cast<unsigned>(i + 1), 0)) < 0) abort();
  k.many_dup = dup(k.many[7]);
  k.ep2 = epoll_create1(0);
  epoll_event reg{};
  reg.events = EPOLLIN;
  reg.data.u64 = 42;
  if (k.many_dup < 0 || k.ep2 < 0 || epoll_ctl(k.ep2, EPOLL_CTL_ADD, k.many[3], &reg) != 0) abort();
  const int other = eventfd(100, 0);
  k.moved = dup(k.many[3]);
  if (other < 0 || k.moved < 0 || dup2(other, k.many[3]) != k.many[3]) abort();
  close(other);
  reg.data.u64 = 43;
  if (epoll_ctl(k.ep2, EPOLL_CTL_ADD, k.many[3], &reg) != 0) abort();
  k.tone[0] = timerfd_create(CLOCK_MONOTONIC, 0);
  k.tother = timerfd_create(CLOCK_MONOTONIC, 0);
  k.tone[1] = dup(k.tone[0]);
  if (k.tone[0] < 0 || k.tother < 0 || k.tone[1] < 0) abort();
  k.cx_on = fcntl(k.pipe_rd, F_DUPFD_CLOEXEC, 0);
  k.cx_off = dup(k.pipe_rd);
  if (k.cx_on < 0 || k.cx_off < 0) abort();
  k.ep3 = epoll_create1(0);
  k.lone = eventfd(5, 0);
  reg.data.u64 = 51;
  if (k.ep3 < 0 || k.lone < 0 || epoll_ctl(k.ep3, EPOLL_CTL_ADD, k.lone, &reg) != 0) abort();
  const int seven = eventfd(7, 0);
  k.lone_moved = dup(k.lone);
  if (seven < 0 || k.lone_moved < 0 || dup2(seven, k.lone) != k.lone) abort();
  close(seven);
  for (int i = 0; i < 20; ++i) {
    const std::string b = "p" + std::to_string(i);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, k.pairs[i]) != 0 ||
        write(k.pairs[i][0], b.data(), b.size()) != static_cast<ssize_t>(b.size()))
      abort();
  }
  socklen_t dl = 0, fl = 0;
  const sockaddr_un da = abstract_name("dg", &dl), fa = abstract_name("dg-from", &fl);
  k.dg = socket(AF_UNIX, SOCK_DGRAM, 0);
  k.dg_from = socket(AF_UNIX, SOCK_DGRAM, 0);
  const int unbound = socket(AF_UNIX, SOCK_DGRAM, 0);
  const auto *dsa = reinterpret_cast<const sockaddr *>(&da);
  if (bind(k.dg, dsa, dl) != 0 || bind(k.dg_from, reinterpret_cast<const sockaddr *>(&fa), fl) != 0 ||
      sendto(k.dg_from, "d1", 2, 0, dsa, dl) != 2 || sendto(unbound, "d2", 2, 0, dsa, dl) != 2 ||
      sendto(k.dg_from, "d3", 2, 0, dsa, dl) != 2)
    abort();
  close(unbound);
  k.ep = epoll_create1(0);
  const int watched[] = {k.pipe_rd, k.efd, k.listener, k.tfd, k.sfd, k.pair[1]};
  for (int i = 0; i < 6; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(i + 1);
    epoll_ctl(k.ep, EPOLL_CTL_ADD, watched[i], &ev);
  }
  return k;
}

// ep3's one registration is the eventfd now at lone_moved (ready, count
// 5, data 51), and the eventfd at number lone is in no registration; the
// counts are left as they were.  In the original after the snapshot and
// in the restored process.
bool lone_ok(const kernel_objects &k) {
  epoll_event ready[2]{};
  uint64_t v = 0;
  epoll_event none{};
  return epoll_wait(k.ep3, ready, 2, 1000) == 1 && ready[0].data.u64 == 51 &&
         epoll_ctl(k.ep3, EPOLL_CTL_DEL, k.lone, &none) != 0 && errno == ENOENT && read(k.lone, &v, 8) == 8 &&
         v == 7 && write(k.lone, &v, 8) == 8 && read(k.lone_moved, &v, 8) == 8 && v == 5 &&
         write(k.lone_moved, &v, 8) == 8;
}

// In the restored process: each object as it was at the snapshot, and working.
std::string check_objects(const kernel_objects &k) {
  std::string out;
  bool seen[7] = {};
  bool pipe_ok = false, efd_ok = false, timer_ok = false, pair_ok = false, sig_ok = false, listen_ok = false;
  kill(getpid(), SIGUSR2);
  int client = -1;
  for (int round = 0; round < 400; ++round) {
    if (seen[1] && seen[2] && seen[4] && seen[6] && seen[5] && client < 0) {
      client = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a = loopback(k.port);
      if (connect(client, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) break;
    }
    epoll_event evs[8];
    const int n = epoll_wait(k.ep, evs, 8, 10);
    for (int i = 0; i < n; ++i) {
      const uint64_t id = evs[i].data.u64;
      char buf[64] = {};
      if (id == 1 && !seen[1]) pipe_ok = read(k.pipe_rd, buf, sizeof buf) == 10 && !memcmp(buf, "hello-pipe", 10);
      if (id == 2 && !seen[2]) {
        uint64_t v = 0;
        efd_ok = read(k.efd, &v, 8) == 8 && v == 5;
      }
      if (id == 4) {
        uint64_t ticks = 0;
        timer_ok = timer_ok || (read(k.tfd, &ticks, 8) == 8 && ticks >= 1);
      }
      if (id == 5 && !seen[5]) {
        signalfd_siginfo si{};
        sig_ok = read(k.sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2;
      }
      if (id == 6 && !seen[6]) pair_ok = read(k.pair[1], buf, sizeof buf) == 9 && !memcmp(buf, "pair-data", 9);
      if (id == 3 && !seen[3]) {
        const int c = accept(k.listener, nullptr, nullptr);
        listen_ok = c >= 0 && write(client, "ping", 4) == 4 && read(c, buf, 4) == 4 && !memcmp(buf, "ping", 4);
        if (c >= 0) close(c);
      }
      if (id < 7) seen[id] = true;
    }
    if (seen[1] && seen[2] && seen[3] && seen[4] && seen[5] && seen[6]) break;
  }
  if (client >= 0) close(client);
  // The periodic timer goes on firing after the expirations read (it had
  // fired unread at the snapshot, when the kernel shows it disarmed).
  pollfd tp = {k.tfd, POLLIN, 0};
  uint64_t more = 0;
  timer_ok = timer_ok && poll(&tp, 1, 2000) == 1 && read(k.tfd, &more, 8) == 8 && more >= 1;
  // The connection's other side ended with the original: the end of the stream.
  char b;
  const ssize_t conn = read(k.conn, &b, 1);
  // The bound UDP socket takes datagrams at its port again.
  const int s = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = loopback(k.udp_port);
  sendto(s, "u", 1, 0, reinterpret_cast<sockaddr *>(&a), sizeof a);
  close(s);
  bool udp_ok = false;
  for (int i = 0; i < 200 && !udp_ok; ++i) {
    udp_ok = recv(k.udp, &b, 1, 0) == 1 && b == 'u';
    if (!udp_ok) usleep(5000);
  }
  // A dup shares its open file: the status flags of the original.
  const bool dup_ok = (fcntl(k.pipe_dup, F_GETFL) & O_NONBLOCK) && (fcntl(k.pipe_rd, F_SETFL, 0) == 0) &&
                      !(fcntl(k.pipe_dup, F_GETFL) & O_NONBLOCK);
  // The signals pending at the snapshot, in order, with their values.
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN + 1);
  const timespec zero = {0, 0};
  siginfo_t si[3] = {};
  int got = 0;
  while (got < 3 && sigtimedwait(&rt, &si[got], &zero) == SIGRTMIN + 1) ++got;
  const bool sig_pending_ok = got == 2 && si[0].si_value.sival_int == 42 && si[1].si_value.sival_int == 43 &&
                              si[0].si_pid == getpid();
  out += std::string("signals=") + (sig_pending_ok ? "ok" : "bad") + " ";
  // The POSIX timers at their ids: the ticking one signals again with its
  // value, the idle one has its time left.
  itimerspec its{};
  bool ptimer_ok = timer_gettime(k.ticking, &its) == 0 && its.it_interval.tv_nsec == 20000000 &&
                   timer_gettime(k.idle, &its) == 0 && its.it_value.tv_sec > 900 && its.it_value.tv_sec <= 1000;
  sigset_t tick;
  sigemptyset(&tick);
  sigaddset(&tick, SIGRTMIN + 2);
  const timespec two = {2, 0};
  siginfo_t ti{};
  ptimer_ok = ptimer_ok && sigtimedwait(&tick, &ti, &two) == SIGRTMIN + 2 && ti.si_value.sival_int == 77;
  // And another tick after that one: it is armed, not just pending.
  ptimer_ok = ptimer_ok && sigtimedwait(&tick, &ti, &two) == SIGRTMIN + 2 && ti.si_code == SI_TIMER;
  out += std::string("ptimers=") + (ptimer_ok ? "ok" : "bad") + " ";
  // The unnamed files: their bytes at the snapshot, their seals, offsets
  // and access modes.
  char ub[32] = {};
  bool unnamed_ok = pread(k.memfd, ub, sizeof ub, 0) == 11 && !memcmp(ub, "memfd-bytes", 11) &&
                    fcntl(k.memfd, F_GET_SEALS) == F_SEAL_SHRINK && ftruncate(k.memfd, 1) != 0;
  // Its second open is of the same memfd: a write through one is read
  // through the other, at an offset of its own.
  unnamed_ok = unnamed_ok && lseek(k.memfd_again, 0, SEEK_CUR) == 0 && pwrite(k.memfd_again, "M", 1, 0) == 1 &&
               pread(k.memfd, ub, 1, 0) == 1 && ub[0] == 'M';
  unnamed_ok = unnamed_ok && lseek(k.tmpfile, 0, SEEK_CUR) == 3 && pread(k.tmpfile, ub, sizeof ub, 0) == 13 &&
               !memcmp(ub, "tmpfile-bytes", 13);
  const int back = open(("/proc/self/fd/" + std::to_string(k.deleted)).c_str(), O_RDONLY);
  unnamed_ok = unnamed_ok && (fcntl(k.deleted, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_WRONLY | O_APPEND) &&
               back >= 0 && pread(back, ub, sizeof ub, 0) == 13 && !memcmp(ub, "deleted-bytes", 13);
  if (back >= 0) close(back);
  out += std::string("unnamed=") + (unnamed_ok ? "ok" : "bad") + " ";
  out += std::string("pipe=") + (pipe_ok ? "ok" : "bad") + " eventfd=" + (efd_ok ? "ok" : "bad") +
         " timer=" + (timer_ok ? "ok" : "bad") + " signalfd=" + (sig_ok ? "ok" : "bad") +
         " pair=" + (pair_ok ? "ok" : "bad") + " listen=" + (listen_ok ? "ok" : "bad") +
         " conn=" + (conn == 0 ? "ended" : "bad") + " udp=" + (udp_ok ? "ok" : "bad") + " dup=" + (dup_ok ? "ok" : "bad");
  // The many eventfds: each its own count, the copy one file with its
  // first; each registration on the file it was made for: reading the one
  // now at number moved leaves only 43 ready, reading number many[3] none.
  epoll_event ready[2]{};
  uint64_t v = 0;
  bool many_ok = epoll_wait(k.ep2, ready, 2, 1000) == 2 && ready[0].data.u64 + ready[1].data.u64 == 85 &&
                 read(k.moved, &v, 8) == 8 && v == 4 && epoll_wait(k.ep2, ready, 2, 0) == 1 &&
                 ready[0].data.u64 == 43 && read(k.many[3], &v, 8) == 8 && v == 100 &&
                 epoll_wait(k.ep2, ready, 2, 0) == 0;
  many_ok = many_ok && write(k.many_dup, &(v = 1), 8) == 8;
  for (int i = 0; i < 24 && many_ok; ++i)
    if (i != 3) many_ok = read(k.many[i], &v, 8) == 8 && v == static_cast<uint64_t>(i + 1 + (i == 7));
  out += std::string(" many=") + (many_ok ? "ok" : "bad");
  out += std::string(" lone=") + (lone_ok(k) ? "ok" : "bad");
  // Armed through one number of the timerfd held twice: armed through the
  // other, the third not.
  const itimerspec later = {{0, 0}, {1000, 0}};
  itimerspec armed{}, other{};
  const bool tdup_ok = timerfd_settime(k.tone[0], 0, &later, nullptr) == 0 && timerfd_gettime(k.tone[1], &armed) == 0 &&
                       armed.it_value.tv_sec > 900 && timerfd_gettime(k.tother, &other) == 0 &&
                       other.it_value.tv_sec == 0 && other.it_value.tv_nsec == 0;
  out += std::string(" tdup=") + (tdup_ok ? "ok" : "bad");
  const bool cx_ok = fcntl(k.cx_on, F_GETFD) == FD_CLOEXEC && fcntl(k.cx_off, F_GETFD) == 0;
  out += std::string(" cloexec=") + (cx_ok ? "ok" : "bad");
  // Each pair's ends are each other's, with the bytes queued between them.
  bool pairs_ok = true;
  for (int i = 0; i < 20 && pairs_ok; ++i) {
    const std::string b = "p" + std::to_string(i);
    char got[8] = {};
    pairs_ok = read(k.pairs[i][1], got, sizeof got) == static_cast<ssize_t>(b.size()) && b == got &&
               write(k.pairs[i][1], "r", 1) == 1 && read(k.pairs[i][0], got, 1) == 1 && got[0] == 'r';
  }
  out += std::string(" pairs=") + (pairs_ok ? "ok" : "bad");
  // The datagrams queued to the bound socket, in order, each from its
  // sender: a reply to the bound one reaches it; the unbound one's is
  // unnamed.
  bool dg_ok = true;
  socklen_t fl = 0;
  const sockaddr_un fa = abstract_name("dg-from", &fl);
  sockaddr_un from1{};
  for (const char *want : {"d1", "d2", "d3"}) {
    char got[8] = {};
    sockaddr_un from{};
    socklen_t len = sizeof from;
    const bool named = want[1] != '2';
    dg_ok = dg_ok && recvfrom(k.dg, got, sizeof got, MSG_DONTWAIT, reinterpret_cast<sockaddr *>(&from), &len) == 2 &&
            !memcmp(got, want, 2) &&
            (named ? len == fl && !memcmp(&from, &fa, fl) : len <= sizeof(sa_family_t));
    if (want[1] == '1') from1 = from;
  }
  char extra[8], reply[8] = {};
  dg_ok = dg_ok && recv(k.dg, extra, sizeof extra, MSG_DONTWAIT) < 0 &&
          sendto(k.dg, "r", 1, 0, reinterpret_cast<sockaddr *>(&from1), fl) == 1 &&
          recv(k.dg_from, reply, sizeof reply, MSG_DONTWAIT) == 1 && reply[0] == 'r';
  out += std::string(" dgram=") + (dg_ok ? "ok" : "bad");
  // The socket only bound has its port, and listens on it when asked.
  const bool bound_ok = bound_port(k.only_bound) == k.only_bound_port && listen(k.only_bound, 4) == 0;
  out += std::string(" bound=") + (bound_ok ? "ok" : "bad");
  return out;
}

// The lazy mode's mappings: `given` all 0x5a, `moved` a pattern.
constexpr size_t kLazyMap = 8u << 20;
unsigned char moved_byte(size_t i) { return static_cast<unsigned char>(i * 7 + i / 4096); }

bool pattern_ok(const unsigned char *m) {
  for (size_t i = 0; i < kLazyMap; ++i)
    if (m[i] != moved_byte(i)) return false;
  return true;
}

// `wiped` all 0x77, wiped in a fork child (MADV_WIPEONFORK) but for its
// first and last page.
bool wiped_ok(const unsigned char *w, bool child) {
  for (size_t i = 0; i < kLazyMap; i += 512) {
    const bool edge = i < 4096 || i >= kLazyMap - 4096;
    if (w[i] != (child && !edge ? 0 : 0x77)) return false;
  }
  return true;
}

// The VmFlags line of the mapping holding addr (/proc/self/smaps), or "".
std::string vm_flags(const void *addr) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return "";
  const auto a = reinterpret_cast<uintptr_t>(addr);
  char line[512];
  bool in = false;
  std::string out;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) in = a >= lo && a < hi;
    else if (in && !strncmp(line, "VmFlags:", 8)) out = line + 8;
  }
  fclose(f);
  return out;
}

std::string lazy_checks(unsigned char *given, unsigned char *moved, unsigned char *wiped) {
  // The advice the program gave before the snapshot is the mapping's again.
  const std::string flags = vm_flags(wiped + kLazyMap / 2);
  const bool advice_ok = flags.find(" wf") != std::string::npos && flags.find(" dd") != std::string::npos;
  if (!advice_ok) report("wiped map's VmFlags:%s", flags.c_str());
  // Half of `given` given back: zero from then on, the other half kept.
  bool given_ok = madvise(given, kLazyMap / 2, MADV_DONTNEED) == 0;
  for (size_t i = 0; i < kLazyMap && given_ok; ++i) given_ok = given[i] == (i < kLazyMap / 2 ? 0 : 0x5a);
  // `moved` grown and moved: its bytes at the new place, zeros after them.
  auto *to = static_cast<unsigned char *>(mremap(moved, kLazyMap, 2 * kLazyMap, MREMAP_MAYMOVE));
  bool moved_ok = to != MAP_FAILED && pattern_ok(to);
  for (size_t i = kLazyMap; i < 2 * kLazyMap && moved_ok; ++i) moved_ok = to[i] == 0;
  // A child sees the snapshot's memory as the parent does.
  const pid_t c = fork();
  // The wiped range reads zero there, and in the parent keeps its bytes.
  if (c == 0) {
    if (!wiped_ok(wiped, true)) _exit(2);
    _exit(check(1) < 0 && to != MAP_FAILED && pattern_ok(to) && given[0] == 0 && given[kLazyMap - 1] == 0x5a ? 0 : 1);
  }
  int st = 1;
  const bool waited = c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st);
  const bool fork_ok = waited && WEXITSTATUS(st) != 1;
  const bool wipe_ok = waited && WEXITSTATUS(st) != 2 && wiped_ok(wiped, false);
  if (!wipe_ok) {
    size_t bad = 0;
    for (size_t i = 0; i < kLazyMap; i += 4096) bad += wiped[i] != 0x77;
    report("wiped map: the child %s, the parent has %zu of %zu pages changed", waited && WEXITSTATUS(st) == 2 ? "saw bytes" : "passed", bad, kLazyMap / 4096);
  }
  return std::string("dontneed=") + (given_ok ? "ok" : "bad") + " mremap=" + (moved_ok ? "ok" : "bad") +
         " fork=" + (fork_ok ? "ok" : "bad") + " wipe=" + (wipe_ok ? "ok" : "bad") +
         " advice=" + (advice_ok ? "ok" : "bad");
}

// leaderless: waits until the leader thread has exited (a zombie in the
// task list), then takes the snapshot as self does.
struct leaderless_arg {
  const char *name;
  int tids[3];
  pid_t pid;
};

void *leaderless(void *a) {
  const auto *arg = static_cast<const leaderless_arg *>(a);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", arg->pid);
  for (;;) {
    char buf[512] = {};
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    const char *paren = n > 0 ? strrchr(buf, ')') : nullptr;
    if (!paren || paren[2] == 'Z' || paren[2] == 'X') break;
    usleep(1000);
  }
  const int r = find_snapshot()(arg->name);
  if (r == 1) exit(restored_checks(1, arg->tids));
  if (r != 0) {
    report("snapshot failed");
    exit(1);
  }
  fill(2);
  report("snapshot taken pid=%d", getpid());
  for (;;) pause();
}

volatile sig_atomic_t g_usr1 = 0;
void on_usr1(int) { g_usr1 = 1; }

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: restore_child self NAME REPORT | cycles N REPORT | serve REPORT\n");
    return 2;
  }
  const std::string mode = argv[1];
  g_report = argv[argc - 1];
  g_buf = static_cast<unsigned char *>(malloc(kBuf));
  fill(1);
  if (mode == "kernel") {
    // SIGUSR2 goes to the signalfd only: blocked in every thread.
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigaddset(&usr2, SIGRTMIN + 1);
    sigaddset(&usr2, SIGRTMIN + 2);
    sigaddset(&usr2, SIGRTMIN + 3);
    pthread_sigmask(SIG_BLOCK, &usr2, nullptr);
  }
  start_threads();
  const int tids[3] = {g_tids[0], g_tids[1], g_tids[2]};
  if (mode == "leaderless") {
    static leaderless_arg arg = {argv[2], {tids[0], tids[1], tids[2]}, getpid()};
    pthread_t t;
    if (pthread_create(&t, nullptr, leaderless, &arg) != 0) return 1;
    syscall(SYS_exit, 0);  // this thread only; the process goes on
  }
  if (mode == "self") {
    // RESTORE_CHILD_MAP=FILE: a data file mapped read-only across the
    // snapshot, as a program maps its locale or data files (and, with
    // RESTORE_CHILD_KEEP=1, kept open read-only as a JVM keeps its jars).
    if (const char *f = getenv("RESTORE_CHILD_MAP")) {
      const int fd = open(f, O_RDONLY | O_CLOEXEC);
      struct stat st;
      if (fd < 0 || fstat(fd, &st) != 0 ||
          mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
        report("cannot map %s", f);
        return 1;
      }
      if (!getenv("RESTORE_CHILD_KEEP")) close(fd);  // else also a descriptor, read-only
    }
    // RESTORE_CHILD_LOG=FILE: a file the program appends to, a line before
    // the snapshot and one after (a restore cuts it back to the first).
    int log = -1;
    if (const char *f = getenv("RESTORE_CHILD_LOG")) {
      log = open(f, O_WRONLY | O_APPEND | O_CREAT, 0600);
      if (log < 0 || write(log, "before\n", 7) != 7) {
        report("cannot write %s", f);
        return 1;
      }
    }
    const snapshot_fn snap = find_snapshot();
    const int r = snap(argv[2]);
    if (r == 1) return restored_checks(1, tids);
    if (r != 0) {
      report("snapshot failed");
      return 1;
    }
    // The original: writes after the snapshot must not reach the capsule.
    fill(2);
    if (log >= 0 && write(log, "after\n", 6) != 6) report("cannot write the log");
    report("snapshot taken pid=%d", getpid());
    for (;;) pause();
  }
  if (mode == "lazy") {
    auto *given = static_cast<unsigned char *>(
        mmap(nullptr, kLazyMap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    auto *moved = static_cast<unsigned char *>(
        mmap(nullptr, kLazyMap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    auto *wiped = static_cast<unsigned char *>(
        mmap(nullptr, kLazyMap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (given == MAP_FAILED || moved == MAP_FAILED || wiped == MAP_FAILED) return 1;
    memset(given, 0x5a, kLazyMap);
    for (size_t i = 0; i < kLazyMap; ++i) moved[i] = moved_byte(i);
    memset(wiped, 0x77, kLazyMap);
    if (madvise(wiped + 4096, kLazyMap - 8192, MADV_WIPEONFORK) != 0 ||
        madvise(wiped + 4096, kLazyMap - 8192, MADV_DONTDUMP) != 0) {
      report("madvise of the wiped mapping failed: %s", strerror(errno));
      return 1;
    }
    const int r = find_snapshot()(argv[2]);
    if (r == 1) {
      const std::string lazy = lazy_checks(given, moved, wiped);
      const int status = restored_checks(1, tids);
      report("lazy %s", lazy.c_str());
      return status || lazy.find("bad") != std::string::npos ? 1 : 0;
    }
    if (r != 0) {
      report("snapshot failed");
      return 1;
    }
    memset(given, 0x11, kLazyMap);
    memset(moved, 0x22, kLazyMap);
    memset(wiped, 0x33, kLazyMap);
    fill(2);
    report("snapshot taken pid=%d", getpid());
    for (;;) pause();
  }
  if (mode == "kernel") {
    const kernel_objects k = make_objects();
    // Two queued signals pending across the snapshot, blocked everywhere.
    for (int v : {42, 43}) {
      sigval val{};
      val.sival_int = v;
      sigqueue(getpid(), SIGRTMIN + 1, val);
    }
    // And one queued to the holder thread alone, one to this thread alone
    // (the one that takes the snapshot).
    pthread_sigqueue(g_threads[2], SIGRTMIN + 3, sigval{44});
    pthread_kill(g_threads[2], SIGRTMIN + 3);
    pthread_sigqueue(pthread_self(), SIGRTMIN + 3, sigval{45});
    const int r = find_snapshot()(argv[2]);
    if (r == 1) {
      std::string objects = check_objects(k);
      sigset_t rt3;
      sigemptyset(&rt3);
      sigaddset(&rt3, SIGRTMIN + 3);
      const timespec zero = {0, 0};
      siginfo_t si{};
      const bool mine = sigtimedwait(&rt3, &si, &zero) == SIGRTMIN + 3 && si.si_value.sival_int == 45 &&
                        sigtimedwait(&rt3, &si, &zero) < 0;
      const int status = restored_checks(1, tids);
      objects += std::string(" tsig=") + (mine && g_holder_signal == 44
                                              ? "ok"
                                              : "bad(mine=" + std::to_string(mine) +
                                                    ",holder=" + std::to_string(g_holder_signal.load()) + ")");
      report("kernel %s", objects.c_str());
      return status || objects.find("bad") != std::string::npos ? 1 : 0;
    }
    if (r != 0) {
      report("snapshot failed");
      return 1;
    }
    // The original uses its objects up and changes them: none of it may
    // reach the capsule.
    char buf[64];
    if (read(k.pipe_rd, buf, sizeof buf) < 0 || write(k.pipe_wr, "later", 5) < 0 || read(k.pair[1], buf, sizeof buf) < 0 ||
        recv(k.dg, buf, sizeof buf, MSG_DONTWAIT) < 0) {
    }
    socklen_t dl = 0;
    const sockaddr_un da = abstract_name("dg", &dl);
    if (sendto(k.dg_from, "d4", 2, 0, reinterpret_cast<const sockaddr *>(&da), dl) != 2) report("cannot send d4");
    uint64_t v = 100;
    if (read(k.efd, &v, 8) < 0 || write(k.efd, &v, 8) < 0) {
    }
    if (pwrite(k.memfd, "LATER", 5, 0) < 0 || pwrite(k.tmpfile, "LATER", 5, 0) < 0 || write(k.deleted, "LATER", 5) < 0) {
    }
    if (fcntl(k.cx_on, F_SETFD, 0) != 0 || fcntl(k.cx_off, F_SETFD, FD_CLOEXEC) != 0) report("cannot flip close-on-exec");
    report("original lone=%s", lone_ok(k) ? "ok" : "bad");
    report("snapshot taken pid=%d", getpid());
    for (;;) pause();
  }
  if (mode == "cycles") {
    const snapshot_fn snap = find_snapshot();
    const int n = atoi(argv[2]);
    // Each restored process takes the next snapshot and exits, as the
    // original does after the first.
    for (int i = 1; i <= n; ++i) {
      char name[32];
      snprintf(name, sizeof name, "c%d", i);
      const int r = snap(name);
      if (r < 0) {
        report("snapshot %s failed", name);
        return 1;
      }
      if (r == 0) {
        report("cycle %d taken maps=%d fds=%d rss_kib=%ld", i, count_lines("/proc/self/maps"), count_fds(), rss_kib());
        return 0;
      }
      if (check(1) >= 0 || tids[0] != g_tids[0]) {
        report("cycle %d restored damaged", i);
        return 1;
      }
    }
    return 0;
  }
  if (mode == "serve") {
    signal(SIGUSR1, on_usr1);
    report("serving pid=%d", getpid());
    for (int generation = 1;; ++generation) {
      g_generation = generation;
      fill(generation);
      for (int i = 0; i < 20 && !g_usr1; ++i) usleep(5000);
      if (g_usr1) {
        g_usr1 = 0;
        const long bad = check(generation);
        report("state pid=%d tids=%d,%d,%d generation=%d buffer=%s counts=%ld,%ld", getpid(), g_tids[0].load(),
               g_tids[1].load(), g_tids[2].load(), generation, bad < 0 ? "ok" : "damaged", g_count[0].load(),
               g_count[1].load());
      }
    }
  }
  fprintf(stderr, "restore_child: unknown mode %s\n", mode.c_str());
  return 2;
}
