// Signals pending for one thread (see thread_signals.h).
#include "snapshot/thread_signals.h"

#include "platform/sys.h"
#include "support/world.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <signal.h>

#include <atomic>
#include <cstring>

namespace mmtier::detail {
namespace {

namespace cap = capsule;

// The kernel's first real-time signal (glibc's SIGRTMIN is above it, after
// the ones it keeps for itself).
constexpr int kFirstRealtime = 32;

cap::thread_signal_record g_records[kMaxThreadSignals];
std::atomic<uint32_t> g_count{0};  // slots claimed (may pass kMaxThreadSignals: overflow)
// The process's, taken in this stop (process_signals_take).
siginfo_t g_process[kMaxProcessSignals + 1];
std::atomic<uint32_t> g_nprocess{UINT32_MAX};  // UINT32_MAX: not taken yet
// The capturing thread's, taken but not yet queued again (defer).
uint8_t g_deferred[kMaxThreadSignals];
uint32_t g_ndeferred = 0;
int g_deferred_tid = 0;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

uint64_t status_signal_mask(const char *path, const char *key) {
  const size_t key_len = strlen(key);
  char win[256];
  if (key_len + 16 >= sizeof win) return 0;
  const long fd = sys::openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  size_t have = 0;
  uint64_t mask = 0;
  bool found = false;
  for (;;) {
    const long n = sys::read(static_cast<int>(fd), win + have, sizeof win - 1 - have);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    win[have] = 0;
    // The key and its 16 digits wholly in the window.
    for (size_t i = 0; i + key_len + 16 <= have; ++i) {
      if (memcmp(win + i, key, key_len) != 0) continue;
      for (size_t d = 0; d < 16; ++d) {
        const int v = hex_digit(win[i + key_len + d]);
        if (v < 0) break;
        mask = (mask << 4) | static_cast<uint64_t>(v);
      }
      found = true;
      break;
    }
    if (found) break;
    // Keep the tail that may hold the start of the key and its digits.
    const size_t keep = key_len + 16 < have ? key_len + 16 : have;
    memmove(win, win + have - keep, keep);
    have = keep;
  }
  sys::close(static_cast<int>(fd));
  return mask;
}

namespace {

// The thread's own pending set.
uint64_t own_pending() { return status_signal_mask("/proc/thread-self/status", "\nSigPnd:\t"); }

// Queues a taken signal again to the thread (to itself any siginfo is
// accepted; should the queue be full, at least the signal).
void requeue(long pid, int tid, const void *info) {
  int signo;
  memcpy(&signo, info, sizeof signo);
  if (sys::raw(SYS_rt_tgsigqueueinfo, pid, tid, signo, reinterpret_cast<long>(info)) != 0)
    sys::raw(SYS_tgkill, pid, tid, signo);
}

}  // namespace

void thread_signals_reset() {
  g_count.store(0, std::memory_order_relaxed);
  g_ndeferred = 0;
  g_nprocess.store(UINT32_MAX, std::memory_order_relaxed);
}

void process_signals_take() {
  uint32_t n = 0;
  const uint64_t mask = status_signal_mask("/proc/self/status", "\nShdPnd:\t");
  const long self = sys::getpid();
  const bool leader = sys::raw(SYS_gettid) == self;
  for (int sig = 1; sig <= 64 && n <= kMaxProcessSignals && mask; ++sig) {
    if (!(mask & (uint64_t{1} << (sig - 1))) || sig == SIGKILL || sig == SIGSTOP) continue;
    if (!leader && sig < kFirstRealtime) {
      // Taken by another thread than the leader (the leader is gone), a
      // kill()'s or the kernel's siginfo could only come back as a kill()
      // by the process itself: left pending as it is.  A standard signal
      // is pending once at most; the capsule has it as the process's own.
      siginfo_t &si = g_process[n++];
      memset(&si, 0, sizeof si);
      si.si_signo = sig;
      si.si_code = SI_USER;
      si.si_pid = static_cast<pid_t>(self);
      si.si_uid = static_cast<uid_t>(sys::raw(SYS_getuid));
      continue;
    }
    uint64_t one = uint64_t{1} << (sig - 1);
    const struct timespec zero = {0, 0};
    while (n <= kMaxProcessSignals &&
           sys::raw(SYS_rt_sigtimedwait, reinterpret_cast<long>(&one), reinterpret_cast<long>(&g_process[n]),
                    reinterpret_cast<long>(&zero), 8) == sig)
      ++n;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const siginfo_t &si = g_process[i];
    if (!leader && si.si_signo < kFirstRealtime) continue;  // left pending
    // Queued again with its siginfo where the kernel lets this thread;
    // else, or when the queue is full (RLIMIT_SIGPENDING), at least the
    // signal.
    if (!(leader || (si.si_code < 0 && si.si_code != SI_TKILL)) ||
        sys::raw(SYS_rt_sigqueueinfo, self, si.si_signo, reinterpret_cast<long>(&si)) != 0)
      sys::raw(SYS_kill, self, si.si_signo);
  }
  g_nprocess.store(n, std::memory_order_release);
}

uint32_t process_signals_taken(const siginfo_t **out) {
  *out = g_process;
  return g_nprocess.load(std::memory_order_acquire);
}

void thread_signals_take(int tid, bool defer) {
  const uint64_t stop = world_stop_signal() > 0 ? uint64_t{1} << (world_stop_signal() - 1) : 0;
  // Nothing pending for the thread or the process that it blocks (the
  // usual case): no /proc read in the pause.
  uint64_t any = 0;
  if (sys::raw(SYS_rt_sigpending, reinterpret_cast<long>(&any), 8) == 0 && !(any & ~stop)) return;
  const uint64_t pending = own_pending() & ~stop;
  if (!pending) return;
  // Taken one by one, straight into the table (the stack may be small),
  // while the thread's own set still shows the signal (an instance the
  // process has pending too stays with the process); then all queued again
  // in the order taken.  Past the table's room they go to a buffer that can
  // hold as many as the user may have queued (RLIMIT_SIGPENDING), so that
  // a refused snapshot leaves every queue as it was.
  uint8_t mine[kMaxThreadSignals];
  uint32_t n = 0;
  siginfo_t *extra = nullptr;
  uint64_t nextra = 0, extra_cap = 0;
  for (int sig = 1; sig <= 64; ++sig) {
    const uint64_t one = uint64_t{1} << (sig - 1);
    if (!(pending & one) || sig == SIGKILL || sig == SIGSTOP) continue;
    const struct timespec zero = {0, 0};
    while (own_pending() & one) {
      void *into;
      uint32_t at = kMaxThreadSignals;
      if (!extra) at = g_count.fetch_add(1, std::memory_order_relaxed);
      if (at < kMaxThreadSignals) {
        memset(&g_records[at], 0, sizeof g_records[at]);
        into = g_records[at].info;
      } else {
        if (!extra) {
          struct {
            uint64_t cur, max;
          } lim = {4096, 4096};
          sys::raw(SYS_prlimit64, 0, RLIMIT_SIGPENDING, 0, reinterpret_cast<long>(&lim));
          extra_cap = lim.cur < (uint64_t{1} << 20) ? lim.cur + 1 : uint64_t{1} << 20;
          const long m = sys::mmap(nullptr, extra_cap * sizeof(siginfo_t), PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
          if (sys::failed(m)) break;
          extra = reinterpret_cast<siginfo_t *>(m);
        }
        if (nextra == extra_cap) break;
        into = &extra[nextra];
      }
      if (sys::raw(SYS_rt_sigtimedwait, reinterpret_cast<long>(&one), reinterpret_cast<long>(into),
                   reinterpret_cast<long>(&zero), 8) != sig)
        break;  // gone meanwhile (a claimed table slot stays empty: tid 0)
      if (into == &extra[nextra])
        ++nextra;
      else {
        g_records[at].tid = tid;
        mine[n++] = static_cast<uint8_t>(at);
      }
    }
  }
  const long pid = sys::getpid();
  if (defer && !extra) {
    memcpy(g_deferred, mine, n);
    g_ndeferred = n;
    g_deferred_tid = tid;
    return;
  }
  for (uint32_t i = 0; i < n; ++i) requeue(pid, tid, g_records[mine[i]].info);
  for (uint64_t i = 0; i < nextra; ++i) requeue(pid, tid, &extra[i]);
  if (extra) sys::munmap(extra, extra_cap * sizeof(siginfo_t));
}

void thread_signals_requeue_deferred() {
  const long pid = sys::getpid();
  for (uint32_t i = 0; i < g_ndeferred; ++i) requeue(pid, g_deferred_tid, g_records[g_deferred[i]].info);
  g_ndeferred = 0;
}

uint32_t thread_signals_taken(const cap::thread_signal_record **out, bool *overflow) {
  const uint32_t claimed = g_count.load(std::memory_order_acquire);
  *overflow = claimed > kMaxThreadSignals;
  // Records left empty (a signal gone before it was taken) are dropped.
  uint32_t n = 0;
  for (uint32_t i = 0; i < claimed && i < kMaxThreadSignals; ++i)
    if (g_records[i].tid) g_records[n++] = g_records[i];
  *out = g_records;
  return n;
}

}  // namespace mmtier::detail
