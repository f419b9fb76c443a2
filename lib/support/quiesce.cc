// The quiesce sequence (see quiesce.h).
#include "support/quiesce.h"

#include "support/log.h"

#include <pthread.h>

#include <atomic>

namespace mmtier::detail {
namespace {

// Per rank, the handlers in registration order.  A slot is written before
// its rank's count is published and never moves, so a fork running the
// sequence while a layer registers sees the new handlers or not at all;
// each layer registers before its locks can be taken, so a fork that
// misses it held nothing of it.  Writers (layer start-up, rare) take a
// spin flag; the fork path takes nothing.
quiesce_handlers g_slots[kRankCount][kQuiescePerRank];
std::atomic<int> g_count[kRankCount];
std::atomic_flag g_writing = ATOMIC_FLAG_INIT;
quiesce_reason g_reason = quiesce_reason::none;

void fork_enter() { quiesce_enter(quiesce_reason::fork); }

}  // namespace

bool quiesce_register(quiesce_rank rank, quiesce_handlers h) {
  if (rank >= kRankCount) return false;
  while (g_writing.test_and_set(std::memory_order_acquire)) {
  }
  const int n = g_count[rank].load(std::memory_order_relaxed);
  const bool ok = n < kQuiescePerRank;
  if (ok) {
    g_slots[rank][n] = h;
    g_count[rank].store(n + 1, std::memory_order_release);
  }
  g_writing.clear(std::memory_order_release);
  if (!ok) MMTIER_ERROR("quiesce: no room to register handlers of rank %d", static_cast<int>(rank));
  return ok;
}

void quiesce_enter(quiesce_reason why) {
  g_reason = why;
  for (int r = 0; r < kRankCount; ++r) {
    const int n = g_count[r].load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
      if (g_slots[r][i].enter) g_slots[r][i].enter();
  }
}

void quiesce_leave() {
  for (int r = kRankCount; r-- > 0;) {
    for (int i = g_count[r].load(std::memory_order_acquire); i-- > 0;)
      if (g_slots[r][i].leave) g_slots[r][i].leave();
  }
  g_reason = quiesce_reason::none;
}

void quiesce_leave_child() {
  for (int r = kRankCount; r-- > 0;) {
    for (int i = g_count[r].load(std::memory_order_acquire); i-- > 0;)
      if (g_slots[r][i].leave_child) g_slots[r][i].leave_child();
  }
  g_reason = quiesce_reason::none;
  for (int r = 0; r < kRankCount; ++r) {
    const int n = g_count[r].load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
      if (g_slots[r][i].child_ready) g_slots[r][i].child_ready();
  }
}

quiesce_reason quiesce_reason_now() { return g_reason; }

bool quiesce_install_fork_handlers() {
  static std::atomic<int> state{0};  // 0 not yet, 1 installed, 2 failed
  int s = state.load(std::memory_order_acquire);
  if (s) return s == 1;
  int expected = 0;
  if (!state.compare_exchange_strong(expected, 3, std::memory_order_acq_rel)) {
    while ((s = state.load(std::memory_order_acquire)) == 3) {
    }
    return s == 1;
  }
  const int e = pthread_atfork(fork_enter, quiesce_leave, quiesce_leave_child);
  if (e != 0) MMTIER_ERROR("cannot register the fork handlers (error %d); fork children share PMem units", e);
  state.store(e == 0 ? 1 : 2, std::memory_order_release);
  return e == 0;
}

int quiesce_list(quiesce_rank *ranks, int cap) {
  int k = 0;
  for (int r = 0; r < kRankCount; ++r) {
    const int n = g_count[r].load(std::memory_order_acquire);
    for (int i = 0; i < n && k < cap; ++i) ranks[k++] = static_cast<quiesce_rank>(r);
  }
  return k;
}

}  // namespace mmtier::detail
