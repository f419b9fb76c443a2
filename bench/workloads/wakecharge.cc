// wakecharge: how much CPU time this machine charges a thread for sleeping
// and waking while another thread works on a large footprint.
//
// A background thread's CPU figure (the mover's, in bench/workloads/gups.cc)
// is read from its CPU-time clock.  On a virtual machine that clock can
// advance while the thread's own code does not run: when a vCPU wakes from
// idle, whatever the hypervisor does before the guest runs again (with
// shadow page tables: rebuilding the shadows the other vCPU's work threw
// away) is charged to the thread that was switched in.  This program
// measures that charge with a thread that does nothing but sleep, in three
// placements, side by side in one run:
//
//   other-cpu      the sleeper and the worker are threads of one process,
//                  pinned to different CPUs (where a background thread runs
//                  when the application's thread keeps its CPU busy);
//   same-cpu       both pinned to one CPU;
//   other-process  the worker is a child process on the other CPU.
//
// The worker makes random 8-byte updates over --footprint bytes (written
// once first).  The sleeper sleeps --sleep-ms at a time, --wakes times, and
// after each wake writes one byte in each of --touch-pages pages of its own
// buffer (a background thread's working set); it reports the CPU time its
// clock was charged per wake and as a share of the wall time, and the part
// of it spent in its own loop.  Nothing here uses mmtier.
//
// usage: wakecharge [--footprint 2G] [--sleep-ms 100] [--wakes 30]
//                   [--touch-pages 0] [--only other-cpu|same-cpu|other-process]
// prints: one line per placement, then RESULT wakecharge <placement> <percent>
// lines; exits 0, or 77 when there are fewer than 2 CPUs to pin to.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "common.h"

namespace {

struct Options {
  size_t footprint = size_t{2} << 30;
  long sleep_ms = 100;
  int wakes = 30;
  size_t touch_pages = 0;
  std::string only;
};

[[noreturn]] void usage(const char *msg) {
  if (msg) fprintf(stderr, "wakecharge: %s\n", msg);
  fprintf(stderr,
          "usage: wakecharge [--footprint 2G] [--sleep-ms 100] [--wakes 30] [--touch-pages 0]\n"
          "                  [--only other-cpu|same-cpu|other-process]\n");
  exit(2);
}

size_t parse_size(const char *s) {
  uint64_t v = 0;
  if (const char *why = bench::parse_size(s, &v)) usage(why);
  return static_cast<size_t>(v);
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> const char * {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--footprint") o.footprint = parse_size(val());
    else if (a == "--sleep-ms") o.sleep_ms = static_cast<long>(parse_size(val()));
    else if (a == "--wakes") o.wakes = static_cast<int>(parse_size(val()));
    else if (a == "--touch-pages") o.touch_pages = parse_size(val());
    else if (a == "--only") o.only = val();
    else usage(("unknown argument " + a).c_str());
  }
  if (o.footprint < 4096 || o.sleep_ms < 1 || o.wakes < 1) usage("sizes and counts must be positive");
  if (!o.only.empty() && o.only != "other-cpu" && o.only != "same-cpu" && o.only != "other-process")
    usage("--only takes other-cpu, same-cpu or other-process");
  return o;
}

double now_s(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

bool pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return sched_setaffinity(0, sizeof s, &s) == 0;
}

char *fill(size_t bytes) {
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("wakecharge: mmap");
    exit(1);
  }
  char *m = static_cast<char *>(p);
  for (size_t i = 0; i < bytes; i += 4096) m[i] = 1;
  return m;
}

// Random 8-byte updates until *stop (or forever in a child process).
void churn(char *mem, size_t bytes, const std::atomic<bool> *stop) {
  uint64_t x = 88172645463325252ull;
  const size_t words = bytes / 8;
  uint64_t *w = reinterpret_cast<uint64_t *>(mem);
  for (;;) {
    for (int k = 0; k < 4096; ++k) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      w[x % words] += 1;
    }
    if (stop && stop->load(std::memory_order_relaxed)) return;
  }
}

struct Result {
  double charged_per_wake_us, share_pct, own_per_wake_us;
};

// The sleeper: runs on the calling thread, pinned to `cpu`.
Result sleep_and_wake(const Options &o, int cpu, char *own) {
  pin(cpu);
  double charged = 0, spent_own = 0;
  const double wall0 = now_s(CLOCK_MONOTONIC);
  for (int i = 0; i < o.wakes; ++i) {
    const double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    timespec ts = {o.sleep_ms / 1000, (o.sleep_ms % 1000) * 1000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
    const double c1 = now_s(CLOCK_THREAD_CPUTIME_ID);
    for (size_t p = 0; p < o.touch_pages; ++p) own[p * 4096] += 1;
    const double c2 = now_s(CLOCK_THREAD_CPUTIME_ID);
    charged += c2 - c0;
    spent_own += c2 - c1;
  }
  const double wall = now_s(CLOCK_MONOTONIC) - wall0;
  return {charged / o.wakes * 1e6, 100 * charged / wall, spent_own / o.wakes * 1e6};
}

struct Worker {
  char *mem;
  size_t bytes;
  int cpu;
  std::atomic<bool> stop{false};
  std::atomic<bool> ready{false};
};

void *worker_main(void *arg) {
  Worker *w = static_cast<Worker *>(arg);
  pin(w->cpu);
  w->ready.store(true);
  churn(w->mem, w->bytes, &w->stop);
  return nullptr;
}

Result run_threads(const Options &o, int worker_cpu, int sleeper_cpu, char *own) {
  Worker w;
  w.mem = fill(o.footprint);
  w.bytes = o.footprint;
  w.cpu = worker_cpu;
  pthread_t t;
  if (pthread_create(&t, nullptr, worker_main, &w) != 0) {
    fprintf(stderr, "wakecharge: pthread_create failed\n");
    exit(1);
  }
  while (!w.ready.load()) sched_yield();
  usleep(200000);  // the worker's footprint settles into its CPU's TLB and caches
  Result r = sleep_and_wake(o, sleeper_cpu, own);
  w.stop.store(true);
  pthread_join(t, nullptr);
  munmap(w.mem, o.footprint);
  return r;
}

Result run_process(const Options &o, int worker_cpu, int sleeper_cpu, char *own) {
  int ready[2];
  if (pipe(ready) != 0) {
    perror("wakecharge: pipe");
    exit(1);
  }
  const pid_t child = fork();
  if (child < 0) {
    perror("wakecharge: fork");
    exit(1);
  }
  if (child == 0) {
    close(ready[0]);
    pin(worker_cpu);
    char *mem = fill(o.footprint);
    if (write(ready[1], "x", 1) != 1) _exit(1);
    churn(mem, o.footprint, nullptr);
    _exit(0);
  }
  close(ready[1]);
  char c;
  const bool ok = read(ready[0], &c, 1) == 1;
  close(ready[0]);
  if (!ok) {
    fprintf(stderr, "wakecharge: the worker process did not start\n");
    exit(1);
  }
  usleep(200000);
  Result r = sleep_and_wake(o, sleeper_cpu, own);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return r;
}

}  // namespace

int main(int argc, char **argv) {
  const Options o = parse(argc, argv);
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  sched_getaffinity(0, sizeof allowed, &allowed);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (cpus.size() < 2) {
    printf("# wakecharge: needs 2 CPUs to pin to, has %zu: skipped\n", cpus.size());
    return 77;
  }
  char *own = o.touch_pages ? fill(o.touch_pages * 4096) : nullptr;
  printf("# wakecharge: worker updates %zu MiB at random; sleeper sleeps %ld ms x %d, touches %zu pages per wake\n",
         o.footprint >> 20, o.sleep_ms, o.wakes, o.touch_pages);
  printf("# %-14s %18s %14s %16s\n", "placement", "charged_us/wake", "share_of_wall%", "own_loop_us/wake");
  struct Case {
    const char *name;
    bool process;
    int worker_cpu, sleeper_cpu;
  };
  const Case cases[] = {{"other-cpu", false, cpus[0], cpus[1]},
                        {"same-cpu", false, cpus[0], cpus[0]},
                        {"other-process", true, cpus[0], cpus[1]}};
  std::vector<std::pair<const char *, Result>> results;
  for (const Case &c : cases) {
    if (!o.only.empty() && o.only != c.name) continue;
    const Result r = c.process ? run_process(o, c.worker_cpu, c.sleeper_cpu, own)
                               : run_threads(o, c.worker_cpu, c.sleeper_cpu, own);
    printf("  %-14s %18.1f %14.2f %16.1f\n", c.name, r.charged_per_wake_us, r.share_pct, r.own_per_wake_us);
    fflush(stdout);
    results.push_back({c.name, r});
  }
  for (const auto &[name, r] : results) printf("RESULT wakecharge %s %.3f\n", name, r.share_pct);
  return 0;
}
