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
//
// REPORT is appended to (opened, written, closed each time): one line per
// event, so the test reads what both the original and the restored process
// said.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
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
void *holder(void *) {
  g_tids[2] = gettid_now();
  std::lock_guard<std::mutex> g(g_held);
  g_holding = true;
  while (!g_restored.load() && !g_stop.load()) usleep(1000);
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
  start_threads();
  const int tids[3] = {g_tids[0], g_tids[1], g_tids[2]};
  if (mode == "self") {
    const snapshot_fn snap = find_snapshot();
    const int r = snap(argv[2]);
    if (r == 1) return restored_checks(1, tids);
    if (r != 0) {
      report("snapshot failed");
      return 1;
    }
    // The original: writes after the snapshot must not reach the capsule.
    fill(2);
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
