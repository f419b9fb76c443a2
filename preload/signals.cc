// pthread_sigmask and sigprocmask: forwarders (support/world.h,
// world_sigmask).  sigaction, signal, bsd_signal and sysv_signal: for the
// signal of MMTIER_SNAPSHOT_SIGNAL the program's action is recorded, not
// installed (api/trigger.h); every other signal goes to the C library.
#include "api/trigger.h"
#include "preload/preload.h"
#include "support/world.h"

#include <dlfcn.h>

#include <atomic>
#include <cerrno>

extern "C" int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

namespace {

using sighandler = void (*)(int);

// The C library's function of that name (once, then cached).
sighandler (*libc_fn(std::atomic<void *> &slot, const char *name))(int, sighandler) {
  void *f = slot.load(std::memory_order_acquire);
  if (!f) {
    f = dlsym(RTLD_NEXT, name);
    slot.store(f, std::memory_order_release);
  }
  return reinterpret_cast<sighandler (*)(int, sighandler)>(f);
}

// signal() for the configured signal: the C library's semantics (BSD:
// restart, the signal blocked in its handler; System V: one shot, not
// blocked), recorded as the program's.
sighandler record(int sig, sighandler h, bool sysv) {
  if (h == SIG_ERR) {
    errno = EINVAL;
    return SIG_ERR;
  }
  struct sigaction act = {}, old = {};
  act.sa_handler = h;
  sigemptyset(&act.sa_mask);
  if (sysv) {
    act.sa_flags = SA_RESETHAND | SA_NODEFER;
  } else {
    sigaddset(&act.sa_mask, sig);
    act.sa_flags = SA_RESTART;
  }
  mmtier::detail::trigger_sigaction(&act, &old);
  return old.sa_handler;
}

std::atomic<void *> g_signal{nullptr}, g_bsd_signal{nullptr}, g_sysv_signal{nullptr};

}  // namespace

using namespace mmtier::detail;

extern "C" {
MMTIER_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
  if (sig > 0 && sig == trigger_signal()) return trigger_sigaction(act, old);
  return __sigaction(sig, act, old);
}
MMTIER_EXPORT sighandler signal(int sig, sighandler h) {
  if (sig > 0 && sig == trigger_signal()) return record(sig, h, false);
  auto f = libc_fn(g_signal, "signal");
  return f ? f(sig, h) : SIG_ERR;
}
MMTIER_EXPORT sighandler bsd_signal(int sig, sighandler h) {
  if (sig > 0 && sig == trigger_signal()) return record(sig, h, false);
  auto f = libc_fn(g_bsd_signal, "bsd_signal");
  return f ? f(sig, h) : SIG_ERR;
}
MMTIER_EXPORT sighandler sysv_signal(int sig, sighandler h) {
  if (sig > 0 && sig == trigger_signal()) return record(sig, h, true);
  auto f = libc_fn(g_sysv_signal, "sysv_signal");
  return f ? f(sig, h) : SIG_ERR;
}
MMTIER_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) { return world_sigmask(how, set, old); }
MMTIER_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
  const int e = world_sigmask(how, set, old);
  if (e == 0) return 0;
  errno = e;
  return -1;
}
}  // extern "C"
