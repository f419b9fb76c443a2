// pthread_sigmask and sigprocmask: forwarders (support/world.h, world_sigmask).
#include "preload/preload.h"
#include "support/world.h"

#include <cerrno>

using namespace mmtier::detail;

extern "C" {
MMTIER_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) { return world_sigmask(how, set, old); }
MMTIER_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
  const int e = world_sigmask(how, set, old);
  if (e == 0) return 0;
  errno = e;
  return -1;
}
}  // extern "C"
