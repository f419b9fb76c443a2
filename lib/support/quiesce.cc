// The quiesce sequence (see quiesce.h).
#include "support/quiesce.h"

#include "support/log.h"

#include <pthread.h>

namespace mmtier::detail {

bool quiesce_sequence::add(quiesce_rank rank, quiesce_handlers h) {
  if (rank >= kRankCount) return false;
  while (writing_.test_and_set(std::memory_order_acquire)) {
  }
  const int n = count_[rank].load(std::memory_order_relaxed);
  const bool ok = n < kPerRank;
  if (ok) {
    slots_[rank][n] = h;
    count_[rank].store(n + 1, std::memory_order_release);
  }
  writing_.clear(std::memory_order_release);
  return ok;
}

void quiesce_sequence::enter(quiesce_reason why) {
  pthread_mutex_lock(&entry_);
  reason_ = why;
  for (int r = 0; r < kRankCount; ++r) {
    const int n = count_[r].load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
      if (slots_[r][i].enter) slots_[r][i].enter();
  }
}

void quiesce_sequence::leave() {
  for (int r = kRankCount; r-- > 0;)
    for (int i = count_[r].load(std::memory_order_acquire); i-- > 0;)
      if (slots_[r][i].leave) slots_[r][i].leave();
  reason_ = quiesce_reason::none;
  pthread_mutex_unlock(&entry_);
}

void quiesce_sequence::leave_child() {
  for (int r = kRankCount; r-- > 0;)
    for (int i = count_[r].load(std::memory_order_acquire); i-- > 0;)
      if (slots_[r][i].leave_child) slots_[r][i].leave_child();
  reason_ = quiesce_reason::none;
  pthread_mutex_init(&entry_, nullptr);
  for (int r = 0; r < kRankCount; ++r) {
    const int n = count_[r].load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
      if (slots_[r][i].child_ready) slots_[r][i].child_ready();
  }
}

void quiesce_sequence::restored() {
  // Only this thread runs yet (the others are parked): the sequence's lock,
  // whatever the image held, is made anew as this quiesce's.
  pthread_mutex_init(&entry_, nullptr);
  pthread_mutex_lock(&entry_);
  for (int r = kRankCount; r-- > 0;)
    for (int i = count_[r].load(std::memory_order_acquire); i-- > 0;) {
      const quiesce_handlers &h = slots_[r][i];
      if (h.restored)
        h.restored();
      else if (h.leave_child)
        h.leave_child();
    }
  reason_ = quiesce_reason::none;
  pthread_mutex_unlock(&entry_);
  for (int r = 0; r < kRankCount; ++r) {
    const int n = count_[r].load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
      if (slots_[r][i].child_ready) slots_[r][i].child_ready();
  }
}

int quiesce_sequence::list(quiesce_rank *ranks, int cap) const {
  int k = 0;
  for (int r = 0; r < kRankCount; ++r) {
    const int n = count_[r].load(std::memory_order_acquire);
    for (int i = 0; i < n && k < cap; ++i) ranks[k++] = static_cast<quiesce_rank>(r);
  }
  return k;
}

namespace {

constinit quiesce_sequence g_sequence;

void fork_enter() { g_sequence.enter(quiesce_reason::fork); }
void fork_leave() { g_sequence.leave(); }
void fork_child() { g_sequence.leave_child(); }

}  // namespace

bool quiesce_register(quiesce_rank rank, quiesce_handlers h) {
  const bool ok = g_sequence.add(rank, h);
  if (!ok) MMTIER_ERROR("quiesce: no room to register handlers of rank %d", static_cast<int>(rank));
  return ok;
}

void quiesce_enter(quiesce_reason why) { g_sequence.enter(why); }
void quiesce_leave() { g_sequence.leave(); }
void quiesce_leave_child() { g_sequence.leave_child(); }
void quiesce_restored() { g_sequence.restored(); }
quiesce_reason quiesce_reason_now() { return g_sequence.reason(); }
int quiesce_list(quiesce_rank *ranks, int cap) { return g_sequence.list(ranks, cap); }

bool quiesce_install_fork_handlers() {
  static std::atomic<int> state{0};  // 0 not yet, 1 installed, 2 failed, 3 installing
  int s = state.load(std::memory_order_acquire);
  if (s == 1 || s == 2) return s == 1;
  int expected = 0;
  if (!state.compare_exchange_strong(expected, 3, std::memory_order_acq_rel)) {
    while ((s = state.load(std::memory_order_acquire)) == 3) {
    }
    return s == 1;
  }
  const int e = pthread_atfork(fork_enter, fork_leave, fork_child);
  if (e != 0) MMTIER_ERROR("cannot register the fork handlers (error %d); fork children share PMem units", e);
  state.store(e == 0 ? 1 : 2, std::memory_order_release);
  return e == 0;
}

}  // namespace mmtier::detail
