// Stopping the other threads of the process (see world.h).
#include "support/world.h"

#include "platform/clock.h"
#include "platform/dirent.h"
#include "platform/sys.h"
#include "support/log.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mmtier::detail {
namespace {

constexpr int kMaxThreads = 4096;
constexpr int kMaxExempt = 8;

pthread_mutex_t g_stop_lock = PTHREAD_MUTEX_INITIALIZER;  // one stop at a time
std::atomic<int> g_exempt[kMaxExempt];
std::atomic<int> g_generation{0};  // of the stop under way (only grows)
std::atomic<int> g_released{0};    // latest generation released (futex word)
// Threads parked in the stop under way: its generation's low 16 bits above
// the count (the futex word), so that a thread late for one stop never
// counts as parked in the next.
std::atomic<int> g_parked{0};
constexpr int kCountBits = 16;
constexpr int kCountMask = (1 << kCountBits) - 1;
int g_signo = 0;
int g_last_signo = 0;  // the signal of the latest stop
struct sigaction g_old;  // the disposition to put back
int g_signaled[kMaxThreads];
// The stop under way's capture function; written before any thread is
// signaled, cleared once every thread is released.
std::atomic<world_capture_fn> g_capture{nullptr};
int g_nsignaled = 0;
// The leader thread exited (the exit system call, or pthread_exit from
// main) while the process lives on: it stays listed as a zombie until the
// process ends, and takes a signal without ever running a handler.  Found
// once (forget_gone_leader), then never signaled.
bool g_leader_gone = false;

long futex(std::atomic<int> *word, int op, int val, const timespec *ts) {
  return sys::raw(SYS_futex, reinterpret_cast<long>(word), op, val, reinterpret_cast<long>(ts));
}

int parked_word(int gen, int count) { return static_cast<int>((static_cast<unsigned>(gen) << kCountBits) | static_cast<unsigned>(count)); }

// Whether generation a is at or after b (generations wrap around).
bool at_or_after(int a, int b) { return static_cast<int>(static_cast<unsigned>(a) - static_cast<unsigned>(b)) >= 0; }

// The stop signal's handler: counts itself parked in the stop under way and
// waits until that stop (or a later one) is released.  A signal of an
// earlier stop that reaches a thread late parks it in the current one (it
// is stopped now, as that stop needs), or, if none is under way, lets it
// go at once.
void park(int, siginfo_t *, void *uc) {
  const int saved = errno;
  int gen;
  int captured = 0;  // the generation this run captured for (generations start at 1)
  for (;;) {
    gen = g_generation.load(std::memory_order_acquire);
    if (g_world_park_hook) g_world_park_hook();
    int w = g_parked.load(std::memory_order_acquire);
    if ((w & ~kCountMask) != (parked_word(gen, 0) & ~kCountMask)) {
      sched_yield();  // the stopper is between its generation and the count's reset
      continue;
    }
    // Once per stop: the capture is for the stop this thread parks in.  A
    // thread late for a stop that gave up may have captured for it; it
    // captures again for the stop it then parks in, later than that.
    if (captured != gen) {
      if (world_capture_fn fn = g_capture.load(std::memory_order_acquire)) {
        if (resume_point *rp = fn(uc, static_cast<int>(sys::raw(SYS_gettid)))) {
          if (mmtier_resume_point_save(rp)) {
            // A restored process: this thread starts here, stopped in the
            // stop the snapshot was taken in, and waits for its release.
            // Only what was set before the save is read.  The stop's
            // generation first: once every thread has landed, the process
            // may start its next stop.
            const int stop = g_generation.load(std::memory_order_acquire);
            if (g_world_landed_hook) g_world_landed_hook();
            for (;;) {
              const int r = g_released.load(std::memory_order_acquire);
              if (at_or_after(r, stop)) break;
              futex(&g_released, FUTEX_WAIT_PRIVATE, r, nullptr);
            }
            if (g_world_unpark_hook) g_world_unpark_hook();
            errno = saved;
            return;
          }
        }
      }
      captured = gen;
      continue;  // the stop may have moved on meanwhile: read it again
    }
    if (g_parked.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel)) break;
  }
  futex(&g_parked, FUTEX_WAKE_PRIVATE, 1, nullptr);  // the stopper may wait for the count
  for (;;) {
    const int r = g_released.load(std::memory_order_acquire);
    if (at_or_after(r, gen)) break;
    futex(&g_released, FUTEX_WAIT_PRIVATE, r, nullptr);
  }
  if (g_world_unpark_hook) g_world_unpark_hook();
  errno = saved;
}

bool exempt(int tid) {
  for (auto &e : g_exempt)
    if (e.load(std::memory_order_relaxed) == tid) return true;
  return false;
}

bool signaled(int tid) {
  for (int i = 0; i < g_nsignaled; ++i)
    if (g_signaled[i] == tid) return true;
  return false;
}

// The highest real-time signal left at its default disposition, installed
// with the parking handler; 0 if none.
int take_signal() {
  for (int s = SIGRTMAX; s > SIGRTMIN + 2; --s) {
    struct sigaction cur;
    if (sigaction(s, nullptr, &cur) != 0) continue;
    if (cur.sa_handler != SIG_DFL || (cur.sa_flags & SA_SIGINFO)) continue;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = park;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigfillset(&sa.sa_mask);  // nothing else runs in a parked thread
    if (sigaction(s, &sa, &g_old) != 0) continue;
    return s;
  }
  return 0;
}

// Signals every thread of the process not signaled yet (but the caller and
// mmtier's own); returns how many were signaled now, or -E2BIG.
long signal_new_threads(long pid, long self) {
  long dfd = sys::openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return dfd;
  long added = 0;
  const long r = sys::for_each_dirent(static_cast<int>(dfd), [&](const char *name, unsigned char) -> long {
    int tid = 0;
    for (size_t i = 0; name[i] >= '0' && name[i] <= '9'; ++i) tid = tid * 10 + (name[i] - '0');
    if (tid <= 0 || tid == self || exempt(tid) || signaled(tid) || (tid == pid && g_leader_gone)) return 0;
    if (g_nsignaled == kMaxThreads) return -E2BIG;
    if (sys::raw(SYS_tgkill, pid, tid, g_signo) == 0) {
      g_signaled[g_nsignaled++] = tid;
      ++added;
    }
    return 0;
  });
  sys::close(static_cast<int>(dfd));
  return r == -E2BIG ? r : added;
}

// Signaled threads that still exist (a thread may exit before it parks).
int live_signaled(long pid) {
  int live = 0;
  for (int i = 0; i < g_nsignaled; ++i) live += sys::raw(SYS_tgkill, pid, g_signaled[i], 0) == 0;
  return live;
}

// Whether the thread tid of this process has exited (zombie or dead in
// /proc/self/task/<tid>/stat: the state after the name's closing paren, or
// no such thread).  Any other failure (out of descriptors, say) says no: a
// thread taken for gone would never be stopped.
bool thread_exited(long tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return fd == -ENOENT || fd == -ESRCH;
  char buf[512];
  const long n = sys::read(static_cast<int>(fd), buf, sizeof buf - 1);
  sys::close(static_cast<int>(fd));
  if (n <= 0) return n == -ESRCH;
  buf[n] = 0;
  const char *paren = strrchr(buf, ')');
  return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

// A stop slow to complete: if the leader is among the threads signaled and
// it has exited, it is no thread to wait for (now or in any later stop).
// Whether it was.
bool forget_gone_leader(long pid) {
  for (int i = 0; i < g_nsignaled; ++i) {
    if (g_signaled[i] != pid || !thread_exited(pid)) continue;
    g_leader_gone = true;
    g_signaled[i] = g_signaled[--g_nsignaled];
    return true;
  }
  return false;
}

// Releases the parked threads and puts the signal's disposition back.  A
// handler already running is not affected by that; a signal still pending
// is discarded first by SIG_IGN, so it can never take the default action
// (terminating the process) later: a thread that had it blocked, after a
// stop that gave up, or one that took an earlier stop's signal late and
// was signaled again for this stop while still in the handler.  Parked
// threads leave the handler on their own.
void release_all() {
  g_capture.store(nullptr, std::memory_order_release);
  g_released.store(g_generation.load(std::memory_order_relaxed), std::memory_order_release);
  futex(&g_released, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr);
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(g_signo, &ign, nullptr);
  sigaction(g_signo, &g_old, nullptr);
  g_signo = 0;
}

// In a fork child: no stop is under way (the only thread alive was not a
// parked one) and mmtier's threads are gone.
void fork_child() {
  pthread_mutex_init(&g_stop_lock, nullptr);
  g_leader_gone = false;  // the forking thread leads the child
  for (auto &e : g_exempt) e.store(0, std::memory_order_relaxed);
}

}  // namespace

void (*g_world_park_hook)() = nullptr;
void (*g_world_unpark_hook)() = nullptr;
void (*g_world_landed_hook)() = nullptr;

namespace {

// In a restored process, last of the restored handlers: the stop the
// snapshot was taken in ends (the thread that took it holds the stop's
// lock), and mmtier's threads, which were exempt, are gone.
void restored() {
  // Forgotten before the release: a released thread may start mmtier's
  // threads again at once, and they register here.
  for (auto &e : g_exempt) e.store(0, std::memory_order_relaxed);
  g_leader_gone = false;  // another process's leader
  release_all();
  pthread_mutex_unlock(&g_stop_lock);
}

}  // namespace

int world_stop_signal() { return g_signo; }

void world_register() { quiesce_register(kRankWorld, {nullptr, nullptr, fork_child, nullptr, restored}); }

long world_stop(quiesce_reason why, uint64_t timeout_ns, world_stats *stats, world_capture_fn capture) {
  const uint64_t t0 = sys::mono_ns();
  pthread_mutex_lock(&g_stop_lock);
  quiesce_enter(why);
  const uint64_t entered = sys::mono_ns();
  g_signo = g_last_signo = take_signal();
  if (!g_signo) {
    quiesce_leave();
    pthread_mutex_unlock(&g_stop_lock);
    return -ENOSYS;
  }
  g_capture.store(capture, std::memory_order_release);
  const int gen = g_generation.fetch_add(1, std::memory_order_acq_rel) + 1;
  g_parked.store(parked_word(gen, 0), std::memory_order_release);
  g_nsignaled = 0;
  const long pid = sys::getpid(), self = sys::raw(SYS_gettid);
  long err = 0;
  bool leader_checked = g_leader_gone;
  // Until a listing finds no thread that was not signaled: a thread running
  // now may start another before it parks.
  for (;;) {
    const long added = signal_new_threads(pid, self);
    if (added < 0) {
      err = added;
      break;
    }
    // Wait for every signaled thread (that still exists) to park.
    for (;;) {
      const int word = g_parked.load(std::memory_order_acquire);
      const int parked = word & kCountMask;
      if (parked >= g_nsignaled || parked >= live_signaled(pid)) break;
      if (sys::mono_ns() - t0 > timeout_ns) {
        err = -EAGAIN;
        break;
      }
      const timespec ms = {0, 1000000};
      // Slow to park: once per stop, whether it is a leader that has exited.
      if (futex(&g_parked, FUTEX_WAIT_PRIVATE, word, &ms) == -ETIMEDOUT && !leader_checked) {
        leader_checked = true;
        forget_gone_leader(pid);
      }
    }
    if (err || added == 0) break;
  }
  if (err) {
    release_all();
    quiesce_leave();
    pthread_mutex_unlock(&g_stop_lock);
    return err;
  }
  if (stats) {
    stats->threads = static_cast<uint32_t>(g_parked.load(std::memory_order_relaxed) & kCountMask);
    stats->stop_ns = sys::mono_ns() - t0;
    stats->enter_ns = entered - t0;
  }
  return 0;
}

void world_resume() {
  release_all();
  quiesce_leave();
  pthread_mutex_unlock(&g_stop_lock);
}

namespace {

// Whether /proc/self/task/<tid>/status says the thread blocks signo; its
// name into name[cap].
bool blocks_signal(long tid, int signo, char *name, size_t cap) {
  char path[48] = "/proc/self/task/";
  char digits[24];
  size_t nd = 0;
  for (unsigned long v = static_cast<unsigned long>(tid); v || !nd; v /= 10) digits[nd++] = static_cast<char>('0' + v % 10);
  size_t at = strlen(path);
  while (nd) path[at++] = digits[--nd];
  memcpy(path + at, "/status", 8);
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  char buf[2048];
  const long n = sys::raw(SYS_read, fd, reinterpret_cast<long>(buf), sizeof buf - 1);
  sys::close(static_cast<int>(fd));
  if (n <= 0) return false;
  buf[n] = 0;
  if (const char *nm = strstr(buf, "Name:\t")) {
    size_t i = 0;
    for (nm += 6; nm[i] && nm[i] != '\n' && i + 1 < cap; ++i) name[i] = nm[i];
    if (cap) name[i] = 0;
  }
  const char *blk = strstr(buf, "SigBlk:\t");
  if (!blk) return false;
  const unsigned long long mask = strtoull(blk + 8, nullptr, 16);
  return signo >= 1 && signo <= 64 && ((mask >> (signo - 1)) & 1);
}

}  // namespace

long world_signal_blocker(char *name, size_t cap) {
  const int signo = g_last_signo;
  if (!signo) return 0;
  const long self = sys::raw(SYS_gettid);
  long dfd = sys::openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd < 0) return 0;
  const long found = sys::for_each_dirent(static_cast<int>(dfd), [&](const char *entry, unsigned char) -> long {
    const long tid = strtol(entry, nullptr, 10);
    return tid > 0 && tid != self && !exempt(static_cast<int>(tid)) && blocks_signal(tid, signo, name, cap) ? tid : 0;
  });
  sys::close(static_cast<int>(dfd));
  return found > 0 ? found : 0;
}

int world_sigmask(int how, const sigset_t *set, sigset_t *old) {
  if (!set || how == SIG_UNBLOCK || !sigismember(set, SIGRTMAX)) return sys::thread_sigmask(how, set, old);
  for (int s = SIGRTMIN; s < SIGRTMAX; ++s)
    if (!sigismember(set, s)) return sys::thread_sigmask(how, set, old);  // names some, not all
  struct sigaction cur;
  if (sigaction(SIGRTMAX, nullptr, &cur) != 0) return sys::thread_sigmask(how, set, old);
  const bool ours = (cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction == park : cur.sa_handler == SIG_DFL;
  if (!ours) return sys::thread_sigmask(how, set, old);  // the program's signal: as asked
  sigset_t kept = *set;
  sigdelset(&kept, SIGRTMAX);
  return sys::thread_sigmask(how, &kept, old);
}

void world_exempt_self() {
  const int tid = static_cast<int>(sys::raw(SYS_gettid));
  for (auto &e : g_exempt) {
    int free = 0;
    if (e.compare_exchange_strong(free, tid)) return;
  }
}

}  // namespace mmtier::detail
