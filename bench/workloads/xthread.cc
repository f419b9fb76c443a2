// Cross-thread free (producer/consumer, larson-like): in each of PAIRS pairs
// of threads, the producer allocates OBJECTS objects of 16 B..1 KiB, tags
// them and passes them through a bounded single-producer/single-consumer
// ring (QUEUE slots; lock-free, with a condition variable to sleep on when
// full or empty) to the consumer, which checks the tags and
// frees them.  Every block is therefore freed by a thread other than the one
// that allocated it, the case thread caches handle worst.
//
// usage: xthread OBJECTS_PER_PAIR [PAIRS=1] [QUEUE=1024] [SEED=1]
// prints: RESULT xthread <objects_per_sec> <checksum>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "common.h"

namespace {

constexpr size_t kMinSize = 16;
constexpr size_t kMaxSize = 1024;

struct Item {
  unsigned char *p;
  size_t size;
  uint64_t tag;
};

// Single-producer single-consumer ring; capacity is a power of two.  A side
// that finds the ring full (producer) or empty (consumer) spins briefly and
// then sleeps on a condition variable until the other side makes progress,
// so that on a busy 2-core machine the two threads hand the core to each
// other instead of burning time slices in sched_yield.
class Ring {
 public:
  explicit Ring(size_t capacity) : mask_(capacity - 1), items_(new Item[capacity]) {}

  void push(const Item &it) {
    const size_t h = head_.load(std::memory_order_relaxed);
    if (h - tail_cache_ > mask_) {
      wait_until([&] { return h - tail_.load() <= mask_; }, &producer_waiting_);
      tail_cache_ = tail_.load(std::memory_order_acquire);
    }
    items_[h & mask_] = it;
    head_.store(h + 1, std::memory_order_seq_cst);
    wake(&consumer_waiting_);
  }

  Item pop() {
    const size_t t = tail_.load(std::memory_order_relaxed);
    if (t == head_cache_) {
      wait_until([&] { return head_.load() != t; }, &consumer_waiting_);
      head_cache_ = head_.load(std::memory_order_acquire);
    }
    Item it = items_[t & mask_];
    tail_.store(t + 1, std::memory_order_seq_cst);
    wake(&producer_waiting_);
    return it;
  }

 private:
  template <class Ready>
  void wait_until(Ready ready, std::atomic<bool> *waiting) {
    for (int i = 0; i < 2000; ++i) {
      if (ready()) return;
      __builtin_ia32_pause();
    }
    std::unique_lock<std::mutex> lock(mu_);
    waiting->store(true, std::memory_order_seq_cst);
    while (!ready()) cv_.wait(lock);
    waiting->store(false, std::memory_order_relaxed);
  }
  void wake(std::atomic<bool> *waiting) {
    if (waiting->load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
  }

  const size_t mask_;
  std::unique_ptr<Item[]> items_;
  alignas(64) std::atomic<size_t> head_{0};
  size_t tail_cache_ = 0;  // producer's view of tail_
  alignas(64) std::atomic<size_t> tail_{0};
  size_t head_cache_ = 0;  // consumer's view of head_
  alignas(64) std::atomic<bool> producer_waiting_{false};
  std::atomic<bool> consumer_waiting_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

struct Pair {
  uint64_t objects;
  uint64_t seed;
  Ring *ring;
  std::atomic<bool> *go;
  uint64_t checksum = 0;
  uint64_t corrupt = 0;
  bool oom = false;
};

void *producer(void *raw) {
  Pair *pr = static_cast<Pair *>(raw);
  bench::Rng rng(pr->seed);
  while (!pr->go->load(std::memory_order_acquire)) sched_yield();
  for (uint64_t i = 0; i < pr->objects; ++i) {
    Item it;
    it.size = rng.range(kMinSize, kMaxSize);
    it.tag = rng.next();
    it.p = static_cast<unsigned char *>(malloc(it.size));
    if (it.p == nullptr) {
      pr->oom = true;
      it.size = 0;  // tells the consumer to stop
    } else {
      memcpy(it.p, &it.tag, 8);
      uint64_t tail = it.tag ^ it.size;
      memcpy(it.p + it.size - 8, &tail, 8);
    }
    pr->ring->push(it);
    if (it.p == nullptr) break;
  }
  return nullptr;
}

void *consumer(void *raw) {
  Pair *pr = static_cast<Pair *>(raw);
  uint64_t sum = 0, corrupt = 0;
  for (uint64_t i = 0; i < pr->objects; ++i) {
    const Item it = pr->ring->pop();
    if (it.p == nullptr) break;
    uint64_t head, tail;
    memcpy(&head, it.p, 8);
    memcpy(&tail, it.p + it.size - 8, 8);
    if (head != it.tag || tail != (it.tag ^ it.size)) ++corrupt;
    sum = bench::mix(bench::mix(sum, head), tail);
    free(it.p);
  }
  pr->checksum = sum;
  pr->corrupt = corrupt;
  return nullptr;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s OBJECTS_PER_PAIR [PAIRS=1] [QUEUE=1024] [SEED=1]\n", argv[0]);
    return 2;
  }
  const uint64_t objects = bench::arg_u64(argc, argv, 1, 1000000);
  const uint64_t pairs = bench::arg_u64(argc, argv, 2, 1);
  const uint64_t queue = bench::arg_u64(argc, argv, 3, 1024);
  const uint64_t seed = bench::arg_u64(argc, argv, 4, 1);
  if (pairs < 1 || pairs > 32 || queue < 2 || (queue & (queue - 1)) != 0) {
    fprintf(stderr, "xthread: PAIRS must be 1..32 and QUEUE a power of two >= 2\n");
    return 2;
  }
  std::atomic<bool> go{false};
  std::vector<std::unique_ptr<Ring>> rings;
  std::vector<Pair> prs(pairs);
  std::vector<pthread_t> tids;
  for (uint64_t i = 0; i < pairs; ++i) {
    rings.emplace_back(new Ring(queue));
    prs[i].objects = objects;
    prs[i].seed = seed * 1000003 + i;
    prs[i].ring = rings.back().get();
    prs[i].go = &go;
  }
  for (uint64_t i = 0; i < pairs; ++i) {
    pthread_t a, b;
    if (pthread_create(&a, nullptr, producer, &prs[i]) != 0 ||
        pthread_create(&b, nullptr, consumer, &prs[i]) != 0) {
      fprintf(stderr, "xthread: pthread_create failed\n");
      return 1;
    }
    tids.push_back(a);
    tids.push_back(b);
  }
  const double start = bench::now_seconds();
  go.store(true, std::memory_order_release);
  for (pthread_t t : tids) pthread_join(t, nullptr);
  const double elapsed = bench::now_seconds() - start;
  uint64_t checksum = 0, corrupt = 0;
  for (const Pair &p : prs) {
    if (p.oom) {
      fprintf(stderr, "xthread: malloc returned NULL\n");
      return 1;
    }
    checksum += p.checksum;
    corrupt += p.corrupt;
  }
  if (corrupt != 0) fprintf(stderr, "xthread: %llu objects had lost their tags\n", (unsigned long long)corrupt);
  printf("xthread: pairs=%llu objects_per_pair=%llu queue=%llu sizes=%zu..%zu elapsed=%.3fs\n",
         (unsigned long long)pairs, (unsigned long long)objects, (unsigned long long)queue,
         kMinSize, kMaxSize, elapsed);
  bench::print_result("xthread", static_cast<double>(objects * pairs) / elapsed, checksum);
  return 0;
}
