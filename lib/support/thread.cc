// mmtier's own threads (see thread.h).
#include "support/thread.h"

#include "platform/sys.h"
#include "support/world.h"

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>

namespace mmtier::detail {
namespace {

struct start_args {
  void *(*fn)(void *);
  std::atomic<int> exempt{0};  // futex word: 1 once the thread is exempt
};

void *trampoline(void *p) {
  auto *a = static_cast<start_args *>(p);
  void *(*fn)(void *) = a->fn;
  world_exempt_self();
  a->exempt.store(1, std::memory_order_release);
  sys::raw(SYS_futex, reinterpret_cast<long>(&a->exempt), FUTEX_WAKE_PRIVATE, 1);
  return fn(nullptr);  // a is gone once the starter saw exempt
}

}  // namespace

int start_service_thread(void *(*fn)(void *), const char *name) {
  start_args a;
  a.fn = fn;
  // The new thread inherits the mask in force at pthread_create.
  sigset_t all, old;
  sigfillset(&all);
  sys::thread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  const int e = pthread_create(&t, nullptr, trampoline, &a);
  sys::thread_sigmask(SIG_SETMASK, &old, nullptr);
  if (e != 0) return e;
  while (!a.exempt.load(std::memory_order_acquire))
    sys::raw(SYS_futex, reinterpret_cast<long>(&a.exempt), FUTEX_WAIT_PRIVATE, 0, 0);
  pthread_setname_np(t, name);
  pthread_detach(t);
  return 0;
}

}  // namespace mmtier::detail
