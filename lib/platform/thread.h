// Platform layer: starting one of mmtier's own threads (the mover, the
// fault service, the control channel).  Such a thread runs with every
// signal blocked from its first instruction (a signal meant for the
// program must never run the program's handler on it, and a world stop
// must not wait for it), is named for ps/top, and is detached.
#pragma once

#include <pthread.h>

namespace mmtier::detail::sys {

// 0, or pthread_create's error.
int start_service_thread(void *(*fn)(void *), const char *name);

}  // namespace mmtier::detail::sys
