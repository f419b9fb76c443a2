// Stopping the world safely, then resuming it: the one ordered sequence of
// every layer's handlers that fork() runs, and that anything else needing
// the whole process still (a snapshot's capture) runs the same way.
//
// Each layer registers, at its start, what it does at a quiesce point: take
// its locks (`enter`), give them back (`leave`, in the parent of a fork or
// when the world resumes), or reset them (`leave_child`, in a fork child,
// where only the forking thread lives on; then `child_ready` for work in the
// child that needs the other layers).  Handlers run by rank, not by when
// they were registered: `enter` in ascending rank, `leave` and
// `leave_child` in descending rank, `child_ready` ascending again, so the
// ranks are the process's lock order, outermost first.  Once every `enter` has returned, no other thread
// is inside a critical section of mmtier's, and every thread that wants one
// waits at its lock.  The order, and why, is in docs/ARCHITECTURE.md
// ("Stopping the world").
//
// One pthread_atfork registration carries the whole sequence, so its order
// cannot depend on which layer happened to start first.  The allocator
// engine's own fork handlers join it: the engine's call to pthread_atfork is
// redirected here (cmake/rename_jemalloc.sh, lib/alloc/engine_os.cc).
//
// Nothing here allocates.  Running the sequence takes one lock of its own
// first, outermost of the sequence (a world stop takes its own stop lock
// before it): two quiesces never overlap (a fork in one thread
// and a world stop in another), so the reason the enter handlers read is
// always their own quiesce's.  Without it a fork that began while a stop
// held the layers' locks read the stop's reason (or none, once it ended)
// and skipped what only a fork does: its PMem mappings went shared into the
// child.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

namespace mmtier::detail {

enum class quiesce_reason : uint8_t {
  none,   // not quiescing
  fork,      // fork(): the child gets leave_child
  pause,     // the process stops for a moment and resumes (re-sharing without write-protect)
  snapshot,  // a snapshot's capture: stopped, then forked into a writer child that
             // runs nothing of mmtier's; the parent's side is a fork's
};

// The lock order, outermost first.
enum quiesce_rank : uint8_t {
  kRankWorld,        // support/world: one stop at a time (its lock is taken before the sequence runs)
  kRankControlStart, // api/control: starting the control thread (reads the statistics page's name, allocates)
  kRankMoverStart,   // mover: starting the mover thread (allocates, starts the fault service)
  kRankFaultsStart,  // heap/faults: starting the fault service thread (allocates)
  kRankSmall,        // alloc/small: the list of thread heaps (takes the heap lock inside)
  kRankEngineArenas, // alloc/engine: making an arena (takes the engine's locks inside)
  kRankEngine,       // alloc: the engine's arenas (its extent hooks take the heap lock inside)
  kRankHeap,         // heap: the heap lock; a fork also settles samples and freezes file units
  kRankLiveStats,    // stats: the live page's lock (taken inside the heap lock)
  kRankMoverStats,   // mover: its statistics (a leaf)
  kRankCount
};

// Each may be nullptr.
struct quiesce_handlers {
  void (*enter)();        // take the layer's locks
  void (*leave)();        // release them
  // In a fork child: put the layer's own state right (locks made anew, what
  // belonged to threads that did not survive dropped).  Calls nothing of
  // another layer: the layers below may not be reset yet.
  void (*leave_child)();
  // In a fork child, once every layer is reset (ascending rank): work that
  // uses other layers (a statistics page of the child's own).  Also run in
  // a restored process, after restored.
  void (*child_ready)();
  // In a process restored from a snapshot (descending rank, with the world
  // stopped by the thread that took the snapshot, which holds every lock
  // the enter handlers took): every thread of the program is alive again,
  // but mmtier's own threads, descriptors and kernel registrations
  // (userfaultfd, shared mappings) are not.  Forget those without closing
  // anything (their numbers are no longer the library's) and release the
  // layer's locks.  nullptr: leave_child does (a layer whose state belongs
  // to mmtier's own threads only).
  void (*restored)() = nullptr;
};

// A sequence of handlers by rank.  The process has one (the functions
// below); tests make their own.
class quiesce_sequence {
 public:
  static constexpr int kPerRank = 4;
  // Adds handlers at rank; several at one rank run in the order they were
  // registered (leave in reverse).  False when the rank is full.
  bool add(quiesce_rank rank, quiesce_handlers h);
  void enter(quiesce_reason why);
  void leave();
  void leave_child();
  void restored();
  // Why the sequence is entered now: for its enter handlers (the holder of
  // the sequence); none outside a quiesce.
  quiesce_reason reason() const { return reason_; }
  // The ranks of the registered handlers in the order enter runs them.
  int list(quiesce_rank *ranks, int cap) const;

 private:
  // Per rank, the handlers in registration order.  A slot is written before
  // its rank's count is published and never moves, so a fork running the
  // sequence while a layer registers sees the new handlers or not at all;
  // each layer registers before its locks can be taken, so a fork that
  // misses it held nothing of it.  Writers (layer start-up, rare) take a
  // spin flag; running the sequence takes nothing.
  quiesce_handlers slots_[kRankCount][kPerRank] = {};
  std::atomic<int> count_[kRankCount] = {};
  std::atomic_flag writing_ = ATOMIC_FLAG_INIT;
  // Held from the start of enter to the end of leave: the reason is written
  // under it.  Made anew in a fork child (the forking thread held it);
  // released in a restored process (the snapshot was taken holding it).
  pthread_mutex_t entry_ = PTHREAD_MUTEX_INITIALIZER;
  quiesce_reason reason_ = quiesce_reason::none;
};

// The process's sequence.
bool quiesce_register(quiesce_rank rank, quiesce_handlers h);
// Runs every enter handler, ascending.
void quiesce_enter(quiesce_reason why);
// Runs every leave handler, descending, and ends the quiesce.
void quiesce_leave();
// In a fork child: every leave_child handler, descending, then every
// child_ready handler, ascending.
void quiesce_leave_child();
// In a restored process, by the thread that took the snapshot: every
// restored (or leave_child) handler, descending, then every child_ready
// handler, ascending.  The world stop ends in the first (rank kRankWorld).
void quiesce_restored();
// Why the world is stopped now (for enter handlers whose work depends on it);
// none outside a quiesce.
quiesce_reason quiesce_reason_now();
// The ranks registered, in the order enter runs them.
int quiesce_list(quiesce_rank *ranks, int cap);

// Registers the sequence with pthread_atfork, once per process.  False if
// glibc refused (then forks run without it: logged).
bool quiesce_install_fork_handlers();

}  // namespace mmtier::detail
