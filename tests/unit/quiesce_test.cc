// The quiesce sequence (lib/support/quiesce): handlers run by rank whatever
// the order they were registered in; and the process's own sequence, once
// the runtime has started, holds every layer's handlers in the documented
// lock order.
#include "support/quiesce.h"

#include "api/runtime.h"

#include <gtest/gtest.h>

#include <string>

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
  EXPECT_FALSE(q.add(kRankHeap, {mark<'C'>, nullptr, nullptr, nullptr})) << "full";
  q.enter(quiesce_reason::pause);
  q.leave();
  EXPECT_EQ(g_log, "ABba");
  quiesce_rank ranks[4];
  EXPECT_EQ(q.list(ranks, 4), 2);
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
