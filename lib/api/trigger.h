// MMTIER_SNAPSHOT_SIGNAL: a signal that takes a snapshot, then does what
// the program set it to do.  mmtier keeps the kernel's disposition of that
// signal (its own handler); the program's sigaction/signal calls for it are
// recorded (preload/signals.cc) and honoured after the snapshot: its
// handler runs with the signal's siginfo, or the default action ends the
// process once the capsule is complete.  The handler only wakes a thread
// of mmtier's, which takes the snapshot: a signal handler cannot stop the
// world (the thread it interrupted may hold one of mmtier's locks).
#pragma once

#include <signal.h>

namespace mmtier::detail {

// At the runtime's start: the handler, and the thread soon after.
void trigger_init();

// The configured signal (0: none).
int trigger_signal();

// sigaction for the configured signal, as the program sees it: act is
// recorded as the program's, old gets the program's previous one.
int trigger_sigaction(const struct sigaction *act, struct sigaction *old);

}  // namespace mmtier::detail
