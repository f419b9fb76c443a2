// userfaultfd system calls and ioctls (see uffd.h).
#include "platform/uffd.h"

#include "platform/sys.h"

#include <fcntl.h>
#include <cerrno>
#include <sys/ioctl.h>

namespace mmtier::detail::sys::uffd {
namespace {

inline long ioctl(int fd, unsigned long req, void *arg) {
  return raw(SYS_ioctl, fd, static_cast<long>(req), reinterpret_cast<long>(arg));
}

inline uint64_t u64(const void *p) { return reinterpret_cast<uint64_t>(p); }

}  // namespace

long open() {
  long fd = raw(SYS_userfaultfd, O_CLOEXEC);
  if (fd >= 0 || (fd != -EPERM && fd != -EACCES)) return fd;
  long dev = openat(AT_FDCWD, "/dev/userfaultfd", O_RDWR | O_CLOEXEC, 0);
  if (dev < 0) return dev == -ENOENT ? fd : dev;  // no device (before 6.1): the system call's answer
  long r = ioctl(static_cast<int>(dev), USERFAULTFD_IOC_NEW, reinterpret_cast<void *>(O_CLOEXEC));
  close(static_cast<int>(dev));
  // (Unprivileged and no device access, UFFD_USER_MODE_ONLY would still
  // be allowed, but kernel accesses inside system calls would then fail:
  // not usable here.)
  return r;
}

uint64_t features(long *err) {
  long fd = open();
  if (err) *err = fd < 0 ? fd : 0;
  if (fd < 0) return 0;
  uffdio_api a = {};
  a.api = UFFD_API;
  long r = ioctl(static_cast<int>(fd), UFFDIO_API, &a);
  close(static_cast<int>(fd));
  return r < 0 ? 0 : a.features;
}

long api(int fd, uint64_t want) {
  uffdio_api a = {};
  a.api = UFFD_API;
  a.features = want;
  return ioctl(fd, UFFDIO_API, &a);
}

long register_range(int fd, void *addr, size_t len, uint64_t mode) {
  uffdio_register reg = {};
  reg.range.start = u64(addr);
  reg.range.len = len;
  reg.mode = mode;
  return ioctl(fd, UFFDIO_REGISTER, &reg);
}

long unregister_range(int fd, void *addr, size_t len) {
  uffdio_range range = {u64(addr), len};
  return ioctl(fd, UFFDIO_UNREGISTER, &range);
}

namespace {

long copy_mode(int fd, void *dst, const void *src, size_t len, size_t *done, uint64_t mode) {
  uffdio_copy c = {};
  c.dst = u64(dst);
  c.src = u64(src);
  c.len = len;
  c.mode = mode;
  long r = ioctl(fd, UFFDIO_COPY, &c);
  *done = c.copy > 0 ? static_cast<size_t>(c.copy) : 0;
  return r < 0 ? r : 0;
}

}  // namespace

long copy(int fd, void *dst, const void *src, size_t len, size_t *done) {
  return copy_mode(fd, dst, src, len, done, 0);
}

long copy_protected(int fd, void *dst, const void *src, size_t len, size_t *done) {
  return copy_mode(fd, dst, src, len, done, UFFDIO_COPY_MODE_WP);
}

long zeropage(int fd, void *dst, size_t len) {
  uffdio_zeropage z = {};
  z.range.start = u64(dst);
  z.range.len = len;
  return ioctl(fd, UFFDIO_ZEROPAGE, &z);
}

long move(int fd, void *dst, void *src, size_t len, size_t *done) {
  uffdio_move m = {};
  m.dst = u64(dst);
  m.src = u64(src);
  m.len = len;
  long r = ioctl(fd, UFFDIO_MOVE, &m);
  *done = m.move > 0 ? static_cast<size_t>(m.move) : 0;
  return r < 0 ? r : 0;
}

long write_protect(int fd, void *addr, size_t len, bool protect) {
  uffdio_writeprotect wp = {};
  wp.range.start = u64(addr);
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  long r = ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
  // Before Linux 6.3 one call covers one kernel mapping: a range past its
  // end is -ENOENT.  Halved until each part lies in one mapping.
  constexpr size_t kPage = 4096;
  if (r != -ENOENT || len <= kPage) return r;
  const size_t half = (len / 2 + kPage - 1) & ~(kPage - 1);
  r = write_protect(fd, addr, half, protect);
  if (r == 0) r = write_protect(fd, static_cast<char *>(addr) + half, len - half, protect);
  return r;
}

long wake(int fd, void *addr, size_t len) {
  uffdio_range range = {u64(addr), len};
  return ioctl(fd, UFFDIO_WAKE, &range);
}

}  // namespace mmtier::detail::sys::uffd
