// Stopping the world (lib/support/world): every other thread parks, the
// stopped threads make no progress until the world resumes, a thread
// blocked in a system call is interrupted and its call resumes (SA_RESTART)
// with nothing lost, mmtier's locks are the stopper's during the stop, a
// thread that blocks the signal makes the stop give up in time and leave
// everything running, and the signal's disposition is put back.
#include "support/world.h"

#include "api/runtime.h"
#include "heap/heap.h"
#include "platform/clock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

struct workers {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> counts[3] = {};
  int pipe_fd[2] = {-1, -1};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<int> read_errors{0};
  std::vector<std::thread> threads;

  workers() {
    EXPECT_EQ(pipe(pipe_fd), 0);
    for (int i = 0; i < 3; ++i)
      threads.emplace_back([this, i] {
        while (!stop.load(std::memory_order_relaxed)) {
          // Allocation goes through mmtier (the heap and its locks).
          void *p = heap_engine_reserve(nullptr, kUnitSize, kUnitSize, -1);
          if (p) heap_engine_release(p, kUnitSize);
          counts[i].fetch_add(1, std::memory_order_relaxed);
        }
      });
    // A thread blocked in read(): interrupted by the stop, resumed after.
    threads.emplace_back([this] {
      char buf[64];
      for (;;) {
        ssize_t n = read(pipe_fd[0], buf, sizeof buf);
        if (n > 0) read_bytes.fetch_add(static_cast<uint64_t>(n));
        else if (n == 0) break;
        else read_errors.fetch_add(1);
      }
    });
  }
  ~workers() {
    stop = true;
    close(pipe_fd[1]);
    for (auto &t : threads) t.join();
    close(pipe_fd[0]);
  }
  uint64_t total() const {
    uint64_t t = 0;
    for (auto &c : counts) t += c.load(std::memory_order_relaxed);
    return t;
  }
};

TEST(World, OtherThreadsParkAndResume) {
  ASSERT_EQ(runtime_start(), kReady);
  workers w;
  while (w.total() < 100) std::this_thread::yield();
  world_stats st{};
  ASSERT_EQ(world_stop(quiesce_reason::pause, kSecond, &st), 0);
  EXPECT_EQ(st.threads, 4u) << "the three workers and the reader";
  EXPECT_LT(st.stop_ns, kSecond);
  const uint64_t frozen = w.total();
  // While stopped, nothing moves: the stopper holds mmtier's locks and may
  // take the heap's itself (a re-entrant quiesce would deadlock).
  usleep(50000);
  EXPECT_EQ(w.total(), frozen) << "stopped threads made progress";
  // Data written meanwhile waits for the reader, which reads it after.
  ASSERT_EQ(write(w.pipe_fd[1], "hello", 5), 5);
  usleep(20000);
  EXPECT_EQ(w.read_bytes.load(), 0u);
  world_resume();
  const uint64_t deadline = frozen + 100;
  while (w.total() < deadline) std::this_thread::yield();
  while (w.read_bytes.load() < 5) std::this_thread::yield();
  EXPECT_EQ(w.read_errors.load(), 0) << "read() is restarted, never fails with EINTR";
  // The signal is back at its default disposition.
  for (int s = SIGRTMIN + 3; s <= SIGRTMAX; ++s) {
    struct sigaction sa;
    ASSERT_EQ(sigaction(s, nullptr, &sa), 0);
    EXPECT_EQ(sa.sa_handler, SIG_DFL) << s;
  }
}

TEST(World, RepeatedStopsAreShortAndLoseNothing) {
  ASSERT_EQ(runtime_start(), kReady);
  workers w;
  uint64_t worst = 0;
  for (int i = 0; i < 50; ++i) {
    world_stats st{};
    ASSERT_EQ(world_stop(quiesce_reason::pause, kSecond, &st), 0) << i;
    world_resume();
    worst = st.stop_ns > worst ? st.stop_ns : worst;
  }
  ASSERT_EQ(write(w.pipe_fd[1], "x", 1), 1);
  while (w.read_bytes.load() < 1) std::this_thread::yield();
  EXPECT_EQ(w.read_errors.load(), 0);
  RecordProperty("worst_stop_us", static_cast<int>(worst / 1000));
}

TEST(World, AThreadThatBlocksTheSignalMakesTheStopGiveUp) {
  ASSERT_EQ(runtime_start(), kReady);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> count{0};
  std::thread blocker([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    while (!stop.load()) count.fetch_add(1);
  });
  workers w;
  while (count.load() == 0) std::this_thread::yield();
  const uint64_t t0 = sys::mono_ns();
  EXPECT_EQ(world_stop(quiesce_reason::pause, kSecond / 10), -EAGAIN);
  EXPECT_LT(sys::mono_ns() - t0, kSecond) << "gives up within its timeout";
  // Everything runs on: the others were released, mmtier's locks too.
  const uint64_t before = w.total();
  while (w.total() < before + 100) std::this_thread::yield();
  stop = true;
  blocker.join();
}

}  // namespace
}  // namespace mmtier::detail
