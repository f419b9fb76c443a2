// Platform layer: raw system calls on other architectures, and mmap with
// libc's conventions.
#include "platform/sys.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>

namespace mmtier::detail::sys {

#if !defined(__x86_64__)
long raw(long n, long a, long b, long c, long d, long e, long f) {
  long r = ::syscall(n, a, b, c, d, e, f);
  return r == -1 ? -errno : r;
}
#endif

void *mmap_libc(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  long r = mmap(addr, len, prot, flags, fd, off);
  if (failed(r)) {
    errno = static_cast<int>(-r);
    return MAP_FAILED;
  }
  return reinterpret_cast<void *>(r);
}

int thread_sigmask(int how, const sigset_t *set, sigset_t *old) {
  sigset_t own;
  if (set) {
    own = *set;
    for (int s = 32; s < SIGRTMIN; ++s) sigdelset(&own, s);
  }
  const long r = raw(SYS_rt_sigprocmask, how, set ? reinterpret_cast<long>(&own) : 0, reinterpret_cast<long>(old), 8);
  return r < 0 ? static_cast<int>(-r) : 0;
}

namespace {
std::atomic<long> g_host_pid{0};  // 0: none
std::atomic<long> g_host_pid_of{0};  // the getpid() it was set for
}  // namespace

long host_pid() {
  const long own = getpid();
  const long host = g_host_pid.load(std::memory_order_acquire);
  return host && g_host_pid_of.load(std::memory_order_relaxed) == own ? host : own;
}

void set_host_pid(long pid) {
  g_host_pid_of.store(getpid(), std::memory_order_relaxed);
  g_host_pid.store(pid, std::memory_order_release);
}

}  // namespace mmtier::detail::sys
