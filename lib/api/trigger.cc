// MMTIER_SNAPSHOT_SIGNAL (trigger.h).
#include "api/trigger.h"

#include "config/config.h"
#include "heap/heap.h"
#include "platform/fd_guard.h"
#include "platform/sys.h"
#include "snapshot/capture.h"
#include "support/log.h"
#include "support/quiesce.h"
#include "support/thread.h"

#include <pthread.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

// The C library's own sigaction (the exported one is the program's, ours).
extern "C" int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

namespace mmtier::detail {
namespace {

int g_sig = 0;
std::atomic<int> g_efd{-1};            // the thread's wake-up (guarded); -1: no thread to take a snapshot
std::atomic<long> g_efd_pid{0};        // the process g_efd belongs to (a fork child inherits it until its hook)
// A restored process until its thread is back (within milliseconds: the
// restore starts it): a signal then waits for the thread (g_deferred)
// instead of acting without a snapshot.
std::atomic<bool> g_defer{false};
std::atomic<bool> g_deferred{false};
long g_test_delay_ms = 0;  // tests: _MMTIER_TRIGGER_START_DELAY_MS holds a restored process's start back
constexpr int kPassMark = 0x6d6d7472;  // si_value of a re-raise: straight to the program's action
siginfo_t g_info;                      // the first signal's, for the program's handler
std::atomic<bool> g_info_set{false};
std::atomic<long> g_tid{0};            // the thread a thread-directed signal was for (0: the process)
pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;
bool g_starting = false;               // under g_start_lock

// The program's action for the signal: two slots, the handler reads the
// current one without a lock; writers take g_set_lock.
struct sigaction g_prog[2];
std::atomic<int> g_cur{0};
std::atomic<bool> g_reset{false};      // SA_RESETHAND ran: SIG_DFL until the program sets another action
pthread_mutex_t g_set_lock = PTHREAD_MUTEX_INITIALIZER;

struct sigaction program_action() {
  if (g_reset.load(std::memory_order_acquire)) {
    struct sigaction d;
    memset(&d, 0, sizeof d);
    d.sa_handler = SIG_DFL;
    return d;
  }
  return g_prog[g_cur.load(std::memory_order_acquire)];
}

bool is_pass(const siginfo_t *si) {
  return si && si->si_code == SI_QUEUE && si->si_pid == sys::getpid() && si->si_value.sival_int == kPassMark;
}

// The signal again, marked, to the thread it was for (or the process):
// the handler sends it straight to the program's action.
void reraise(int sig) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  si.si_signo = sig;
  si.si_code = SI_QUEUE;
  si.si_pid = static_cast<pid_t>(sys::getpid());
  si.si_uid = static_cast<uid_t>(sys::raw(SYS_getuid));
  si.si_value.sival_int = kPassMark;
  const long tid = g_tid.exchange(0, std::memory_order_acq_rel);
  if (tid && sys::raw(SYS_rt_tgsigqueueinfo, sys::getpid(), tid, sig, reinterpret_cast<long>(&si)) == 0) return;
  sys::raw(SYS_rt_sigqueueinfo, sys::getpid(), sig, reinterpret_cast<long>(&si));
}

// What the program set the signal to do, from its handler: the program's
// handler with its mask, or the default action once this handler returns.
void run_program_action(int sig, siginfo_t *si, void *uc) {
  const struct sigaction a = program_action();
  if (a.sa_handler == SIG_IGN) return;
  if (a.sa_handler == SIG_DFL) {
    // Every signal this takes ends the process by default: that happens
    // when this handler returns (the signal is blocked until then).
    struct sigaction d;
    memset(&d, 0, sizeof d);
    d.sa_handler = SIG_DFL;
    __sigaction(sig, &d, nullptr);
    sys::raw(SYS_tgkill, sys::getpid(), sys::raw(SYS_gettid), sig);
    return;
  }
  sigset_t mask = a.sa_mask, old;
  if (a.sa_flags & SA_NODEFER) sigdelset(&mask, sig);
  sys::raw(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&mask), reinterpret_cast<long>(&old), 8);
  if (a.sa_flags & SA_NODEFER) {
    sigset_t self;
    sigemptyset(&self);
    sigaddset(&self, sig);
    sys::raw(SYS_rt_sigprocmask, SIG_UNBLOCK, reinterpret_cast<long>(&self), 0, 8);
  }
  if (a.sa_flags & SA_RESETHAND) g_reset.store(true, std::memory_order_release);  // no lock in a handler
  if (a.sa_flags & SA_SIGINFO)
    a.sa_sigaction(sig, si, uc);
  else
    a.sa_handler(sig);
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, 8);
}

void on_signal(int sig, siginfo_t *si, void *uc) {
  const int saved = errno;
  if (is_pass(si)) {
    // After the snapshot: the program's handler, with the first signal's
    // siginfo (the re-raise's would name mmtier's own process).
    run_program_action(sig, g_info_set.exchange(false, std::memory_order_acq_rel) ? &g_info : si, uc);
    errno = saved;
    return;
  }
  int fd = g_efd.load(std::memory_order_acquire);
  // A fork child before its fork handler ran holds its parent's
  // descriptor: writing it would make the parent take a snapshot.
  if (fd >= 0 && g_efd_pid.load(std::memory_order_acquire) != sys::raw(SYS_getpid)) fd = -1;
  const bool defer = fd < 0 && g_defer.load(std::memory_order_acquire);
  if (fd < 0 && !defer) {
    // No thread to take it (too early, a fresh fork child): the signal
    // does what the program set.
    run_program_action(sig, si, uc);
    errno = saved;
    return;
  }
  if (!g_info_set.load(std::memory_order_acquire)) {
    g_info = *si;
    g_tid.store(si->si_code == SI_TKILL ? sys::raw(SYS_gettid) : 0, std::memory_order_release);
    g_info_set.store(true, std::memory_order_release);
  }
  if (defer) {
    // Restored, the thread about to start: it takes this one first.
    g_deferred.store(true, std::memory_order_release);
    // It may have started meanwhile and seen nothing.
    fd = g_efd.load(std::memory_order_acquire);
    if (fd < 0 || !g_deferred.exchange(false, std::memory_order_acq_rel)) {
      errno = saved;
      return;
    }
  }
  const uint64_t one = 1;
  sys::write(fd, &one, sizeof one);
  errno = saved;
}

void *trigger_main(void *) {
  const int fd = g_efd.load(std::memory_order_acquire);
  for (;;) {
    uint64_t n = 0;
    const long r = sys::read(fd, &n, sizeof n);
    if (r == -EINTR) continue;
    if (r != static_cast<long>(sizeof n)) return nullptr;
    snap_result res;
    // A snapshot under way (a periodic one, one asked for through the
    // control socket) is waited for, up to two minutes: the signal's is
    // the last word before the program acts on it.
    long s;
    for (int tries = 0; (s = snapshot_take({nullptr, nullptr, -1}, &res)) == -EBUSY && tries < 2400; ++tries) {
      const struct timespec wait = {0, 50'000'000};
      nanosleep(&wait, nullptr);
    }
    if (s == 1) return nullptr;  // restored: this process's own thread is started anew
    if (s < 0)
      MMTIER_WARN("snapshot on signal %d failed: %s", g_sig, res.line);
    else
      MMTIER_INFO("snapshot on signal %d: %s", g_sig, res.path);
    // Then what the program set the signal to do.
    const struct sigaction a = program_action();
    if (a.sa_handler == SIG_IGN) {
      g_info_set.store(false, std::memory_order_release);
      continue;
    }
    if (a.sa_handler == SIG_DFL) {
      struct sigaction d;
      memset(&d, 0, sizeof d);
      d.sa_handler = SIG_DFL;
      __sigaction(g_sig, &d, nullptr);
      sys::raw(SYS_kill, sys::getpid(), g_sig);  // ends the process
      return nullptr;
    }
    reraise(g_sig);
  }
}

// From heap_maybe_start(): the wake-up descriptor and the thread.
void start_thread() {
  if (g_test_delay_ms > 0 && g_defer.load(std::memory_order_acquire)) {
    const struct timespec t = {g_test_delay_ms / 1000, (g_test_delay_ms % 1000) * 1'000'000};
    nanosleep(&t, nullptr);
  }
  pthread_mutex_lock(&g_start_lock);
  if (g_efd.load(std::memory_order_acquire) < 0 && !g_starting) {
    g_starting = true;
    const int raw = eventfd(0, EFD_CLOEXEC);
    const int fd = raw >= 0 ? fd_guard(raw) : -1;
    if (fd < 0) {
      MMTIER_WARN("MMTIER_SNAPSHOT_SIGNAL: no descriptor for the snapshot thread; signal %d takes no snapshot", g_sig);
    } else {
      g_efd_pid.store(sys::raw(SYS_getpid), std::memory_order_release);
      g_efd.store(fd, std::memory_order_release);  // the thread reads it first thing
      if (const int e = start_service_thread(trigger_main, "mmtier-sig"); e != 0) {
        MMTIER_WARN("MMTIER_SNAPSHOT_SIGNAL: cannot start the snapshot thread (error %d); signal %d takes no "
                    "snapshot",
                    e, g_sig);
        g_efd.store(-1, std::memory_order_release);
        fd_unguard(fd);
        sys::close(fd);
      }
    }
    g_starting = false;
  }
  // A signal that came while the thread was not there yet: to the thread
  // if it started, else to what the program set (the marked re-raise).
  g_defer.store(false, std::memory_order_release);
  if (g_deferred.exchange(false, std::memory_order_acq_rel)) {
    const int fd = g_efd.load(std::memory_order_acquire);
    const uint64_t one = 1;
    if (fd < 0 || sys::write(fd, &one, sizeof one) != sizeof one) reraise(g_sig);
  }
  pthread_mutex_unlock(&g_start_lock);
}

void start_lock() { pthread_mutex_lock(&g_start_lock); }
void start_unlock() { pthread_mutex_unlock(&g_start_lock); }

// A fork child: the descriptor is the parent's (a signal here would make
// the parent take a snapshot); the child gets its own thread soon.
void fork_child() {
  pthread_mutex_init(&g_start_lock, nullptr);
  pthread_mutex_init(&g_set_lock, nullptr);
  g_starting = false;
  const int fd = g_efd.exchange(-1, std::memory_order_acq_rel);
  if (fd >= 0) {
    fd_unguard(fd);
    sys::close(fd);
  }
  g_info_set.store(false, std::memory_order_relaxed);
  heap_start_soon(start_thread);
}

// A restored process: the descriptor was the dead original's (its number
// may be the program's now: forgotten, not closed), and so was the thread.
// The restore starts it again right after this (heap_maybe_start after
// the restore): a signal meanwhile waits for it.
void restored() {
  pthread_mutex_init(&g_start_lock, nullptr);
  pthread_mutex_init(&g_set_lock, nullptr);
  g_starting = false;
  g_deferred.store(false, std::memory_order_relaxed);
  g_defer.store(true, std::memory_order_release);
  g_efd.store(-1, std::memory_order_release);
  g_info_set.store(false, std::memory_order_relaxed);
  heap_start_soon(start_thread);
}

}  // namespace

int trigger_signal() { return g_sig; }

void trigger_init() {
  const int sig = config_get().snapshot_signal;
  if (!sig || g_sig) return;
  struct sigaction mine, old;
  memset(&mine, 0, sizeof mine);
  mine.sa_sigaction = on_signal;
  mine.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigemptyset(&mine.sa_mask);
  if (__sigaction(sig, &mine, &old) != 0) {
    MMTIER_WARN("MMTIER_SNAPSHOT_SIGNAL: cannot handle signal %d; it takes no snapshot", sig);
    return;
  }
  g_prog[0] = old;  // what was there
  g_sig = sig;
  if (const char *d = getenv("_MMTIER_TRIGGER_START_DELAY_MS")) g_test_delay_ms = strtol(d, nullptr, 10);
  if (old.sa_handler == SIG_IGN) __sigaction(sig, &old, nullptr);  // inherited ignored: stays ignored
  quiesce_register(kRankControlStart, {start_lock, start_unlock, fork_child, nullptr, restored});
  heap_start_soon(start_thread);
}

int trigger_sigaction(const struct sigaction *act, struct sigaction *old) {
  // The signal blocked meanwhile: a handler of the program's that sets it
  // again (signal(sig, h) in h) must not meet this lock held.
  sigset_t self, mask;
  sigemptyset(&self);
  sigaddset(&self, g_sig);
  sys::raw(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&self), reinterpret_cast<long>(&mask), 8);
  pthread_mutex_lock(&g_set_lock);
  if (old) *old = program_action();
  if (act) {
    const int cur = g_cur.load(std::memory_order_acquire);
    g_prog[1 - cur] = *act;
    g_cur.store(1 - cur, std::memory_order_release);
    g_reset.store(false, std::memory_order_release);
    // Ignored, the kernel ignores it (and so do the programs it execs);
    // otherwise the handler is mmtier's.
    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    if (act->sa_handler == SIG_IGN) {
      mine.sa_handler = SIG_IGN;
    } else {
      mine.sa_sigaction = on_signal;
      mine.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    }
    sigemptyset(&mine.sa_mask);
    __sigaction(g_sig, &mine, nullptr);
  }
  pthread_mutex_unlock(&g_set_lock);
  sys::raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&mask), 0, 8);
  return 0;
}

}  // namespace mmtier::detail
