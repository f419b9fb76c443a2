// Signals pending for one thread alone (pthread_kill, tgkill, a timer's
// SIGEV_THREAD_ID, a fault raised while blocked), taken in the snapshot's
// stop by each thread itself: only the thread a signal is pending for can
// take it (sigtimedwait takes the thread's own before the process's).  Each
// is queued again to the same thread at once (rt_tgsigqueueinfo to itself
// accepts every siginfo), so the program still gets it, and the capsule
// records it with the thread's TID for the restore to queue again.  And
// the signals pending for the whole process, taken in the same stop (see
// process_signals_take below).
#pragma once

#include "snapshot/capsule_format.h"

#include <signal.h>

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

// Signals pending for the whole process.  The kernel shows them only by
// taking them: each is taken (sigtimedwait) and queued again at once, so
// the program still gets it.  A siginfo that says it came from the kernel
// or from kill() (si_code >= 0, or SI_TKILL) may be queued again only by
// the process's leader thread: the leader takes them in its stop handler,
// else the capturer does.  Where the leader is gone (pthread_exit), the
// standard signals (below 32) are not taken but left pending with their
// siginfo, and the capsule has each as a kill() by the process itself; a
// real-time one sent by kill() or the kernel comes back as the process's
// own kill() (one sent by sigqueue() or a timer comes back as it was).
// Async-signal-safe, little stack; once per stop (thread_signals_reset
// forgets them).
constexpr uint32_t kMaxProcessSignals = 32;
void process_signals_take();
// The ones taken in this stop: how many (kMaxProcessSignals + 1: more were
// pending, every one queued again), or UINT32_MAX if none were taken yet.
uint32_t process_signals_taken(const siginfo_t **out);

}  // namespace mmtier::detail
