// snapshot: the pause of a libmmtier snapshot against fork() of the same
// process, and the time until the capsule is complete, side by side in one
// run (issue 15; docs/BENCHMARKS.md, "Snapshot pause against fork").
//
// A plain program, not linked with mmtier: run it with
// LD_PRELOAD=libmmtier.so.  It finds mmtier_snapshot_to with
// dlsym(RTLD_DEFAULT) and exits 3 when it is not there.
//
// Memory: ONE malloc() of --gib GiB, every 4 KiB page written once before
// the first round.  Workers: --threads threads; worker t owns the t-th
// stripe of that block and writes one word in each page of its stripe, pass
// after pass, for the whole run (at most --write-mbps MiB of pages a second
// each; 0, the default: as fast as it can).
//
// With --settle S the rounds begin S seconds after the fill: the mover
// samples and moves meanwhile, as in a program that has run for a while
// (what its sampling does to the block's huge pages shows in the pause).
// With --gap G each round after the first begins G seconds after the last
// one ended, the workers writing meanwhile: a program snapshotted now and
// then, whose mover rebuilds between snapshots the huge pages the last
// one's writer child cost it.
//
// Each of --rounds rounds measures both methods, each right after the main
// thread has written one word in every page of the block (so every page
// table entry is writable again: the first fork after writes is the one
// that pays for write-protecting them, docs/SNAPSHOTS.md §1).  The order
// alternates: fork first in even rounds, the snapshot first in odd ones.
//
//   fork      fork() timed in the parent around the call; the child calls
//             _exit(0) at once, the parent then waits for it.  fork_ms is
//             wall time, fork_cpu_ms the calling thread's CPU time for it
//             (what the kernel and libmmtier's fork handlers did, without
//             the time the thread waited for a CPU).
//   snapshot  mmtier_snapshot_to(--dir, NAME, ...) timed around the call:
//             complete_ms (the call returns once the capsule is complete
//             and synced).  pause_ms (every thread stopped: the stop, the
//             fork of the writer, the resume) and mem_bytes (memory bytes
//             written to the capsule's mem file) come from the capsule's
//             header (struct mmtier::capsule::header at offset 512 of its
//             manifest).  gbps = mem_bytes / complete time, in GB/s (1e9).
//             pmem_linked_bytes: PMem units the capsule links instead of
//             copying (ZeroIO: the capsule on the PMem tier's file system).
//             writer_cpu_ms: the writer child's CPU time (user + system,
//             from getrusage(RUSAGE_CHILDREN) around the call: the call
//             reaps it); caller_cpu_ms: the calling thread's CPU time in
//             the call (the preparation, the pause's own work and the wait:
//             an upper bound on what the pause cost in CPU).  The capsule
//             is deleted after each round.
//
// Output: one JSON line per round on stdout,
//   {"round":I,"gib":R,"fork_ms":..,"fork_cpu_ms":..,"pause_ms":..,
//    "complete_ms":..,"mem_bytes":..,"gbps":..,"writer_cpu_ms":..,
//    "caller_cpu_ms":..,"rss_bytes":..,"rss_anon_bytes":..,
//    "rss_shmem_bytes":..,"threads":T,"worker_pages_per_s":..,
//    "capsule_state":S}
// anon_huge_bytes: AnonHugePages of /proc/self/smaps_rollup then (memory
// on transparent huge pages);
// rss_*: /proc/self/status just before the snapshot (VmRSS, RssAnon,
// RssShmem: the PMem tier's pages are RssShmem, a tmpfs file);
// worker_pages_per_s: pages written by all workers per second over the run
// so far; capsule_state: the status block's state (2 complete, 3 durable).
//
// With --changed P (percent, > 0) each round measures incremental
// snapshots instead of fork: a snapshot A of the block as it is (kept), then
// one word written in P % of its pages (chosen at random, the same in every
// run), then snapshot B, which builds on A; the line gives both:
//   {"round":I,"gib":R,"changed_pct":P,"full_complete_ms":..,"full_mem_bytes":..,
//    "full_pause_ms":..,"inc_complete_ms":..,"inc_pause_ms":..,"inc_mem_bytes":..,
//    "inc_shared_bytes":..,"inc_writer_cpu_ms":..,"full_writer_cpu_ms":..,"rss_bytes":..}
// Both capsules are deleted after the round.
//
// usage: snapshot --gib R --dir DIR [--threads 2] [--rounds 5] [--write-mbps 0] [--changed P] [--settle S]
//                 [--gap G]
// exits 0; 2 on bad usage; 3 when not under libmmtier; 1 when a fork or a
// snapshot fails (the JSON line so far is not printed).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "common.h"
#include "snapshot/capsule_format.h"

namespace {

constexpr size_t kPage = 4096;

struct Options {
  double gib = 0;
  int threads = 2;
  int rounds = 5;
  double write_mbps = 0;
  double changed = 0;  // percent of pages written between two snapshots (incremental mode)
  double settle = 0;   // seconds between the fill and the first round
  double gap = 0;      // seconds between two rounds
  std::string dir;
};

[[noreturn]] void usage(const char *msg) {
  if (msg) fprintf(stderr, "snapshot: %s\n", msg);
  fprintf(stderr, "usage: snapshot --gib R --dir DIR [--threads 2] [--rounds 5] [--write-mbps 0] [--changed P] [--settle S] [--gap G]\n");
  exit(2);
}

double parse_double(const char *s) {
  char *end = nullptr;
  errno = 0;
  const double v = strtod(s, &end);
  if (end == s || *end || errno || v < 0) usage("expected a non-negative number");
  return v;
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> const char * {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--gib")
      o.gib = parse_double(val());
    else if (a == "--threads")
      o.threads = static_cast<int>(parse_double(val()));
    else if (a == "--rounds")
      o.rounds = static_cast<int>(parse_double(val()));
    else if (a == "--write-mbps")
      o.write_mbps = parse_double(val());
    else if (a == "--dir")
      o.dir = val();
    else if (a == "--changed")
      o.changed = parse_double(val());
    else if (a == "--settle")
      o.settle = parse_double(val());
    else if (a == "--gap")
      o.gap = parse_double(val());
    else if (a == "-h" || a == "--help")
      usage(nullptr);
    else
      usage(("unknown argument " + a).c_str());
  }
  if (o.gib <= 0) usage("--gib must be above 0");
  if (o.dir.empty()) usage("--dir is required");
  if (o.rounds < 1) usage("--rounds must be at least 1");
  if (o.threads > 64) usage("--threads: at most 64");
  if (o.changed > 100) usage("--changed: a percentage, at most 100");
  return o;
}

double thread_cpu_seconds() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ---------------------------------------------------------------- workers

char *g_mem = nullptr;
size_t g_pages = 0;
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_worker_pages{0};

struct Worker {
  pthread_t thread;
  size_t first, last;  // pages [first, last)
  double mbps;
};

void *worker_main(void *arg) {
  const Worker *w = static_cast<const Worker *>(arg);
  const size_t batch = 256;  // pages between pacing checks
  const double batch_s = w->mbps > 0 ? batch * kPage / (w->mbps * 1048576.0) : 0;
  double next = bench::now_seconds();
  uint64_t pass = 1;
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (size_t p = w->first; p < w->last && !g_stop.load(std::memory_order_relaxed);) {
      const size_t end = p + batch < w->last ? p + batch : w->last;
      g_worker_pages.fetch_add(end - p, std::memory_order_relaxed);
      for (; p < end; ++p) reinterpret_cast<volatile uint64_t *>(g_mem + p * kPage)[1] = pass ^ p;
      if (batch_s > 0) {
        next += batch_s;
        const double wait = next - bench::now_seconds();
        if (wait > 0) {
          struct timespec ts = {static_cast<time_t>(wait), static_cast<long>((wait - static_cast<long>(wait)) * 1e9)};
          nanosleep(&ts, nullptr);
        } else if (wait < -1.0) {
          next = bench::now_seconds();  // fell behind (stopped, or no CPU): no burst to catch up
        }
      }
    }
    ++pass;
  }
  return nullptr;
}

// One word in every page, from the main thread: every PTE writable again.
uint64_t g_touch = 0;
double retouch() {
  const double t0 = bench::now_seconds();
  ++g_touch;
  for (size_t p = 0; p < g_pages; ++p) reinterpret_cast<volatile uint64_t *>(g_mem + p * kPage)[0] = g_touch + p;
  return bench::now_seconds() - t0;
}

// ---------------------------------------------------------------- measurements

struct Status {
  uint64_t rss = 0, anon = 0, shmem = 0, anon_huge = 0;
};

Status read_status() {
  Status s;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return s;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    unsigned long long kb = 0;
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) s.rss = kb * 1024;
    if (sscanf(line, "RssAnon: %llu kB", &kb) == 1) s.anon = kb * 1024;
    if (sscanf(line, "RssShmem: %llu kB", &kb) == 1) s.shmem = kb * 1024;
  }
  fclose(f);
  if ((f = fopen("/proc/self/smaps_rollup", "r"))) {
    while (fgets(line, sizeof line, f)) {
      unsigned long long kb = 0;
      if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1) s.anon_huge = kb * 1024;
    }
    fclose(f);
  }
  return s;
}

struct ForkResult {
  double wall_s, cpu_s;
};

ForkResult time_fork() {
  const double c0 = thread_cpu_seconds();
  const double t0 = bench::now_seconds();
  const pid_t pid = fork();
  const double t1 = bench::now_seconds();
  const double c1 = thread_cpu_seconds();
  if (pid == 0) _exit(0);
  if (pid < 0) {
    fprintf(stderr, "snapshot: fork: %s\n", strerror(errno));
    exit(1);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "snapshot: the fork child did not exit 0\n");
    exit(1);
  }
  return {t1 - t0, c1 - c0};
}

using snapshot_fn = int (*)(const char *, const char *, char *, size_t);

struct SnapResult {
  double complete_s;
  double writer_cpu_s;  // CPU time of the writer child (reaped within the call)
  double caller_cpu_s;  // CPU time of the calling thread in the call
  uint64_t paused_ns, mem_size, pmem_linked, shared;
  uint32_t state;
  char path[4096];
};

double children_cpu_seconds() {
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int remove_entry(const char *path, const struct stat *, int, struct FTW *) { return remove(path); }

void delete_capsule(const char *path) {
  if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
    fprintf(stderr, "snapshot: cannot delete %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

// keep: the capsule is left for the caller to delete (delete_capsule).
SnapResult time_snapshot(snapshot_fn snap, const std::string &dir, const char *name, bool keep = false) {
  char path[4096];
  const double c0 = children_cpu_seconds();
  const double m0 = thread_cpu_seconds();
  const double t0 = bench::now_seconds();
  const int r = snap(dir.c_str(), name, path, sizeof path);
  const double t1 = bench::now_seconds();
  const double m1 = thread_cpu_seconds();
  const double c1 = children_cpu_seconds();
  if (r != 0) {
    fprintf(stderr, "snapshot: mmtier_snapshot_to(%s, %s): %s\n", dir.c_str(), name, strerror(errno));
    exit(1);
  }
  SnapResult out = {t1 - t0, c1 - c0, m1 - m0, 0, 0, 0, 0, 0, {}};
  snprintf(out.path, sizeof out.path, "%s", path);
  const std::string manifest = std::string(path) + "/" + mmtier::capsule::kManifest;
  const int fd = open(manifest.c_str(), O_RDONLY | O_CLOEXEC);
  mmtier::capsule::status_block sb;
  mmtier::capsule::header h;
  if (fd < 0 || pread(fd, &sb, sizeof sb, 0) != static_cast<ssize_t>(sizeof sb) ||
      pread(fd, &h, sizeof h, mmtier::capsule::kHeaderOffset) != static_cast<ssize_t>(sizeof h) ||
      memcmp(sb.magic, mmtier::capsule::kMagic, sizeof sb.magic) != 0 || h.header_size != sizeof h) {
    fprintf(stderr, "snapshot: cannot read the header of %s\n", manifest.c_str());
    exit(1);
  }
  close(fd);
  out.paused_ns = h.paused_ns;
  out.mem_size = h.mem_size;
  out.pmem_linked = h.pmem_linked;
  out.shared = h.shared;
  out.state = sb.state;
  if (!keep) delete_capsule(path);
  return out;
}

// Incremental mode: one round, see the header.
void incremental_round(snapshot_fn snap, const Options &o, int round) {
  char a[64], b[64];
  snprintf(a, sizeof a, "bench-%d-%d-a", static_cast<int>(getpid()), round);
  snprintf(b, sizeof b, "bench-%d-%d-b", static_cast<int>(getpid()), round);
  retouch();  // every page changed since any earlier round's capsules
  const Status st = read_status();
  const SnapResult full = time_snapshot(snap, o.dir, a, true);
  bench::Rng rng(0x5eed + static_cast<uint64_t>(round));
  const uint64_t want = static_cast<uint64_t>(static_cast<double>(g_pages) * o.changed / 100.0);
  for (uint64_t i = 0; i < want; ++i) {
    const size_t p = static_cast<size_t>(rng.below(g_pages));
    volatile uint64_t *w = reinterpret_cast<volatile uint64_t *>(g_mem + p * kPage) + 2;
    *w = *w + 1;
  }
  const SnapResult inc = time_snapshot(snap, o.dir, b, true);
  delete_capsule(inc.path);
  delete_capsule(full.path);
  using ull = unsigned long long;
  printf("{\"round\":%d,\"gib\":%g,\"changed_pct\":%g,\"full_complete_ms\":%.3f,\"full_mem_bytes\":%llu,"
         "\"full_pause_ms\":%.3f,\"full_writer_cpu_ms\":%.1f,\"inc_complete_ms\":%.3f,\"inc_pause_ms\":%.3f,"
         "\"inc_mem_bytes\":%llu,\"inc_shared_bytes\":%llu,\"inc_writer_cpu_ms\":%.1f,\"rss_bytes\":%llu}\n",
         round, o.gib, o.changed, full.complete_s * 1e3, static_cast<ull>(full.mem_size),
         static_cast<double>(full.paused_ns) / 1e6, full.writer_cpu_s * 1e3, inc.complete_s * 1e3,
         static_cast<double>(inc.paused_ns) / 1e6, static_cast<ull>(inc.mem_size), static_cast<ull>(inc.shared),
         inc.writer_cpu_s * 1e3, static_cast<ull>(st.rss));
  fflush(stdout);
}

}  // namespace

int main(int argc, char **argv) {
  const Options o = parse(argc, argv);
  auto snap = reinterpret_cast<snapshot_fn>(dlsym(RTLD_DEFAULT, "mmtier_snapshot_to"));
  if (!snap) {
    fprintf(stderr, "snapshot: mmtier_snapshot_to not found: run under LD_PRELOAD=libmmtier.so\n");
    return 3;
  }
  const size_t bytes = static_cast<size_t>(o.gib * 1073741824.0) / kPage * kPage;
  g_mem = static_cast<char *>(malloc(bytes));
  if (!g_mem) {
    fprintf(stderr, "snapshot: cannot allocate %zu bytes\n", bytes);
    return 1;
  }
  g_pages = bytes / kPage;
  const double fill_s = retouch();
  fprintf(stderr, "snapshot: %.2f GiB written in %.2f s\n", static_cast<double>(bytes) / 1073741824.0, fill_s);

  std::vector<Worker> workers(static_cast<size_t>(o.threads > 0 ? o.threads : 0));
  for (size_t t = 0; t < workers.size(); ++t) {
    workers[t].first = g_pages * t / workers.size();
    workers[t].last = g_pages * (t + 1) / workers.size();
    workers[t].mbps = o.write_mbps;
    if (int e = pthread_create(&workers[t].thread, nullptr, worker_main, &workers[t])) {
      fprintf(stderr, "snapshot: pthread_create: %s\n", strerror(e));
      return 1;
    }
  }
  // The mover at work for a while (sampling, moving) before the first
  // snapshot, as in a program that has run for some time.
  if (o.settle > 0) usleep(static_cast<useconds_t>(o.settle * 1e6));
  const double start = bench::now_seconds();

  for (int round = 0; o.changed > 0 && round < o.rounds; ++round) incremental_round(snap, o, round);
  for (int round = 0; o.changed <= 0 && round < o.rounds; ++round) {
    ForkResult f{};
    SnapResult s{};
    Status st{};
    char name[64];
    snprintf(name, sizeof name, "bench-%d-%d", static_cast<int>(getpid()), round);
    if (round > 0 && o.gap > 0) usleep(static_cast<useconds_t>(o.gap * 1e6));
    for (int step = 0; step < 2; ++step) {
      retouch();
      if ((step == 0) == (round % 2 == 0)) {
        f = time_fork();
      } else {
        st = read_status();
        s = time_snapshot(snap, o.dir, name);
      }
    }
    const double gbps = s.complete_s > 0 ? static_cast<double>(s.mem_size) / s.complete_s / 1e9 : 0;
    const double elapsed = bench::now_seconds() - start;
    using ull = unsigned long long;
    printf(
        "{\"round\":%d,\"gib\":%g,\"fork_ms\":%.3f,\"fork_cpu_ms\":%.3f,\"pause_ms\":%.3f,\"complete_ms\":%.3f,"
        "\"mem_bytes\":%llu,\"gbps\":%.3f,\"writer_cpu_ms\":%.1f,\"caller_cpu_ms\":%.1f,\"rss_bytes\":%llu,"
        "\"rss_anon_bytes\":%llu,\"rss_shmem_bytes\":%llu,\"threads\":%d,\"worker_pages_per_s\":%.0f,"
        "\"capsule_state\":%u,\"pmem_linked_bytes\":%llu,\"anon_huge_bytes\":%llu}\n",
        round, o.gib, f.wall_s * 1e3, f.cpu_s * 1e3, static_cast<double>(s.paused_ns) / 1e6, s.complete_s * 1e3,
        static_cast<ull>(s.mem_size), gbps, s.writer_cpu_s * 1e3, s.caller_cpu_s * 1e3, static_cast<ull>(st.rss),
        static_cast<ull>(st.anon), static_cast<ull>(st.shmem), o.threads,
        elapsed > 0 ? static_cast<double>(g_worker_pages.load()) / elapsed : 0, s.state, static_cast<ull>(s.pmem_linked),
        static_cast<ull>(st.anon_huge));
    fflush(stdout);
  }

  g_stop.store(true);
  for (Worker &w : workers) pthread_join(w.thread, nullptr);
  free(g_mem);
  return 0;
}
