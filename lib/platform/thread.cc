// Platform layer: mmtier's own threads (see thread.h).
#include "platform/thread.h"

#include "platform/sys.h"

#include <signal.h>

namespace mmtier::detail::sys {

int start_service_thread(void *(*fn)(void *), const char *name) {
  // The new thread inherits the mask in force at pthread_create.
  sigset_t all, old;
  sigfillset(&all);
  thread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  const int e = pthread_create(&t, nullptr, fn, nullptr);
  thread_sigmask(SIG_SETMASK, &old, nullptr);
  if (e != 0) return e;
  pthread_setname_np(t, name);
  pthread_detach(t);
  return 0;
}

}  // namespace mmtier::detail::sys
