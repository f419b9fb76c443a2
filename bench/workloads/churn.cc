// Small-object churn: each thread keeps LIVE objects of 16 B..1 KiB alive
// and, OPS times, frees a randomly chosen one (random free order) and
// allocates a new one of a random size in its place.  Every object carries a
// tag in its first and last 8 bytes, checked and folded into the checksum
// when it is freed.  Threads share nothing but the allocator.
//
// usage: churn THREADS OPS_PER_THREAD [LIVE=1000] [SEED=1]
// prints: RESULT churn_<THREADS>t <ops_per_sec> <checksum>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include <atomic>
#include <vector>

#include "common.h"

namespace {

constexpr size_t kMinSize = 16;
constexpr size_t kMaxSize = 1024;

struct Slot {
  unsigned char *p;
  size_t size;
  uint64_t tag;
};

struct ThreadArgs {
  uint64_t ops;
  size_t live;
  uint64_t seed;
  std::atomic<int> *ready;
  std::atomic<bool> *go;
  uint64_t checksum;
  uint64_t corrupt;
  bool oom;
};

inline void fill(Slot &s, bench::Rng &rng) {
  s.size = rng.range(kMinSize, kMaxSize);
  s.tag = rng.next();
  s.p = static_cast<unsigned char *>(malloc(s.size));
  if (s.p == nullptr) return;
  memcpy(s.p, &s.tag, 8);
  uint64_t tail = s.tag ^ s.size;
  memcpy(s.p + s.size - 8, &tail, 8);
}

inline uint64_t drain(Slot &s, uint64_t sum, uint64_t *corrupt) {
  uint64_t head, tail;
  memcpy(&head, s.p, 8);
  memcpy(&tail, s.p + s.size - 8, 8);
  if (head != s.tag || tail != (s.tag ^ s.size)) ++*corrupt;
  free(s.p);
  s.p = nullptr;
  return bench::mix(bench::mix(sum, head), tail);
}

void *worker(void *raw) {
  ThreadArgs *a = static_cast<ThreadArgs *>(raw);
  bench::Rng rng(a->seed);
  std::vector<Slot> slots(a->live);
  uint64_t sum = 0, corrupt = 0;
  for (Slot &s : slots) {
    fill(s, rng);
    if (s.p == nullptr) { a->oom = true; return nullptr; }
  }
  a->ready->fetch_add(1);
  while (!a->go->load(std::memory_order_acquire)) sched_yield();
  for (uint64_t i = 0; i < a->ops; ++i) {
    Slot &s = slots[rng.below(a->live)];
    sum = drain(s, sum, &corrupt);
    fill(s, rng);
    if (s.p == nullptr) { a->oom = true; return nullptr; }
  }
  for (Slot &s : slots) sum = drain(s, sum, &corrupt);
  a->checksum = sum;
  a->corrupt = corrupt;
  return nullptr;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s THREADS OPS_PER_THREAD [LIVE=1000] [SEED=1]\n", argv[0]);
    return 2;
  }
  const uint64_t threads = bench::arg_u64(argc, argv, 1, 1);
  const uint64_t ops = bench::arg_u64(argc, argv, 2, 1000000);
  const uint64_t live = bench::arg_u64(argc, argv, 3, 1000);
  const uint64_t seed = bench::arg_u64(argc, argv, 4, 1);
  if (threads < 1 || threads > 64 || live < 1) {
    fprintf(stderr, "churn: THREADS must be 1..64 and LIVE at least 1\n");
    return 2;
  }
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<ThreadArgs> args(threads);
  std::vector<pthread_t> tids(threads);
  for (uint64_t t = 0; t < threads; ++t) {
    args[t] = ThreadArgs{ops, static_cast<size_t>(live), seed * 1000003 + t, &ready, &go, 0, 0, false};
    if (pthread_create(&tids[t], nullptr, worker, &args[t]) != 0) {
      fprintf(stderr, "churn: pthread_create failed\n");
      return 1;
    }
  }
  // Time only the churn loop: start when every thread has its live set.
  while (ready.load() < static_cast<int>(threads)) sched_yield();
  const double start = bench::now_seconds();
  go.store(true, std::memory_order_release);
  for (pthread_t tid : tids) pthread_join(tid, nullptr);
  const double elapsed = bench::now_seconds() - start;

  uint64_t checksum = 0, corrupt = 0;
  for (const ThreadArgs &a : args) {
    if (a.oom) {
      fprintf(stderr, "churn: malloc returned NULL\n");
      return 1;
    }
    checksum += a.checksum;  // thread order does not matter
    corrupt += a.corrupt;
  }
  if (corrupt != 0) fprintf(stderr, "churn: %llu objects had lost their tags\n", (unsigned long long)corrupt);
  const double total = static_cast<double>(ops) * static_cast<double>(threads);
  printf("churn: threads=%llu ops_per_thread=%llu live=%llu sizes=%zu..%zu elapsed=%.3fs\n",
         (unsigned long long)threads, (unsigned long long)ops, (unsigned long long)live,
         kMinSize, kMaxSize, elapsed);
  char name[32];
  snprintf(name, sizeof name, "churn_%llut", (unsigned long long)threads);
  bench::print_result(name, total / elapsed, checksum);
  return 0;
}
