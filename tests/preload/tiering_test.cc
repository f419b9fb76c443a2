// Background promotion under LD_PRELOAD: the mover thread starts only in a
// process with enough managed memory and not with MMTIER_PROMOTE=0; it
// brings a hot set to DRAM within the DRAM budget and its counters
// (mmtier_get_tiering_stats) say so; a child after fork runs its own mover
// and can move memory itself.  Each case runs in a re-executed child with
// its own settings (this binary with TIERING_CHILD=<case>).
#include "preload_api.h"

#include <dirent.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <string>

using namespace preload_test;

namespace {

using stats_fn = int (*)(mmtier_tiering_stats *);
using move_fn = long (*)(const void *, size_t, int);

stats_fn tiering_stats() { return reinterpret_cast<stats_fn>(dlsym(RTLD_DEFAULT, "mmtier_get_tiering_stats")); }
move_fn mover() { return reinterpret_cast<move_fn>(dlsym(RTLD_DEFAULT, "mmtier_move")); }

bool has_thread(const char *name) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return false;
  bool found = false;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) continue;
    char buf[32] = {};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0 && strncmp(buf, name, strlen(name)) == 0 && buf[strlen(name)] == '\n') found = true;
  }
  closedir(d);
  return found;
}

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

constexpr size_t kMB = size_t{1} << 20;

// Reads the mover's counters into *st until done() or 5 s; false on a
// read error or the time out.
template <class Done>
bool wait_counters(mmtier_tiering_stats *st, Done done) {
  const double deadline = now_s() + 5;
  for (;;) {
    if (tiering_stats()(st) != 0) return false;
    if (done()) return true;
    if (now_s() > deadline) return false;
    usleep(10000);
  }
}

// ---- child cases (TIERING_CHILD=name); the exit status is the verdict ------

// A 96 MiB malloc'd block, written once, whose last 8 MiB are the hot set.
// With a DRAM limit of 24 MiB, placement puts the hot set on PMem.
struct hot_block {
  uint64_t *hot = nullptr;
  size_t words = 0, pages = 0;

  bool make() {
    const size_t total = 96 * kMB, hot_bytes = 8 * kMB;
    auto *b = static_cast<uint64_t *>(malloc(total));
    if (!b) return false;
    for (size_t i = 0; i < total / 8; ++i) b[i] = i;
    hot = b + (total - hot_bytes) / 8;
    words = hot_bytes / 8;
    pages = hot_bytes / 4096;
    return true;
  }
  size_t on_dram() const {
    size_t n = 0;
    for (size_t p = 0; p < pages; ++p) n += tier_of(reinterpret_cast<char *>(hot) + p * 4096) == 0;
    return n;
  }
  // Random updates to the hot set for up to 60 s or until done() says so.
  template <class Done>
  bool hammer_until(Done done) {
    const double deadline = now_s() + 60;
    uint64_t x = 7;
    while (now_s() < deadline) {
      for (int k = 0; k < 1 << 18; ++k) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        hot[(x >> 33) % words] += 1;
      }
      if (done()) return true;
    }
    return false;
  }
};

// Hammers the hot set until every page of it is on DRAM (or 60 s pass),
// then prints the counters.
int child_hot_set() {
  hot_block hb;
  if (!hb.make()) return 10;
  mmtier_tiering_stats st = {};
  st.size = sizeof st;
  size_t on_dram = 0;
  hb.hammer_until([&] { return (on_dram = hb.on_dram()) == hb.pages; });
  // The counters are published as a scan ends, after its moves: the last
  // promotion may show a scan later than its pages.
  if (!wait_counters(&st, [&] { return st.promotions * (2 * kMB) >= hb.pages * 4096; })) return 11;
  printf("hot_on_dram=%zu/%zu running=%d scans=%llu promotions=%llu demotions=%llu bytes=%llu samples=%llu "
         "touched=%llu budget=%llu\n",
         on_dram, hb.pages, st.running, (unsigned long long)st.scans, (unsigned long long)st.promotions,
         (unsigned long long)st.demotions, (unsigned long long)st.bytes_migrated, (unsigned long long)st.samples,
         (unsigned long long)st.samples_touched, (unsigned long long)st.dram_budget_bytes);
  // The budget holds: DRAM never has more than the limit plus one unit.
  mmtier_stats ms;
  api().get_stats(&ms);
  printf("dram_units=%zu peak=%zu limit=%zu\n", ms.units[0], ms.peak_units[0], ms.limit_bytes[0] / ms.unit_size);
  if (ms.peak_units[0] > ms.limit_bytes[0] / ms.unit_size + 1) return 12;
  return on_dram == hb.pages && st.running == 1 ? 0 : 13;
}

// Managed memory, and whether a mover thread exists.
int child_thread_check(size_t mib, bool want_thread) {
  void *p = malloc(mib * kMB);
  if (!p) return 10;
  escape(p);
  memset(p, 1, mib * kMB);
  escape(p);
  mmtier_tiering_stats st = {};
  st.size = sizeof st;
  tiering_stats()(&st);
  printf("mmtier-bg=%d running=%d\n", has_thread("mmtier-bg"), st.running);
  return has_thread("mmtier-bg") == want_thread && (st.running != 0) == want_thread ? 0 : 20;
}

// After fork the child has no mover thread; it starts one once it has
// placed 32 MiB of its own, and it can move its memory between tiers
// itself.
// The parent of the fork cases: 96 MiB malloc'd and written, its mover
// running; nullptr if not.
void *fork_parent_block() {
  void *p = malloc(96 * kMB);
  if (!p) return nullptr;
  escape(p);
  fill_pattern(p, 96 * kMB, 7);
  return has_thread("mmtier-bg") ? p : nullptr;
}

// In a fork child: a small allocation, then 48 MiB of its own (returned);
// whether a mover ran after each.
struct child_growth {
  bool mover_after_small, mover_after_big;
  char *big;
};
child_growth grow_child() {
  child_growth g;
  void *q = malloc(100000);
  escape(q);
  free(q);
  g.mover_after_small = has_thread("mmtier-bg");
  g.big = static_cast<char *>(malloc(48 * kMB));
  escape(g.big);
  memset(g.big, 2, 48 * kMB);
  g.mover_after_big = has_thread("mmtier-bg");
  return g;
}

int child_fork() {
  void *p = fork_parent_block();
  if (!p) return 21;
  pid_t pid = fork();
  if (pid == 0) {
    // Threads do not survive fork.  A child mapping units the fork froze
    // (the parent's PMem units) gets a mover of its own at its first call
    // into mmtier, to re-share its copies of them (a pre-fork worker); a
    // child of a process with none gets one only once it places memory of
    // its own (PlacesNoMoverInASmallChild below).
    const child_growth g = grow_child();
    if (!g.mover_after_small) _exit(23);
    void *big = g.big;
    mmtier_tiering_stats st = {};
    st.size = sizeof st;
    if (tiering_stats()(&st) != 0 || st.running != 1) _exit(22);
    // Move a unit of its own both ways; the data stays.  (The parent's
    // units are frozen in the child and stay where they are; its bytes,
    // the child's private view, are checked after.)
    char *mid = static_cast<char *>(big) + 24 * kMB;
    if (mover()(mid, 2 * kMB, 0) < 0 || tier_of(mid) != 0) _exit(24);
    memset(mid, 0x5c, 4096);
    if (mover()(mid, 2 * kMB, 1) < 0 || tier_of(mid) != 1) _exit(25);
    if (byte_mismatch(mid, 4096, 0x5c) != 4096) _exit(26);
    _exit(pattern_mismatch(static_cast<char *>(p), 40 * kMB, 7) == 40 * kMB ? 0 : 27);
  }
  int st = wait_status(pid);
  if (!exited_with(st, 0)) {
    printf("fork child: %s\n", describe_status(st).c_str());
    return 28;
  }
  return pattern_mismatch(p, 96 * kMB, 7) == 96 * kMB ? 0 : 29;
}

// A fork child that keeps the fork instant's view of [p, p + n) and, told
// by a byte on *go_w, checks that it still holds pattern seed: exits 0 if
// so, 3 if not, 2 if the parent closed its end first.  The child's pid, or
// -1.
pid_t fork_checker(const char *p, size_t n, uint64_t seed, int *go_w) {
  int go[2];
  if (pipe(go) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(go[1]);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    _exit(pattern_mismatch(p, n, seed) == n ? 0 : 3);
  }
  close(go[0]);
  *go_w = go[1];
  return pid;
}

// AnonHugePages of the mappings over [p, p + len) (the block and what
// shares its mappings: THP always makes the process's other memory huge
// too, and that memory is not the rebuild's); each printed when print.
long block_huge_kb(const void *p, size_t len, bool print = false) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[512];
  unsigned long lo = 0, hi = 0;
  bool in = false;
  long sum = 0;
  const auto a = reinterpret_cast<uintptr_t>(p);
  while (fgets(line, sizeof line, f)) {
    unsigned long x, y;
    long kb;
    char c;
    if (sscanf(line, "%lx-%lx%c", &x, &y, &c) == 3 && c == ' ') {
      lo = x;
      hi = y;
      in = hi > a && lo < a + len;
    } else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) {
      sum += kb;
      if (print) printf("  %lx-%lx (%lu kB): %ld kB huge\n", lo, hi, (hi - lo) / 1024, kb);
    }
  }
  fclose(f);
  return sum;
}

// All on DRAM, on huge pages; a fork child lives while the parent writes
// every other page (the kernel's copy-on-write splits the huge pages, and
// the child still shares the other half, so the mover leaves them); once
// the child is gone the mover makes them huge again, the bytes intact.
// 77: no huge pages here to begin with.
int child_fork_huge() {
  constexpr size_t kSize = 96 * kMB;
  char *p = static_cast<char *>(malloc(kSize));
  if (!p) return 10;
  escape(p);
  fill_pattern(p, kSize, 3);
  const long before = block_huge_kb(p, kSize);
  if (before < static_cast<long>(kSize / 2 / 1024)) return 77;
  int go = -1;
  const pid_t pid = fork_checker(p, kSize, 3, &go);
  if (pid < 0) return 11;
  for (size_t at = 0; at < kSize; at += 2 * 4096) p[at] = static_cast<char>(p[at] ^ 0x5a);
  const long split = block_huge_kb(p, kSize);
  if (write(go, "x", 1) != 1) return 12;
  const int wst = wait_status(pid);
  if (!exited_with(wst, 0)) {
    printf("fork child: %s\n", describe_status(wst).c_str());
    return 13;
  }
  // The block's 48 units (96 MiB) back within 8 MiB (its ends may share
  // a unit with other memory, and the mappings hold more than the block).
  const long want = static_cast<long>(kSize / 1024) - 8 * 1024;
  long after = split;
  const double deadline = now_s() + 30;
  while (now_s() < deadline && after < want) {
    usleep(50000);
    after = block_huge_kb(p, kSize);
  }
  printf("huge before=%ld split=%ld after=%ld kB\n", before, split, after);
  if (split > before / 4) return 14;  // the premise: copy-on-write split them
  if (after < want) {
    block_huge_kb(p, kSize, true);
    return 15;
  }
  for (size_t at = 0; at < kSize; at += 2 * 4096) p[at] = static_cast<char>(p[at] ^ 0x5a);
  if (pattern_mismatch(p, kSize, 3) != kSize) return 16;
  return 0;
}

// A server that forks (a BGSAVE): the parent rewrites its heap while the
// child keeps the fork instant's view; the parent's mover re-shares the
// frozen units, so its resident DRAM falls back near the ratio's share, and
// the API says so (frozen and copied bytes, re-shares).  The child's view
// must stay intact throughout.
// With TIERING_BLOCKER set, a thread of the program blocks every signal
// (as jemalloc's background thread does) and waits in read(): a re-share
// that needs the world stopped must stop it all the same.
int child_fork_reshare() {
  constexpr size_t kSize = 160 * kMB;
  static int idle[2];
  if (getenv("TIERING_BLOCKER")) {
    if (pipe(idle) != 0) return 12;
    pthread_t t;
    pthread_create(&t, nullptr, [](void *) -> void * {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, nullptr);
      char c;
      while (read(idle[0], &c, 1) < 0) {
      }
      return nullptr;
    }, nullptr);
    pthread_detach(t);
  }
  char *p = static_cast<char *>(malloc(kSize));
  if (!p) return 10;
  escape(p);
  fill_pattern(p, kSize, 7);
  int go = -1;
  const pid_t pid = fork_checker(p, kSize, 7, &go);
  if (pid < 0) return 11;
  fill_pattern(p, kSize, 9);
  const api_table &mm = api();
  mmtier_tiering_stats st = {};
  st.size = sizeof st;
  mmtier_stats ms = {};
  auto figures = [&](const char *when) {
    printf("%s: frozen=%llu copied=%llu reshares=%llu stops=%llu dram_res=%zu pmem_res=%zu\n", when,
           static_cast<unsigned long long>(st.frozen_bytes), static_cast<unsigned long long>(st.frozen_copied_bytes),
           static_cast<unsigned long long>(st.reshares), static_cast<unsigned long long>(st.reshare_stops),
           ms.resident_bytes[0], ms.resident_bytes[1]);
  };
  // Polls the figures until done() or 30 s.
  auto wait_for = [&](auto done) {
    const double deadline = now_s() + 30;
    while (now_s() < deadline) {
      usleep(50000);
      if (mm.get_stats(&ms) != 0 || tiering_stats()(&st) != 0) return false;
      if (done()) return true;
    }
    return false;
  };
  // While the child lives: the copies go to fresh slots (units the parent
  // has not written since stay frozen: they are on PMem already).
  const bool copies_gone = wait_for([&] { return st.frozen_copied_bytes < 2 * kMB && st.reshares > 0; });
  figures("child alive");
  if (!copies_gone) return 13;
  // DRAM holds about a fifth of what is resident again (start-up memory
  // and the engine's metadata on top: a third at most).
  if (ms.resident_bytes[0] * 3 > ms.resident_bytes[0] + ms.resident_bytes[1]) return 14;
  if (pattern_mismatch(p, kSize, 9) != kSize) return 15;
  if (write(go, "x", 1) != 1) return 16;
  const int wst = wait_status(pid);
  if (!exited_with(wst, 0)) {
    printf("fork child: %s\n", describe_status(wst).c_str());
    return 17;
  }
  // The child is gone: every frozen unit goes back onto its own slot.
  const bool none_frozen = wait_for([&] { return st.frozen_bytes == 0; });
  figures("child gone");
  if (!none_frozen) return 18;
  return pattern_mismatch(p, kSize, 9) == kSize ? 0 : 19;
}

// A process with no PMem units forks: the child, which maps nothing
// frozen, gets no mover for a small allocation (most such children exec
// or exit soon), only once it places memory of its own.
int child_fork_small() {
  if (!fork_parent_block()) return 21;
  pid_t pid = fork();
  if (pid == 0) {
    const child_growth g = grow_child();
    _exit(g.mover_after_small ? 31 : g.mover_after_big ? 0 : 32);
  }
  int st = wait_status(pid);
  if (!exited_with(st, 0)) {
    printf("fork child: %s\n", describe_status(st).c_str());
    return 28;
  }
  return 0;
}

// Lines of /proc/self/maps, and vm.max_map_count.
long count_maps() {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  long n = 0;
  for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
  fclose(f);
  return n;
}

long max_map_count() {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long v = -1;
  if (f) {
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

// Near vm.max_map_count the mover holds its migrations back (the
// application's own mmap would fail next), the application can still map
// memory, and once mappings are freed the mover moves the hot set again.
int child_map_count() {
  hot_block hb;
  if (!hb.make()) return 10;
  if (hb.on_dram() == hb.pages) return 11;  // placement put the hot set on PMem (24 MiB of DRAM)
  const long limit = max_map_count();
  if (limit < 4096) return 12;
  if (limit > (1L << 20)) return 77;  // too many mappings to make in a test
  const long reserve = std::min(std::max(limit / 8, 1024L), limit / 2);
  const long high = limit - reserve;
  // Fill the mappings a little past the mover's threshold (the mover's own
  // sampling adds and removes a few as it goes): pages of one range with
  // alternating protections, each call splitting off two more.
  const long target = high + 128;
  const size_t span = static_cast<size_t>(limit) * 4096;
  char *filler = static_cast<char *>(mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (filler == MAP_FAILED) return 13;
  long have = count_maps();
  size_t next = 1;
  for (int round = 0; have < target && round < 8; ++round, have = count_maps())
    for (long k = (target - have + 1) / 2; k > 0 && (next + 1) * 4096 < span; --k, next += 2)
      if (mprotect(filler + next * 4096, 4096, PROT_READ) != 0) return 14;
  printf("maps=%ld limit=%ld threshold=%ld\n", have, limit, high);
  if (have < target || have > high + reserve / 4) return 15;
  mmtier_tiering_stats st0 = {}, st = {};
  st0.size = st.size = sizeof st;
  tiering_stats()(&st0);
  // Hot data, but no migration while the mappings are this close.
  if (!hb.hammer_until([&] {
        tiering_stats()(&st);
        return st.map_count_holds >= st0.map_count_holds + 3;
      }))
    return 16;
  printf("held: holds=%llu promotions=%llu->%llu\n", (unsigned long long)st.map_count_holds,
         (unsigned long long)st0.promotions, (unsigned long long)st.promotions);
  if (st.promotions != st0.promotions || st.demotions != st0.demotions) return 17;
  // The application still has room of its own.
  void *more = malloc(16 * kMB);
  if (!more) return 18;
  memset(more, 3, 16 * kMB);
  // Room again: the hot set moves.
  munmap(filler, span);
  if (!hb.hammer_until([&] { return hb.on_dram() == hb.pages; })) return 19;
  // Published as the scan that moved them ends.
  if (!wait_counters(&st, [&] { return st.promotions > st0.promotions; })) return 21;
  printf("moved: promotions=%llu maps=%ld\n", (unsigned long long)st.promotions, count_maps());
  free(more);
  return st.promotions > st0.promotions ? 0 : 20;
}

// A daemon closing every descriptor above 2 leaves mmtier's own open: the
// fault service and the PMem file keep working.
int child_closefrom() {
  char *p = static_cast<char *>(malloc(96 * kMB));
  if (!p) return 10;
  escape(p);
  fill_pattern(p, 96 * kMB, 9);
  closefrom(3);
  char *mid = p + 40 * kMB;
  if (mover()(mid, 2 * kMB, 0) < 0 || tier_of(mid) != 0) return 31;
  if (mover()(mid, 2 * kMB, 1) < 0 || tier_of(mid) != 1) return 32;
  // New memory still reaches the PMem tier.
  char *more = static_cast<char *>(malloc(64 * kMB));
  escape(more);
  memset(more, 3, 64 * kMB);
  bool pmem = false;
  for (size_t off = 0; off < 64 * kMB; off += 2 * kMB) pmem |= tier_of(more + off) == 1;
  if (!pmem) return 33;
  return pattern_mismatch(p, 96 * kMB, 9) == 96 * kMB ? 0 : 34;
}

// Moves that fail are counted by reason.  With userfaultfd write-protection
// hidden (MMTIER_HIDE_FEATURES, as on Linux before 5.7) every demotion
// fails with EOPNOTSUPP: the hot set on PMem makes the mover
// exchange it against DRAM's cold units, demotion first.
int child_failures() {
  hot_block hb;
  if (!hb.make()) return 10;
  mmtier_tiering_stats st = {};
  st.size = sizeof st;
  if (!hb.hammer_until([&] {
        tiering_stats()(&st);
        return st.migrations_failed >= 3;
      }))
    return 41;
  unsigned long long eopnotsupp = 0, by_reason = st.failed_other;
  for (int i = 0; i < 4; ++i) {
    by_reason += st.failed_count[i];
    if (st.failed_errno[i] == EOPNOTSUPP) eopnotsupp = st.failed_count[i];
  }
  printf("failed=%llu eopnotsupp=%llu by_reason=%llu demotions=%llu\n", (unsigned long long)st.migrations_failed,
         eopnotsupp, by_reason, (unsigned long long)st.demotions);
  // The exit report (this case ends with _exit: written here).
  using report_fn = int (*)(int);
  reinterpret_cast<report_fn>(dlsym(RTLD_DEFAULT, "mmtier_report"))(2);
  return eopnotsupp == st.migrations_failed && by_reason == st.migrations_failed && st.demotions == 0 ? 0 : 40;
}

// Runs the case named by TIERING_CHILD before gtest sees the arguments.
__attribute__((constructor(65535))) void maybe_child() {
  const char *c = getenv("TIERING_CHILD");
  if (!c) return;
  int rc = 99;
  if (!strcmp(c, "hot")) rc = child_hot_set();
  else if (!strcmp(c, "big")) rc = child_thread_check(96, true);
  else if (!strcmp(c, "small")) rc = child_thread_check(4, false);
  else if (!strcmp(c, "off")) rc = child_thread_check(96, false);
  else if (!strcmp(c, "fork")) rc = child_fork();
  else if (!strcmp(c, "closefrom")) rc = child_closefrom();
  else if (!strcmp(c, "mapcount")) rc = child_map_count();
  else if (!strcmp(c, "forksmall")) rc = child_fork_small();
  else if (!strcmp(c, "forkreshare")) rc = child_fork_reshare();
  else if (!strcmp(c, "forkhuge")) rc = child_fork_huge();
  else if (!strcmp(c, "failures")) rc = child_failures();
  fflush(stdout);
  _exit(rc);
}

exec_result run_case(const char *name, std::vector<std::string> env) {
  env.push_back(std::string("TIERING_CHILD=") + name);
  return run_self({}, env);
}

}  // namespace

class Tiering : public Preloaded {};

TEST_F(Tiering, MoverBringsAHotSetToDramWithinTheBudget) {
  exec_result r = run_case("hot", {"MMTIER_DRAM_LIMIT=24M", "MMTIER_SCAN_INTERVAL=20ms", "MMTIER_MIGRATE_MBPS=0"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  unsigned long long promotions = 0, bytes = 0;
  const char *at = strstr(r.out.c_str(), "promotions=");
  ASSERT_NE(at, nullptr) << describe(r);
  sscanf(at, "promotions=%llu", &promotions);
  sscanf(strstr(r.out.c_str(), "bytes="), "bytes=%llu", &bytes);
  EXPECT_GE(promotions, 4u) << "the 8 MiB hot set is 4 units, placed on PMem first";
  EXPECT_GE(bytes, promotions * 2 * kMB / 2) << "bytes moved follow the promotions";
}

TEST_F(Tiering, MoverStartsOnlyWithEnoughMemoryAndNotWhenDisabled) {
  exec_result big = run_case("big", {});
  EXPECT_TRUE(exited_with(big.status, 0)) << describe(big);
  exec_result small = run_case("small", {});
  EXPECT_TRUE(exited_with(small.status, 0)) << describe(small);
  exec_result off = run_case("off", {"MMTIER_PROMOTE=0"});
  EXPECT_TRUE(exited_with(off.status, 0)) << describe(off);
}

TEST_F(Tiering, ChildAfterForkRunsItsOwnMoverAndMovesMemory) {
  exec_result r = run_case("fork", {});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
}

TEST_F(Tiering, ForkingParentGetsItsCopiesBackOnPmem) {
  exec_result r = run_case("forkreshare", {"MMTIER_SCAN_INTERVAL=20ms"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
}

// Huge pages split by a fork child's copy-on-write are whole again once
// the child is gone (the mover's rebuild, lib/heap/huge.cc).
TEST_F(Tiering, HugePagesSplitWhileAForkChildLivedAreRebuilt) {
  exec_result r = run_case("forkhuge", {"MMTIER_POLICY=dram-first", "MMTIER_SCAN_INTERVAL=20ms"});
  if (exited_with(r.status, 77)) GTEST_SKIP() << "no transparent huge pages here";
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
}

// Without write-protect (a DAX file, a kernel before 6.4) the re-share stops
// the world, and a thread that blocked every signal does not refuse it.
TEST_F(Tiering, ForkingParentGetsItsCopiesBackWithTheWorldStoppedPastASignalBlockingThread) {
  exec_result r = run_case("forkreshare", {"MMTIER_SCAN_INTERVAL=20ms", "MMTIER_HIDE_FEATURES=wp-unpopulated",
                                           "TIERING_BLOCKER=1"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(r.err.find("blocks the signal that stops it"), std::string::npos) << describe(r);
  // Re-shared with the world stopped, never write-protect (which cannot
  // hold a write to a page that does not exist yet).
  unsigned long long stops = 0, most = 0;
  for (size_t at = 0; (at = r.out.find(" stops=", at)) != std::string::npos; ++at)
    if (sscanf(r.out.c_str() + at, " stops=%llu", &stops) == 1 && stops > most) most = stops;
  EXPECT_GT(most, 0u) << describe(r);
}

TEST_F(Tiering, PlacesNoMoverInASmallChild) {
  // dram-first: the parent's memory is all DRAM, so the fork freezes nothing.
  exec_result r = run_case("forksmall", {"MMTIER_POLICY=dram-first"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
}

TEST_F(Tiering, MoverHoldsMigrationsBackNearTheMappingLimit) {
  exec_result r = run_case("mapcount", {"MMTIER_DRAM_LIMIT=24M", "MMTIER_SCAN_INTERVAL=20ms", "MMTIER_MIGRATE_MBPS=0"});
  if (exited_with(r.status, 77)) GTEST_SKIP() << "vm.max_map_count is over 2^20 here";
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_NE(r.err.find("vm.max_map_count"), std::string::npos) << "the pause is logged: " << describe(r);
}

TEST_F(Tiering, FailedMovesAreSaidOnceAndCountedByReason) {
  exec_result r = run_case("failures", {"MMTIER_DRAM_LIMIT=24M", "MMTIER_SCAN_INTERVAL=20ms", "MMTIER_MIGRATE_MBPS=0",
                                        "MMTIER_HIDE_FEATURES=write-protect"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  const std::string warning = "mmtier: warn: mover: a demotion failed: EOPNOTSUPP (the kernel's userfaultfd lacks";
  const size_t first = r.err.find(warning);
  EXPECT_NE(first, std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find(warning, first + 1), std::string::npos) << "said once: " << describe(r);
  EXPECT_NE(r.err.find("failed moves by reason: "), std::string::npos) << "the report: " << describe(r);
  EXPECT_NE(r.err.find(" EOPNOTSUPP (the kernel's userfaultfd lacks"), std::string::npos) << describe(r);
  // What the kernel lacks is said once at start-up and in the report.
  const std::string lack = "demotion unavailable: needs userfaultfd write-protect (Linux 5.7)";
  const size_t said = r.err.find("mmtier: warn: " + lack);
  EXPECT_NE(said, std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find("mmtier: warn: " + lack, said + 1), std::string::npos) << "said once: " << describe(r);
  EXPECT_NE(r.err.find("  kernel: " + lack), std::string::npos) << "the report: " << describe(r);
}

// PMem at its limit takes no demotion: the mover does not try (DRAM holds
// what PMem could not, beyond the ratio's share), so nothing fails.
TEST_F(Tiering, NoDemotionIsTriedWhilePmemHasNoRoom) {
  exec_result r = run_case("big", {"MMTIER_PMEM_LIMIT=8M", "MMTIER_SCAN_INTERVAL=20ms", "MMTIER_REPORT=stderr"});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
  EXPECT_EQ(r.err.find("failed"), std::string::npos) << describe(r);
}

TEST_F(Tiering, ClosingEveryDescriptorLeavesMmtiersOwnOpen) {
  exec_result r = run_case("closefrom", {});
  EXPECT_TRUE(exited_with(r.status, 0)) << describe(r);
}
