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
#include "platform/sys.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
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
  std::atomic<long> blocker_tid{0};
  std::thread blocker([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    pthread_setname_np(pthread_self(), "sig-blocker");
    blocker_tid = sys::raw(SYS_gettid);
    while (!stop.load()) count.fetch_add(1);
  });
  workers w;
  while (count.load() == 0) std::this_thread::yield();
  const uint64_t t0 = sys::mono_ns();
  EXPECT_EQ(world_stop(quiesce_reason::pause, kSecond / 10), -EAGAIN);
  EXPECT_LT(sys::mono_ns() - t0, kSecond) << "gives up within its timeout";
  // Which thread it was, for the one message that says so.
  char name[32] = "";
  EXPECT_EQ(world_signal_blocker(name, sizeof name), blocker_tid.load());
  EXPECT_STREQ(name, "sig-blocker");
  // Everything runs on: the others were released, mmtier's locks too.
  const uint64_t before = w.total();
  while (w.total() < before + 100) std::this_thread::yield();
  stop = true;
  blocker.join();
}

// A thread that takes a stop's signal but arrives late, after that stop
// gave up and the next one too, leaves the handler at once and runs on; a
// later stop parks it as usual.
std::atomic<int> g_late_tid{0};
std::atomic<bool> g_late_hold{false};
void late_arrival() {
  if (sys::raw(SYS_gettid) != g_late_tid.load()) return;
  while (g_late_hold.load()) usleep(1000);  // held here until both stops have given up
}

std::atomic<bool> g_late_once{false};
std::atomic<bool> g_resumed{false};

// A thread that only counts, the one the hooks below hold back: they are
// installed (held) with it and removed (released) when it goes, also when
// a test stops half-way.
struct late_thread {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> count{0};
  std::thread t{[this] {
    g_late_tid = static_cast<int>(sys::raw(SYS_gettid));
    while (!stop.load()) count.fetch_add(1);
  }};
  late_thread(void (*park_hook)(), void (*unpark_hook)() = nullptr) {
    while (count.load() == 0) std::this_thread::yield();
    g_late_once = false;
    g_resumed = false;
    g_late_hold = true;
    g_world_park_hook = park_hook;
    g_world_unpark_hook = unpark_hook;
  }
  ~late_thread() {
    g_world_park_hook = nullptr;
    g_world_unpark_hook = nullptr;
    g_late_hold = false;
    g_resumed = true;
    stop = true;
    t.join();
  }
};

TEST(World, AThreadLateForAStopThatGaveUpRunsOn) {
  ASSERT_EQ(runtime_start(), kReady);
  late_thread late(late_arrival);
  std::atomic<uint64_t> &count = late.count;
  EXPECT_EQ(world_stop(quiesce_reason::pause, kSecond / 20), -EAGAIN) << "the late thread never counts";
  EXPECT_EQ(world_stop(quiesce_reason::pause, kSecond / 20), -EAGAIN) << "nor in the next stop";
  g_late_hold = false;  // it arrives now, two stops late
  const uint64_t before = count.load();
  const uint64_t deadline = sys::mono_ns() + 10 * kSecond;
  while (count.load() < before + 1000 && sys::mono_ns() < deadline) std::this_thread::yield();
  EXPECT_GE(count.load(), before + 1000) << "the late thread is still parked";
  g_world_park_hook = nullptr;
  world_stats st{};
  const long r = world_stop(quiesce_reason::pause, kSecond, &st);
  EXPECT_EQ(r, 0) << "and a later stop parks it";
  if (r == 0) world_resume();
  EXPECT_EQ(st.threads, 1u);
}

// A thread late for a stop that gave up, signaled again by the next stop
// while still in the handler, parks in that stop; the signal left pending
// is discarded when the world resumes (else it would take the default
// action once the thread leaves the handler: the process would die).
bool stop_signal_pending() {
  sigset_t pending;
  sigpending(&pending);
  for (int s = SIGRTMIN; s <= SIGRTMAX; ++s)
    if (sigismember(&pending, s)) return true;
  return false;
}
void late_until_signaled_again() {
  if (sys::raw(SYS_gettid) != g_late_tid.load() || g_late_once.exchange(true)) return;  // its first arrival only
  while (g_late_hold.load() || !stop_signal_pending()) usleep(1000);
}
// Released, it leaves the handler only once world_resume() has returned:
// the signal's disposition is the default again, so a signal still pending
// would end the process as soon as the handler returns.
void late_leaves_after_resume() {
  if (sys::raw(SYS_gettid) != g_late_tid.load()) return;
  while (!g_resumed.load()) usleep(1000);
}

TEST(World, ALateThreadSignaledAgainParksInTheNextStopAndSurvivesIt) {
  ASSERT_EQ(runtime_start(), kReady);
  late_thread late(late_until_signaled_again, late_leaves_after_resume);
  std::atomic<uint64_t> &count = late.count;
  EXPECT_EQ(world_stop(quiesce_reason::pause, kSecond / 20), -EAGAIN) << "held on its way in";
  g_late_hold = false;  // it goes on once the next stop has signaled it again
  world_stats st{};
  ASSERT_EQ(world_stop(quiesce_reason::pause, 5 * kSecond, &st), 0);
  EXPECT_EQ(st.threads, 1u) << "parked in this stop";
  const uint64_t frozen = count.load();
  world_resume();
  g_resumed = true;
  while (count.load() < frozen + 1000) std::this_thread::yield();  // alive, and running
}


// What the interposed pthread_sigmask does: a thread that blocks every
// signal through it still takes the stop signal (so a stop stops it), while
// a mask that names the signal among a few, or one applied while the
// program has a handler on it, is applied as given.
sigset_t mask_after(int how, const sigset_t &set) {
  sigset_t now;
  sigemptyset(&now);
  std::thread t([&] {
    EXPECT_EQ(world_sigmask(how, &set, nullptr), 0);
    EXPECT_EQ(world_sigmask(SIG_BLOCK, nullptr, &now), 0);
  });
  t.join();
  return now;
}

TEST(World, AThreadBlockingEverySignalThroughTheInterposedMaskIsStillStopped) {
  ASSERT_EQ(runtime_start(), kReady);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> count{0};
  std::atomic<bool> masked{false};
  std::thread blocker([&] {
    sigset_t all, now;
    sigfillset(&all);
    EXPECT_EQ(world_sigmask(SIG_SETMASK, &all, nullptr), 0);
    EXPECT_EQ(world_sigmask(SIG_BLOCK, nullptr, &now), 0);
    EXPECT_TRUE(sigismember(&now, SIGINT) && sigismember(&now, SIGRTMIN) && sigismember(&now, SIGRTMAX - 1));
    EXPECT_FALSE(sigismember(&now, SIGRTMAX)) << "the stop signal stays deliverable";
    masked = true;
    while (!stop.load()) count.fetch_add(1);
  });
  while (!masked.load() || count.load() == 0) std::this_thread::yield();
  world_stats st{};
  ASSERT_EQ(world_stop(quiesce_reason::pause, kSecond, &st), 0);
  EXPECT_EQ(st.threads, 1u);
  const uint64_t frozen = count.load();
  usleep(20000);
  EXPECT_EQ(count.load(), frozen) << "stopped";
  world_resume();
  while (count.load() < frozen + 1000) std::this_thread::yield();
  stop = true;
  blocker.join();
}

TEST(World, AMaskThatNamesTheStopSignalOrAProgramsOwnSignalIsAppliedAsGiven) {
  sigset_t few;
  sigemptyset(&few);
  sigaddset(&few, SIGRTMAX);
  sigaddset(&few, SIGUSR1);
  const sigset_t named = mask_after(SIG_BLOCK, few);
  EXPECT_TRUE(sigismember(&named, SIGRTMAX)) << "named among a few";
  struct sigaction mine, old;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = [](int) {};
  ASSERT_EQ(sigaction(SIGRTMAX, &mine, &old), 0);
  sigset_t all;
  sigfillset(&all);
  const sigset_t now = mask_after(SIG_SETMASK, all);
  sigaction(SIGRTMAX, &old, nullptr);
  EXPECT_TRUE(sigismember(&now, SIGRTMAX)) << "the program's own signal, blocked as asked";
  // And the C library's internal signals are never blocked (as its own
  // pthread_sigmask does): setuid() in a threaded process needs them.
  EXPECT_FALSE(sigismember(&now, SIGRTMIN - 1));
}

// The capture hook runs in every stopped thread exactly once per stop,
// before world_stop returns, with that thread's own tid and the registers
// it was stopped with (its stack pointer is on its own stack).
struct captured_thread {
  int tid;
  uintptr_t rsp;
  stack_t altstack;  // the handler's, if it runs on one (sanitizers install one)
};
captured_thread g_captured[16];
std::atomic<int> g_ncaptured{0};

resume_point g_points[16];

resume_point *record_capture(void *uc, int tid) {
  const int i = g_ncaptured.fetch_add(1, std::memory_order_relaxed);
  if (i >= 16) return nullptr;
  g_captured[i].tid = tid;
  g_captured[i].rsp = static_cast<uintptr_t>(static_cast<ucontext_t *>(uc)->uc_mcontext.gregs[REG_RSP]);
  sigaltstack(nullptr, &g_captured[i].altstack);
  return &g_points[i];
}

TEST(World, TheCaptureRunsInEveryStoppedThreadOnceWithItsOwnRegisters) {
  ASSERT_EQ(runtime_start(), kReady);
  constexpr int kThreads = 5;
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  struct seen {
    std::atomic<int> tid{0};
    std::atomic<uintptr_t> stack{0};  // the address of a local of the thread's
  } seen[kThreads];
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      volatile int local = 0;
      seen[i].stack = reinterpret_cast<uintptr_t>(&local);
      seen[i].tid = static_cast<int>(syscall(SYS_gettid));
      started.fetch_add(1);
      while (!stop.load(std::memory_order_relaxed)) local = local + 1;
    });
  while (started.load() < kThreads) std::this_thread::yield();
  for (int round = 0; round < 3; ++round) {
    g_ncaptured = 0;
    world_stats st{};
    ASSERT_EQ(world_stop(quiesce_reason::pause, kSecond, &st, record_capture), 0);
    const int n = g_ncaptured.load();
    world_resume();
    ASSERT_EQ(n, kThreads) << "captured once per stopped thread";
    EXPECT_EQ(st.threads, static_cast<uint32_t>(kThreads));
    for (int i = 0; i < kThreads; ++i) {
      int found = 0;
      for (int k = 0; k < n; ++k) {
        if (g_captured[k].tid != seen[i].tid.load()) continue;
        ++found;
        // The interrupted code's stack pointer is below its local, and
        // close to it (a thread's stack, not the handler's or another's).
        EXPECT_LT(g_captured[k].rsp, seen[i].stack.load());
        EXPECT_GT(g_captured[k].rsp + 65536, seen[i].stack.load());
        // The resume point is in the stop handler's frame: below the
        // interrupted code on the same stack, or on the thread's alternate
        // signal stack when the handler runs there; it returns into the
        // handler.
        if (kResumePoints) {
          const stack_t &alt = g_captured[k].altstack;
          const uintptr_t alt_lo = reinterpret_cast<uintptr_t>(alt.ss_sp);
          const bool on_alt = (alt.ss_flags & SS_ONSTACK) && g_points[k].rsp >= alt_lo &&
                              g_points[k].rsp < alt_lo + alt.ss_size;
          const bool below = g_points[k].rsp < g_captured[k].rsp && g_points[k].rsp + 65536 > g_captured[k].rsp;
          EXPECT_TRUE(on_alt || below) << std::hex << g_points[k].rsp << " for " << g_captured[k].rsp;
          EXPECT_NE(g_points[k].rip, 0u);
        }
      }
      EXPECT_EQ(found, 1) << "thread " << i;
    }
  }
  // A stop without a capture calls nothing.
  g_ncaptured = 0;
  ASSERT_EQ(world_stop(quiesce_reason::pause, kSecond), 0);
  world_resume();
  EXPECT_EQ(g_ncaptured.load(), 0);
  stop = true;
  for (auto &t : threads) t.join();
}

}  // namespace
}  // namespace mmtier::detail
