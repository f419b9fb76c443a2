// Helper for the mmtier command's tests: a program run under
// LD_PRELOAD=libmmtier.so (not linked against mmtier) that allocates a known
// amount with malloc, touches it, and prints what the public API says
// (mmtier_get_stats, mmtier_get_tiering_stats, found with dlsym) as one JSON
// line, so a test can compare `mmtier stat` with it.  Then it waits for
// commands on stdin, one per line:
//   stats   print the API's figures again (one JSON line)
//   touch   write every page of the allocation again, then print "touched"
//   exit    (or end of input) exit with status 0
// usage: cli_stats_child [--mib N]   (default 48)
// Nothing here allocates after the allocation, so the heap's counters stay
// as the API reported them while the program waits.
#include <dlfcn.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mmtier/mmtier.h"

namespace {

using get_stats_fn = int (*)(struct mmtier_stats *);
using get_tiering_fn = int (*)(struct mmtier_tiering_stats *);

char g_line[8192];
size_t g_len;

void add(const char *fmt, unsigned long long v) {
  g_len += static_cast<size_t>(snprintf(g_line + g_len, sizeof g_line - g_len, fmt, v));
}
void add_text(const char *s) { g_len += static_cast<size_t>(snprintf(g_line + g_len, sizeof g_line - g_len, "%s", s)); }

// A size_t/uint64_t figure where SIZE_MAX / UINT64_MAX means none: null.
void add_opt(const char *key, unsigned long long v) {
  if (v == ~0ull) {
    g_len += static_cast<size_t>(snprintf(g_line + g_len, sizeof g_line - g_len, "\"%s\":null,", key));
  } else {
    g_len += static_cast<size_t>(snprintf(g_line + g_len, sizeof g_line - g_len, "\"%s\":%llu,", key, v));
  }
}

void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDOUT_FILENO, p, n);
    if (w <= 0) _exit(4);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void report(get_stats_fn get_stats, get_tiering_fn get_tiering, size_t bytes) {
  struct mmtier_stats s;
  struct mmtier_tiering_stats t;
  memset(&t, 0, sizeof t);
  t.size = sizeof t;
  if (get_stats(&s) != 0 || get_tiering(&t) != 0) {
    static const char kMsg[] = "{\"error\":\"the API failed\"}\n";
    write_all(kMsg, sizeof kMsg - 1);
    _exit(3);
  }
  // When the API had returned: a resident figure published later than
  // this was measured again (a reader asked for it).
  timespec done;
  clock_gettime(CLOCK_REALTIME, &done);
  g_len = 0;
  add("{\"pid\":%llu,", static_cast<unsigned long long>(getpid()));
  add("\"api_done_unix_ns\":%llu,",
      static_cast<unsigned long long>(done.tv_sec) * 1000000000ull + static_cast<unsigned long long>(done.tv_nsec));
  add("\"allocated_bytes\":%llu,", bytes);
  add("\"unit_size\":%llu,", s.unit_size);
  for (int k = 0; k < MMTIER_TIER_COUNT; ++k) {
    const char *tier = k == 0 ? "dram" : "pmem";
    char key[64];
    snprintf(key, sizeof key, "\"%s\":{", tier);
    add_text(key);
    add("\"units\":%llu,", s.units[k]);
    add("\"peak_units\":%llu,", s.peak_units[k]);
    add("\"resident_bytes\":%llu,", s.resident_bytes[k]);
    add_opt("limit_bytes", s.limit_bytes[k] == SIZE_MAX ? ~0ull : s.limit_bytes[k]);
    g_line[g_len - 1] = '}';  // replace the trailing comma
    add_text(",");
  }
  add("\"fallbacks\":%llu,", s.fallbacks);
  add("\"mapped_mmap_bytes\":%llu,", s.mapped_mmap_bytes);
  add("\"forks\":%llu,", s.forks);
  add("\"running\":%llu,", static_cast<unsigned long long>(t.running));
  add("\"scan_interval_ns\":%llu,", t.scan_interval_ns);
  add("\"scans\":%llu,", t.scans);
  add("\"promotions\":%llu,", t.promotions);
  add("\"demotions\":%llu,", t.demotions);
  add("\"migrations_failed\":%llu,", t.migrations_failed);
  add("\"map_count_holds\":%llu,", t.map_count_holds);
  add("\"bytes_migrated\":%llu,", t.bytes_migrated);
  add("\"samples\":%llu,", t.samples);
  add("\"tracking_faults\":%llu,", t.tracking_faults);
  add_opt("dram_budget_bytes", t.dram_budget_bytes);
  add_text("\"heat_histogram\":[");
  for (int i = 0; i < MMTIER_HEAT_BUCKETS; ++i) add(i ? ",%llu" : "%llu", t.heat_histogram[i]);
  add_text("]}\n");
  write_all(g_line, g_len);
}

}  // namespace

int main(int argc, char **argv) {
  size_t mib = 48;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
      mib = strtoull(argv[++i], nullptr, 10);
    } else {
      fprintf(stderr, "usage: %s [--mib N]\n", argv[0]);
      return 2;
    }
  }
  auto get_stats = reinterpret_cast<get_stats_fn>(dlsym(RTLD_DEFAULT, "mmtier_get_stats"));
  auto get_tiering = reinterpret_cast<get_tiering_fn>(dlsym(RTLD_DEFAULT, "mmtier_get_tiering_stats"));
  if (get_stats == nullptr || get_tiering == nullptr) {
    fprintf(stderr, "cli_stats_child: the mmtier API is not there (run it under LD_PRELOAD=libmmtier.so)\n");
    return 3;
  }
  const size_t bytes = mib << 20;
  volatile char *buf = static_cast<volatile char *>(malloc(bytes));
  if (buf == nullptr) return 5;
  for (size_t off = 0; off < bytes; off += 4096) buf[off] = static_cast<char>(off >> 12);
  report(get_stats, get_tiering, bytes);

  static char in[256];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(STDIN_FILENO, in + have, sizeof in - 1 - have);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    char *nl;
    while ((nl = static_cast<char *>(memchr(in, '\n', have))) != nullptr) {
      *nl = '\0';
      if (strcmp(in, "exit") == 0) return 0;
      if (strcmp(in, "stats") == 0) report(get_stats, get_tiering, bytes);
      if (strcmp(in, "touch") == 0) {
        for (size_t off = 0; off < bytes; off += 4096) buf[off] = static_cast<char>(buf[off] + 1);
        static const char kDone[] = "touched\n";
        write_all(kDone, sizeof kDone - 1);
      }
      size_t used = static_cast<size_t>(nl - in) + 1;
      memmove(in, in + used, have - used);
      have -= used;
    }
    if (have == sizeof in - 1) have = 0;  // an overlong line: dropped
  }
  return 0;
}
