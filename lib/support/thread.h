// Starting one of mmtier's own threads (the mover, the fault service, the
// control channel).  Such a thread runs with every signal blocked from its
// first instruction (a signal meant for the program must never run the
// program's handler on it), is exempt from world stops before the call
// returns (the caller holds its start lock, which a world stop takes
// first, so no stop can find the thread not yet exempt: it would wait in
// vain for a thread that blocks the stop signal), is named for ps/top,
// and is detached.
#pragma once

#include "platform/resume_point.h"

#include <cstdint>

namespace mmtier::detail {

// 0, or pthread_create's error.
int start_service_thread(void *(*fn)(void *), const char *name);

// A running service thread as a snapshot records it.  A restored process
// starts it again (same TID and thread pointer) at its resume point, at
// the bottom of its own frames, where it returns at once: it exits as a
// detached thread does, so the C library frees its stack and its
// thread-local data, which it believes in use.  The restored process
// starts new service threads of its own.
struct service_thread {
  int tid;
  uint64_t fs_base, clear_tid, robust_head, robust_len;
  resume_point rp;
};
// The service threads running now (at most cap), but the caller.
int service_threads(service_thread *out, int cap);

}  // namespace mmtier::detail
