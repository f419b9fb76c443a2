// Threads under LD_PRELOAD=libmmtier.so: concurrent allocation of random
// sizes with content checks, short-lived threads freeing each other's
// memory, detached threads exiting while others allocate, a thread created
// first thing in main, a thread allocating while the process makes its first
// API call, and signal handlers that allocate.
#include "preload_api.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>

#include <atomic>
#include <cmath>
#include <deque>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace preload_test;

class Threads : public Preloaded {};

// A block whose contents identify it: a header word (id) at both ends and
// every other byte equal to a value derived from the id.
struct tagged {
  unsigned char *p = nullptr;
  size_t size = 0;
  uint64_t id = 0;
};

inline unsigned char tag_value(uint64_t id) { return static_cast<unsigned char>(id * 0x9e3779b1u >> 7); }

// size >= 16
bool make_tagged(tagged &b, size_t size, uint64_t id) {
  b.p = static_cast<unsigned char *>(malloc(size));
  if (!b.p) return false;
  b.size = size;
  b.id = id;
  memset(b.p, tag_value(id), size);
  memcpy(b.p, &id, 8);
  memcpy(b.p + size - 8, &id, 8);
  return true;
}

// Re-marks a block (after realloc) at its new address and size.
void retag(tagged &b, unsigned char *p, size_t size) {
  b.p = p;
  b.size = size;
  memset(p, tag_value(b.id), size);
  memcpy(p, &b.id, 8);
  memcpy(p + size - 8, &b.id, 8);
}

bool check_tagged(const tagged &b) {
  uint64_t head, tail;
  memcpy(&head, b.p, 8);
  memcpy(&tail, b.p + b.size - 8, 8);
  if (head != b.id || tail != b.id) return false;
  return byte_mismatch(b.p + 8, b.size - 16, tag_value(b.id)) == b.size - 16;
}

// Log-uniform size in [lo, hi].
size_t random_size(std::mt19937_64 &rng, size_t lo, size_t hi) {
  std::uniform_real_distribution<double> d(std::log(double(lo)), std::log(double(hi)));
  size_t s = static_cast<size_t>(std::exp(d(rng)));
  return s < lo ? lo : s > hi ? hi : s;
}

// Checks a block's contents, counting it in errors if they are wrong, and
// frees it.  Nothing for an empty slot.
void free_checked(tagged &b, std::atomic<size_t> &errors) {
  if (b.p && !check_tagged(b)) errors.fetch_add(1);
  free(b.p);
  b.p = nullptr;
}

// Replaces the block in slot (checked and freed) with a new tagged block of
// random size in [16, max_size]; a failed allocation counts in errors and
// leaves the slot empty.
void replace_tagged(tagged &slot, std::mt19937_64 &rng, size_t max_size, uint64_t id,
                    std::atomic<size_t> &errors) {
  free_checked(slot, errors);
  if (!make_tagged(slot, random_size(rng, 16, max_size), id)) errors.fetch_add(1);
}

void free_all_checked(std::vector<tagged> &blocks, std::atomic<size_t> &errors) {
  for (tagged &b : blocks) free_checked(b, errors);
}

// ---- a thread created before anything else in main ------------------------

struct early_result {
  std::atomic<size_t> ops{0}, errors{0};
  void *kept = nullptr;
  size_t kept_size = 0;
};
early_result g_early;
pthread_t g_early_thread;
bool g_early_started = false, g_early_joined = false;

void *early_thread(void *) {
  std::mt19937_64 rng(11);
  std::vector<tagged> live(64);
  for (size_t i = 0; i < 20000; ++i) {
    replace_tagged(live[i % live.size()], rng, 64 * kKiB, i + 1, g_early.errors);
    g_early.ops.fetch_add(1, std::memory_order_relaxed);
  }
  free_all_checked(live, g_early.errors);
  g_early.kept_size = 100000;
  g_early.kept = malloc(g_early.kept_size);
  if (g_early.kept) memset(g_early.kept, 0x6d, g_early.kept_size);
  return nullptr;
}

TEST_F(Threads, ThreadCreatedFirstInMainWorks) {
  ASSERT_TRUE(g_early_started) << "pthread_create at the start of main failed";
  ASSERT_EQ(pthread_join(g_early_thread, nullptr), 0);
  g_early_joined = true;
  EXPECT_EQ(g_early.ops.load(), 20000u);
  EXPECT_EQ(g_early.errors.load(), 0u) << "blocks of the early thread lost their contents";
  ASSERT_NE(g_early.kept, nullptr);
  EXPECT_EQ(byte_mismatch(g_early.kept, g_early.kept_size, 0x6d), g_early.kept_size);
  int t = tier_of(g_early.kept);
  EXPECT_TRUE(t == 0 || t == 1) << "memory of the early thread: tier " << t;
  free(g_early.kept);
}

// ---- many threads, random sizes ---------------------------------------------

TEST_F(Threads, EightThreadsRandomSizesKeepTheirContents) {
  constexpr int kThreads = 8;
  constexpr size_t kOps = 1500, kLive = 24;
  std::atomic<size_t> errors{0}, null_results{0}, unmanaged{0}, ops{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + static_cast<uint64_t>(t));
      std::vector<tagged> live(kLive);
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together
      for (size_t i = 0; i < kOps; ++i) {
        tagged &slot = live[rng() % kLive];
        free_checked(slot, errors);
        const uint64_t id = (static_cast<uint64_t>(t) << 32) | i;
        if (!make_tagged(slot, random_size(rng, 16, kMiB), id)) {
          null_results.fetch_add(1);
          continue;
        }
        int tier = tier_of(slot.p);
        if (tier != 0 && tier != 1) unmanaged.fetch_add(1);
        // Sometimes grow or shrink it with realloc.
        if (i % 7 == 0) {
          const size_t ns = random_size(rng, 16, kMiB);
          auto *q = static_cast<unsigned char *>(realloc(slot.p, ns));
          if (!q) {
            null_results.fetch_add(1);
          } else {
            const size_t keep = slot.size < ns ? slot.size : ns;
            uint64_t head;
            memcpy(&head, q, 8);
            if (head != id || byte_mismatch(q + 8, keep - 16, tag_value(id)) != keep - 16)
              errors.fetch_add(1);
            retag(slot, q, ns);
          }
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
      free_all_checked(live, errors);
    });
  }
  for (auto &th : threads) th.join();
  EXPECT_EQ(null_results.load(), 0u) << "allocations returned NULL";
  EXPECT_EQ(errors.load(), 0u) << errors.load() << " blocks lost their contents (overlapping blocks?)";
  EXPECT_EQ(unmanaged.load(), 0u) << unmanaged.load() << " of " << ops.load() << " blocks not on a tier";
  EXPECT_EQ(ops.load(), kThreads * kOps);
}

// ---- short-lived threads with cross-thread frees ------------------------------

struct handoff_queue {
  std::mutex m;
  std::deque<tagged> q;
  void push(const tagged &b) {
    std::lock_guard<std::mutex> g(m);
    q.push_back(b);
  }
  bool pop(tagged &b) {
    std::lock_guard<std::mutex> g(m);
    if (q.empty()) return false;
    b = q.front();
    q.pop_front();
    return true;
  }
};

TEST_F(Threads, ShortLivedThreadsFreeEachOthersMemory) {
  constexpr int kTotal = 200, kBatch = 8;
  handoff_queue queue;
  std::atomic<size_t> errors{0}, nulls{0}, foreign_frees{0};
  std::atomic<uint64_t> next_id{1};
  auto body = [&](int index) {
    std::mt19937_64 rng(static_cast<uint64_t>(index) * 7919);
    std::vector<tagged> mine;
    for (int i = 0; i < 40; ++i) {
      tagged b;
      if (!make_tagged(b, random_size(rng, 16, 256 * kKiB), next_id.fetch_add(1))) {
        nulls.fetch_add(1);
        continue;
      }
      if (i % 2) queue.push(b);  // for another thread to free
      else mine.push_back(b);
    }
    for (int i = 0; i < 20; ++i) {
      tagged b;
      if (!queue.pop(b)) break;
      free_checked(b, errors);
      foreign_frees.fetch_add(1);
    }
    free_all_checked(mine, errors);
  };
  for (int done = 0; done < kTotal; done += kBatch) {
    std::vector<pthread_t> ids;
    std::vector<int> index(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      index[i] = done + i;
      pthread_t th;
      auto trampoline = [](void *arg) -> void * {
        auto *pair = static_cast<std::pair<decltype(body) *, int> *>(arg);
        (*pair->first)(pair->second);
        delete pair;
        return nullptr;
      };
      auto *arg = new std::pair<decltype(body) *, int>(&body, done + i);
      ASSERT_EQ(pthread_create(&th, nullptr, trampoline, arg), 0);
      ids.push_back(th);
    }
    for (pthread_t th : ids) ASSERT_EQ(pthread_join(th, nullptr), 0);
  }
  // Whatever is left was allocated by threads that have exited.
  tagged b;
  size_t left = 0;
  while (queue.pop(b)) {
    free_checked(b, errors);
    ++left;
  }
  EXPECT_EQ(nulls.load(), 0u);
  EXPECT_EQ(errors.load(), 0u) << errors.load() << " handed-off blocks lost their contents";
  EXPECT_GT(foreign_frees.load() + left, 0u);
  EXPECT_EQ(foreign_frees.load() + left, size_t{kTotal} * 20);
}

// ---- detached threads ---------------------------------------------------------

std::atomic<size_t> g_detached_errors{0};
sem_t g_detached_done;

struct exit_allocator {
  ~exit_allocator() {
    // Runs while the thread exits: allocation must still work.
    void *p = malloc(5000);
    if (!p) g_detached_errors.fetch_add(1);
    else memset(p, 1, 5000);
    free(p);
    sem_post(&g_detached_done);
  }
};
thread_local exit_allocator t_exit_allocator;

void *detached_body(void *arg) {
  const auto seed = reinterpret_cast<uintptr_t>(arg);
  std::mt19937_64 rng(seed);
  std::vector<tagged> live(16);
  for (size_t i = 0; i < 400; ++i)
    replace_tagged(live[i % live.size()], rng, 128 * kKiB, (seed << 32) | i, g_detached_errors);
  free_all_checked(live, g_detached_errors);
  (void)&t_exit_allocator;  // constructs the thread_local, so its destructor runs at exit
  return nullptr;
}

TEST_F(Threads, DetachedThreadsExitWhileOthersAllocate) {
  constexpr int kDetached = 40;
  ASSERT_EQ(sem_init(&g_detached_done, 0, 0), 0);
  g_detached_errors = 0;
  std::atomic<bool> stop{false};
  std::atomic<size_t> worker_ops[2] = {0, 0}, worker_errors{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(500 + static_cast<uint64_t>(w));
      std::vector<tagged> live(32);
      uint64_t id = 1;
      while (!stop.load(std::memory_order_relaxed)) {
        replace_tagged(live[rng() % live.size()], rng, 512 * kKiB, id++, worker_errors);
        worker_ops[w].fetch_add(1, std::memory_order_relaxed);
      }
      free_all_checked(live, worker_errors);
    });
  }
  // The workers are running before the detached threads start.
  while (worker_ops[0].load() < 100 || worker_ops[1].load() < 100) std::this_thread::yield();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int created = 0;
  for (int i = 0; i < kDetached; ++i) {
    pthread_t th;
    if (pthread_create(&th, &attr, detached_body, reinterpret_cast<void *>(uintptr_t(i + 1))) == 0) ++created;
  }
  pthread_attr_destroy(&attr);
  EXPECT_EQ(created, kDetached);
  for (int i = 0; i < created; ++i)
    while (sem_wait(&g_detached_done) != 0 && errno == EINTR) {
    }
  const size_t during[2] = {worker_ops[0].load(), worker_ops[1].load()};
  // A little more work after the last detached thread's exit handler ran.
  while (worker_ops[0].load() < during[0] + 100 || worker_ops[1].load() < during[1] + 100)
    std::this_thread::yield();
  stop = true;
  for (auto &w : workers) w.join();
  EXPECT_EQ(g_detached_errors.load(), 0u) << "detached threads: allocation failures or corrupted blocks";
  EXPECT_EQ(worker_errors.load(), 0u) << "worker threads: allocation failures or corrupted blocks";
}

// ---- the first API call while another thread allocates ------------------------

int first_api_scenario() {
  std::atomic<bool> stop{false};
  std::atomic<size_t> ops{0}, errors{0};
  std::atomic<void *> latest{nullptr};
  std::thread allocator([&] {
    std::mt19937_64 rng(3);
    std::vector<tagged> live(32);
    uint64_t id = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      tagged &slot = live[rng() % live.size()];
      replace_tagged(slot, rng, 256 * kKiB, id++, errors);
      latest.store(slot.p);
      ops.fetch_add(1);
    }
    free_all_checked(live, errors);
  });
  while (ops.load() < 200) std::this_thread::yield();
  // The first use of the API in this process, while the thread allocates.
  const size_t before = ops.load();
  auto get_stats = reinterpret_cast<int (*)(mmtier_stats *)>(dlsym(RTLD_DEFAULT, "mmtier_get_stats"));
  auto resident = reinterpret_cast<size_t (*)(int)>(dlsym(RTLD_DEFAULT, "mmtier_resident_bytes"));
  auto limit = reinterpret_cast<size_t (*)(int)>(dlsym(RTLD_DEFAULT, "mmtier_tier_limit"));
  auto tier = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "mmtier_tier_of"));
  int problems = 0;
  if (!get_stats || !resident || !limit || !tier) {
    printf("api missing\n");
    problems++;
  } else {
    mmtier_stats st;
    for (int i = 0; i < 20; ++i) {
      if (get_stats(&st) != 0) problems++;
      if (resident(0) + resident(1) == 0) problems++;
      (void)limit(0);
      int t = tier(latest.load());
      (void)t;
    }
    if (st.unit_size == 0) problems++;
  }
  const size_t during = ops.load() - before;
  stop = true;
  allocator.join();
  printf("first-api problems=%d errors=%zu ops=%zu during=%zu\n", problems, errors.load(), ops.load(),
         during);
  return problems == 0 && errors.load() == 0 ? 0 : 1;
}

TEST_F(Threads, FirstApiCallWhileAnotherThreadAllocates) {
  exec_result r = run_self({"--scenario=first-api"});
  EXPECT_TRUE(exited_with(r.status, 0))
      << describe_status(r.status) << "\nstdout: " << r.out << "\nstderr: " << r.err;
  EXPECT_NE(r.out.find("first-api problems=0 errors=0"), std::string::npos) << r.out << r.err;
}

// ---- signal handlers that allocate --------------------------------------------

std::atomic<size_t> g_sig_ok{0}, g_sig_bad{0};
int g_ack_fd = -1;

void allocating_handler(int) {
  const int saved = errno;
  bool ok = true;
  for (size_t size : {size_t{24}, size_t{1000}, size_t{70000}, size_t{600000}}) {
    auto *p = static_cast<unsigned char *>(malloc(size));
    if (!p) {
      ok = false;
      continue;
    }
    memset(p, 0x3a, size);
    ok = ok && byte_mismatch(p, size, 0x3a) == size;
    free(p);
  }
  void *c = calloc(100, 10);
  ok = ok && c && zero_mismatch(c, 1000) == 1000;
  free(c);
  auto *n = new (std::nothrow) int[100];
  ok = ok && n;
  delete[] n;
  (ok ? g_sig_ok : g_sig_bad).fetch_add(1);
  if (g_ack_fd >= 0) {
    char a = 'a';
    (void)!write(g_ack_fd, &a, 1);
  }
  errno = saved;
}

TEST_F(Threads, SignalHandlerMayAllocateOutsideMalloc) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = allocating_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  g_sig_ok = 0;
  g_sig_bad = 0;
  // raise() from the main thread, between allocations.
  std::vector<void *> held;
  for (int i = 0; i < 300; ++i) {
    held.push_back(malloc(64 + static_cast<size_t>(i)));
    ASSERT_EQ(raise(SIGUSR1), 0);
  }
  for (void *p : held) free(p);
  EXPECT_EQ(g_sig_ok.load(), 300u);
  EXPECT_EQ(g_sig_bad.load(), 0u);

  // pthread_kill of a thread blocked in read(), not in malloc.
  int block[2], ack[2];
  ASSERT_EQ(pipe(block), 0);
  ASSERT_EQ(pipe(ack), 0);
  g_ack_fd = ack[1];
  std::atomic<bool> waiting{false};
  std::thread sleeper([&] {
    waiting = true;
    char c;
    while (read(block[0], &c, 1) < 0 && errno == EINTR) {
    }
  });
  while (!waiting.load()) std::this_thread::yield();
  g_sig_ok = 0;
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(pthread_kill(sleeper.native_handle(), SIGUSR1), 0);
    char a;
    ASSERT_EQ(read(ack[0], &a, 1), 1);  // the handler ran
  }
  char c = 'q';
  ASSERT_EQ(write(block[1], &c, 1), 1);
  sleeper.join();
  g_ack_fd = -1;
  EXPECT_EQ(g_sig_ok.load(), 100u);
  EXPECT_EQ(g_sig_bad.load(), 0u);
  for (int fd : {block[0], block[1], ack[0], ack[1]}) close(fd);
  sigaction(SIGUSR1, &old, nullptr);
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--scenario=first-api") == 0) return first_api_scenario();
  // Before anything else: a thread that allocates.
  g_early_started = pthread_create(&g_early_thread, nullptr, early_thread, nullptr) == 0;
  testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  if (g_early_started && !g_early_joined) pthread_join(g_early_thread, nullptr);
  return rc;
}
