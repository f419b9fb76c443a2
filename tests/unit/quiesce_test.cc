// The quiesce sequence (lib/support/quiesce): handlers run by rank whatever
// the order they were registered in; and the process's own sequence, once
// the runtime has started, holds every layer's handlers in the documented
// lock order.
#include "support/quiesce.h"

#include "api/runtime.h"
#include "heap_test_util.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

namespace mmtier::detail {
namespace {

std::string g_log;

template <char C>
void mark() {
  g_log += C;
}

TEST(Quiesce, HandlersRunByRankNotByRegistration) {
  g_log.clear();
  quiesce_sequence q;
  // Registered innermost first.
  ASSERT_TRUE(q.add(kRankHeap, {mark<'H'>, mark<'h'>, mark<'1'>, mark<'4'>}));
  ASSERT_TRUE(q.add(kRankEngine, {mark<'E'>, mark<'e'>, mark<'2'>, mark<'5'>}));
  ASSERT_TRUE(q.add(kRankSmall, {mark<'S'>, mark<'s'>, mark<'3'>, mark<'6'>}));
  q.enter(quiesce_reason::fork);
  EXPECT_EQ(q.reason(), quiesce_reason::fork);
  EXPECT_EQ(g_log, "SEH") << "enter: outermost lock first";
  g_log.clear();
  q.leave();
  EXPECT_EQ(g_log, "hes") << "leave: innermost first";
  EXPECT_EQ(q.reason(), quiesce_reason::none);
  g_log.clear();
  q.leave_child();
  EXPECT_EQ(g_log, "123654") << "child: reset innermost first, then child_ready outermost first";
}

TEST(Quiesce, SeveralAtOneRankKeepTheirOrderAndTheRankHasRoom) {
  g_log.clear();
  quiesce_sequence q;
  ASSERT_TRUE(q.add(kRankHeap, {mark<'A'>, mark<'a'>, nullptr, nullptr}));
  ASSERT_TRUE(q.add(kRankHeap, {mark<'B'>, mark<'b'>, nullptr, nullptr}));
  ASSERT_TRUE(q.add(kRankHeap, {mark<'C'>, mark<'c'>, nullptr, nullptr}));
  ASSERT_TRUE(q.add(kRankHeap, {mark<'D'>, mark<'d'>, nullptr, nullptr}));
  EXPECT_FALSE(q.add(kRankHeap, {mark<'E'>, nullptr, nullptr, nullptr})) << "full";
  q.enter(quiesce_reason::pause);
  q.leave();
  EXPECT_EQ(g_log, "ABCDdcba");
  quiesce_rank ranks[8];
  EXPECT_EQ(q.list(ranks, 8), 4);
}

// Two quiesces at once: a fork in one thread while a world stop holds the
// layers' locks in another.  Each layer's enter handlers must read their own
// quiesce's reason (the heap freezes PMem mappings for a fork only): the
// fork's are run once the stop has left, and read "fork".
quiesce_sequence *g_q = nullptr;  // each run's own
pthread_mutex_t g_layer = PTHREAD_MUTEX_INITIALIZER;
quiesce_reason g_seen[2];
int g_nseen = 0;

void take_layer() { pthread_mutex_lock(&g_layer); }
void give_layer() { pthread_mutex_unlock(&g_layer); }
void record_reason() {
  if (g_nseen < 2) g_seen[g_nseen++] = g_q->reason();
}

TEST(Quiesce, AQuiesceBegunDuringAnotherReadsItsOwnReason) {
  quiesce_sequence q;
  g_q = &q;
  g_nseen = 0;
  ASSERT_TRUE(q.add(kRankSmall, {take_layer, give_layer, nullptr, nullptr}));
  ASSERT_TRUE(q.add(kRankHeap, {record_reason, nullptr, nullptr, nullptr}));
  q.enter(quiesce_reason::pause);
  std::atomic<long> tid{0};
  std::thread forker([&] {
    tid.store(syscall(SYS_gettid));
    q.enter(quiesce_reason::fork);
    q.leave();
  });
  // The forker has entered and waits (for the sequence, or a layer's lock).
  while (!tid.load() || !test::thread_blocked(tid.load())) sched_yield();
  EXPECT_EQ(q.reason(), quiesce_reason::pause) << "the stop's reason, not the waiting fork's";
  q.leave();
  forker.join();
  ASSERT_EQ(g_nseen, 2);
  EXPECT_EQ(g_seen[0], quiesce_reason::pause);
  EXPECT_EQ(g_seen[1], quiesce_reason::fork) << "the fork's handlers ran with its reason";
  EXPECT_EQ(q.reason(), quiesce_reason::none);
}

TEST(Quiesce, TheProcessSequenceHoldsEveryLayerInLockOrder) {
  ASSERT_EQ(runtime_start(), kReady);
  quiesce_rank ranks[32];
  const int n = quiesce_list(ranks, 32);
  auto has = [&](quiesce_rank r) {
    for (int i = 0; i < n; ++i)
      if (ranks[i] == r) return true;
    return false;
  };
  EXPECT_TRUE(has(kRankFaultsStart));
  EXPECT_TRUE(has(kRankSmall));
  EXPECT_TRUE(has(kRankEngine)) << "the engine's own fork handlers joined the sequence";
  EXPECT_TRUE(has(kRankHeap));
  for (int i = 1; i < n; ++i) EXPECT_LE(ranks[i - 1], ranks[i]);
  EXPECT_EQ(quiesce_reason_now(), quiesce_reason::none);
}

}  // namespace
}  // namespace mmtier::detail
