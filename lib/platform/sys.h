// Platform layer: every system call mmtier makes, issued directly so that it
// never re-enters the interposed libc symbols (mmap, munmap, ...) and never
// touches errno.  Each returns the kernel's result: >= 0 on success, -errno
// on failure.
#pragma once

#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace mmtier::detail::sys {

#if defined(__x86_64__)
inline long raw(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#else
long raw(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0);
#endif

inline bool failed(long r) { return static_cast<unsigned long>(r) > -4096UL; }

inline long mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return raw(SYS_mmap, reinterpret_cast<long>(addr), static_cast<long>(len), prot, flags, fd, off);
}
// mmap with libc's conventions (MAP_FAILED and errno), for code that answers
// on libc's behalf.
void *mmap_libc(void *addr, size_t len, int prot, int flags, int fd, off_t off);

inline long munmap(void *addr, size_t len) {
  return raw(SYS_munmap, reinterpret_cast<long>(addr), static_cast<long>(len));
}
inline long mprotect(void *addr, size_t len, int prot) {
  return raw(SYS_mprotect, reinterpret_cast<long>(addr), static_cast<long>(len), prot);
}
inline long madvise(void *addr, size_t len, int advice) {
  return raw(SYS_madvise, reinterpret_cast<long>(addr), static_cast<long>(len), advice);
}
inline long mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr) {
  return raw(SYS_mremap, reinterpret_cast<long>(old), static_cast<long>(old_len),
             static_cast<long>(new_len), flags, reinterpret_cast<long>(new_addr));
}
inline long fallocate(int fd, int mode, off_t off, off_t len) {
  return raw(SYS_fallocate, fd, mode, off, len);
}
inline long ftruncate(int fd, off_t len) { return raw(SYS_ftruncate, fd, len); }
inline long openat(int dirfd, const char *path, int flags, int mode) {
  return raw(SYS_openat, dirfd, reinterpret_cast<long>(path), flags, mode);
}
inline long close(int fd) { return raw(SYS_close, fd); }
inline long read(int fd, void *buf, size_t n) {
  return raw(SYS_read, fd, reinterpret_cast<long>(buf), static_cast<long>(n));
}
inline long pread(int fd, void *buf, size_t n, off_t off) {
  return raw(SYS_pread64, fd, reinterpret_cast<long>(buf), static_cast<long>(n), off);
}
inline long pwrite(int fd, const void *buf, size_t n, off_t off) {
  return raw(SYS_pwrite64, fd, reinterpret_cast<long>(buf), static_cast<long>(n), off);
}
inline long write(int fd, const void *buf, size_t n) {
  return raw(SYS_write, fd, reinterpret_cast<long>(buf), static_cast<long>(n));
}
inline long getpid() { return raw(SYS_getpid); }
// The process's ID as the host sees it, for the names other processes look
// it up by (its statistics page, its control socket): getpid(), but in a
// process restored into a PID namespace of its own, the ID it has outside
// (set_host_pid; not inherited by a fork child, whose getpid() differs).
long host_pid();
void set_host_pid(long pid);
// pthread_sigmask as the C library does it (the signals below SIGRTMIN are
// its own and never blocked), without going through the symbol, which
// libmmtier.so interposes: 0 or an errno value.
int thread_sigmask(int how, const sigset_t *set, sigset_t *old);
inline long unlinkat(int dirfd, const char *path, int flags) {
  return raw(SYS_unlinkat, dirfd, reinterpret_cast<long>(path), flags);
}

}  // namespace mmtier::detail::sys
