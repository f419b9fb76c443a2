// Helper for the mmtier command's tests: publishes a statistics page with
// chosen figures (lib/stats/live_format.h) the way a process under libmmtier
// does: <dir>/<pid>.stats, mode 0600, mapped (with no descriptor kept) for
// as long as it runs, and the sequence lock around writes, so the command's output can be
// checked against exactly known numbers.  Prints "ready" when the page is
// published, then reads commands on stdin, one per line:
//   add FIELD N   add N to a counter (and republish), then print "ok"
//   exit          (or end of input) remove the file and exit
// usage: cli_fake_publisher --dir DIR [--comm NAME] [--pid N] [--stale]
//                           [FIELD=VALUE ...]
//   --pid N   name the file and the page for pid N instead of our own
//   --stale   write the file and exit at once (a
//             file left by a process that died)
//   FIELD     one of the names in kFields below; VALUE a number or "none"
#include "stats/live_format.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace pub = mmtier::live_format;

namespace {

pub::stats_page g_page;

struct field {
  const char *name;
  uint64_t *u64;
  uint32_t *u32;
};

const field kFields[] = {
    {"dram_placed", &g_page.tiers[0].placed_bytes, nullptr},
    {"pmem_placed", &g_page.tiers[1].placed_bytes, nullptr},
    {"dram_peak", &g_page.tiers[0].peak_bytes, nullptr},
    {"pmem_peak", &g_page.tiers[1].peak_bytes, nullptr},
    {"dram_policy", &g_page.tiers[0].policy_bytes, nullptr},
    {"pmem_policy", &g_page.tiers[1].policy_bytes, nullptr},
    {"fail0_errno", nullptr, reinterpret_cast<uint32_t *>(&g_page.failures[0].err)},
    {"fail0_count", &g_page.failures[0].count, nullptr},
    {"fail1_errno", nullptr, reinterpret_cast<uint32_t *>(&g_page.failures[1].err)},
    {"fail1_count", &g_page.failures[1].count, nullptr},
    {"failed_other", &g_page.failed_other, nullptr},
    {"dram_resident", &g_page.tiers[0].resident_bytes, nullptr},
    {"pmem_resident", &g_page.tiers[1].resident_bytes, nullptr},
    {"dram_limit", &g_page.tiers[0].limit_bytes, nullptr},
    {"pmem_limit", &g_page.tiers[1].limit_bytes, nullptr},
    {"resident_ns", &g_page.resident_ns, nullptr},
    {"fallbacks", &g_page.fallbacks, nullptr},
    {"mmap_bytes", &g_page.mmap_bytes, nullptr},
    {"forks", &g_page.forks, nullptr},
    {"frozen_bytes", &g_page.frozen_bytes, nullptr},
    {"frozen_copied_bytes", &g_page.frozen_copied_bytes, nullptr},
    {"reshares", &g_page.reshares, nullptr},
    {"reshare_bytes", &g_page.reshare_bytes, nullptr},
    {"reshare_stops", &g_page.reshare_stops, nullptr},
    {"reshare_pause_max_ns", &g_page.reshare_pause_max_ns, nullptr},
    {"reshare_pause_total_ns", &g_page.reshare_pause_total_ns, nullptr},
    {"reshare_stop_refusals", &g_page.reshare_stop_refusals, nullptr},
    {"reshare_failed", &g_page.reshare_failed, nullptr},
    {"mover_running", nullptr, &g_page.mover_running},
    {"scans", &g_page.scans, nullptr},
    {"promotions", &g_page.promotions, nullptr},
    {"demotions", &g_page.demotions, nullptr},
    {"migrations_failed", &g_page.migrations_failed, nullptr},
    {"map_count_holds", &g_page.map_count_holds, nullptr},
    {"bytes_migrated", &g_page.bytes_migrated, nullptr},
    {"migrate_rate_bps", &g_page.migrate_rate_bps, nullptr},
    {"samples", &g_page.samples, nullptr},
    {"samples_touched", &g_page.samples_touched, nullptr},
    {"tracking_faults", &g_page.tracking_faults, nullptr},
    {"cpu_ns", &g_page.cpu_ns, nullptr},
    {"dram_budget", &g_page.dram_budget_bytes, nullptr},
    {"policy", nullptr, &g_page.policy},
    {"ratio_dram", nullptr, &g_page.ratio_dram},
    {"ratio_pmem", nullptr, &g_page.ratio_pmem},
    {"promote", nullptr, &g_page.promote},
    {"unit_size", &g_page.unit_size, nullptr},
    {"scan_interval_ns", &g_page.scan_interval_ns, nullptr},
    {"migrate_limit_bps", &g_page.migrate_limit_bps, nullptr},
    {"heat0", &g_page.heat_histogram[0], nullptr},
    {"heat1", &g_page.heat_histogram[1], nullptr},
    {"heat2", &g_page.heat_histogram[2], nullptr},
    {"heat3", &g_page.heat_histogram[3], nullptr},
    {"heat4", &g_page.heat_histogram[4], nullptr},
    {"heat5", &g_page.heat_histogram[5], nullptr},
    {"heat6", &g_page.heat_histogram[6], nullptr},
    {"heat7", &g_page.heat_histogram[7], nullptr},
};

const field *find_field(const char *name, size_t len) {
  for (const field &f : kFields)
    if (strlen(f.name) == len && strncmp(f.name, name, len) == 0) return &f;
  return nullptr;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const char *what) {
  fprintf(stderr, "cli_fake_publisher: %s\n", what);
  exit(2);
}

}  // namespace

int main(int argc, char **argv) {
  std::string dir, comm = "fakeproc";
  int pid = static_cast<int>(getpid());
  bool stale = false;
  g_page.magic = pub::kMagic;
  g_page.version = pub::kVersion;
  g_page.size = sizeof g_page;
  g_page.uid = static_cast<uint32_t>(geteuid());
  g_page.started_ns = now_ns();
  g_page.ratio_dram = 1;
  g_page.ratio_pmem = 4;
  g_page.promote = 1;
  g_page.unit_size = 2u << 20;
  g_page.scan_interval_ns = 100000000;
  g_page.migrate_limit_bps = 256u << 20;
  for (auto &t : g_page.tiers) t.resident_bytes = t.limit_bytes = pub::kNone;
  g_page.dram_budget_bytes = pub::kNone;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (strcmp(a, "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (strcmp(a, "--comm") == 0 && i + 1 < argc) {
      comm = argv[++i];
    } else if (strcmp(a, "--pid") == 0 && i + 1 < argc) {
      pid = atoi(argv[++i]);
    } else if (strcmp(a, "--stale") == 0) {
      stale = true;
    } else if (const char *eq = strchr(a, '='); eq != nullptr) {
      const field *f = find_field(a, static_cast<size_t>(eq - a));
      if (f == nullptr) die("unknown field");
      uint64_t v = strcmp(eq + 1, "none") == 0 ? pub::kNone : strtoull(eq + 1, nullptr, 10);
      if (f->u64) *f->u64 = v;
      else *f->u32 = static_cast<uint32_t>(v);
    } else {
      die("usage: cli_fake_publisher --dir DIR [--comm NAME] [--pid N] [--stale] [FIELD=VALUE ...]");
    }
  }
  if (dir.empty()) die("--dir is required");
  g_page.pid = pid;
  strncpy(g_page.comm, comm.c_str(), sizeof g_page.comm - 1);
  g_page.updated_ns = now_ns();

  std::string path = dir + "/" + std::to_string(pid) + ".stats";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) die("cannot create the file");
  if (ftruncate(fd, 4096) != 0) die("ftruncate");
  auto *page = static_cast<pub::stats_page *>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (page == MAP_FAILED) die("mmap");
  close(fd);
  memcpy(page, &g_page, sizeof g_page);
  if (stale) return 0;  // the file stays as a dead process leaves it
  printf("ready\n");
  fflush(stdout);

  char line[256];
  while (fgets(line, sizeof line, stdin) != nullptr) {
    char name[64];
    unsigned long long n;
    if (strncmp(line, "exit", 4) == 0) break;
    if (sscanf(line, "add %63s %llu", name, &n) == 2) {
      const field *f = find_field(name, strlen(name));
      if (f == nullptr) die("unknown field");
      __atomic_store_n(&page->seq, page->seq + 1, __ATOMIC_RELAXED);
      __atomic_thread_fence(__ATOMIC_RELEASE);
      if (f->u64) *reinterpret_cast<uint64_t *>(reinterpret_cast<char *>(page) +
                                                (reinterpret_cast<char *>(f->u64) - reinterpret_cast<char *>(&g_page))) += n;
      else *reinterpret_cast<uint32_t *>(reinterpret_cast<char *>(page) +
                                         (reinterpret_cast<char *>(f->u32) - reinterpret_cast<char *>(&g_page))) +=
               static_cast<uint32_t>(n);
      page->updated_ns = now_ns();
      __atomic_store_n(&page->seq, page->seq + 1, __ATOMIC_RELEASE);
      printf("ok\n");
      fflush(stdout);
    }
  }
  unlink(path.c_str());
  return 0;
}
