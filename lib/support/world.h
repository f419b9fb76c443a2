// Stopping every other thread of the process for a short, bounded moment,
// outside mmtier's own critical sections: the tool for work that must not
// race with the program's threads and that userfaultfd cannot guard
// (re-sharing a unit after fork on a DAX file, migration without
// userfaultfd, a snapshot's capture).
//
// world_stop() runs the quiesce sequence's enter handlers (support/
// quiesce.h: every mmtier lock is then held by the caller, so no other
// thread is inside one of mmtier's critical sections), then sends each
// other thread a real-time signal whose handler parks it until
// world_resume().  A thread blocked in a system call is interrupted and
// parks; the handler is installed with SA_RESTART, so most calls resume by
// themselves afterwards (those the kernel never restarts, such as poll,
// epoll_wait and nanosleep, return EINTR, as for any signal).  A thread
// that has the signal blocked cannot be stopped: world_stop() then gives
// up within its timeout, resumes the others and returns -EAGAIN.
//
// The signal is the highest real-time signal whose disposition is the
// default when the stop begins; its previous disposition is restored at
// resume.  mmtier's own threads run with every signal blocked and are not
// stopped (they are inside mmtier, and wait at its locks).
//
// Nothing here allocates.  One stop at a time (a second caller waits).
#pragma once

#include "platform/resume_point.h"
#include "support/quiesce.h"

#include <signal.h>

#include <cstdint>

namespace mmtier::detail {

struct world_stats {
  uint32_t threads;     // threads parked
  uint64_t stop_ns;     // from the call to the last thread parked
  uint64_t enter_ns;    // of which the quiesce's enter handlers (quiesce.h)
};

// Called in each stopped thread, in the stop signal's handler, with the
// handler's ucontext_t (the thread's registers, signal mask and FPU state
// as the kernel saved them on the thread's stack) and the thread's id,
// before the thread counts itself parked: when world_stop() returns, it
// has run in every stopped thread exactly once.  Async-signal-safe code
// only; it must not take a lock of mmtier's (the stopper holds them all).
// It returns where the thread's resume point goes (platform/
// resume_point.h), or nullptr for none: the handler saves it in its own
// frame, which stays live until the thread is released.  A thread of a
// restored process starts there: it runs g_world_landed_hook and then
// waits, parked, for the restored process's release (quiesce_restored).
using world_capture_fn = resume_point *(*)(void *ucontext, int tid);
extern void (*g_world_landed_hook)();

// Stops every other thread; 0 (stopped: the caller must call world_resume)
// or -errno with nothing stopped: -EAGAIN (a thread did not park within
// timeout_ns), -ENOSYS (no real-time signal free).  With capture, each
// stopped thread runs it before it parks (see world_capture_fn).
long world_stop(quiesce_reason why, uint64_t timeout_ns, world_stats *stats = nullptr,
                world_capture_fn capture = nullptr);
void world_resume();
// The signal of the stop under way (0 between stops): its handler parks
// each thread.
int world_stop_signal();

// Registers the fork handler (rank kRankWorld); once, at start-up.
void world_register();

// Threads of mmtier's own, never stopped: registered by the thread itself
// (the mover, the fault service).  They block every signal anyway; this
// keeps world_stop from waiting for them.
void world_exempt_self();

// pthread_sigmask for the program (the interposed pthread_sigmask and
// sigprocmask): as the C library's, but a mask that blocks every real-time
// signal leaves out the stop signal (SIGRTMAX) while the program has not
// taken that signal for itself.  Such a thread asked for "no signals" (as
// jemalloc's background thread, the JVM's and many others do); the stop's
// handler runs nothing of the program's and returns, so the thread cannot
// tell, and a stop no longer waits for it in vain.  A mask that names the
// signal among others, or one applied while the program has a handler on
// it, is applied as given.  0 or an errno value.
int world_sigmask(int how, const sigset_t *set, sigset_t *old);

// After world_stop() gave up with -EAGAIN: a thread of the process that
// blocks the stop signal (its tid, its name into name[cap]), 0 if none is
// found (a thread that was merely slow).
long world_signal_blocker(char *name, size_t cap);

// Tests only: called in a thread that takes the stop signal, after it has
// read which stop is under way and before it counts itself parked (a
// thread delayed there is one that arrives late).
extern void (*g_world_park_hook)();
// Tests only: called in a parked thread once its stop is released, just
// before the handler returns (and the signal mask it interrupted is back).
extern void (*g_world_unpark_hook)();

}  // namespace mmtier::detail
