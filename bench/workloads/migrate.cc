// Migration throughput: moves a malloc'd region between the tiers with
// mmtier_move() (found with dlsym: run under LD_PRELOAD=libmmtier.so) and
// reports GB/s per direction, idle and while a writer thread updates the
// region; every byte is checked afterwards.
//
//   migrate [MiB=256] [rounds=5]
//
// Prints one line per round and direction, then
//   RESULT migrate <promote GB/s idle> <demote GB/s idle> <promote loaded> <demote loaded>
// (medians).  Run with MMTIER_PROMOTE=0 so the background mover stays out.
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using move_fn = long (*)(const void *, size_t, int);
using tier_fn = int (*)(const void *);

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char **argv) {
  const size_t mib = argc > 1 ? strtoul(argv[1], nullptr, 10) : 256;
  const int rounds = argc > 2 ? atoi(argv[2]) : 5;
  auto move = reinterpret_cast<move_fn>(dlsym(RTLD_DEFAULT, "mmtier_move"));
  auto tier_of = reinterpret_cast<tier_fn>(dlsym(RTLD_DEFAULT, "mmtier_tier_of"));
  if (!move || !tier_of) {
    fprintf(stderr, "migrate: mmtier_move not found: run under LD_PRELOAD=libmmtier.so\n");
    return 2;
  }
  const size_t bytes = mib << 20;
  const size_t words = bytes / 8;
  auto *w = static_cast<uint64_t *>(malloc(bytes));
  if (!w) return 2;
  for (size_t i = 0; i < words; ++i) w[i] = i * 0x9E3779B97F4A7C15ull;
  // Only the whole units inside the block move; the check covers them all.
  std::vector<double> rate[2][2];  // [loaded][to tier]
  uint64_t writer_ops = 0;
  for (int loaded = 0; loaded < 2; ++loaded) {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> ops{0};
    std::thread writer;
    if (loaded) {
      // Adds 1 to words at a stride; the final check accounts for it.
      writer = std::thread([&] {
        uint64_t n = 0;
        size_t i = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          __atomic_fetch_add(&w[i], 1, __ATOMIC_RELAXED);
          i = (i + 4099) % words;
          ++n;
        }
        ops = n;
      });
    }
    for (int r = 0; r < rounds; ++r) {
      for (int to : {1, 0}) {
        const double t0 = now_s();
        const long moved = move(w, bytes, to);
        const double t1 = now_s();
        if (moved < 0) {
          perror("mmtier_move");
          return 1;
        }
        const double gbps = static_cast<double>(moved) / (t1 - t0) / 1e9;
        rate[loaded][to].push_back(gbps);
        printf("%s %s: %.1f MiB in %.1f ms = %.2f GB/s\n", loaded ? "loaded" : "idle  ",
               to ? "demote " : "promote", static_cast<double>(moved) / (1 << 20), (t1 - t0) * 1e3, gbps);
      }
    }
    if (loaded) {
      stop = true;
      writer.join();
      writer_ops = ops.load();
    }
  }
  // Check: every word is its initial value plus the writer's increments.
  std::vector<uint64_t> adds(words, 0);
  for (uint64_t n = 0, i = 0; n < writer_ops; ++n, i = (i + 4099) % words) adds[i]++;
  size_t bad = 0;
  for (size_t i = 0; i < words; ++i) bad += w[i] != i * 0x9E3779B97F4A7C15ull + adds[i];
  printf("writer: %llu updates during the loaded moves; %zu words wrong\n",
         static_cast<unsigned long long>(writer_ops), bad);
  if (bad) {
    printf("MISMATCH\n");
    return 1;
  }
  printf("RESULT migrate %.2f %.2f %.2f %.2f\n", median(rate[0][0]), median(rate[0][1]), median(rate[1][0]),
         median(rate[1][1]));
  free(w);
  return 0;
}
