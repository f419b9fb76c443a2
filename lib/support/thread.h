// Starting one of mmtier's own threads (the mover, the fault service, the
// control channel).  Such a thread runs with every signal blocked from its
// first instruction (a signal meant for the program must never run the
// program's handler on it), is exempt from world stops before the call
// returns (the caller holds its start lock, which a world stop takes
// first, so no stop can find the thread not yet exempt: it would wait in
// vain for a thread that blocks the stop signal), is named for ps/top,
// and is detached.
#pragma once

namespace mmtier::detail {

// 0, or pthread_create's error.
int start_service_thread(void *(*fn)(void *), const char *name);

}  // namespace mmtier::detail
