// The control channel (see control_format.h): a thread of mmtier's,
// "mmtier-ctl", that takes requests from the mmtier command (`mmtier
// snapshot PID`) on a socket next to the process's statistics page.  It
// starts with the background thread (once the process has placed 32 MiB),
// and only when the statistics page is published: small and short-lived
// processes pay for no thread.
#pragma once

namespace mmtier::detail {

// Starts the thread and its socket (once; a fork child starts its own).
void control_start();
// Registers the fork handler; once, at start-up.
void control_register();
// Removes the socket (at exit).
void control_exit();

}  // namespace mmtier::detail
