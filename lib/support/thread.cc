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

constexpr int kSlots = 8;
// Slot i is in use while tid[i] != 0; its record is written by the thread
// itself before it publishes its tid, and read only with the world
// stopped (every starter then holds its start lock, waiting for nothing).
std::atomic<int> g_tid[kSlots];
service_thread g_record[kSlots];

struct start_args {
  void *(*fn)(void *);
  std::atomic<int> exempt{0};  // futex word: 1 once the thread is exempt
};

__attribute__((noinline)) int claim_slot(int tid) {
  for (int i = 0; i < kSlots; ++i) {
    int free = 0;
    if (g_tid[i].load(std::memory_order_relaxed) == 0 && g_tid[i].compare_exchange_strong(free, -1)) {
      service_thread &r = g_record[i];
      r.tid = tid;
#if defined(__x86_64__)
      sys::raw(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, reinterpret_cast<long>(&r.fs_base));
#endif
      sys::raw(SYS_prctl, 40 /* PR_GET_TID_ADDRESS */, reinterpret_cast<long>(&r.clear_tid));
      size_t len = 0;
      sys::raw(SYS_get_robust_list, 0, reinterpret_cast<long>(&r.robust_head), reinterpret_cast<long>(&len));
      r.robust_len = len;
      return i;
    }
  }
  return -1;
}

void *trampoline(void *p) {
  auto *a = static_cast<start_args *>(p);
  void *(*fn)(void *) = a->fn;
  const int tid = static_cast<int>(sys::raw(SYS_gettid));
  world_exempt_self();
  const int slot = claim_slot(tid);
  // A restored process resumes this thread here: it ends (see thread.h).
  if (slot >= 0 && kResumePoints && mmtier_resume_point_save(&g_record[slot].rp)) {
    if (g_world_landed_hook) g_world_landed_hook();  // off the restorer's range
    g_tid[slot].store(0, std::memory_order_release);
    return nullptr;
  }
  if (slot >= 0) g_tid[slot].store(tid, std::memory_order_release);
  a->exempt.store(1, std::memory_order_release);
  sys::raw(SYS_futex, reinterpret_cast<long>(&a->exempt), FUTEX_WAKE_PRIVATE, 1);
  void *r = fn(nullptr);  // a is gone once the starter saw exempt
  if (slot >= 0) g_tid[slot].store(0, std::memory_order_release);
  return r;
}

}  // namespace

int service_threads(service_thread *out, int cap) {
  const int self = static_cast<int>(sys::raw(SYS_gettid));
  int n = 0;
  for (int i = 0; i < kSlots && n < cap; ++i) {
    const int tid = g_tid[i].load(std::memory_order_acquire);
    if (tid > 0 && tid != self) out[n++] = g_record[i];
  }
  return n;
}

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
