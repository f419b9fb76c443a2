// Signals pending for one thread alone (pthread_kill, tgkill, a timer's
// SIGEV_THREAD_ID, a fault raised while blocked), taken in the snapshot's
// stop by each thread itself: only the thread a signal is pending for can
// take it (sigtimedwait takes the thread's own before the process's).  Each
// is queued again to the same thread at once (rt_tgsigqueueinfo to itself
// accepts every siginfo), so the program still gets it, and the capsule
// records it with the thread's TID for the restore to queue again.
#pragma once

#include "snapshot/capsule_format.h"

#include <cstdint>

namespace mmtier::detail {

constexpr uint32_t kMaxThreadSignals = 32;

// The signal set on the line that begins with key ("\nShdPnd:\t") of a
// /proc status file, read a window at a time: async-signal-safe, little
// stack (a stopped thread's handler may run on a small alternate stack).
uint64_t status_signal_mask(const char *path, const char *key);

// Before a stop (under the snapshot's lock): no records.
void thread_signals_reset();

// In a thread, for itself (the stop's handler, or the capturing thread):
// takes and queues again each signal pending for it alone, but the stop's
// own; records them.  Async-signal-safe, little stack (it may run on an
// alternate signal stack).
// defer (the capturing thread): queued again only by
// thread_signals_requeue_deferred, so that taking the process's pending
// signals next does not take them again (its own come first).
void thread_signals_take(int tid, bool defer = false);
void thread_signals_requeue_deferred();

// The records of the last stop; *overflow: more than kMaxThreadSignals
// were pending (all were queued again; the snapshot must refuse).
uint32_t thread_signals_taken(const capsule::thread_signal_record **out, bool *overflow);

}  // namespace mmtier::detail
